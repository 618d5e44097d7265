"""Real-world files through `srgan upscale`: every mode and format, bad input, interruptions,
and where the outputs go: what is never overwritten, output names and folders, letter case,
links in input folders, and the size limits of each output format."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_generator, one_line_error, png, run_cli
from PIL import Image
from test_images import exif_bytes, huge_png_header, make_corpus

from srgan_cli import Upscaler, images
from srgan_cli.checkpoints import save_checkpoint
from srgan_cli.cli import main
from srgan_cli.errors import ImageError
from srgan_cli.images import read_image
from srgan_cli.models import GeneratorConfig


def upscale(*args):
    return CliRunner().invoke(main, ["upscale", *map(str, args)])


def test_corpus_through_the_cli(tmp_path, tiny_checkpoint):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    expected = make_corpus(corpus)
    Image.new("RGB", (6, 4), "white").save(corpus / "phone.jpg", exif=exif_bytes(6))
    (corpus / "zero.png").write_bytes(b"")
    (corpus / "fake.jpg").write_text("hello")
    (corpus / "dir.png").mkdir()
    bomb = huge_png_header(tmp_path)
    bomb.rename(corpus / "bomb.png")

    result = upscale(corpus, "-o", tmp_path / "out", "--model", tiny_checkpoint, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    by_name = {f["input"].rsplit("/", 1)[-1]: f for f in summary["files"]}
    reasons = {name: by_name[name]["reason"] for name in
               ("zero.png", "fake.jpg", "dir.png", "bomb.png")}
    assert "empty" in reasons["zero.png"]
    assert "not an image" in reasons["fake.jpg"]
    assert "directory" in reasons["dir.png"]
    assert "--max-pixels" in reasons["bomb.png"]
    assert summary["failed"] == 4

    for name, props in expected.items():
        src = read_image(corpus / name)
        out_path = tmp_path / "out" / name.replace(".gif", ".png")  # GIF is read, not written
        assert by_name[name]["status"] == "written", (name, by_name[name])
        out = read_image(out_path)
        assert out.size == (src.size[0] * 4, src.size[1] * 4), name
        assert out.bit_depth == props["bit_depth"], name
        assert (out.alpha is not None) == props["alpha"], name
        assert out.grayscale == props["grayscale"], name
    phone = Image.open(tmp_path / "out" / "phone.jpg")
    assert phone.size == (16, 24), "rotated phone photo written upright"
    assert phone.getexif().get(0x0112, 1) == 1


def test_rerun_beside_inputs_does_not_upscale_earlier_outputs(tmp_path, tiny_checkpoint):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (5, 5), "red").save(tmp_path / name)
    assert upscale(tmp_path, "--model", tiny_checkpoint, "-q").exit_code == 0
    again = upscale(tmp_path, "--model", tiny_checkpoint, "--skip-existing", "--json")
    assert again.exit_code == 0
    summary = json.loads(again.stdout)
    assert (summary["written"], summary["skipped"], summary["failed"]) == (0, 4, 0)
    reasons = {f["input"].rsplit("/", 1)[-1]: f["reason"] for f in summary["files"]}
    assert reasons["a_x4.png"] == "earlier result of a.* beside it"  # listed, not upscaled
    assert reasons["a.png"] == "output exists"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a.png", "a_x4.png", "b.png",
                                                              "b_x4.png"]


def test_never_overwrites_inputs_and_reports_clashes(tmp_path, tiny_checkpoint):
    Image.new("RGB", (5, 5), "red").save(tmp_path / "a.png")
    Image.new("RGB", (5, 5), "blue").save(tmp_path / "a.jpg")
    same = upscale(tmp_path, "-o", tmp_path, "--suffix", "", "--model", tiny_checkpoint,
                   "--overwrite")
    assert same.exit_code == 1
    assert "would overwrite an input file" in same.output
    assert Image.open(tmp_path / "a.png").size == (5, 5)
    clash = upscale(tmp_path, "-o", tmp_path / "out", "--format", "png", "--model",
                    tiny_checkpoint)
    assert clash.exit_code == 1
    assert "is also the output of" in clash.output
    assert len(list((tmp_path / "out").iterdir())) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_killed_batch_leaves_no_partial_output_and_resumes(tmp_path, sig):
    # a model slow enough on 48x48 inputs that the batch is still running when killed
    model = save_checkpoint(make_generator(GeneratorConfig(num_blocks=4, channels=32)),
                            tmp_path / "slow.safetensors")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(40):
        Image.new("RGB", (48, 48), (i * 6, 100, 200)).save(src / f"img{i:02d}.png")
    args = [sys.executable, "-m", "srgan_cli", "upscale", str(src), "-o", str(out),
            "--model", str(model), "--device", "cpu", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.png"))) < 2:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr  # 130 Ctrl-C, 143 SIGTERM
    assert "Traceback" not in stderr
    done = sorted(out.glob("*.png"))
    assert 2 <= len(done) < 40, "killed mid-batch"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
    for path in done:
        assert Image.open(path).size == (192, 192)  # every output is complete
        Image.open(path).load()
    resumed = run_cli("upscale", str(src), "-o", str(out), "--model", str(model), "--device",
                      "cpu", "--skip-existing", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] == len(done) and summary["written"] == 40 - len(done)


def json_files(result) -> dict[str, dict]:
    return {f["input"]: f for f in json.loads(result.stdout)["files"]}


# ----------------------------------------------------------- what is never overwritten


def test_clash_between_file_arguments_is_refused(tmp_path, tiny_checkpoint):
    a_png, a_jpg = png(tmp_path / "a.png"), tmp_path / "a.jpg"
    Image.new("RGB", (5, 5), "blue").save(a_jpg)
    result = upscale(a_png, a_jpg, "-o", tmp_path / "out", "--format", "png", "--model",
                     tiny_checkpoint, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["written"], summary["failed"]) == (1, 1)
    assert "is also the output of" in summary["files"][0]["reason"]
    written = [f for f in summary["files"] if f["status"] == "written"]
    assert written[0]["input"] == str(a_png), "the first argument keeps the output"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


def test_clash_between_folder_arguments_is_refused(tmp_path, tiny_checkpoint):
    png(tmp_path / "d1" / "img.png")
    png(tmp_path / "d2" / "img.png", colour=(0, 0, 255))
    result = upscale(tmp_path / "d1", tmp_path / "d2", "-o", tmp_path / "out", "--model",
                     tiny_checkpoint)
    assert result.exit_code == 1
    assert "is also the output of" in result.output
    assert "1 written, 0 skipped, 1 failed" in result.output


def test_same_input_twice_is_done_once(tmp_path, tiny_checkpoint):
    a = png(tmp_path / "a.png")
    result = upscale(a, a, tmp_path, "-o", tmp_path / "out", "--model", tiny_checkpoint,
                     "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["written"], summary["failed"]) == (1, 0) and len(summary["files"]) == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


def test_overwrite_never_replaces_another_arguments_input(tmp_path, tiny_checkpoint):
    c, mine = png(tmp_path / "c.png"), png(tmp_path / "c_x4.png", size=(3, 3))
    result = upscale(c, mine, "--overwrite", "--model", tiny_checkpoint)
    assert result.exit_code == 1
    assert "would overwrite an input file" in result.output
    assert Image.open(mine).size == (3, 3), "the user's own c_x4.png is untouched"
    assert Image.open(tmp_path / "c_x4_x4.png").size == (12, 12)


def test_one_rule_for_earlier_results_in_every_output_mode(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    png(photos / "a.png")
    png(photos / "a_x4.png", size=(20, 20))  # the result of an earlier beside-input run
    png(photos / "logo_x4.png")  # the user's own file: no logo.* beside it
    result = upscale(photos, "-o", photos / "big", "--model", tiny_checkpoint, "--json")
    assert result.exit_code == 0, result.output
    files = {f["input"].rsplit("/", 1)[-1]: f for f in json.loads(result.stdout)["files"]}
    assert files["a_x4.png"]["status"] == "skipped"
    assert "earlier result of a" in files["a_x4.png"]["reason"]
    assert sorted(p.name for p in (photos / "big").iterdir()) == ["a.png", "logo_x4.png"]
    beside = upscale(photos, "--model", tiny_checkpoint, "--json", "--skip-existing")
    assert beside.exit_code == 0, beside.output
    assert (photos / "logo_x4_x4.png").is_file(), "the user's own *_x4 file is upscaled"
    reasons = {f["input"].rsplit("/", 1)[-1]: f["reason"] for f in
               json.loads(beside.stdout)["files"] if f["status"] == "skipped"}
    assert reasons["a_x4.png"].startswith("earlier result")


# ------------------------------------------------------------ output names and folders


def test_trailing_slash_output_is_a_folder(tmp_path, tiny_checkpoint):
    a = png(tmp_path / "a.png")
    result = upscale(a, "-o", f"{tmp_path / 'results.v2'}/", "--model", tiny_checkpoint, "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results.v2" / "a.png").is_file()


def test_unwritable_output_folder_fails_before_any_work(tmp_path, tiny_checkpoint):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result = upscale(png(tmp_path / "a.png"), "-o", blocker / "out", "--model", tiny_checkpoint)
    one_line_error(result)
    assert "cannot write to" in result.output and "is not a folder" in result.output
    assert "written" not in result.output, "refused before any image was upscaled"


def test_output_name_too_long_fails_only_that_file(tmp_path, tiny_checkpoint):
    png(tmp_path / "in" / ("n" * 251 + ".png"))
    png(tmp_path / "in" / "ok.png")
    result = upscale(tmp_path / "in", "--model", tiny_checkpoint, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["written"], summary["failed"]) == (1, 1)
    failed = next(f for f in summary["files"] if f["status"] == "failed")
    assert "too long for the file system" in failed["reason"]
    assert (tmp_path / "in" / "ok_x4.png").is_file()


# ------------------------------------------------------------------------- letter case


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
    pic = png(tmp_path / "Pic.png", size=(5, 4))
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


# ------------------------------------- links and unreadable folders in an input folder


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


# ------------------------------------------------ format size limits and writer errors


def wide_and_small(folder: Path, width: int) -> tuple[Path, Path]:
    return png(folder / "a_wide.png", size=(width, 1)), png(folder / "b_small.png", size=(5, 4))


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
