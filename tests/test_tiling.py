"""Tiled upscaling: tiles equal the untiled result, and the overlap between them is the
network's receptive radius (a smaller --tile is raised to it)."""

import inspect

import torch
from conftest import cpu_upscaler, invoke, make_generator, png
from PIL import Image

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


def test_overlap_is_not_an_option_but_the_receptive_radius():
    """Less overlap than the receptive radius gives seams, more only costs time."""
    assert "overlap" not in inspect.signature(Upscaler).parameters
    gen = make_generator()
    assert cpu_upscaler().overlap == gen.config.receptive_radius()


def test_a_tile_smaller_than_the_overlap_is_raised_to_it():
    up = cpu_upscaler(tile=1)
    overlap = up.overlap
    assert up.tile == overlap
    assert up.notes == [f"--tile 1 is smaller than the network's {overlap}-pixel overlap: "
                        f"using {overlap}-pixel tiles"]
    assert up.num_tiles(17, 21) == -(-17 // overlap) * -(-21 // overlap)  # not 17 * 21
    assert cpu_upscaler(tile=overlap).notes == []


def test_cli_says_so_when_it_raises_the_tile(tmp_path, tiny_checkpoint):
    result = invoke("upscale", png(tmp_path / "a.png", (21, 17)), "--model", tiny_checkpoint,
                    "--tile", 1)
    assert result.exit_code == 0, result.output
    assert "warning: --tile 1 is smaller than the network's" in result.output
    assert Image.open(tmp_path / "a_x4.png").size == (84, 68)
