"""The BatchNorm-free generator (``norm = "none"``): its layers and checkpoints, BatchNorm
folding from a ``batch`` network (``--init``, ``--perception``), inference, tiling and
training. CPU only, offline, tiny networks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY
from PIL import Image
from safetensors.torch import load_file, save_file
from test_distributed_train import torchrun_train, train_losses
from test_train import assert_same_states, interrupt_at, random_png, tiny

from srgan_cli import Upscaler
from srgan_cli.checkpoints import (
    interpolate_generators,
    load_generator,
    load_model,
    read_metadata,
    save_checkpoint,
    weights_dir,
)
from srgan_cli.cli import main
from srgan_cli.errors import CheckpointError, TrainingError
from srgan_cli.fast import prepare_for_inference, without_batchnorm
from srgan_cli.models import Generator, GeneratorConfig
from srgan_cli.training import sync_batchnorm
from srgan_cli.training.config import load_config, make_config, save_config
from srgan_cli.training.display import Display
from srgan_cli.training.train import Trainer, resolve_init, train

NONE = GeneratorConfig(scale=4, num_blocks=2, channels=8, norm="none")
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def batch_generator(seed: int = 0, config: GeneratorConfig = TINY) -> Generator:
    """A ``batch`` generator whose every BatchNorm has random weight, bias, running mean and
    variance (far from the identity), in eval mode."""
    torch.manual_seed(seed)
    gen = Generator(config)
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.2, 2.0)
    return gen.eval()


def none_generator(seed: int = 0, config: GeneratorConfig = NONE) -> Generator:
    torch.manual_seed(seed)
    return Generator(config).eval()


def lr_batch(seed: int = 0, size: tuple[int, int] = (13, 11)) -> torch.Tensor:
    """(2, 3, H, W) float32 in [0, 1]."""
    return torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def outputs(gen: Generator, lr: torch.Tensor) -> torch.Tensor:
    return gen.eval()(lr)


# --------------------------------------------------------------------------- the network


def test_none_generator_is_the_batch_one_without_batchnorm():
    batch, none = Generator(TINY), Generator(GeneratorConfig(scale=4, num_blocks=1, channels=8,
                                                             norm="none"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in none.modules())
    assert not list(none.buffers()), "no running statistics to average or synchronise"
    bn_keys = {k for k in batch.state_dict() if ".bn" in k or k.startswith("body_tail.1.")}
    assert bn_keys and set(none.state_dict()) == set(batch.state_dict()) - bn_keys
    convs = [m for m in none.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs), "the bias BatchNorm made redundant is back"
    lr = lr_batch()
    assert outputs(none, lr).shape == (2, 3, 52, 44)
    assert torch.equal(none.train()(lr), none.eval()(lr)), "train and eval mode: one function"


def test_config_norm_from_dict_and_errors():
    assert GeneratorConfig.from_dict({"scale": "2", "num_blocks": 3.0, "channels": 8}) == (
        GeneratorConfig(scale=2, num_blocks=3, channels=8, norm="batch"))
    assert GeneratorConfig.from_dict({**NONE.to_dict(), "future_key": 1}) == NONE
    assert NONE.to_dict()["norm"] == "none"
    with pytest.raises(ValueError, match="norm must be one of batch, none, got 'group'"):
        GeneratorConfig(norm="group")
    assert NONE.receptive_radius() == GeneratorConfig(num_blocks=2, channels=8).receptive_radius()


def test_folding_gives_a_none_generator_with_the_same_function():
    gen = batch_generator(config=GeneratorConfig(scale=4, num_blocks=2, channels=8))
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    folded = without_batchnorm(gen)
    assert folded.config == NONE and not folded.training
    lr = lr_batch()
    torch.testing.assert_close(outputs(folded, lr), outputs(gen, lr), atol=1e-5, rtol=0)
    assert all(torch.equal(v, gen.state_dict()[k]) for k, v in before.items()), "untouched"
    again = without_batchnorm(folded)
    assert again is not folded and torch.equal(outputs(again, lr), outputs(folded, lr))


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_keeps_norm(tmp_path):
    gen = none_generator()
    path = save_checkpoint(gen, tmp_path / "none.safetensors")
    assert json.loads(read_metadata(path)["config"])["norm"] == "none"
    loaded = load_generator(path)
    assert loaded.config == NONE
    assert torch.equal(outputs(loaded, lr_batch()), outputs(gen, lr_batch()))


def test_a_checkpoint_without_norm_is_batch(tmp_path):
    """Files from before the option (the shipped weights among them) say nothing of norm."""
    path = save_checkpoint(batch_generator(), tmp_path / "old.safetensors")
    meta = read_metadata(path)
    config = json.loads(meta["config"])
    del config["norm"]
    meta["config"] = json.dumps(config)
    save_file(load_file(path), path, metadata=meta)
    assert load_generator(path).config == TINY
    bare = tmp_path / "bare.safetensors"  # no srgan metadata at all: read from the tensors
    for gen in (batch_generator(), none_generator()):
        save_file(gen.state_dict(), bare)
        assert load_generator(bare).config == gen.config


def test_bad_norm_in_metadata_is_one_clear_error(tmp_path):
    path = save_checkpoint(none_generator(), tmp_path / "x.safetensors")
    meta = read_metadata(path)
    meta["config"] = json.dumps({**NONE.to_dict(), "norm": "group"})
    save_file(load_file(path), path, metadata=meta)
    with pytest.raises(CheckpointError, match=r"bad checkpoint metadata \(norm must be one of "
                                              r"batch, none, got 'group'\)"):
        load_generator(path)
    meta["config"] = json.dumps(NONE.to_dict() | {"norm": "batch"})  # says batch, has none
    save_file(load_file(path), path, metadata=meta)
    with pytest.raises(CheckpointError, match="weights do not match its architecture"):
        load_generator(path)


@pytest.mark.parametrize("name", ["srresnet-x4", "srgan-x4"])
def test_shipped_weights_load_as_batch(name):
    if not (weights_dir() / f"{name}.safetensors").is_file():
        pytest.skip("shipped weights not present")
    assert "norm" not in json.loads(read_metadata(weights_dir() / f"{name}.safetensors")["config"])
    assert load_model(name).config.norm == "batch"  # sha256-verified on load: files unchanged


# --------------------------------------------------------------------------- inference


def test_fast_path_of_a_none_generator_equals_it():
    gen = none_generator()
    fast = prepare_for_inference(gen)
    assert fast.config == NONE
    torch.testing.assert_close(outputs(fast, lr_batch()), outputs(gen, lr_batch()),
                               atol=1e-5, rtol=0)


def test_upscale_with_a_none_checkpoint_tiled_equals_untiled(tmp_path):
    checkpoint = save_checkpoint(none_generator(), tmp_path / "none.safetensors")
    src = random_png(tmp_path / "in.png", (37, 29))
    runner = CliRunner()
    for tile in ("0", "8"):
        result = runner.invoke(main, ["upscale", str(src), "-o", str(tmp_path / f"t{tile}.png"),
                                      "--model", str(checkpoint), "--tile", tile,
                                      "--device", "cpu", "--precision", "fp32", "-q"])
        assert result.exit_code == 0, result.output
    untiled, tiled = (Image.open(tmp_path / f"t{t}.png") for t in ("0", "8"))
    assert untiled.size == (148, 116)
    assert untiled.tobytes() == tiled.tobytes()
    lr = lr_batch(1, (29, 23))[0]
    plain = Upscaler(str(checkpoint), device="cpu", precision="fp32", tile=0, optimize=False)
    fast_tiled = Upscaler(str(checkpoint), device="cpu", precision="fp32", tile=8)
    torch.testing.assert_close(fast_tiled.upscale_tensor(lr), plain.upscale_tensor(lr),
                               atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- --perception


@pytest.mark.parametrize("batch_first", [True, False])
def test_mixing_batch_and_none_folds_the_batch_one_first(batch_first):
    batch = batch_generator(1, GeneratorConfig(scale=4, num_blocks=2, channels=8))
    none = none_generator(2)
    a, b = (batch, none) if batch_first else (none, batch)
    lr = lr_batch()
    for t, expected in ((0.0, a), (1.0, b)):
        mixed = interpolate_generators(a, b, t)
        assert mixed.config == NONE
        torch.testing.assert_close(outputs(mixed, lr), outputs(expected, lr), atol=1e-5, rtol=0)
    folded = without_batchnorm(batch)
    fa, fb = (folded, none) if batch_first else (none, folded)
    half = interpolate_generators(a, b, 0.5).state_dict()
    expected = interpolate_generators(fa, fb, 0.5).state_dict()
    assert half.keys() == expected.keys()
    assert all(torch.equal(half[k], expected[k]) for k in half)


# --------------------------------------------------------------------------- training


def make_trainer(config, run_dir: Path) -> Trainer:
    return Trainer(config, run_dir, Display(True, None), torch.device("cpu"))


def test_init_from_a_batch_checkpoint_starts_a_none_run_as_the_same_function(tmp_path, hr_dir):
    source = batch_generator(3)
    checkpoint = save_checkpoint(source, tmp_path / "batch.safetensors")
    config = resolve_init(tiny(hr_dir, norm="none", num_blocks=4, channels=16,
                               init=str(checkpoint)))
    assert (config.norm, config.num_blocks, config.channels) == ("none", 1, 8)
    trainer = make_trainer(config, tmp_path / "run")
    trainer.load_init()
    assert trainer.generator.config.norm == "none"
    lr = lr_batch()
    torch.testing.assert_close(outputs(trainer.generator, lr), outputs(source, lr),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_init_with_the_same_norm_loads_the_weights_as_they_are(tmp_path, hr_dir, norm):
    source = batch_generator(4) if norm == "batch" else none_generator(
        4, GeneratorConfig(scale=4, num_blocks=1, channels=8, norm="none"))
    checkpoint = save_checkpoint(source, tmp_path / "init.safetensors")
    trainer = make_trainer(resolve_init(tiny(hr_dir, norm=norm, init=str(checkpoint))),
                           tmp_path / "run")
    trainer.load_init()
    got, expected = trainer.generator.state_dict(), source.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_a_none_checkpoint_cannot_start_a_batch_run(tmp_path, hr_dir):
    none = none_generator(config=GeneratorConfig(scale=4, num_blocks=1, channels=8, norm="none"))
    checkpoint = save_checkpoint(none, tmp_path / "none.safetensors")
    run = tmp_path / "run"
    message = r'--init: the checkpoint has no BatchNorm \(norm = "none"\).*--norm none'
    with pytest.raises(TrainingError, match=message):
        train(tiny(hr_dir, phase="gan", gan_steps=1, init=str(checkpoint)), run)
    assert not run.exists(), "refused before the run folder is written"
    with pytest.raises(TrainingError, match=message):  # Trainer.load_init checks it too
        make_trainer(tiny(hr_dir, init=str(checkpoint)), run).load_init()


def test_a_none_run_with_ema_resumes_bit_for_bit(tmp_path, hr_dir):
    config = tiny(hr_dir, norm="none", phase="all", pretrain_steps=2, gan_steps=2, ema=0.9,
                  pretrain_schedule="step", gan_schedule="cosine")
    train(config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", on_step=interrupt_at(3))
    train(config, tmp_path / "stopped", resume=True)
    state = assert_same_states(tmp_path / "straight", tmp_path / "stopped")
    assert not any(".bn" in k for k in state if k.startswith(("generator.", "ema.")))
    assert load_config(tmp_path / "stopped" / "config.toml").norm == "none"
    assert load_generator(tmp_path / "stopped" / "generator.safetensors").config.norm == "none"


def test_sync_bn_leaves_a_none_generator_as_it_is():
    gen = none_generator()
    before = [type(m) for m in gen.modules()]
    assert [type(m) for m in sync_batchnorm.convert(gen, torch.device("cpu")).modules()] == before


def test_two_processes_with_sync_bn_train_a_none_generator_like_one(tmp_path, hr_dir):
    """Under torchrun (two CPU processes, gloo) ``--sync-bn`` has nothing to convert in a
    ``none`` generator, and DDP's averaged gradients make the same steps as one process."""
    config = tiny(hr_dir, norm="none", pretrain_steps=2, batch_size=4, workers=0)
    train(config, tmp_path / "single")
    config_file = save_config(config, tmp_path / "none.toml")
    torchrun_train("--config", str(config_file), "--out", str(tmp_path / "ddp"), "--sync-bn",
                   cwd=tmp_path)
    one, two = train_losses(tmp_path / "single"), train_losses(tmp_path / "ddp")
    assert [r["step"] for r in two] == [1, 2]
    for mine, expected in zip(two, one, strict=True):
        assert mine == pytest.approx(expected, rel=1e-5)
    assert load_generator(tmp_path / "ddp" / "generator.safetensors").config.norm == "none"


def test_cli_norm_option_and_config_key(tmp_path, hr_dir):
    run = tmp_path / "run"
    recipe = save_config(tiny(hr_dir), tmp_path / "tiny.toml")  # norm = "batch" in the file
    result = CliRunner().invoke(main, ["train", "--config", str(recipe), "--out", str(run),
                                       "--steps", "1", "--norm", "none", "-q"])
    assert result.exit_code == 0, result.output
    assert load_config(run / "config.toml").norm == "none"
    assert load_generator(run / "generator.safetensors").config.norm == "none"
    bad = CliRunner().invoke(main, ["train", "--data", str(hr_dir), "--out", str(run),
                                    "--norm", "group"])
    assert bad.exit_code == 2 and "'group' is not one of 'batch', 'none'" in bad.output
    with pytest.raises(TrainingError, match="norm = 'group': choose one of batch, none"):
        make_config({"norm": "group"})


def test_realistic_recipe_is_batchnorm_free_and_the_shipped_ones_are_not():
    assert load_config(RECIPES / "real-esrgan-x4.gpu.toml").norm == "none"
    for name in ("srresnet-x4.toml", "srresnet-x4.part2.toml", "srgan-x4.toml"):
        assert load_config(RECIPES / name).norm == "batch", name
