"""How far torch's antialiased bicubic downscale is from Pillow's (the training / benchmark LR).

    uv run --frozen python scripts/resize_vs_pillow.py [FOLDER ...] [--crops 200] [--scale 4]

For each folder (default: T91, BSDS200 and Set14 under /work/shared/datasets): random 96x96
crops (seeded) and the whole images, each cropped to a multiple of the scale. The reference
is ``degradation.bicubic_downscale`` (Pillow ``Image.BICUBIC``). Compared with it, in 8-bit
levels (rounded, clipped to 0..255): torch ``F.interpolate(mode="bicubic", antialias=True)``
in float32 on [0, 255] and on [0, 1], and ``resize.pil_bicubic_downscale``. Prints a
Markdown table: max absolute difference, the share of values that differ, and the share
that differ by more than one level.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from srgan_cli import degradation
from srgan_cli.images import read_rgb_uint8
from srgan_cli.resize import pil_bicubic_downscale

DATASETS = "/work/shared/datasets"
Downscale = Callable[[torch.Tensor, int], torch.Tensor]  # (3, H, W) uint8 -> uint8 LR


def torch_aa(unit: float) -> Downscale:
    """torch's antialiased bicubic in float32 on [0, 255 / unit], rounded to 8 bits."""
    def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
        size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
        x = hr[None, :, :size[0] * scale, :size[1] * scale].float() / unit
        out = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        return (out[0] * unit).round().clamp(0, 255).to(torch.uint8)
    return downscale


METHODS: dict[str, Downscale] = {
    "torch float32 [0, 255]": torch_aa(1.0),
    "torch float32 [0, 1]": torch_aa(255.0),
    "resize.pil_bicubic_downscale": lambda hr, scale: pil_bicubic_downscale(hr[None], scale)[0],
}


def random_crops(images: list[torch.Tensor], count: int, size: int, seed: int
                 ) -> list[torch.Tensor]:
    """``count`` size x size crops of random images at random places (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    usable = [img for img in images if min(img.shape[-2:]) >= size]
    crops = []
    for _ in range(count):
        img = usable[int(torch.randint(len(usable), (), generator=gen))]
        top = int(torch.randint(img.shape[-2] - size + 1, (), generator=gen))
        left = int(torch.randint(img.shape[-1] - size + 1, (), generator=gen))
        crops.append(img[:, top:top + size, left:left + size])
    return crops


def compare(hrs: list[torch.Tensor], scale: int, method: Downscale
            ) -> tuple[int, int, int, int]:
    """(max abs difference, values that differ, that differ by > 1, all values) of ``method``
    against Pillow."""
    worst, differing, beyond_one, total = 0, 0, 0, 0
    for hr in hrs:
        expected = degradation.downscale_tensor(hr, scale).int()
        diff = (method(hr, scale).int() - expected).abs()
        worst = max(worst, int(diff.max()))
        differing += int((diff > 0).sum())
        beyond_one += int((diff > 1).sum())
        total += diff.numel()
    return worst, differing, beyond_one, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", default=[f"{DATASETS}/{name}" for name in
                                                       ("T91", "BSDS200", "Set14")])
    parser.add_argument("--crops", type=int, default=200, help="random crops per folder")
    parser.add_argument("--crop-size", type=int, default=96)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"| images (x{args.scale}) | method | max abs diff | values differing | by > 1 |")
    print("|---|---|---:|---:|---:|")
    for folder in map(Path, args.folders):
        images = [read_rgb_uint8(path) for path in sorted(folder.iterdir()) if path.is_file()]
        sets = {f"{folder.name}, {args.crops} crops {args.crop_size}px":
                random_crops(images, args.crops, args.crop_size, args.seed),
                f"{folder.name}, {len(images)} whole images": images}
        for label, hrs in sets.items():
            for name, method in METHODS.items():
                worst, differing, beyond_one, total = compare(hrs, args.scale, method)
                print(f"| {label} | {name} | {worst} | {100 * differing / total:.2f}% "
                      f"({differing} of {total}) | {100 * beyond_one / total:.2f}% |",
                      flush=True)


if __name__ == "__main__":
    main()
