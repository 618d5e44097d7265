"""Issue 16: automatic tiles, out-of-memory recovery, host-side assembly, --outscale, --tta."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_generator
from PIL import Image

from srgan_cli import memory
from srgan_cli.cli import main
from srgan_cli.errors import ImageError, SrganError
from srgan_cli.images import quantise
from srgan_cli.models import Generator
from srgan_cli.upscale import Upscaler, tta_average


def upscale(*args):
    return CliRunner().invoke(main, ["upscale", *map(str, args)])


# ------------------------------------------------------------------ memory and auto tiles


@pytest.mark.parametrize("text, size", [("4GiB", 4 * 2**30), ("512MB", 512 * 10**6),
                                        ("2g", 2 * 10**9), ("1.5 KiB", 1536), ("1000", 1000)])
def test_parse_size(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "4 GiBs", "-1GB", "0", "GB"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError):
        memory.parse_size(text)


def test_auto_tile_from_a_mocked_free_gpu_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 80 * 2**30))
    cuda = torch.device("cuda")
    assert memory.device_budget(cuda, None) == 10 * 2**30
    assert memory.device_budget(cuda, 4 * 2**30) == 4 * 2**30  # --max-memory caps it
    budget, per_pixel, overlap = 4 * 2**30, 10_000, 40
    tile = memory.auto_tile(4000, 6000, overlap, per_pixel, budget)
    side = tile + 2 * overlap
    assert tile % 8 == 0
    assert side**2 * per_pixel <= memory.SAFETY * budget < (side + 8) ** 2 * per_pixel
    assert memory.auto_tile(100, 100, overlap, per_pixel, budget) is None  # fits: one pass
    assert memory.auto_tile(4000, 6000, overlap, per_pixel, 2**20) == memory.MIN_TILE


def test_upscaler_auto_tile_follows_max_memory():
    gen = make_generator()
    roomy = Upscaler(gen, device="cpu", precision="fp32", tile="auto")
    assert roomy.tile_for(64, 64) is None
    tight = Upscaler(gen, device="cpu", precision="fp32", tile="auto", max_memory="50MB")
    tile = tight.tile_for(2000, 3000)
    assert tile is not None and memory.MIN_TILE <= tile < 2000
    with pytest.raises(SrganError, match="--max-memory"):
        Upscaler(gen, device="cpu", max_memory="plenty")


def test_cli_option_errors_are_usage_errors(tmp_path, tiny_checkpoint):
    Image.new("RGB", (5, 5)).save(tmp_path / "a.png")
    for option in (["--tile", "-5"], ["--tile", "big"], ["--max-memory", "4 bananas"],
                   ["--max-memory", "0"], ["--outscale", "0"], ["--outscale", "-2"],
                   ["--png-compression", "10"]):
        result = upscale(tmp_path / "a.png", "--model", tiny_checkpoint, *option)
        assert result.exit_code == 2, (option, result.output)
        assert "Traceback" not in result.output


# ------------------------------------------------------------------ out-of-memory retries


class OomAbove(Generator):
    """A generator that raises torch.OutOfMemoryError on inputs larger than ``limit`` px."""

    def __init__(self, base: Generator, limit: int) -> None:
        super().__init__(base.config)
        self.load_state_dict(base.state_dict())
        self.limit, self.sizes = limit, []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def test_out_of_memory_halves_the_tile_and_retries_with_the_same_output():
    base = make_generator()
    overlap = base.config.receptive_radius()
    lr = torch.rand(3, 300, 260)
    whole = Upscaler(base, device="cpu", precision="fp32", tile=0, optimize=False)
    expected = whole.upscale_tensor(lr)
    flaky = OomAbove(base.eval(), limit=64 + 2 * overlap).eval()
    up = Upscaler(flaky, device="cpu", precision="fp32", tile=0, optimize=False)
    got = up.upscale_tensor(lr)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert up.stats.oom_retries == 3  # whole 300 -> 150 -> 75 -> 64
    assert up.stats.used == {64: 1}
    assert "3 out-of-memory retries" in up.stats.describe()
    assert "tile 64" in up.stats.describe()
    up.upscale_tensor(lr)  # the next image starts at the smaller tile: no new retries
    assert up.stats.oom_retries == 3 and up.stats.used == {64: 2}


def test_out_of_memory_below_the_smallest_tile_fails_the_file_with_a_reason():
    flaky = OomAbove(make_generator(), limit=8).eval()
    up = Upscaler(flaky, device="cpu", precision="fp32", tile=0, optimize=False)
    with pytest.raises(ImageError, match="out of memory even with 64-pixel tiles"):
        up.upscale_tensor(torch.rand(3, 100, 100))


def fake_cuda_accounting(monkeypatch, peak: int = 2**20) -> None:
    """Make ``--tile auto`` take its CUDA path on any device: free memory from
    ``mem_get_info`` and bytes per pixel from a probe pass, whose peak is ``peak`` bytes.
    The network itself runs where the test says (``device="cpu"``)."""
    monkeypatch.setattr(memory, "cuda_accounting", lambda device: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peak)


@pytest.mark.parametrize("accounting, tile", [("host", 75), ("cuda", 64)])
def test_out_of_memory_retries_are_reported_in_the_cli_summary(tmp_path, monkeypatch,
                                                               accounting, tile):
    """Both paths of --tile auto, on the CPU. "host": the whole image fails, then tiles of
    half its side run. "cuda": bytes per pixel come from a probe pass of 128 px, which fails
    (issue 21: that used to fail the file); it is retried at half its side, 64 px, which
    then caps the tiles."""
    from srgan_cli import cli
    from srgan_cli import upscale as upscale_module

    Image.new("RGB", (150, 140), "red").save(tmp_path / "a.png")
    real_init = upscale_module.Upscaler.__init__
    made = []

    def flaky_init(self, model, **kwargs):
        real_init(self, OomAbove(make_generator(), limit=120).eval(), **kwargs)
        made.append(self)

    monkeypatch.setattr(upscale_module.Upscaler, "__init__", flaky_init)
    if accounting == "cuda":
        fake_cuda_accounting(monkeypatch)
    result = CliRunner().invoke(cli.main, ["upscale", str(tmp_path / "a.png"), "-o",
                                           str(tmp_path / "out.png"), "--json",
                                           "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["oom_retries"] == 1 and f"tile {tile}" in summary["tiles"]
    assert Image.open(tmp_path / "out.png").size == (600, 560)
    sizes = made[0].generator.sizes  # the inference copy's record of its inputs
    before_tiles = [(128, 128), (64, 64)] if accounting == "cuda" else [(140, 150)]
    assert sizes[:len(before_tiles)] == before_tiles  # probes, or the failed whole image
    assert max(max(s) for s in sizes[len(before_tiles):]) <= 120  # then only tiles that fit


def test_out_of_memory_in_every_probe_fails_the_file_with_a_reason(monkeypatch):
    fake_cuda_accounting(monkeypatch)
    flaky = OomAbove(make_generator(), limit=8).eval()
    up = Upscaler(flaky, device="cpu", precision="fp32", tile="auto", optimize=False)
    with pytest.raises(ImageError, match="out of memory even with 64-pixel tiles"):
        up.num_tiles(300, 200)  # progress asks first: the probe runs here
    assert up.stats.oom_retries == 1  # probe at 128 -> cap and probe at 64 -> give up
    assert flaky.sizes == [(128, 128), (64, 64)]


def test_probe_measures_bytes_per_pixel_once_from_the_peak(monkeypatch):
    fake_cuda_accounting(monkeypatch, peak=128 * 128 * 1000)
    up = Upscaler(make_generator(), device="cpu", precision="fp32", tile="auto",
                  max_memory="100MB")
    assert up.bytes_per_pixel() == 1000
    tile = up.tile_for(2000, 3000)
    assert tile == memory.auto_tile(2000, 3000, up.overlap, 1000, 100 * 10**6)
    assert up.stats.oom_retries == 0


# ------------------------------------------------------------------ host-side assembly


def test_quantised_host_assembly_equals_the_untiled_result():
    gen = make_generator()
    lr = torch.rand(3, 45, 37)
    expected = quantise(Upscaler(gen, device="cpu", precision="fp32", tile=0)
                        .upscale_tensor(lr), 8)
    for batch in (1, 4):
        up = Upscaler(gen, device="cpu", precision="fp32", tile=16, tile_batch=batch)
        got = up.upscale_pixels(lr)
        assert got.dtype == torch.uint8 and got.shape == (3, 180, 148)
        assert got.permute(1, 2, 0).is_contiguous(), "one (H, W, 3) host buffer"
        diff = (got.int() - expected.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3  # float rounding only
    sixteen = Upscaler(gen, device="cpu", precision="fp32", tile=16).upscale_pixels(lr, 16)
    assert sixteen.dtype == torch.uint16
    assert (sixteen.int() - quantise(expected.float() / 255, 16).int()).abs().max() <= 257


def test_batched_tiles_equal_single_tiles():
    gen = make_generator()
    lr = torch.rand(1, 3, 50, 50)
    one = Upscaler(gen, device="cpu", precision="fp32", tile=16).upscale_tensor(lr)
    calls = []
    four = Upscaler(gen, device="cpu", precision="fp32", tile=16, tile_batch=4)
    got = four.upscale_tensor(lr, on_tile=lambda: calls.append(1))
    assert len(calls) == 16
    torch.testing.assert_close(got, one, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ --outscale


@pytest.mark.parametrize("factor", [2, 3, 6.5, 1.3])
def test_outscale_sizes_with_alpha(tmp_path, tiny_checkpoint, factor):
    pixels = np.random.default_rng(0).integers(0, 256, (13, 17, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    result = upscale(tmp_path / "a.png", "-o", tmp_path / "out.png", "--model", tiny_checkpoint,
                     "--outscale", factor)
    assert result.exit_code == 0, result.output
    out = Image.open(tmp_path / "out.png")
    assert out.size == (round(17 * factor), round(13 * factor)) and out.mode == "RGBA"


def test_outscale_keeps_16_bits_and_scales_dpi(tmp_path):
    from srgan_cli.images import Picture, read_image, write_image

    picture = Picture(rgb=torch.rand(3, 10, 9), bit_depth=16, dpi=(100, 100))
    up = Upscaler(make_generator(), device="cpu", precision="fp32", outscale=2.5)
    result = up.upscale_picture(picture)
    assert result.rgb.dtype == torch.uint16 and result.rgb.shape == (3, 25, 22)
    write_image(result, tmp_path / "out.png")
    again = read_image(tmp_path / "out.png")
    assert again.bit_depth == 16 and again.size == (22, 25)
    assert again.dpi == pytest.approx((22 / 9 * 100, 250), abs=0.1)


def test_outscale_4_equals_the_plain_result():
    from srgan_cli.images import Picture

    gen = make_generator()
    picture = Picture(rgb=torch.rand(3, 12, 10))
    plain = Upscaler(gen, device="cpu", precision="fp32").upscale_picture(picture)
    four = Upscaler(gen, device="cpu", precision="fp32", outscale=4).upscale_picture(picture)
    assert torch.equal(plain.rgb, four.rgb)


# ------------------------------------------------------------------ --tta


def test_tta_is_the_mean_of_the_8_transformed_passes():
    gen = make_generator()
    lr = torch.rand(1, 3, 20, 17)  # at least 16 px: smaller inputs are edge-padded
    with torch.no_grad():
        passes = []
        for flip in (False, True):
            for k in range(4):
                x = torch.rot90(lr.flip(-1) if flip else lr, k, (2, 3))
                y = torch.rot90(gen(x), -k, (2, 3))
                passes.append(y.flip(-1) if flip else y)
        expected = torch.stack(passes).mean(0).clamp(0, 1)
    up = Upscaler(gen, device="cpu", precision="fp32", tile=0, optimize=False, tta=True)
    torch.testing.assert_close(up.upscale_tensor(lr), expected, atol=1e-6, rtol=0)
    tiled = Upscaler(gen, device="cpu", precision="fp32", tile=8, optimize=False, tta=True)
    torch.testing.assert_close(tiled.upscale_tensor(lr), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(tta_average(lambda t: t, lr), lr)
