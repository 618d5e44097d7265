"""Issue 15, hardening: nothing overwritten that was promised safe, no silently wrong output,
one clear line (exit 1) for every expected failure, exit 2 for usage errors."""

import json
import struct

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_generator
from PIL import Image, PngImagePlugin

from srgan_cli import InputError, Upscaler, images
from srgan_cli.checkpoints import save_checkpoint
from srgan_cli.cli import main
from srgan_cli.errors import ImageError
from srgan_cli.images import read_image


def invoke(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def upscale(*args):
    return invoke("upscale", *args)


def png(path, size=(5, 5), colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def one_line_error(result, exit_code=1):
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# ----------------------------------------------------------------------- 1. data loss


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
    result = upscale(a, a, tmp_path, "-o", tmp_path / "out", "--model", tiny_checkpoint, "-q")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


def test_overwrite_never_replaces_another_arguments_input(tmp_path, tiny_checkpoint):
    c, mine = png(tmp_path / "c.png"), png(tmp_path / "c_x4.png", size=(3, 3))
    result = upscale(c, mine, "--overwrite", "--model", tiny_checkpoint)
    assert result.exit_code == 1
    assert "would overwrite an input file" in result.output
    assert Image.open(mine).size == (3, 3), "the user's own c_x4.png is untouched"
    assert Image.open(tmp_path / "c_x4_x4.png").size == (12, 12)


def test_api_upscale_file_never_overwrites_unless_asked(tmp_path):
    up = Upscaler(make_generator(), device="cpu")
    src, dst = png(tmp_path / "a.png"), png(tmp_path / "b.png", size=(2, 2))
    with pytest.raises(ImageError, match="overwrite the input"):
        up.upscale_file(src, src, overwrite=True)
    with pytest.raises(ImageError, match="exists"):
        up.upscale_file(src, dst)
    assert Image.open(src).size == (5, 5) and Image.open(dst).size == (2, 2)
    up.upscale_file(src, dst, overwrite=True)
    assert Image.open(dst).size == (20, 20)


# ----------------------------------------------------------------------- 2. wrong output


def test_tiny_inputs_are_padded_not_darkened():
    up = Upscaler(make_generator(), device="cpu", precision="fp32")
    flat = up.upscale_tensor(torch.full((3, 16, 16), 0.5))
    for side in (1, 2, 3):
        small = up.upscale_tensor(torch.full((3, side, side), 0.5))
        assert small.shape == (3, 4 * side, 4 * side)
        top = (16 - side) // 2 * 4
        torch.testing.assert_close(small, flat[:, top:top + 4 * side, top:top + 4 * side])


def test_nan_weights_fail_the_file_instead_of_writing_black(tmp_path):
    gen = make_generator()
    with torch.no_grad():
        gen.head[0].weight.fill_(float("nan"))
    model = save_checkpoint(gen, tmp_path / "nan.safetensors")
    result = upscale(png(tmp_path / "a.png"), "-o", tmp_path / "out.png", "--model", model)
    one_line_error(result)
    assert "NaN" in result.output
    assert not (tmp_path / "out.png").exists()


def test_output_file_and_format_that_disagree_are_a_usage_error(tmp_path, tiny_checkpoint):
    result = upscale(png(tmp_path / "a.png"), "-o", tmp_path / "x.png", "--format", "jpg",
                     "--model", tiny_checkpoint)
    assert result.exit_code == 2 and "different formats" in result.output
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------- 3. one line, exit 2


@pytest.mark.parametrize("device, message", [
    ("tpu", "unknown device 'tpu'"),
    ("xla", "not supported"),
    ("cuda", "CUDA is not available"),
    ("mps", "MPS (Apple Metal) is not available"),
    ("nonsense", "unknown device"),
])
def test_unavailable_devices_are_one_line(tmp_path, tiny_checkpoint, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    result = upscale(png(tmp_path / "a.png"), "--model", tiny_checkpoint, "--device", device)
    one_line_error(result)
    assert message in result.output


@pytest.mark.parametrize("args", [
    ("--quality", "150"), ("--quality", "-5"), ("--quality", "1000", "--format", "webp"),
    ("--shard", "1/1"), ("--shard", "x"), ("--suffix", "../x"), ("--max-pixels", "-1"),
])
def test_bad_option_values_are_usage_errors(tmp_path, tiny_checkpoint, args):
    result = upscale(png(tmp_path / "a.png"), "--model", tiny_checkpoint, *args)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "a_x4.png").exists() and not (tmp_path / "a_x4.webp").exists()


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


@pytest.mark.parametrize("bad, message", [
    (torch.full((3, 4, 4), 128, dtype=torch.uint8), "dtype uint8"),
    (torch.full((3, 4, 4), 128.0), "divide 0-255 images by 255"),
    (torch.rand(1, 4, 4), "1 channels"),
    (torch.rand(4, 4, 4), "4 channels"),
    (torch.rand(4, 4, 3), "channels last"),
    (torch.rand(4, 4), "2-D tensor"),
    (torch.rand(1, 1, 3, 4, 4), "5-D tensor"),
    (np.zeros((4, 4, 3), np.uint8), "torch.from_numpy"),
    (torch.full((3, 4, 4), float("nan")), "NaN"),
])
def test_api_refuses_wrong_tensors_with_what_is_expected(bad, message):
    up = Upscaler(make_generator(), device="cpu")
    with pytest.raises(InputError, match="expected a float torch.Tensor") as info:
        up.upscale_tensor(bad)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------------- 4. rough edges


def test_trailing_slash_output_is_a_folder(tmp_path, tiny_checkpoint):
    a = png(tmp_path / "a.png")
    result = upscale(a, "-o", f"{tmp_path / 'results.v2'}/", "--model", tiny_checkpoint, "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results.v2" / "a.png").is_file()


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


def test_unwritable_output_folder_fails_before_any_work(tmp_path, tiny_checkpoint):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result = upscale(png(tmp_path / "a.png"), "-o", blocker / "out", "--model", tiny_checkpoint)
    one_line_error(result)
    assert "cannot write to" in result.output and "is not a folder" in result.output


def test_grey_png_with_a_transparent_level_keeps_its_transparency(tmp_path, tiny_checkpoint):
    src = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 255], [128, 0]], np.uint8), "L").save(src, transparency=0)
    picture = read_image(src)
    assert picture.grayscale and picture.alpha is not None
    assert picture.alpha[0].tolist() == [[0, 1], [1, 0]]
    assert upscale(src, "--model", tiny_checkpoint, "-q").exit_code == 0
    assert Image.open(tmp_path / "grey_x4.png").mode == "LA"


def test_16bit_rgb_png_with_a_transparent_colour_keeps_its_transparency(tmp_path):
    pixels = np.array([[[1000, 2000, 3000], [7, 8, 9]]], np.uint16)  # (1, 2, 3)
    data = images._encode_png16(pixels, None, None, None)
    head = len(images._PNG_SIGNATURE) + 25  # signature + IHDR chunk
    trns = images._png_chunk(b"tRNS", struct.pack(">HHH", 1000, 2000, 3000))
    src = tmp_path / "rgb16.png"
    src.write_bytes(data[:head] + trns + data[head:])
    picture = read_image(src)
    assert picture.bit_depth == 16 and picture.alpha is not None
    assert picture.alpha[0].tolist() == [[0.0, 1.0]]
    assert picture.rgb[:, 0, 1].mul(65535).round().tolist() == [7, 8, 9]


def test_lab_tiff_is_written_as_rgb_not_rgba(tmp_path, tiny_checkpoint):
    src = tmp_path / "lab.tif"
    Image.new("LAB", (4, 4), (50, 10, 20)).save(src)
    assert read_image(src).alpha is None
    assert upscale(src, "--model", tiny_checkpoint, "-q").exit_code == 0
    assert Image.open(tmp_path / "lab_x4.tif").mode == "RGB"


@pytest.mark.parametrize("bits", [8, 16])
def test_png_gamma_and_srgb_chunks_are_kept(tmp_path, tiny_checkpoint, bits):
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", 45455))
    info.add(b"sRGB", b"\x00")
    src = tmp_path / "g.png"
    if bits == 8:
        Image.new("RGB", (4, 4), (10, 200, 30)).save(src, pnginfo=info)
    else:
        data = images._encode_png16(np.full((4, 4, 3), 999, np.uint16), None, None, None)
        head = len(images._PNG_SIGNATURE) + 25
        chunks = images._png_chunk(b"gAMA", struct.pack(">I", 45455)) + images._png_chunk(
            b"sRGB", b"\x00")
        src.write_bytes(data[:head] + chunks + data[head:])
    assert upscale(src, "--model", tiny_checkpoint, "-q").exit_code == 0
    out = Image.open(tmp_path / "g_x4.png")
    assert out.info.get("gamma") == 0.45455 and out.info.get("srgb") == 0
    assert read_image(tmp_path / "g_x4.png").bit_depth == bits
