"""A quality guard on the shipped weights: srresnet-x4 must really super-resolve.

A test-made scene (anti-aliased shapes and lines, 192x192) is downscaled with the benchmark's
bicubic degradation and upscaled on the CPU. The output must beat bicubic by a clear PSNR-Y
margin and equal a stored reference within a few 8-bit levels, so a broken checkpoint
conversion, normalisation, fast path or tiling change cannot pass CI. Regenerate the reference
(only after a deliberate change of the shipped weights) with:

    uv run python tests/test_quality.py
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from srgan_cli import Upscaler, degradation, metrics

REFERENCE = Path(__file__).with_name("data") / "srresnet-x4_scene.png"


def scene(size: int = 192, seed: int = 0) -> Image.Image:
    """Random filled ellipses, rectangles and lines, drawn at 4x and Lanczos-downsampled."""
    rng, s = random.Random(seed), 4
    img = Image.new("RGB", (size * s, size * s), (200, 180, 150))
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x0, y0 = rng.randrange(size * s), rng.randrange(size * s)
        r = rng.randrange(8 * s, 40 * s)
        colour = tuple(rng.randrange(256) for _ in range(3))
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x0 + r, y0 + r // 2), fill=colour)
        else:
            end = (x0 + rng.randrange(-r, r), y0 + rng.randrange(-r, r))
            draw.line((x0, y0, *end), fill=colour, width=rng.randrange(2, 12))
    return img.resize((size, size), Image.LANCZOS)


def to_float(img: Image.Image) -> torch.Tensor:
    return degradation.pil_to_tensor(img).float() / 255


def upscale_scene(tile: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(HR, bicubic, srresnet-x4 quantised) as (3, 192, 192) float tensors in [0, 1]."""
    hr = scene()
    lr = degradation.bicubic_downscale(hr, 4)
    sr = Upscaler("srresnet-x4", device="cpu", precision="fp32",  # as the reference was made
                  tile=tile).upscale_tensor(to_float(lr))
    bicubic = to_float(degradation.bicubic_upscale(lr, 4))
    return to_float(hr), bicubic, metrics.quantize(sr).float() / 255


@pytest.mark.parametrize("tile", [None, 20])
def test_srresnet_beats_bicubic_and_matches_the_reference(tile):
    hr, bicubic, sr = upscale_scene(tile)
    psnr_sr = float(metrics.psnr(sr, hr, border=4)[0])
    psnr_bicubic = float(metrics.psnr(bicubic, hr, border=4)[0])
    assert psnr_sr > psnr_bicubic + 3.0, (psnr_sr, psnr_bicubic)  # measured: 35.4 vs 30.1 dB
    reference = to_float(Image.open(REFERENCE).convert("RGB"))
    levels = (sr - reference).abs() * 255
    assert levels.max() <= 3, float(levels.max())  # float rounding across CPUs, not more
    assert levels.mean() < 0.05, float(levels.mean())


if __name__ == "__main__":
    _, _, sr = upscale_scene()
    degradation.tensor_to_pil(sr).save(REFERENCE)
    print(f"wrote {REFERENCE}")
