"""Issue 15, hardening: nothing overwritten that was promised safe, no silently wrong output,
one clear line (exit 1) for every expected failure, exit 2 for usage errors."""

import json
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_generator, run_cli
from PIL import Image, PngImagePlugin
from test_images import exif_bytes

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
    assert "written" not in result.output, "refused before any image was upscaled"


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
    data = images.png_codec._encode_png(pixels)
    head = len(images.png_codec._PNG_SIGNATURE) + 25  # signature + IHDR chunk
    trns = images.png_codec._png_chunk(b"tRNS", struct.pack(">HHH", 1000, 2000, 3000))
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
        data = images.png_codec._encode_png(np.full((4, 4, 3), 999, np.uint16))
        head = len(images.png_codec._PNG_SIGNATURE) + 25
        chunk = images.png_codec._png_chunk
        chunks = chunk(b"gAMA", struct.pack(">I", 45455)) + chunk(b"sRGB", b"\x00")
        src.write_bytes(data[:head] + chunks + data[head:])
    assert upscale(src, "--model", tiny_checkpoint, "-q").exit_code == 0
    out = Image.open(tmp_path / "g_x4.png")
    assert out.info.get("gamma") == 0.45455 and out.info.get("srgb") == 0
    assert read_image(tmp_path / "g_x4.png").bit_depth == bits


# ----------------------------------------------------------------------- checkpoints, Hub


@pytest.mark.parametrize("metadata, message", [
    ({"config": json.dumps({"scale": 3, "num_blocks": 1, "channels": 8})}, "scale must be"),
    ({"config": "{not json"}, "bad checkpoint metadata"),
    ({"config": json.dumps({"scale": 4, "num_blocks": 1, "channels": -8})}, "invalid"),
    ({"config": "[1, 2]"}, "not a JSON object"),
    ({"format_version": "one"}, "not a number"),
])
def test_bad_checkpoint_metadata_is_one_line(tmp_path, metadata, message):
    from srgan_cli.checkpoints import checkpoint_metadata, save_safetensors
    from srgan_cli.models import GeneratorConfig

    gen = make_generator()
    meta = {**checkpoint_metadata(GeneratorConfig(num_blocks=1, channels=8)), **metadata}
    model = save_safetensors(gen.state_dict(), tmp_path / "bad.safetensors", meta)
    result = upscale(png(tmp_path / "a.png"), "--model", model)
    one_line_error(result)
    assert message in result.output and "bad.safetensors" in result.output


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_hub_offline_says_so(tmp_path, env):
    proc = run_cli("upscale", str(png(tmp_path / "a.png")), "--model",
                   "hf://me/sr/tiny.safetensors", env={"HF_HOME": str(tmp_path / "hf"), **env})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot reach the Hugging Face Hub and the file is not in the local cache" in (
        proc.stderr)


def test_hub_pickle_is_refused_before_the_network(tmp_path):
    from srgan_cli.checkpoints import resolve_model
    from srgan_cli.errors import CheckpointError

    with pytest.raises(CheckpointError, match="it is a Python pickle"):
        resolve_model("hf://nobody/nothing/model.pth")  # no network: refused by its name


# ----------------------------------------------------------------------- train


def tiny_train_config(tmp_path, **extra):
    config = tmp_path / "tiny.toml"
    values = {"num_blocks": 1, "channels": 8, "patch_size": 16, "batch_size": 2,
              "device": "cpu", "phase": "pretrain", **extra}
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return config


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_train_steps_below_one_is_a_usage_error(tmp_path, steps):
    png(tmp_path / "hr" / "a.png", size=(32, 32))
    result = invoke("train", "--data", tmp_path / "hr", "--out", tmp_path / "run",
                    "--steps", steps, "-q")
    assert result.exit_code == 2 and not (tmp_path / "run").exists()


def test_config_with_zero_steps_in_every_phase_is_refused(tmp_path):
    png(tmp_path / "hr" / "a.png", size=(32, 32))
    config = tiny_train_config(tmp_path, pretrain_steps=0)
    result = invoke("train", "--data", tmp_path / "hr", "--out", tmp_path / "run",
                    "--config", config, "-q")
    one_line_error(result)
    assert "0 steps to train" in result.output and not (tmp_path / "run").exists()


def test_config_file_steps_key_and_unknown_keys(tmp_path):
    from srgan_cli.training.config import load_config

    assert load_config(tiny_train_config(tmp_path, steps=7)).pretrain_steps == 7
    with pytest.raises(Exception, match="unknown training option 'stepz'; the options are: "
                                        "data, val, scale"):
        load_config(tiny_train_config(tmp_path, stepz=7))


def test_yaml_syntax_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\n  lr: [1e-4\n")
    png(tmp_path / "hr" / "a.png", size=(32, 32))
    result = invoke("train", "--data", tmp_path / "hr", "--out", tmp_path / "run",
                    "--config", bad)
    one_line_error(result)
    error_lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "line 2, column" in error_lines[0], result.output


def test_bad_training_images_are_skipped_and_a_failed_start_leaves_no_run(tmp_path):
    hr = tmp_path / "hr"
    png(hr / "good.png", size=(32, 32))
    png(tmp_path / "whole.png", size=(64, 64))
    (hr / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])  # truncated
    png(hr / "small.png", size=(2, 2))
    run = tmp_path / "run"
    config = tiny_train_config(tmp_path, steps=1, val=[str(tmp_path / "missing")])
    failed = invoke("train", "--data", hr, "--out", run, "--config", config)
    one_line_error(failed)
    assert not run.exists(), "a run that never started leaves no run folder"
    config = tiny_train_config(tmp_path, steps=1)
    result = invoke("train", "--data", hr, "--out", run, "--config", config)
    assert result.exit_code == 0, result.output
    assert f"{hr / 'cut.png'}: skipped (truncated or corrupt image data)" in result.output
    assert f"{hr / 'small.png'}: skipped (2x2 is smaller than the 16 px patch)" in result.output
    assert (run / "generator.safetensors").is_file()


def test_ctrl_c_during_start_up_is_one_line():
    # Ctrl-C 20 ms after the entry point starts: torch and the CLI are still importing
    script = ("import signal, sys\n"
              "from srgan_cli.__main__ import run\n"
              "def stop(*_):\n    raise KeyboardInterrupt\n"
              "signal.signal(signal.SIGALRM, stop)\n"
              "signal.setitimer(signal.ITIMER_REAL, 0.02)\n"
              "sys.argv = ['srgan', 'models']\n"
              "run()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "interrupted\n"


# ----------------------------------------------------------------------- benchmark


def test_benchmark_reads_like_upscale_and_writes_valid_json(tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    ramp = (np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) * 28).astype(np.uint16)
    Image.fromarray(ramp).save(data / "grey16.png")  # I;16: convert("RGB") clipped to white
    png(tmp_path / "whole.png", size=(48, 48))
    (data / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    png(data / "small.png", size=(3, 3))
    Image.new("RGB", (48, 32), "white").save(data / "phone.jpg", exif=exif_bytes(6))
    result = invoke("benchmark", "--data", data, "-m", "bicubic", "--json", "--per-image")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout, parse_constant=lambda token: pytest.fail(token))
    psnr = {s["image"]: s["psnr_y"] for s in doc["per_image"]}
    assert psnr["grey16"] is not None and psnr["grey16"] < 60, "a real ramp, not all white"
    assert psnr["phone"] is None, "identical white images: +inf dB is written as null"
    assert {Path(s["path"]).name for s in doc["skipped"]} == {"cut.png", "small.png"}


def test_benchmark_applies_exif_orientation(tmp_path):
    from srgan_cli.benchmark import load_dataset

    data = tmp_path / "set"
    data.mkdir()
    Image.new("RGB", (48, 32), "white").save(data / "phone.jpg", exif=exif_bytes(6))
    (name, image), = load_dataset(data)[0]
    assert image.size == (32, 48)


def test_benchmark_never_replaces_earlier_saved_images(tmp_path):
    data = tmp_path / "set"
    png(data / "a.png", size=(48, 48))
    args = ["benchmark", "--data", data, "-m", "bicubic", "--save-images", tmp_path / "sr",
            "--compare", tmp_path / "cmp"]
    assert invoke(*args).exit_code == 0
    saved = tmp_path / "sr" / "set" / "bicubic" / "a.png"
    saved.write_bytes(b"mine")
    again = invoke(*args)
    one_line_error(again)
    assert "exists" in again.output and "--overwrite" in again.output
    assert saved.read_bytes() == b"mine"
    assert invoke(*args, "--overwrite").exit_code == 0
    assert Image.open(saved).size == (48, 48)


@pytest.mark.parametrize("delay", [0.2, 0.8, 2.0])
def test_a_real_sigint_during_imports_never_gives_a_traceback(delay):
    """SIGINT is held back while modules import (a half-imported numpy would fail later)."""
    import time

    # "ready" once the interpreter runs our code, so the signal never hits Python's start-up
    script = ("import sys\nsys.stderr.write('ready\\n'); sys.stderr.flush()\n"
              "from srgan_cli.__main__ import run\nsys.argv = ['srgan', 'models']\nrun()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline() == "ready\n"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    if proc.returncode == -signal.SIGINT:  # it had finished and was shutting down
        assert "srresnet-x4" in out
        return
    assert proc.returncode in (0, 130), err
    if proc.returncode == 130:
        assert err == "interrupted\n"
