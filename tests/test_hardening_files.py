"""Issue "Hardening, second pass", the files part: links in input folders (3), Pillow's
process-wide bomb guard (7), format size limits and writer errors (8), letter case (18),
malformed EXIF (21), and the in-memory entry point with stdin/stdout (22)."""

import io
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_generator
from PIL import Image, ImageCms
from test_images import exif_bytes

from srgan_cli import InputError, Upscaler, images
from srgan_cli.cli import main
from srgan_cli.errors import ImageError


def upscale(*args, stdin: bytes | None = None):
    return CliRunner().invoke(main, ["upscale", *map(str, args)], input=stdin)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Relative names (-o x.png) land in the test's own folder."""
    monkeypatch.chdir(tmp_path)


def png(path: Path, size=(5, 4), colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def noise(height: int, width: int, channels: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, (height, width, channels), dtype)


@pytest.fixture
def upscaler() -> Upscaler:
    return Upscaler(make_generator(), device="cpu")


def json_files(result) -> dict[str, dict]:
    return {f["input"]: f for f in json.loads(result.stdout)["files"]}


# ------------------------------------------------------------- 3. links in an input folder


def test_every_name_in_a_folder_with_links_gets_an_output_or_a_reason(tmp_path, tiny_checkpoint):
    src, out = tmp_path / "in", tmp_path / "out"
    a = png(src / "a.png")
    (src / "b.png").symlink_to(a)  # the same file under another name
    os.link(a, src / "c.png")  # a hard link
    d = png(src / "sub" / "d.png", colour=(0, 0, 250))
    (src / "linked").symlink_to(src / "sub", target_is_directory=True)
    (src / "sub" / "loop").symlink_to(src, target_is_directory=True)
    png(tmp_path / "elsewhere" / "e.png")
    (src / "outside").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    result = upscale(src, "-o", out, "--model", tiny_checkpoint, "--json")
    assert result.exit_code == 0, result.output
    files = json_files(result)
    written = sorted(Path(f["output"]).relative_to(out).as_posix()
                     for f in files.values() if f["status"] == "written")
    assert written == ["a.png", "outside/e.png", "sub/d.png"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == written
    assert files[str(src / "b.png")]["reason"] == f"same file as {a}"
    assert files[str(src / "c.png")]["reason"] == f"same file as {a}"
    assert files[str(src / "linked" / "d.png")]["reason"] == f"same file as {d}"
    for loop in (src / "sub" / "loop", src / "linked" / "loop"):
        assert files[str(loop)]["status"] == "skipped" and "a loop" in files[str(loop)]["reason"]
    assert len(files) == 8


def test_same_file_skips_are_shown_and_the_real_name_wins(tmp_path, tiny_checkpoint):
    real = png(tmp_path / "z_real.png")
    (tmp_path / "a_link.png").symlink_to(real)  # sorts first, but it is a link
    result = upscale(tmp_path / "a_link.png", real, "-o", tmp_path / "out", "--model",
                     tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert f"a_link.png: skipped (same file as {real})" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["z_real.png"]


def test_scan_lists_unreadable_folders(tmp_path, monkeypatch):
    png(tmp_path / "a.png")
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = images.scan_folder(tmp_path)
    assert scan.images == [tmp_path / "a.png"]
    assert scan.errors == {tmp_path / "locked": "cannot list this folder: Permission denied"}


# ------------------------------------------------------------- 7. Pillow's guard


def test_concurrent_reads_never_switch_pillows_guard_off(tmp_path, monkeypatch):
    """Two reader threads, each held inside the decoder in turn: Pillow's limit as seen
    from a third thread stays what it was (234db95 left it None after this order)."""
    path = png(tmp_path / "a.png")
    limit = Image.MAX_IMAGE_PIXELS
    inside = [threading.Event(), threading.Event()]
    go_on = [threading.Event(), threading.Event()]
    decode = images.reading._decode

    def held_decode(image, file):
        me = int(threading.current_thread().name)
        inside[me].set()
        assert go_on[me].wait(30)
        return decode(image, file)

    monkeypatch.setattr(images.reading, "_decode", held_decode)
    readers = [threading.Thread(target=images.read_image, args=(path,), name=str(i))
               for i in range(2)]
    seen = []
    for reader, entered in zip(readers, inside, strict=True):
        reader.start()
        assert entered.wait(30)
        seen.append(Image.MAX_IMAGE_PIXELS)
    for reader, release in zip(readers, go_on, strict=True):
        release.set()
        reader.join(30)
        seen.append(Image.MAX_IMAGE_PIXELS)
    assert seen == [limit] * 4


def test_a_limit_above_pillows_raises_its_guard_for_that_read_only(tmp_path, monkeypatch):
    path = png(tmp_path / "a.png", size=(20, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow refuses above 20 pixels
    during = []
    decode = images.reading._decode

    def watched_decode(image, file):
        during.append(Image.MAX_IMAGE_PIXELS)
        return decode(image, file)

    monkeypatch.setattr(images.reading, "_decode", watched_decode)
    assert images.read_image(path, max_pixels=500).size == (20, 10)
    assert during == [500] and Image.MAX_IMAGE_PIXELS == 10


def test_an_image_above_pillows_limit_is_one_line_with_its_size(tmp_path, monkeypatch):
    path = png(tmp_path / "a.png", size=(30, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow itself refuses 300 pixels
    with pytest.raises(ImageError, match=r"^image is 30x10 = 0.0 MP, above the 0.0 MP limit"):
        images.read_image(path, max_pixels=20)
    assert Image.MAX_IMAGE_PIXELS == 10


# ------------------------------------------------------------- 8. format size limits


def wide_and_small(folder: Path, width: int) -> tuple[Path, Path]:
    return png(folder / "a_wide.png", size=(width, 1)), png(folder / "b_small.png")


@pytest.mark.parametrize("fmt, width, side", [("webp", 4096, 16383), ("jpg", 16376, 65500)])
def test_outputs_too_large_for_the_format_fail_at_planning(tmp_path, tiny_checkpoint,
                                                           monkeypatch, fmt, width, side):
    wide, small = wide_and_small(tmp_path / "in", width)
    computed = []
    picture_upscale = Upscaler.upscale_picture

    def record(self, picture, on_tile=None):
        computed.append(picture.size)
        return picture_upscale(self, picture, on_tile)

    monkeypatch.setattr(Upscaler, "upscale_picture", record)
    result = upscale(tmp_path / "in", "-o", tmp_path / "out", "--format", fmt, "--model",
                     tiny_checkpoint, "--json")
    assert result.exit_code == 1
    files = json_files(result)
    assert files[str(small)]["status"] == "written"
    name = images.format_for("x", fmt)
    assert files[str(wide)]["reason"] == (f"a {width * 4}x4 output is too large for {name} "
                                          f"(at most {side} pixels a side); choose png or tif")
    assert computed == [(5, 4)], "the wide image must be refused before the network runs"
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"b_small.{fmt}"]


@pytest.mark.parametrize("fmt, side", [("WEBP", 16383), ("JPEG", 65500)])
def test_the_size_limits_are_the_encoders(tmp_path, fmt, side):
    """The limits in images.formats._WRITERS are where Pillow's encoders stop (measured here)."""
    fits = Image.new("L" if fmt == "JPEG" else "RGB", (side, 1))
    fits.save(io.BytesIO(), fmt)
    with pytest.raises((OSError, ValueError)):
        Image.new("L" if fmt == "JPEG" else "RGB", (side + 1, 1)).save(io.BytesIO(), fmt)


def test_bmp_limit_is_its_4_gib_file_size():
    images.check_output_size("BMP", 40_000, 30_000, channels=1)  # 1.2 GB of grey
    with pytest.raises(ImageError, match="too large for BMP"):
        images.check_output_size("BMP", 40_000, 40_000, channels=3)  # 4.8 GB of colour


def test_api_refuses_an_unstorable_output_before_computing(tmp_path, upscaler, monkeypatch):
    wide = png(tmp_path / "wide.png", size=(4096, 1))
    monkeypatch.setattr(Upscaler, "upscale_picture", lambda *a: pytest.fail("computed"))
    with pytest.raises(ImageError, match="too large for WEBP"):
        upscaler.upscale_file(wide, tmp_path / "wide.webp")


def test_an_encoder_error_in_a_writer_thread_fails_that_file_only(tmp_path, tiny_checkpoint,
                                                                  monkeypatch):
    for name in ("a", "b", "c"):
        png(tmp_path / "in" / f"{name}.png")
    write = images.write_image

    def flaky_write(picture, path, *args, **kwargs):
        if Path(path).stem == "b":
            raise RuntimeError("encoder exploded")
        return write(picture, path, *args, **kwargs)

    monkeypatch.setattr(images, "write_image", flaky_write)
    result = upscale(tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_checkpoint,
                     "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["written"], summary["failed"]) == (2, 1)
    assert json_files(result)[str(tmp_path / "in" / "b.png")]["reason"] == (
        "cannot write: RuntimeError: encoder exploded")


# ------------------------------------------------------------- 18. letter case


def fs_ignores_case(folder: Path) -> bool:
    """Whether the file system under ``folder`` ignores letter case (as macOS's does)."""
    (folder / "Case.probe").write_text("x")
    try:
        return (folder / "cASE.PROBE").exists()
    finally:
        (folder / "Case.probe").unlink()


@pytest.mark.parametrize("folder_ignores_case", [False, True])
def test_case_variants_clash_only_where_the_output_folder_ignores_case(
        tmp_path, tiny_checkpoint, monkeypatch, folder_ignores_case):
    if fs_ignores_case(tmp_path):
        pytest.skip("this file system ignores case: Photo.png and photo.png are one file")
    png(tmp_path / "in" / "Photo.png")
    png(tmp_path / "in" / "photo.png", colour=(0, 0, 255))
    monkeypatch.setattr(images.files, "ignores_case", lambda folder: folder_ignores_case,
                        raising=False)
    result = upscale(tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_checkpoint)
    if folder_ignores_case:
        assert result.exit_code == 1 and "is also the output of" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Photo.png",
                                                                        "photo.png"]


def test_output_differing_from_the_input_in_case_only(tmp_path, tiny_checkpoint):
    pic = png(tmp_path / "Pic.png")
    before = pic.read_bytes()
    result = upscale(pic, "-o", tmp_path / "pic.png", "--model", tiny_checkpoint)
    if fs_ignores_case(tmp_path):  # one file: it would overwrite the input
        assert result.exit_code == 1 and "would overwrite an input file" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert Image.open(tmp_path / "pic.png").size == (20, 16)
    assert pic.read_bytes() == before


def test_case_probe_agrees_with_the_file_system_and_leaves_nothing(tmp_path):
    (tmp_path / "Probe.txt").write_text("x")
    expected = fs_ignores_case(tmp_path)
    assert images.ignores_case(tmp_path) == expected
    assert images.ignores_case(tmp_path / "not" / "made" / "yet") == expected
    assert [p.name for p in tmp_path.iterdir()] == ["Probe.txt"]


# ------------------------------------------------------------- 21. malformed EXIF


def png_with_chunk(path: Path, kind: bytes, body: bytes) -> Path:
    """A 6x5 PNG with one extra chunk right after IHDR (CRC correct)."""
    buffer = io.BytesIO()
    Image.new("RGB", (6, 5), (10, 200, 30)).save(buffer, "PNG")
    data = buffer.getvalue()
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    path.write_bytes(data[:33] + chunk + data[33:])
    return path


@pytest.mark.parametrize("body", [b"garbage!", b"II*\x00", b"II*\x00\x08\x00"])
def test_malformed_exif_is_dropped_with_a_warning(tmp_path, tiny_checkpoint, body):
    src = png_with_chunk(tmp_path / "bad_exif.png", b"eXIf", body)
    picture = images.read_image(src)
    assert picture.exif is None and picture.warnings == ["malformed EXIF metadata dropped"]
    assert picture.size == (6, 5) and torch.allclose(
        picture.rgb[:, 0, 0], torch.tensor([10, 200, 30]) / 255)
    result = upscale(src, "-o", tmp_path / "out.jpg", "--model", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert "warning: malformed EXIF metadata dropped" in result.output
    assert Image.open(tmp_path / "out.jpg").size == (24, 20)


# ------------------------------------------------------------- 22. Pillow images and arrays


def test_pillow_image_gives_what_the_file_path_writes(tmp_path, upscaler):
    pixels = noise(5, 7, 3)
    src = tmp_path / "a.png"
    Image.fromarray(pixels).save(src)
    upscaler.upscale_file(src, tmp_path / "a_x4.png")
    out = upscaler.upscale_image(Image.fromarray(pixels))
    assert out.mode == "RGB" and out.size == (28, 20)
    assert np.array_equal(np.asarray(out), np.asarray(Image.open(tmp_path / "a_x4.png")))
    as_array = upscaler.upscale_image(pixels)
    assert as_array.dtype == np.uint8 and np.array_equal(as_array, np.asarray(out))


@pytest.mark.parametrize("mode, out_mode", [("RGBA", "RGBA"), ("L", "L"), ("LA", "LA"),
                                            ("I;16", "I;16"), ("P", "RGB"), ("1", "L"),
                                            ("CMYK", "RGB")])
def test_pillow_modes_come_back_as_the_file_path_writes_them(upscaler, mode, out_mode):
    image = Image.fromarray(noise(5, 6, 4)[:, :, :4], "RGBA").convert(mode)
    if mode == "I;16":
        image = Image.fromarray(noise(5, 6, 1, np.uint16)[:, :, 0])
    if mode == "CMYK":  # what the user should know comes as a Python warning
        with pytest.warns(UserWarning, match="CMYK converted to RGB"):
            out = upscaler.upscale_image(image)
    else:
        out = upscaler.upscale_image(image)
    assert (out.mode, out.size) == (out_mode, (24, 20))


def test_pillow_alpha_and_transparency_are_kept(upscaler):
    rgba = noise(6, 6, 4)
    rgba[:, :3, 3] = 0  # left half transparent
    rgba[:, 3:, 3] = 255
    out = np.asarray(upscaler.upscale_image(Image.fromarray(rgba, "RGBA")))
    assert out[:, :8, 3].max() < 30 and out[:, 16:, 3].min() > 225
    palette = Image.new("P", (6, 6))
    palette.info["transparency"] = 0
    assert upscaler.upscale_image(palette).mode == "RGBA"


def test_pillow_metadata_is_kept_and_orientation_applied(upscaler):
    image = Image.fromarray(noise(4, 6, 3))  # 6 wide, 4 high, stored on its side
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image.info.update(exif=exif_bytes(6), icc_profile=icc, dpi=(72.0, 96.0))
    out = upscaler.upscale_image(image)
    assert out.size == (16, 24), "orientation 6: turned upright, as srgan upscale does"
    assert out.getexif()[0x0112] == 1 and out.getexif()[0x010F] == "TestCam"
    assert out.info["icc_profile"] == icc
    assert out.info["dpi"] == pytest.approx((288.0, 384.0))


def test_16_bit_arrays_stay_16_bit_like_a_16_bit_png(tmp_path, upscaler):
    pixels = noise(5, 6, 3, np.uint16)
    (tmp_path / "a.png").write_bytes(images.png_codec._encode_png(pixels))
    upscaler.upscale_file(tmp_path / "a.png", tmp_path / "a_x4.png")
    from_file = images.read_image(tmp_path / "a_x4.png")
    out = upscaler.upscale_image(pixels)
    assert out.dtype == np.uint16 and out.shape == (20, 24, 3)
    assert torch.equal(torch.from_numpy(out.astype(np.int32)).permute(2, 0, 1),
                       images.quantise(from_file.rgb, 16).to(torch.int32))


@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 1), (5, 6, 2), (5, 6, 4)])
def test_array_layouts_are_kept_and_match_pillow_images(upscaler, shape):
    pixels = noise(5, 6, 4)[..., :shape[-1] if len(shape) == 3 else 1].reshape(shape)
    out = upscaler.upscale_image(pixels)
    assert out.shape == (20, 24, *shape[2:]) and out.dtype == np.uint8
    as_pillow = upscaler.upscale_image(Image.fromarray(pixels.squeeze(-1) if shape[-1] == 1
                                                       else pixels))
    assert np.array_equal(out.reshape(20, 24, -1), np.asarray(as_pillow).reshape(20, 24, -1))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5, 6, 3), np.float32), "use upscale_tensor"),
    (np.zeros((3, 5, 6), np.uint8), "channels first"),
    (np.zeros((5, 6, 3), np.int64), "got dtype int64"),
    (np.zeros((0, 6, 3), np.uint8), "empty"),
    (torch.zeros(3, 5, 6), "use upscale_tensor for tensors"),
    ([[0, 1]], "got builtins.list"),
])
def test_upscale_image_refuses_other_inputs_with_what_is_expected(upscaler, bad, message):
    with pytest.raises(InputError, match=message):
        upscaler.upscale_image(bad)


# ------------------------------------------------------------- 22. stdin and stdout


def png_bytes(size=(5, 4), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_stdin_to_stdout_in_the_inputs_format(tiny_checkpoint):
    result = upscale("-", "-o", "-", "--model", tiny_checkpoint, stdin=png_bytes())
    assert result.exit_code == 0, result.stderr
    out = Image.open(io.BytesIO(result.stdout_bytes))
    assert (out.format, out.size) == ("PNG", (20, 16))
    assert result.stderr == ""


def test_stdin_to_a_file_and_a_file_to_stdout_in_another_format(tmp_path, tiny_checkpoint):
    result = upscale("-", "-o", tmp_path / "b.jpg", "--model", tiny_checkpoint,
                     stdin=png_bytes())
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "b.jpg").format == "JPEG" and result.stdout_bytes == b""
    result = upscale(tmp_path / "b.jpg", "-o", "-", "--format", "webp", "--model",
                     tiny_checkpoint)
    assert result.exit_code == 0, result.stderr
    out = Image.open(io.BytesIO(result.stdout_bytes))
    assert (out.format, out.size) == ("WEBP", (80, 64))
    again = upscale("-", "-o", tmp_path / "b.jpg", "--model", tiny_checkpoint,
                    stdin=png_bytes())
    assert again.exit_code == 1 and "exists (use --overwrite" in again.stderr


def test_bad_stdin_is_one_line_and_nothing_on_stdout(tiny_checkpoint):
    result = upscale("-", "-o", "-", "--model", tiny_checkpoint, stdin=b"not an image")
    assert result.exit_code == 1
    assert result.stderr.strip() == "-: not an image file (or an unsupported format)"
    assert result.stdout_bytes == b""


@pytest.mark.parametrize("args, message", [
    (["-", "IN"], "must be the only input"),
    (["FOLDER", "-o", "-"], "exactly one input file"),
    (["IN", "IN", "-o", "-"], "exactly one input file"),
    (["-"], "needs -o FILE"),
    (["-", "-o", "FOLDER"], "not a folder"),
    (["-", "-o", "-", "--json"], "both write to standard output"),
    (["-", "-o", "x.png", "--format", "jpg"], "name different formats"),
])
def test_stream_usage_errors(tmp_path, tiny_checkpoint, args, message):
    png(tmp_path / "folder" / "in.png")
    names = {"IN": tmp_path / "folder" / "in.png", "FOLDER": tmp_path / "folder"}
    result = upscale(*[names.get(a, a) for a in args], "--model", tiny_checkpoint,
                     stdin=png_bytes())
    assert result.exit_code == 2 and message in result.stderr
    assert result.stdout_bytes == b""


def test_shell_pipe_through_a_real_process(tmp_path, tiny_checkpoint):
    """srgan upscale - -o - < a.png > b.png, as a shell runs it."""
    done = subprocess.run([sys.executable, "-m", "srgan_cli", "upscale", "-", "-o", "-",
                           "--model", str(tiny_checkpoint)], input=png_bytes((3, 2)),
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert Image.open(io.BytesIO(done.stdout)).size == (12, 8)
