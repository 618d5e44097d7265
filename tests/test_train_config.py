"""`srgan train` configs: TOML and YAML files, flags over file over defaults, and every check
that names the key it refuses (steps, [realistic] ranges, patch size against the VGG layer),
before any run folder is made. CPU only, offline, tiny networks and images made here."""

from __future__ import annotations

import pytest
from conftest import invoke, one_line_error, png
from test_train import config_file, generator_step, tiny, tiny_train_config

from srgan_cli.errors import TrainingError
from srgan_cli.training.config import TrainConfig, load_config, make_config, save_config, with_steps
from srgan_cli.training.train import train

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


# ---------------------------------------------------------------- files and precedence


def test_config_round_trips_through_toml_and_yaml(tmp_path):
    config = TrainConfig(data=["a dir", 'quo"te'], val=["v"], patch_size=128, lr=3e-5,
                         ema=0.999, compile=True, phase="gan", init="x.safetensors")
    path = save_config(config, tmp_path / "config.toml")
    assert load_config(path) == config
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("data: [d1, d2]\nbatch-size: 8\nlr: 2.0e-4\nema: 0.99\n")
    loaded = load_config(yaml_file)
    assert (loaded.data, loaded.batch_size, loaded.lr, loaded.ema) == (["d1", "d2"], 8, 2e-4, 0.99)
    assert loaded.patch_size == 96, "unset options keep the paper's defaults"


def test_precedence_flags_over_file_over_defaults(tmp_path):
    (tmp_path / "c.toml").write_text('data = "d"\nbatch_size = 8\nlr = 0.001\n')
    config = load_config(tmp_path / "c.toml", {"lr": 5e-4})
    assert (config.data, config.batch_size, config.lr, config.seed) == (["d"], 8, 5e-4, 0)
    assert with_steps(config, 7).phases == [("pretrain", 7), ("gan", 7)]
    assert with_steps(make_config({"phase": "gan"}, config), 5).pretrain_steps == 1_000_000


def test_config_file_steps_key_and_unknown_keys(tmp_path):
    from srgan_cli.training.config import load_config

    assert load_config(tiny_train_config(tmp_path, steps=7)).pretrain_steps == 7
    with pytest.raises(Exception, match="unknown training option 'stepz'; the options are: "
                                        "data, val, scale"):
        load_config(tiny_train_config(tmp_path, stepz=7))


# -------------------------------------------------------- one line for each bad config


@pytest.mark.parametrize("text,message", [
    ("batch_sise = 8", "unknown training option 'batch_sise'"),
    ('phase = "both"', "choose one of pretrain, gan, all"),
    ("batch_size = 1.5", "not a valid int"),
    ("patch_size = 90", "multiple of the scale"),
    ("lr = [", "not a valid config file"),
])
def test_bad_config_is_one_clear_error(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text + "\n")
    with pytest.raises(TrainingError, match=message):
        load_config(tmp_path / "c.toml")


def test_yaml_syntax_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\n  lr: [1e-4\n")
    png(tmp_path / "hr" / "a.png", size=(32, 32))
    result = invoke("train", "--data", tmp_path / "hr", "--out", tmp_path / "run",
                    "--config", bad)
    one_line_error(result)
    error_lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "line 2, column" in error_lines[0], result.output


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


# ------------------------------------------------------------------ [realistic] ranges


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


# -------------------------------------------------------- patch size and the VGG layer


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
