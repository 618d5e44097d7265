import torch
from conftest import make_generator

from srgan_cli.tiling import count_tiles, upscale_tiled
from srgan_cli.upscale import Upscaler


def test_tiled_equals_untiled():
    gen = make_generator()
    up_whole = Upscaler(gen, device="cpu", precision="fp32", tile=0)
    up_tiled = Upscaler(gen, device="cpu", precision="fp32", tile=16)
    lr = torch.rand(3, 45, 37)
    whole = up_whole.upscale_tensor(lr)
    calls = []
    tiled = up_tiled.upscale_tensor(lr, on_tile=lambda: calls.append(1))
    assert tiled.shape == whole.shape == (3, 180, 148)
    assert len(calls) == count_tiles(45, 37, 16) == 9
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_tiling_is_deterministic():
    up = Upscaler(make_generator(), device="cpu", precision="fp32", tile=16)
    lr = torch.rand(1, 3, 40, 40)
    assert torch.equal(up.upscale_tensor(lr), up.upscale_tensor(lr))


def test_too_small_overlap_shows_seams():
    """The overlap matters: without context, tile borders differ from the untiled result."""
    gen = make_generator()
    lr = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        whole = gen(lr)
        seamy = upscale_tiled(gen, lr, 4, tile=16, overlap=0)
    assert (seamy - whole).abs().max() > 1e-3


def test_output_is_clamped_to_value_range():
    gen = make_generator()
    with torch.no_grad():
        gen.tail.weight.mul_(100)  # raw outputs far outside [0, 1]
    up = Upscaler(gen, device="cpu", precision="fp32")
    out = up.upscale_tensor(torch.rand(3, 8, 8))
    assert out.min() == 0 and out.max() == 1
