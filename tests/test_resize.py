"""srgan_cli.resize: the batched bicubic downscale equals Pillow's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from srgan_cli import degradation
from srgan_cli.errors import InputError
from srgan_cli.resize import (
    PRECISION_BITS,
    _horizontal,
    _vertical,
    bicubic_weights,
    pil_bicubic_downscale,
    vertical_first,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]
SIZES = ((4, 4), (8, 12), (12, 8), (9, 13), (17, 5), (33, 47), (96, 96), (128, 128), (61, 100))
KINDS = ("noise", "gradient", "edges")


def image(kind: str, channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """(C, H, W) uint8: uniform noise, a smooth gradient, or 0/255 blocks with sharp edges
    (whose bicubic overshoot must be clipped)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return torch.randint(0, 256, (channels, height, width), generator=gen, dtype=torch.uint8)
    if kind == "gradient":
        rows = torch.linspace(0, 1, height)[:, None]
        cols = torch.linspace(0, 1, width)[None, :]
        tilt = torch.rand(channels, 1, 1, generator=gen)
        x = 255 * (tilt * rows + (1 - tilt) * cols ** 2)
        return x.round().to(torch.uint8)
    rows = torch.stack([stripes(height, gen) for _ in range(channels)])[:, :, None]
    cols = torch.stack([stripes(width, gen) for _ in range(channels)])[:, None, :]
    return ((rows ^ cols) * 255).to(torch.uint8)


def stripes(length: int, gen: torch.Generator) -> torch.Tensor:
    """(length,) bool: alternating runs of random lengths 1 to 16."""
    runs = torch.randint(1, 17, (length,), generator=gen)
    on = torch.arange(length) % 2 == 1
    return on.repeat_interleave(runs)[:length]


def pillow_downscale(img: torch.Tensor, scale: int) -> torch.Tensor:
    """(C, H, W) uint8, C = 1 (mode L) or 3 (RGB) -> degradation.bicubic_downscale, as a
    (C, H // scale, W // scale) uint8 tensor."""
    array = img.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if img.shape[0] == 1 else array)
    out = np.asarray(degradation.bicubic_downscale(pil, scale))
    return torch.from_numpy(out.copy()).reshape(*out.shape[:2], -1).permute(2, 0, 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_equals_pillow(device: str, channels: int, scale: int) -> None:
    for i, (height, width) in enumerate(SIZES):
        if height < scale or width < scale:
            continue
        batch = torch.stack([image(kind, channels, height, width, seed=i) for kind in KINDS])
        out = pil_bicubic_downscale(batch.to(device), scale)
        assert out.device.type == device and out.dtype == torch.uint8
        assert out.shape == (len(KINDS), channels, height // scale, width // scale)
        for img, result in zip(batch, out.cpu(), strict=True):
            assert torch.equal(result, pillow_downscale(img, scale)), (height, width, scale)


@pytest.mark.parametrize("device", DEVICES)
def test_many_random_images_in_one_batch(device: str) -> None:
    gen = torch.Generator().manual_seed(7)
    batch = torch.randint(0, 256, (16, 3, 96, 96), generator=gen, dtype=torch.uint8)
    batch[8:] = batch[8:] // 128 * 255  # saturated halves: strong overshoot
    out = pil_bicubic_downscale(batch.to(device), 4).cpu()
    for img, result in zip(batch, out, strict=True):
        assert torch.equal(result, pillow_downscale(img, 4))


def test_edges_overshoot_so_clipping_is_exercised() -> None:
    """The 0/255 test images drive the unclipped sums past both ends of 0..255."""
    img = image("edges", 1, 96, 96, seed=0)[0].double()
    sums = img @ bicubic_weights(96, 24).T / (1 << PRECISION_BITS)
    assert sums.min() < -0.5 and sums.max() > 255.5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("height", "width", "scale"),
                         [(8, 4, 2), (10, 4, 2), (192, 96, 4), (196, 96, 4), (412, 4, 2),
                          (40, 200, 8), (800, 8, 2), (802, 8, 2)])
def test_pass_order_follows_pillow(device: str, height: int, width: int, scale: int) -> None:
    """The pass order of the installed Pillow (``vertical_first``; it changed in Pillow 12 and
    13): these noise images, on both sides of each version's boundary, come out as Pillow's
    in the chosen order and differently in the other, so the order is the right one."""
    vertical = vertical_first(height, width, height // scale, width // scale)
    batch = torch.stack([image("noise", 3, height, width, seed=s) for s in range(4)])
    out = pil_bicubic_downscale(batch.to(device), scale).cpu()
    for img, result in zip(batch, out, strict=True):
        assert torch.equal(result, pillow_downscale(img, scale))
    x = batch.double()
    other_order = (_vertical(_horizontal(x, width // scale), height // scale) if vertical else
                   _horizontal(_vertical(x, height // scale), width // scale))
    assert not torch.equal(other_order.to(torch.uint8), out)


def test_scale_one_crops_nothing_and_copies() -> None:
    batch = image("noise", 3, 5, 7, seed=1)[None]
    out = pil_bicubic_downscale(batch, 1)
    assert torch.equal(out, batch) and out.data_ptr() != batch.data_ptr()


def test_empty_batch_returns_empty() -> None:
    out = pil_bicubic_downscale(torch.zeros(0, 3, 96, 96, dtype=torch.uint8), 4)
    assert out.shape == (0, 3, 24, 24) and out.dtype == torch.uint8


@pytest.mark.parametrize(("in_size", "out_size"), [(96, 24), (128, 16), (13, 6), (4, 2), (47, 5)])
def test_weights_are_pillows_fixed_point_rows(in_size: int, out_size: int) -> None:
    """Integer coefficients; each row sums to 2**PRECISION_BITS within half a unit per nonzero
    tap (the doubles sum to 1, each is rounded to the nearest integer)."""
    weights = bicubic_weights(in_size, out_size)
    assert weights.shape == (out_size, in_size) and weights.dtype == torch.float64
    assert torch.equal(weights, weights.round())
    for row in weights:
        taps = int(row.count_nonzero())
        assert abs(row.sum().item() - (1 << PRECISION_BITS)) <= taps / 2


def test_weights_of_a_training_patch() -> None:
    """96 -> 24: rows away from the borders are the same 16-tap filter shifted by 4 pixels,
    symmetric, with negative lobes; the border rows are renormalised truncations."""
    weights = bicubic_weights(96, 24)
    inner = weights[2:-2]
    for row, next_row in zip(inner[:-1], inner[1:], strict=True):
        assert torch.equal(next_row, row.roll(4))
    taps = inner[0][inner[0] != 0]
    assert len(taps) == 16 and torch.equal(taps, taps.flip(0)) and taps.min() < 0
    assert torch.equal(weights[0], weights[-1].flip(0))
    assert bicubic_weights(96, 24) is weights  # cached


def test_bad_inputs_are_clear_errors() -> None:
    batch = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(InputError, match="uint8"):
        pil_bicubic_downscale(batch.float(), 2)
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        pil_bicubic_downscale(batch[0], 2)
    with pytest.raises(InputError, match="positive integer"):
        pil_bicubic_downscale(batch, 0)
    with pytest.raises(InputError, match="smaller than the scale 16"):
        pil_bicubic_downscale(batch, 16)
