"""Learning-rate warm-up and the square-root rule for large batches: exact rates, exact resume
in the middle of a warm-up, the options' flags and errors. CPU only, offline."""

from __future__ import annotations

import math
import re

import pytest
from click.testing import CliRunner
from test_train import assert_same_states, interrupt_at, log_records, tiny

from srgan_cli.cli import main
from srgan_cli.errors import TrainingError
from srgan_cli.training.config import TrainConfig, load_config, make_config, save_config
from srgan_cli.training.train import learning_rate, train


def test_warmup_rises_linearly_then_follows_the_schedule():
    config = TrainConfig(lr=1e-4, warmup_steps=4)
    assert learning_rate(config, "constant", 0, 100) == 1e-4 * 1 / 4
    assert learning_rate(config, "constant", 1, 100) == 1e-4 * 2 / 4
    assert learning_rate(config, "constant", 3, 100) == 1e-4  # step N-1 reaches the schedule
    assert learning_rate(config, "constant", 4, 100) == 1e-4  # step N: the schedule alone
    cosine_2 = 0.5 * 1e-4 * (1 + math.cos(math.pi * 2 / 100))
    assert learning_rate(config, "cosine", 2, 100) == cosine_2 * 3 / 4
    assert learning_rate(config, "step", 60, 100) == 1e-4 * 0.1


def test_without_warmup_or_scaling_the_rates_are_the_schedules_as_before():
    config = TrainConfig(lr=3e-4, batch_size=256)  # lr_scaling "none": the batch changes nothing
    for step in (0, 1, 49, 50, 99):
        assert learning_rate(config, "constant", step, 100) == 3e-4
        assert learning_rate(config, "step", step, 100) == 3e-4 * (0.1 if step >= 50 else 1.0)
        assert learning_rate(config, "cosine", step, 100) == (
            0.5 * 3e-4 * (1 + math.cos(math.pi * step / 100)))


def test_sqrt_scaling_multiplies_the_lr_by_the_root_of_the_batch_ratio():
    config = TrainConfig(lr=1e-4, batch_size=256, lr_scaling="sqrt")  # 16 x the reference 16
    assert config.scaled_lr == 4e-4
    assert learning_rate(config, "constant", 10, 100) == 4e-4
    assert learning_rate(config, "step", 60, 100) == 4e-4 * 0.1
    same = TrainConfig(lr=1e-4, batch_size=64, lr_scaling="sqrt", lr_reference_batch=64)
    assert same.scaled_lr == 1e-4


@pytest.mark.parametrize("stop", [1, 4])  # inside the pretrain warm-up; inside the GAN one
def test_resume_in_the_middle_of_a_warmup_is_exact(tmp_path, hr_dir, stop):
    config = tiny(hr_dir, phase="all", pretrain_steps=3, gan_steps=4, warmup_steps=3,
                  lr_scaling="sqrt", lr_reference_batch=1, gan_schedule="cosine")
    train(config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", on_step=interrupt_at(stop))
    train(config, tmp_path / "stopped", resume=True)
    assert_same_states(tmp_path / "straight", tmp_path / "stopped")
    peak = 1e-4 * math.sqrt(2)  # batch 2 against the reference batch 1
    expected = ([learning_rate(config, "constant", i, 3) for i in range(3)]
                + [learning_rate(config, "cosine", i, 4) for i in range(4)])
    assert expected[:3] == [peak / 3, peak * 2 / 3, peak]
    for run in ("straight", "stopped"):
        lrs = [r["lr"] for r in log_records(tmp_path / run) if r["type"] == "train"]
        assert lrs == expected, run


def test_cli_flags_set_the_warmup_and_the_scaling(tmp_path, hr_dir):
    config_file = save_config(tiny(hr_dir, pretrain_steps=2), tmp_path / "tiny.toml")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--config", str(config_file), "--out", str(run),
                                       "--warmup-steps", "2", "--lr-scaling", "sqrt", "-q"])
    assert result.exit_code == 0, result.output
    config = load_config(run / "config.toml")
    assert (config.warmup_steps, config.lr_scaling, config.lr_reference_batch) == (2, "sqrt", 16)
    peak = 1e-4 * math.sqrt(2 / 16)
    assert [r["lr"] for r in log_records(run) if r["type"] == "train"] == [peak / 2, peak]
    bad = CliRunner().invoke(main, ["train", "--config", str(config_file), "--out", str(run),
                                    "--lr-scaling", "linear"])
    assert bad.exit_code == 2 and "'linear' is not one of 'none', 'sqrt'" in bad.output


@pytest.mark.parametrize("options,message", [
    ({"warmup_steps": -1}, "warmup_steps must be at least 0, got -1"),
    ({"lr_scaling": "linear"}, "lr_scaling = 'linear': choose one of none, sqrt"),
    ({"lr_reference_batch": 0}, "lr_reference_batch must be at least 1, got 0"),
])
def test_bad_values_are_one_clear_error(options, message):
    with pytest.raises(TrainingError, match=re.escape(message)):
        make_config(options)
