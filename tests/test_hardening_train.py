"""`srgan train` hardening, second pass: SIGTERM, phase changes on resume, config checks
that name the key, bad --out and --vgg-weights, and run folders that never get stuck.
CPU only, offline, tiny networks and images made here."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from safetensors.torch import save_file
from test_train import assert_same_states, log_records, tiny

from srgan_cli.checkpoints import read_metadata
from srgan_cli.cli import main
from srgan_cli.errors import TrainingError
from srgan_cli.training.config import load_config, make_config, save_config
from srgan_cli.training.train import NothingToTrain, train
from srgan_cli.vgg import build_features


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    """The CLI installs a SIGTERM handler in this process: put the earlier ones back."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def invoke(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, text: str, exit_code: int = 1) -> None:
    """The command failed with ``exit_code`` and one ``error:`` line containing ``text``."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.output  # no traceback
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], result.output


def config_file(tmp_path: Path, hr_dir: Path, name: str = "tiny.toml", **options) -> Path:
    return save_config(tiny(hr_dir, **options), tmp_path / name)


def generator_step(run_dir: Path) -> int:
    return json.loads(read_metadata(run_dir / "generator.safetensors")["training"])["step"]


# --------------------------------------------------------------------------- 1: SIGTERM

SIGTERM_AT_STEP_2 = """
import signal, sys
from srgan_cli.training import train as train_module
real_train = train_module.train

def on_step(step):
    if step == 2:
        signal.raise_signal(signal.SIGTERM)

train_module.train = lambda *args, **kwargs: real_train(*args, on_step=on_step, **kwargs)
from srgan_cli.__main__ import run
sys.argv = ["srgan", "train", *sys.argv[1:]]
run()
"""


def test_sigterm_saves_the_step_exits_143_and_resumes_bit_for_bit(tmp_path, hr_dir):
    config = tiny(hr_dir, pretrain_steps=4, pretrain_schedule="cosine")
    train(config, tmp_path / "straight")
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", SIGTERM_AT_STEP_2, "--config",
         str(save_config(config, tmp_path / "tiny.toml")), "--out", str(run), "-q"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"terminated at step 2: saved {run}" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "terminated"
    assert generator_step(run) == 2, "SIGTERM saved the step it stopped at"
    assert [r["step"] for r in log_records(run) if r["type"] == "train"] == [1, 2]

    train(config, run, resume=True)
    assert_same_states(tmp_path / "straight", run)


DDP_SIGTERM = """
import os, signal, sys
import torch.distributed as dist
from srgan_cli.signals import Interrupted
from srgan_cli.training.config import load_config
from srgan_cli.training.train import train

rank, steps = int(os.environ["RANK"]), []

def on_step(step):
    steps.append(step)
    if rank == 1 and step == 2:  # only one rank gets the signal
        signal.raise_signal(signal.SIGTERM)

try:
    train(load_config(sys.argv[1]), sys.argv[2], on_step=on_step)
except Interrupted as e:
    print(f"rank {rank} stopped after step {steps[-1]} by signal {e.signum}", flush=True)
    dist.destroy_process_group()
    sys.exit(128 + e.signum)
"""


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path, hr_dir):
    config = config_file(tmp_path, hr_dir, pretrain_steps=6, batch_size=4, workers=0)
    run = tmp_path / "run"
    script = tmp_path / "ddp_sigterm.py"
    script.write_text(DDP_SIGTERM)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", str(script), str(config), str(run)], capture_output=True, text=True,
        timeout=300, cwd=tmp_path)
    for rank in (0, 1):
        assert f"rank {rank} stopped after step 2 by signal 15" in proc.stdout, (
            proc.stdout + proc.stderr[-3000:])
    assert generator_step(run) == 2
    assert [r["step"] for r in log_records(run) if r["type"] == "train"] == [1, 2]


# --------------------------------------------------------------------------- 2: resume


def test_resume_in_another_phase_is_refused_and_changes_nothing(tmp_path, hr_dir):
    run = tmp_path / "run"
    train(tiny(hr_dir, pretrain_steps=2), run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for steps in ("2", "3"):
        result = invoke("train", "--out", run, "--resume", "--phase", "gan", "--steps", steps,
                        "-q")
        one_line_error(result, "saved in the pretrain phase at step 2, which --phase gan "
                               "does not continue; resume with --phase all")
        assert "trained generator" not in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_with_phase_all_starts_the_gan_phase_at_its_own_step_0(tmp_path, hr_dir):
    run = tmp_path / "run"
    train(tiny(hr_dir, pretrain_steps=2, gan_schedule="step", lr=1e-3), run)
    result = invoke("train", "--out", run, "--resume", "--phase", "all", "--steps", "2", "-q")
    assert result.exit_code == 0, result.output
    gan = [r for r in log_records(run) if r["type"] == "train" and r["phase"] == "gan"]
    assert [(r["step"], r["lr"]) for r in gan] == [(3, 1e-3), (4, pytest.approx(1e-4))]


@pytest.mark.parametrize("steps", ["1", "2"])
def test_resume_with_no_steps_left_says_so_and_changes_nothing(tmp_path, hr_dir, steps):
    run = tmp_path / "run"
    train(tiny(hr_dir, pretrain_steps=2), run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = invoke("train", "--out", run, "--resume", "--steps", steps, "-q")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "already at step 2: nothing to train"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    with pytest.raises(NothingToTrain, match="already at step 2: nothing to train"):
        train(tiny(hr_dir, pretrain_steps=2), run, resume=True)


def test_resume_past_the_end_of_a_phase_that_another_follows_is_refused(tmp_path, hr_dir):
    run = tmp_path / "run"
    train(tiny(hr_dir, pretrain_steps=3), run)
    with pytest.raises(TrainingError, match="saved at step 3 of the pretrain phase, which this "
                                            "config ends at step 2: resume with --steps 3"):
        train(tiny(hr_dir, phase="all", pretrain_steps=2, gan_steps=2), run, resume=True)


# --------------------------------------------------------------------------- 10, 11: config


@pytest.mark.parametrize("key,value", [
    ("blur_sigma", [0, 0]), ("blur_sigma2", [0.0, 1.0]),
    ("jpeg_range", [0.4, 95]), ("jpeg_range2", [0, 50]),
])
def test_realistic_ranges_that_cannot_run_are_refused_by_key(tmp_path, hr_dir, key, value):
    with pytest.raises(TrainingError, match=rf"^\[realistic\] {key} = "):
        make_config({"degradation": "realistic", "realistic": {key: value}})
    config = tmp_path / "real.toml"
    config.write_text(f'degradation = "realistic"\n[realistic]\n{key} = {value}\n')
    result = invoke("train", "--data", hr_dir, "--out", tmp_path / "run", "--config", config)
    one_line_error(result, f"[realistic] {key} = ")
    assert not (tmp_path / "run").exists()


def test_smallest_realistic_ranges_train(tmp_path, hr_dir):
    realistic = {"blur_sigma": [0.01, 0.01], "blur_sigma2": [0.01, 0.01],
                 "jpeg_range": [1, 1], "jpeg_range2": [1, 1]}
    train(tiny(hr_dir, degradation="realistic", realistic=realistic, pretrain_steps=1),
          tmp_path / "run")
    assert generator_step(tmp_path / "run") == 1


def test_gan_patches_too_small_for_the_vgg_layer_are_a_config_error(tmp_path, hr_dir):
    with pytest.raises(TrainingError, match="patch_size 8 is too small for the GAN phase: its "
                                            "VGG content loss at relu5_4 needs patches of at "
                                            "least 16 px"):
        make_config({"patch_size": 8, "vgg_layer": "relu5_4"})
    make_config({"patch_size": 8, "vgg_layer": "relu5_4", "phase": "pretrain"})  # no VGG
    make_config({"patch_size": 8, "vgg_layer": "relu2_2"})
    with pytest.raises(TrainingError, match="vgg_layer = 'relu6_1': not a VGG19 layer"):
        make_config({"vgg_layer": "relu6_1"})
    result = invoke("train", "--data", hr_dir, "--out", tmp_path / "run", "--patch-size", "8",
                    "--phase", "all", "--steps", "1")
    one_line_error(result, "patch_size 8 is too small for the GAN phase")
    assert not (tmp_path / "run").exists()


def test_gan_phase_trains_at_the_smallest_patch_size(tmp_path, hr_dir):
    config = tiny(hr_dir, phase="all", pretrain_steps=1, gan_steps=1, vgg_layer="relu5_4",
                  patch_size=16)
    train(config, tmp_path / "run")
    assert generator_step(tmp_path / "run") == 2


# --------------------------------------------------------------------------- 12, 13: inputs


def test_out_naming_a_file_or_a_folder_below_one_is_one_line(tmp_path, hr_dir):
    config = config_file(tmp_path, hr_dir)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out in (afile, afile / "sub"):
        result = invoke("train", "--config", config, "--out", out, "-q")
        one_line_error(result, f"{afile} is not a folder")
    assert afile.read_text() == "mine"


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


# --------------------------------------------------------------------------- 17: run folders


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


# --------------------------------------------------------------------------- 21: [realistic]


def test_a_realistic_table_without_realistic_degradation_is_warned_about(tmp_path, hr_dir):
    config = tmp_path / "tiny.toml"
    text = config_file(tmp_path, hr_dir).read_text()
    config.write_text(text + "\n[realistic]\nblur_sigma = [0.5, 1.0]\n")
    assert load_config(config).degradation == "bicubic"
    result = invoke("train", "--config", config, "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert ('warning: the [realistic] table is ignored: degradation is \'bicubic\' (set '
            'degradation = "realistic" to use it)') in result.output
    plain = invoke("train", "--config", config_file(tmp_path, hr_dir, "plain.toml"), "--out",
                   tmp_path / "plain", "-q")
    assert plain.exit_code == 0 and "warning" not in plain.output
