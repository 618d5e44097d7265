"""Issue 16: out-of-memory recovery, host-side assembly, --tta. --tile auto and --max-memory
are tested in test_memory.py, --outscale in test_outscale.py."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import make_generator
from PIL import Image

from srgan_cli import memory
from srgan_cli.errors import ImageError
from srgan_cli.images import quantise
from srgan_cli.models import Generator
from srgan_cli.upscale import Upscaler, tta_average

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
