"""The inference copy (fast.py) computes the same function as the network it came from."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_generator
from torch import nn

from srgan_cli.benchmark import run_speed, speed_configs
from srgan_cli.fast import ShuffledConv, fold_batchnorm, prepare_for_inference
from srgan_cli.models import GeneratorConfig
from srgan_cli.upscale import Upscaler


def realistic_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.2, 2.0)
    return bn.eval()


def test_fold_batchnorm_equals_conv_then_bn():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(8, 16, 3, padding=1), realistic_bn(16)
    x = torch.randn(2, 8, 13, 11)
    with torch.no_grad():
        expected = bn(conv(x))
        got = fold_batchnorm(conv, bn)(x)
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize(("kernel", "factor"), [(9, 2), (3, 2), (5, 3), (7, 4), (1, 2)])
def test_shuffled_conv_equals_conv_of_shuffle(kernel, factor):
    torch.manual_seed(kernel * 10 + factor)
    conv = nn.Conv2d(4, 3, kernel, padding=kernel // 2)
    z = torch.randn(2, 4 * factor**2, 7, 5)  # odd sizes, batch > 1
    with torch.no_grad():
        expected = conv(F.pixel_shuffle(z, factor))
        got = ShuffledConv(conv, factor)(z)
    assert got.shape == expected.shape == (2, 3, 7 * factor, 5 * factor)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_shuffled_conv_of_the_paper_tail_with_channels_last_input():
    torch.manual_seed(1)
    conv = nn.Conv2d(64, 3, 9, padding=4)
    z = torch.randn(2, 256, 9, 13).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = F.conv2d(F.pixel_shuffle(z, 2), conv.weight, conv.bias, padding=4)
        got = ShuffledConv(conv, 2)(z)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_shuffled_conv_in_bf16_autocast_stays_close():
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 3, 9, padding=4)
    z = torch.rand(1, 64, 10, 9)
    with torch.no_grad():
        exact = conv(F.pixel_shuffle(z, 2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = conv(F.pixel_shuffle(z, 2)).float()
            shuffled = ShuffledConv(conv, 2)(z).float()
    scale = exact.abs().max()
    assert (shuffled - exact).abs().max() < 2e-2 * scale
    assert (shuffled - plain).abs().max() < 2e-2 * scale


def test_shuffled_conv_rejects_what_it_cannot_reformulate():
    with pytest.raises(ValueError):
        ShuffledConv(nn.Conv2d(4, 3, 3, padding=0), 2)
    with pytest.raises(ValueError):
        ShuffledConv(nn.Conv2d(4, 3, 3, padding=1, stride=2), 2)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_prepared_generator_equals_original(scale):
    gen = make_generator(GeneratorConfig(scale=scale, num_blocks=2, channels=8))
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    fast = prepare_for_inference(gen)
    lr = torch.rand(2, 3, 11, 9)
    with torch.no_grad():
        expected, got = gen(lr), fast(lr)
    assert got.shape == expected.shape == (2, 3, 11 * scale, 9 * scale)
    assert (got - expected).abs().max() < 1e-5
    assert fast.scale == scale and fast.config == gen.config
    assert all(torch.equal(v, gen.state_dict()[k]) for k, v in before.items())  # untouched
    assert fast.head[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())


def test_per_channel_prelu_moves_before_the_shuffle():
    gen = make_generator()
    gen.upsample[-1].act = nn.PReLU(8)
    with torch.no_grad():
        gen.upsample[-1].act.weight.uniform_(-0.5, 0.5)
    lr = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        assert (prepare_for_inference(gen)(lr) - gen(lr)).abs().max() < 1e-5


def test_upscaler_fast_path_equals_plain_and_tiles_seamlessly():
    gen = make_generator()
    lr = torch.rand(3, 45, 37)
    plain = Upscaler(gen, device="cpu", precision="fp32", tile=0, optimize=False)
    fast = Upscaler(gen, device="cpu", precision="fp32", tile=0)
    fast_tiled = Upscaler(gen, device="cpu", precision="fp32", tile=16)
    expected = plain.upscale_tensor(lr)
    torch.testing.assert_close(fast.upscale_tensor(lr), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_tiled.upscale_tensor(lr), expected, atol=1e-5, rtol=0)


def test_speed_rows_start_with_the_baseline(tiny_checkpoint):
    configs = speed_configs(torch.device("cpu"), ("fp32",), (0, 8))
    assert configs[0].prepare is None and configs[0].precision == "fp32"
    assert [c.prepare for c in configs[-2:]] == [{}, {}]
    rows = run_speed(str(tiny_checkpoint), [12], device="cpu", precisions=("fp32",),
                     tiles=(0, 8), repeats=1, warmup=0)
    assert [r.label for r in rows] == [c.label for c in configs]
    assert rows[0].label.startswith("baseline") and all(r.ms > 0 for r in rows)
