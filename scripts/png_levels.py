"""Measure PNG encoding: zlib level (and strategy) against file size and encode time.

    uv run --frozen python scripts/png_levels.py FOLDER_OF_PNGS [--levels 0,1,...,9]

Each image is decoded once, then encoded in memory with Pillow at each level (and with the
Z_RLE / Z_FILTERED strategies at level 1), and with this project's 16-bit writer at a few
levels (default zlib strategy, as srgan writes 16 bits). Prints a Markdown table: totals
over the folder, and each row relative to level 6
(Pillow's default). Single-threaded; time is wall-clock, best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from srgan_cli.images.png_codec import _encode_png


def best_time(encode, repeats: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        size = encode()
        times.append(time.perf_counter() - start)
    return min(times), size


def pillow(image: Image.Image, **options) -> int:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.tell()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--levels", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    paths = sorted(args.folder.glob("*.png"))
    images = [Image.open(p).convert("RGB") for p in paths]
    megapixels = sum(im.width * im.height for im in images) / 1e6
    rows: dict[str, tuple[float, int]] = {}

    def measure(label: str, encode) -> None:
        total_t, total_b = 0.0, 0
        for im in images:
            t, b = best_time(lambda im=im: encode(im), args.repeats)
            total_t, total_b = total_t + t, total_b + b
        rows[label] = (total_t, total_b)

    for level in map(int, args.levels.split(",")):
        measure(f"Pillow, level {level}", lambda im, lv=level: pillow(im, compress_level=lv))
    for name, strategy in (("Z_FILTERED", 1), ("Z_RLE", 3)):
        measure(f"Pillow, level 1, {name}",
                lambda im, s=strategy: pillow(im, compress_level=1, compress_type=s))
    for level in (1, 2, 6):
        measure(f"16-bit writer, level {level} (same pixels x257)",
                lambda im, lv=level: len(_encode_png(
                    np.asarray(im).astype(np.uint16) * 257, level=lv)))

    ref_t, ref_b = rows["Pillow, level 6"] if "Pillow, level 6" in rows else next(iter(
        rows.values()))
    print(f"{len(images)} images, {megapixels:.1f} MP in all ({args.folder})\n")
    print("| encoder | encode s | MP/s | MB | time vs level 6 | size vs level 6 |")
    print("|---|---|---|---|---|---|")
    for label, (t, b) in rows.items():
        print(f"| {label} | {t:.2f} | {megapixels / t:.1f} | {b / 1e6:.1f} | "
              f"{t / ref_t:.2f}x | {b / ref_b:.2f}x |")


if __name__ == "__main__":
    main()
