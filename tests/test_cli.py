"""`srgan upscale` end to end through the CLI: files, folders, exit codes, messages, and the
option checks of every command: a usage error (exit 2) or one line (exit 1), never a traceback."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import invoke, make_generator, one_line_error, png, run_cli
from PIL import Image

from srgan_cli import checkpoints
from srgan_cli.checkpoints import save_checkpoint
from srgan_cli.cli import main


def make_png(path, size=(10, 8), color=(10, 120, 200)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def upscale(*args):
    return CliRunner().invoke(main, ["upscale", *map(str, args)])


def test_single_file(tmp_path, tiny_checkpoint):
    src = make_png(tmp_path / "a.png")
    result = upscale(src, "-o", tmp_path / "out.png", "--model", tiny_checkpoint, "-q")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").size == (40, 32)


def test_default_output_is_beside_the_input_with_a_suffix(tmp_path, tiny_checkpoint):
    src = make_png(tmp_path / "a.png")
    assert upscale(src, "--model", tiny_checkpoint, "-q").exit_code == 0
    assert (tmp_path / "a_x4.png").is_file()
    assert Image.open(src).size == (10, 8), "input untouched"


def test_folder_keeps_subfolders_and_reports_failures(tmp_path, tiny_checkpoint):
    make_png(tmp_path / "in" / "a.png")
    make_png(tmp_path / "in" / "sub" / "b.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"definitely not a png")
    result = upscale(tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_checkpoint,
                     "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["written"], summary["failed"]) == (2, 1)
    assert (tmp_path / "out" / "a.png").is_file()
    assert (tmp_path / "out" / "sub" / "b.png").is_file()
    failed = [f for f in summary["files"] if f["status"] == "failed"]
    assert failed[0]["input"].endswith("broken.png")


def test_existing_outputs_are_not_overwritten_by_accident(tmp_path, tiny_checkpoint):
    src = make_png(tmp_path / "a.png")
    out = make_png(tmp_path / "out.png", size=(3, 3))
    result = upscale(src, "-o", out, "--model", tiny_checkpoint, "-q")
    assert result.exit_code == 1
    assert "exists (use --overwrite or --skip-existing)" in result.output
    assert Image.open(out).size == (3, 3)
    assert upscale(src, "-o", out, "--model", tiny_checkpoint, "-q", "--skip-existing"
                   ).exit_code == 0
    assert Image.open(out).size == (3, 3)
    assert upscale(src, "-o", out, "--model", tiny_checkpoint, "-q", "--overwrite").exit_code == 0
    assert Image.open(out).size == (40, 32)


def test_missing_input_is_one_line_and_exit_1(tmp_path, tiny_checkpoint):
    src = make_png(tmp_path / "a.png")
    result = upscale(src, tmp_path / "ghost.png", "-o", tmp_path / "out", "--model",
                     tiny_checkpoint)
    assert result.exit_code == 1
    assert "ghost.png: no such file or folder" in result.output
    assert (tmp_path / "out" / "a.png").is_file()


def test_usage_errors_exit_2(tmp_path, tiny_checkpoint):
    assert upscale().exit_code == 2
    assert upscale(tmp_path, "--tile", "abc").exit_code == 2
    src = make_png(tmp_path / "a.png")
    result = upscale(src, "--skip-existing", "--overwrite", "--model", tiny_checkpoint)
    assert result.exit_code == 2


def test_default_model_missing_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "weights_dir", lambda: tmp_path / "empty")
    src = make_png(tmp_path / "a.png")
    result = upscale(src, "-o", tmp_path / "out.png")
    assert result.exit_code == 1
    assert f"model '{checkpoints.DEFAULT_MODEL}' is not available" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.png").exists()


def test_bad_model_file_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "m.pth"
    bad.write_bytes(b"\x80\x04junk")
    src = make_png(tmp_path / "a.png")
    proc = run_cli("upscale", str(src), "--model", str(bad))
    assert proc.returncode == 1
    assert "pickle" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("--debug", "upscale", str(src), "--model", str(bad))
    assert "Traceback" in proc.stderr


@pytest.mark.parametrize("fmt,ext", [("jpg", ".jpg"), ("webp", ".webp")])
def test_format_option(tmp_path, tiny_checkpoint, fmt, ext):
    make_png(tmp_path / "in" / "a.png")
    result = upscale(tmp_path / "in", "-o", tmp_path / "out", "--format", fmt, "--model",
                     tiny_checkpoint, "-q")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / f"a{ext}").size == (40, 32)


def test_slow_reduced_precision_on_cpu_is_warned(tmp_path, tiny_checkpoint, monkeypatch):
    import srgan_cli.precision as precision_module

    monkeypatch.setattr(precision_module, "cpu_lacks_fast", lambda dtype: dtype is not None)
    src = make_png(tmp_path / "a.png")
    result = upscale(src, "--model", tiny_checkpoint, "--device", "cpu", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert "warning: this CPU has no bf16 instructions" in result.output
    result = upscale(src, "--model", tiny_checkpoint, "--device", "cpu", "--overwrite")
    assert "warning" not in result.output


def test_ci_runs_exactly_the_readme_test_command():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = (root / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.startswith("python3 -m pip install uv && ")
    assert command in (root / "README.md").read_text()


# ---------------------------------------------------------------- usage errors: exit 2


def test_output_file_and_format_that_disagree_are_a_usage_error(tmp_path, tiny_checkpoint):
    result = upscale(png(tmp_path / "a.png"), "-o", tmp_path / "x.png", "--format", "jpg",
                     "--model", tiny_checkpoint)
    assert result.exit_code == 2 and "different formats" in result.output
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args", [
    ("--quality", "150"), ("--quality", "-5"), ("--quality", "1000", "--format", "webp"),
    ("--shard", "1/1"), ("--shard", "x"), ("--suffix", "../x"), ("--max-pixels", "-1"),
])
def test_bad_option_values_are_usage_errors(tmp_path, tiny_checkpoint, args):
    result = upscale(png(tmp_path / "a.png"), "--model", tiny_checkpoint, *args)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "a_x4.png").exists() and not (tmp_path / "a_x4.webp").exists()


def test_cli_option_errors_are_usage_errors(tmp_path, tiny_checkpoint):
    Image.new("RGB", (5, 5)).save(tmp_path / "a.png")
    for option in (["--tile", "-5"], ["--tile", "big"], ["--max-memory", "4 bananas"],
                   ["--max-memory", "0"], ["--outscale", "0"], ["--outscale", "-2"],
                   ["--png-compression", "10"]):
        result = upscale(tmp_path / "a.png", "--model", tiny_checkpoint, *option)
        assert result.exit_code == 2, (option, result.output)
        assert "Traceback" not in result.output


@pytest.mark.parametrize("option", [
    ["--outscale", "1e9"], ["--outscale", "1000"], ["--outscale", "17"],
    ["--max-memory", "1e400"], ["--max-memory", "1" + "0" * 400],
])
def test_absurd_outscale_and_max_memory_are_usage_errors(tmp_path, tiny_checkpoint, option):
    result = upscale(png(tmp_path / "a.png"), "--model", tiny_checkpoint, *option)
    one_line_error(result, exit_code=2)
    assert not (tmp_path / "a_x4.png").exists()


@pytest.mark.parametrize("args", [
    ["upscale", "a.png", "--perception", "nan"],
    ["upscale", "a.png", "--outscale", "nan"],
    ["upscale", "a.png", "--outscale", "inf"],
    ["benchmark", "--perception", "nan"],
    ["benchmark", "--perception", "inf"],
    ["train", "--out", "run", "--lr", "nan"],
    ["train", "--out", "run", "--ema", "inf"],
])
def test_nan_and_infinity_in_float_options_are_usage_errors(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    png(tmp_path / "a.png")
    result = invoke(*args)
    one_line_error(result, exit_code=2)
    assert "is not a finite number" in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "a_x4.png").exists()


# -------------------------------------------------------------------- one line: exit 1


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


def test_nan_weights_fail_the_file_instead_of_writing_black(tmp_path):
    gen = make_generator()
    with torch.no_grad():
        gen.head[0].weight.fill_(float("nan"))
    model = save_checkpoint(gen, tmp_path / "nan.safetensors")
    result = upscale(png(tmp_path / "a.png"), "-o", tmp_path / "out.png", "--model", model)
    one_line_error(result)
    assert "NaN" in result.output
    assert not (tmp_path / "out.png").exists()
