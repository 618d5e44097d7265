import pytest
import torch

from srgan_cli.models import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_output_shape_for_each_scale(scale):
    gen = Generator(GeneratorConfig(scale=scale, num_blocks=2, channels=8)).eval()
    out = gen(torch.rand(2, 3, 10, 13))
    assert out.shape == (2, 3, 10 * scale, 13 * scale)
    assert out.dtype == torch.float32


def test_paper_generator_structure():
    gen = Generator()
    assert len(gen.body) == 16
    assert gen.head[0].kernel_size == (9, 9) and gen.head[0].out_channels == 64
    assert gen.tail.kernel_size == (9, 9) and gen.tail.out_channels == 3
    assert len(gen.upsample) == 2
    assert gen.upsample[0].conv.out_channels == 256
    # The paper's SRResNet has about 1.5 M parameters.
    n_params = sum(p.numel() for p in gen.parameters())
    assert 1.5e6 < n_params < 1.6e6


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match="scale must be one of"):
        GeneratorConfig(scale=3)


def test_config_round_trip_ignores_unknown_keys():
    cfg = GeneratorConfig(scale=8, num_blocks=3, channels=16)
    assert GeneratorConfig.from_dict({**cfg.to_dict(), "future_field": 1}) == cfg


def test_receptive_radius_bounds_the_influence_of_a_pixel():
    cfg = GeneratorConfig(scale=4, num_blocks=2, channels=8)
    gen = Generator(cfg).eval()
    radius = cfg.receptive_radius()
    x = torch.rand(1, 3, 2 * radius + 9, 2 * radius + 9)
    changed = x.clone()
    changed[..., 0, 0] += 1.0  # a change in the top-left corner ...
    with torch.no_grad():
        diff = (gen(x) - gen(changed)).abs()
    # ... cannot reach output pixels more than `radius` LR pixels away
    far = diff[..., (radius + 1) * 4:, (radius + 1) * 4:]
    assert far.max() == 0
    assert diff.max() > 0


@pytest.mark.parametrize("size", [96, 64, 128])
def test_discriminator_takes_any_patch_size(size):
    disc = Discriminator(DiscriminatorConfig(channels=8, hidden=16))
    assert disc(torch.rand(3, 3, size, size)).shape == (3, 1)


def test_discriminator_matches_the_paper():
    disc = Discriminator()
    convs = [m for m in disc.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    bns = [m for m in disc.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 7  # BN from the second conv on
    # 96 px -> 6x6 after four stride-2 convs, so the adaptive pool is the identity
    assert disc.features(torch.rand(1, 3, 96, 96)).shape[-2:] == (6, 6)
    assert disc.classifier[1].in_features == 512 * 36
    assert disc.classifier[1].out_features == 1024
