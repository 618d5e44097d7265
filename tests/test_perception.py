"""The knobs that mix two shipped models by network interpolation: perception (srresnet-x4 to
srgan-x4) and denoise (srresnet-x4 to srgan-real-x4)."""

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, make_generator
from PIL import Image

from srgan_cli import Upscaler, checkpoints
from srgan_cli.checkpoints import (
    RegisteredModel,
    interpolate_generators,
    save_checkpoint,
)
from srgan_cli.cli import main
from srgan_cli.errors import CheckpointError, SrganError
from srgan_cli.models import GeneratorConfig


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    """srresnet-x4, srgan-x4 and srgan-real-x4 replaced by different tiny networks of one
    architecture (the last without BatchNorm, as it ships)."""
    weights = tmp_path / "weights"
    save_checkpoint(make_generator(seed=1), weights / "srresnet-x4.safetensors")
    save_checkpoint(make_generator(seed=2), weights / "srgan-x4.safetensors")
    save_checkpoint(make_generator(replace(TINY, norm="none"), seed=3),
                    weights / "srgan-real-x4.safetensors")
    monkeypatch.setattr(checkpoints, "weights_dir", lambda: weights)
    for name in ("srresnet-x4", "srgan-x4", "srgan-real-x4"):
        monkeypatch.setitem(checkpoints.REGISTRY, name,
                            RegisteredModel(name, f"{name}.safetensors", None, "tiny"))
    return weights


def states_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ends_reproduce_each_model_exactly_and_middle_is_the_mean():
    a, b = make_generator(seed=1), make_generator(seed=2)
    assert states_equal(interpolate_generators(a, b, 0.0), a)
    assert states_equal(interpolate_generators(a, b, 1.0), b)
    mid = interpolate_generators(a, b, 0.5).state_dict()
    for name, value in a.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(mid[name], (value + b.state_dict()[name]) / 2)
    assert not states_equal(interpolate_generators(a, b, 0.5), a)


@pytest.mark.parametrize("other", [GeneratorConfig(scale=4, num_blocks=2, channels=8),
                                   GeneratorConfig(scale=2, num_blocks=1, channels=8),
                                   GeneratorConfig(scale=4, num_blocks=1, channels=16)])
def test_different_architectures_or_scales_are_refused(other):
    with pytest.raises(CheckpointError, match="cannot mix two different architectures"):
        interpolate_generators(make_generator(TINY), make_generator(other), 0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_perception_out_of_range_is_refused(bad):
    with pytest.raises(CheckpointError, match="between 0 and 1"):
        interpolate_generators(make_generator(), make_generator(seed=3), bad)


def test_upscaler_perception_ends_equal_the_two_models(tiny_registry):
    lr = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    for perception, name in ((0.0, "srresnet-x4"), (1.0, "srgan-x4")):
        mixed = Upscaler(perception=perception, device="cpu").upscale_tensor(lr)
        plain = Upscaler(name, device="cpu").upscale_tensor(lr)
        assert torch.equal(mixed, plain)
    half = Upscaler(perception=0.5, device="cpu").upscale_tensor(lr)
    assert not torch.equal(half, Upscaler("srgan-x4", device="cpu").upscale_tensor(lr))


def test_upscaler_perception_with_another_model_is_refused(tiny_registry, tiny_checkpoint):
    with pytest.raises(SrganError, match="cannot be combined with another model"):
        Upscaler(str(tiny_checkpoint), perception=0.5, device="cpu")


def test_cli_perception_writes_the_mix_and_refuses_misuse(tiny_registry, tmp_path,
                                                          tiny_checkpoint):
    src = tmp_path / "a.png"
    Image.effect_mandelbrot((20, 16), (-2, -1.2, 0.6, 1.2), 50).convert("RGB").save(src)
    runner = CliRunner()
    out = tmp_path / "a_mix.png"
    result = runner.invoke(main, ["upscale", str(src), "-o", str(out), "--perception", "0.5",
                                  "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (80, 64)
    for args in (["--perception", "1.5"], ["--perception", "0.5", "--model", str(tiny_checkpoint)]):
        result = runner.invoke(main, ["upscale", str(src), "-o", str(tmp_path / "x.png"), *args])
        assert result.exit_code == 2, result.output
        assert not (tmp_path / "x.png").exists()


def test_benchmark_perception_rows(tiny_registry, tmp_path):
    data = tmp_path / "Tiny"
    data.mkdir()
    Image.effect_mandelbrot((40, 36), (-2, -1.2, 0.6, 1.2), 50).convert("RGB").save(
        data / "m.png")
    result = CliRunner().invoke(main, [
        "benchmark", "--model", "srresnet-x4", "--model", "srgan-x4", "--perception", "0",
        "--perception", "0.25", "--perception", "1", "--data", str(data), "--json",
        "--device", "cpu", "--compare", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.stdout)["results"]}
    assert list(rows) == ["srresnet-x4", "srgan-x4", "perception=0", "perception=0.25",
                          "perception=1"]
    assert rows["perception=0"]["psnr_y"] == rows["srresnet-x4"]["psnr_y"]
    assert rows["perception=1"]["psnr_y"] == rows["srgan-x4"]["psnr_y"]
    assert (tmp_path / "cmp" / "Tiny" / "m.png").is_file()


def test_upscaler_denoise_ends_equal_the_two_models(tiny_registry):
    lr = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    for denoise, name in ((0.0, "srresnet-x4"), (1.0, "srgan-real-x4")):
        mixed = Upscaler(denoise=denoise, device="cpu", precision="fp32").upscale_tensor(lr)
        plain = Upscaler(name, device="cpu", precision="fp32").upscale_tensor(lr)
        torch.testing.assert_close(mixed, plain, atol=1e-5, rtol=0)  # 0: BN folded, rounding
    half = Upscaler(denoise=0.5, device="cpu", precision="fp32").upscale_tensor(lr)
    ends = [Upscaler(n, device="cpu", precision="fp32").upscale_tensor(lr)
            for n in ("srresnet-x4", "srgan-real-x4")]
    assert all((half - end).abs().max() > 1e-3 for end in ends)


def test_denoise_and_perception_are_not_combined(tiny_registry, tiny_checkpoint):
    with pytest.raises(SrganError, match="perception and denoise cannot be combined"):
        Upscaler(perception=0.5, denoise=0.5, device="cpu")
    with pytest.raises(SrganError, match="denoise mixes the shipped srresnet-x4 and "
                                         "srgan-real-x4; it cannot be combined"):
        Upscaler(str(tiny_checkpoint), denoise=0.5, device="cpu")
    with pytest.raises(ValueError, match="--denoise must be a number from 0 to 1"):
        Upscaler(denoise=1.5, device="cpu")


def test_cli_denoise_writes_the_mix_and_refuses_misuse(tiny_registry, tmp_path,
                                                       tiny_checkpoint):
    src = tmp_path / "a.png"
    Image.effect_mandelbrot((20, 16), (-2, -1.2, 0.6, 1.2), 50).convert("RGB").save(src)
    runner = CliRunner()
    out = tmp_path / "a_mix.png"
    result = runner.invoke(main, ["upscale", str(src), "-o", str(out), "--denoise", "0.5",
                                  "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (80, 64)
    for args, message in ((["--denoise", "2"], "--denoise"),
                          (["--denoise", "0.5", "--model", str(tiny_checkpoint)], "drop --model"),
                          (["--denoise", "0.5", "--perception", "0.5"], "choose one")):
        result = runner.invoke(main, ["upscale", str(src), "-o", str(tmp_path / "x.png"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "x.png").exists()


def test_benchmark_denoise_rows(tiny_registry, tmp_path):
    data = tmp_path / "Tiny"
    data.mkdir()
    Image.effect_mandelbrot((40, 36), (-2, -1.2, 0.6, 1.2), 50).convert("RGB").save(
        data / "m.png")
    result = CliRunner().invoke(main, [
        "benchmark", "--model", "srgan-real-x4", "--denoise", "0.5", "--denoise", "1",
        "--data", str(data), "--json", "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.stdout)["results"]}
    assert list(rows) == ["srgan-real-x4", "denoise=0.5", "denoise=1"]
    assert rows["denoise=1"]["psnr_y"] == pytest.approx(rows["srgan-real-x4"]["psnr_y"], abs=1e-3)
    assert rows["denoise=0.5"]["psnr_y"] != rows["denoise=1"]["psnr_y"]
