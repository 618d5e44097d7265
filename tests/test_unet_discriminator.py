"""Real-ESRGAN's U-Net discriminator with spectral norm: architecture, per-pixel losses, and
GAN training with ``discriminator = "unet"`` through save, exact resume and a refused resume
with the other discriminator. CPU only, offline, tiny networks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file
from test_train import assert_same_states, interrupt_at, log_records, tiny
from torch.nn.utils import parametrize

from srgan_cli import losses
from srgan_cli.cli import main
from srgan_cli.errors import InputError, TrainingError
from srgan_cli.models import (
    Discriminator,
    UNetDiscriminator,
    UNetDiscriminatorConfig,
    build_discriminator,
)
from srgan_cli.training import train as train_module
from srgan_cli.training.config import save_config
from srgan_cli.training.train import train

SN_CONVS = [f"conv{i}" for i in range(1, 9)]


def tiny_unet(skip_connection: bool = True) -> UNetDiscriminator:
    torch.manual_seed(0)
    return UNetDiscriminator(UNetDiscriminatorConfig(channels=8, skip_connection=skip_connection))


# --------------------------------------------------------------------------- the network


@pytest.mark.parametrize("skip_connection", [True, False])
def test_unet_gives_one_logit_per_pixel(skip_connection):
    disc = tiny_unet(skip_connection)
    out = disc(torch.rand(2, 3, 24, 40))
    assert out.shape == (2, 1, 24, 40) and out.dtype == torch.float32


def test_unet_has_real_esrgans_layers():
    disc = UNetDiscriminator()
    assert sum(p.numel() for p in disc.parameters()) == 4_376_897  # UNetDiscriminatorSN's
    assert (disc.conv1.kernel_size, disc.conv1.stride, disc.conv1.bias) == ((4, 4), (2, 2), None)
    assert disc.conv3.out_channels == 512 and disc.conv6.out_channels == 64
    assert disc.conv0.bias is not None and disc.conv9.out_channels == 1
    assert all(parametrize.is_parametrized(getattr(disc, name), "weight") for name in SN_CONVS)
    assert not parametrize.is_parametrized(disc.conv0)
    assert not parametrize.is_parametrized(disc.conv9)
    assert isinstance(build_discriminator("unet", 8), UNetDiscriminator)
    assert isinstance(build_discriminator("vgg", 8), Discriminator)


def test_spectral_norm_keeps_each_weight_at_largest_singular_value_one():
    disc = tiny_unet().train()
    with torch.no_grad():
        for name in SN_CONVS:  # make the raw weights far from norm 1
            getattr(disc, name).parametrizations.weight.original.mul_(7.0)
        for _ in range(60):  # each train-mode forward is one power iteration
            disc(torch.rand(1, 3, 16, 16))
    for name in SN_CONVS:
        weight = getattr(disc, name).weight.detach()
        sigma = torch.linalg.matrix_norm(weight.flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=5e-3), name  # 7 without spectral norm
    raw = disc.conv1.parametrizations.weight.original.detach()
    assert torch.linalg.matrix_norm(raw.flatten(1), ord=2) > 2, "the norm is not baked in"
    buffers = dict(disc.named_buffers())
    assert {"conv1.parametrizations.weight.0._u", "conv1.parametrizations.weight.0._v"} <= (
        buffers.keys())


def test_eval_mode_leaves_the_power_iteration_alone():
    disc = tiny_unet().eval()
    u = disc.conv2.parametrizations.weight[0]._u.clone()
    x = torch.rand(1, 3, 16, 16)
    first = disc(x)
    assert torch.equal(disc.conv2.parametrizations.weight[0]._u, u)
    assert torch.equal(disc(x), first)


@pytest.mark.parametrize("size", [(20, 16), (16, 12), (4, 4)])
def test_sides_not_multiples_of_8_are_one_clear_error(size):
    with pytest.raises(InputError, match=rf"multiples of 8, got {size[0]}x{size[1]}"):
        tiny_unet()(torch.rand(1, 3, *size))


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("kind", losses.GAN_LOSSES)
def test_adversarial_losses_average_over_every_pixel_logit(kind):
    torch.manual_seed(0)
    real, fake = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    as_images = losses.discriminator_loss(real, fake, kind)
    as_rows = losses.discriminator_loss(real.reshape(-1, 1), fake.reshape(-1, 1), kind)
    assert as_images.shape == () and as_images == pytest.approx(as_rows.item(), rel=1e-6)
    g_images = losses.generator_adversarial_loss(fake, kind)
    assert g_images == pytest.approx(
        losses.generator_adversarial_loss(fake.reshape(-1, 1), kind).item(), rel=1e-6)
    # one logit per image of value v and a map of v everywhere are the same judgement
    per_image = losses.generator_adversarial_loss(torch.full((2, 1), 0.3), kind)
    per_pixel = losses.generator_adversarial_loss(torch.full((2, 1, 8, 8), 0.3), kind)
    assert per_pixel == pytest.approx(per_image.item(), rel=1e-6)
    real_value, fake_value = (20.0, -20.0) if kind == "bce" else (1.0, 0.0)  # sure and right
    sure = losses.discriminator_loss(torch.full((2, 1, 8, 8), real_value),
                                     torch.full((2, 1, 8, 8), fake_value), kind)
    assert sure < 1e-6


# --------------------------------------------------------------------------- config


def test_config_choice_and_patch_size_check(hr_dir):
    train_dir = hr_dir
    assert tiny(train_dir).discriminator == "vgg", "the paper's by default"
    with pytest.raises(TrainingError, match="discriminator = 'resnet': choose one of vgg, unet"):
        tiny(train_dir, discriminator="resnet")
    with pytest.raises(TrainingError, match="patch_size 20 must be a multiple of 8 for the U-Net"):
        tiny(train_dir, discriminator="unet", phase="all", patch_size=20)
    tiny(train_dir, discriminator="unet", phase="pretrain", patch_size=20)  # no GAN phase
    tiny(train_dir, discriminator="unet", phase="all", gan_steps=0, patch_size=20)


# --------------------------------------------------------------------------- training


@pytest.fixture(params=["cpu", "gpu_kernels"])
def kernels(request, monkeypatch):
    """The CPU's training path, and the GPU's one (fused Adam, channels_last) on the CPU."""
    if request.param == "gpu_kernels":
        monkeypatch.setattr(train_module, "cuda_kernels", lambda device: True)
    return request.param


def test_unet_gan_training_resumes_bit_for_bit(tmp_path, hr_dir, kernels):
    config = tiny(hr_dir, phase="all", pretrain_steps=2, gan_steps=4, ema=0.9,
                  gan_schedule="cosine", discriminator="unet")
    train(config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", on_step=interrupt_at(4))
    train(config, tmp_path / "stopped", resume=True)
    straight = assert_same_states(tmp_path / "straight", tmp_path / "stopped")
    assert "discriminator.conv1.parametrizations.weight.original" in straight
    assert "discriminator.conv1.parametrizations.weight.0._u" in straight
    d_moments = [k for k in straight if k.startswith("opt_d.") and k.endswith(".exp_avg")]
    assert len(d_moments) == sum(1 for _ in UNetDiscriminator().parameters())
    records = [r for r in log_records(tmp_path / "stopped") if r["type"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r["d"] > 0 and r["adv"] > 0 for r in records if r["phase"] == "gan")


def test_the_power_iteration_state_is_what_training_left(tmp_path, hr_dir):
    """The saved u vectors moved with training (one power iteration per forward)."""
    run = tmp_path / "run"
    train(tiny(hr_dir, phase="all", pretrain_steps=1, gan_steps=2,
               discriminator="unet"), run)
    state = load_file(run / "state.safetensors")
    with safe_open(str(run / "state.safetensors"), framework="pt") as f:
        info = json.loads(f.metadata()["state"])
    assert info["discriminator"] == "unet"
    disc = UNetDiscriminator(UNetDiscriminatorConfig(channels=8))
    disc.load_state_dict({k.removeprefix("discriminator."): v for k, v in state.items()
                          if k.startswith("discriminator.")})
    weight = disc.conv4.parametrizations.weight
    u, w = weight[0]._u, weight.original.detach().flatten(1)
    # u is (nearly) the top left singular vector of the saved weight
    top = torch.linalg.svd(w).U[:, 0]
    assert abs(torch.dot(u, top)) > 0.9


def test_resume_with_the_other_discriminator_is_refused(tmp_path, hr_dir):
    run = tmp_path / "run"
    config = tiny(hr_dir, phase="all", pretrain_steps=1, gan_steps=1,
                  discriminator="unet")
    runner = CliRunner()
    config_file = save_config(config, tmp_path / "c.toml")
    result = runner.invoke(main, ["train", "--config", str(config_file), "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    before = (run / "state.safetensors").read_bytes()
    log_before = (run / "log.jsonl").read_text()
    config_before = (run / "config.toml").read_text()
    refused = runner.invoke(main, ["train", "--out", str(run), "--resume", "--steps", "2",
                                   "--discriminator", "vgg", "-q"])
    assert refused.exit_code == 1
    assert "saved with discriminator = 'unet', but the config asks for 'vgg'" in refused.output
    assert "Traceback" not in refused.output
    assert (run / "state.safetensors").read_bytes() == before, "nothing changed"
    assert (run / "log.jsonl").read_text() == log_before
    assert (run / "config.toml").read_text() == config_before, "the flags were not kept"
    with pytest.raises(TrainingError, match="resume with --discriminator unet"):
        train(replace(config, discriminator="vgg"), run, resume=True)
    # the right one goes on
    more = runner.invoke(main, ["train", "--out", str(run), "--resume", "--steps", "2", "-q"])
    assert more.exit_code == 0, more.output


def test_a_pretrained_state_may_go_on_with_either_discriminator(tmp_path, hr_dir):
    run = tmp_path / "run"
    train(tiny(hr_dir, phase="all", pretrain_steps=1, gan_steps=1, stop_at=1), run)
    assert not any(k.startswith("discriminator.") for k in load_file(run / "state.safetensors"))
    train(tiny(hr_dir, phase="all", pretrain_steps=1, gan_steps=1,
               discriminator="unet"), run, resume=True)
    assert "discriminator.conv9.weight" in load_file(run / "state.safetensors")


def test_a_saved_discriminator_of_another_width_is_one_clear_error(tmp_path, hr_dir):
    run = tmp_path / "run"
    config = tiny(hr_dir, phase="all", pretrain_steps=1, gan_steps=1, discriminator="unet")
    train(config, run)
    wider = replace(config, gan_steps=2, disc_channels=16)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(TrainingError, match="the saved discriminator does not fit the network"):
        train(wider, run, resume=True)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before, "a refused resume changes nothing (config.toml, log, state)"
