"""`srgan train --out`: what may be a run folder, a failed start leaves none, a run that
stopped before its first save can simply be run again, and a user's own files are never
removed. Bad --out and --vgg-weights are one line before anything is written. CPU only,
offline, tiny networks and images made here."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import invoke, one_line_error, png
from safetensors.torch import save_file
from test_train import config_file, generator_step, log_records, tiny, tiny_train_config

from srgan_cli.errors import TrainingError
from srgan_cli.training.train import train
from srgan_cli.vgg import build_features

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


# ------------------------------------------------------------ what a run folder may be


def test_out_naming_a_file_or_a_folder_below_one_is_one_line(tmp_path, hr_dir):
    config = config_file(tmp_path, hr_dir)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out in (afile, afile / "sub"):
        result = invoke("train", "--config", config, "--out", out, "-q")
        one_line_error(result, f"{afile} is not a folder")
    assert afile.read_text() == "mine"


def test_a_users_files_named_like_run_files_are_never_removed(tmp_path, hr_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("# my own settings\nlr = 1e-4\n")
    config = tiny(hr_dir, pretrain_steps=1)
    with pytest.raises(TrainingError, match="holds config.toml but no state.safetensors to "
                                            "resume from: use --overwrite"):
        train(config, run)
    (run / "config.toml").unlink()
    (run / "generator.safetensors").write_bytes(b"weights of mine")
    with pytest.raises(TrainingError, match="holds generator.safetensors but no state"):
        train(config, run)
    assert (run / "generator.safetensors").read_bytes() == b"weights of mine"


# ----------------------------------------------------------------------- failed starts


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


def vgg_files(tmp_path: Path) -> list[tuple[str, Path]]:
    """Bad --vgg-weights files: corrupt bytes, a cut safetensors file, a VGG16 (not a VGG19)."""
    vgg16 = {f"features.{k}": v.contiguous() for k, v in
             build_features("vgg16", 16).state_dict().items()}
    metadata = {"mean": "[0.485, 0.456, 0.406]", "std": "[0.229, 0.224, 0.225]"}
    wrong = tmp_path / "vgg16.safetensors"
    save_file(vgg16, wrong, metadata)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x93NUMPY not a safetensors file at all" * 10)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(wrong.read_bytes()[:5000])
    return [("no such file", tmp_path / "missing.safetensors"),
            ("not a readable safetensors file", corrupt),
            ("not a readable safetensors file", cut),
            ("is not a torchvision vgg19 layout: missing features.16.weight and 17 more",
             wrong)]


def test_bad_vgg_weights_are_one_line_before_the_run_folder_is_written(tmp_path, hr_dir):
    config = config_file(tmp_path, hr_dir, phase="all", pretrain_steps=1, gan_steps=1,
                         vgg_layer="relu5_4")  # VGG16 and VGG19 differ only after relu2_2
    run = tmp_path / "run"
    for message, path in vgg_files(tmp_path):
        result = invoke("train", "--config", config, "--out", run, "--vgg-weights", path, "-q")
        one_line_error(result, message)
        assert f"error: --vgg-weights {path}: " in result.output or (
            f"error: --vgg-weights: {path} " in result.output), result.output
        assert not run.exists(), f"{message}: no run folder is left behind"


def crash_at(step):
    def on_step(done):
        if done == step:
            raise RuntimeError("crash in the first steps")
    return on_step


def test_a_run_that_stopped_before_its_first_save_can_simply_be_run_again(tmp_path, hr_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("my notes")
    config = tiny(hr_dir, pretrain_steps=3)
    with pytest.raises(RuntimeError, match="crash in the first steps"):
        train(config, run, on_step=crash_at(1))
    assert (run / "log.jsonl").is_file() and not (run / "state.safetensors").exists()

    with pytest.raises(TrainingError, match="no state.safetensors .*start it again without "
                                            "--resume"):
        train(config, run, resume=True)
    train(config, run)  # the same command again: the leftovers are the run's own
    assert [r["type"] for r in log_records(run)].count("start") == 1
    assert generator_step(run) == 3
    assert (run / "notes.txt").read_text() == "my notes", "a user's file is left alone"
