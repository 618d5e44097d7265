"""PNG encode throughput and a folder's end-to-end time against Pillow's serial save (issue 21).

    uv run --frozen python scripts/folder_io.py --encode-threads 1,2
    uv run --frozen python scripts/folder_io.py --folder-only      # e.g. against older code

1. Encode: one 4096x4096 8-bit RGB PNG (a generated smooth scene: noise bicubic-enlarged
   8x, or ``--photo`` enlarged), written by srgan's writer (level 1) with each thread count,
   and by Pillow's default ``save()`` (level 6, one thread).
2. Folder: 4 generated 768x768 PNGs through ``upscale_batch`` (``srgan upscale``'s loop,
   default limits) with a tiny network (1 block, 8 channels: the I/O dominates), against
   Pillow's default ``save()`` of the same 4 outputs one after another. The ratio is
   folder wall time / Pillow's serial save time (issue 21's "CPU ratio"). Also timed: the
   network alone on the 4 inputs (the folder's floor) and the 4 outputs written by as many
   threads as the pipeline has writers.

Prints Markdown rows. Wall times from time.perf_counter; nothing is averaged.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def big_photo(side: int, photo: Path | None) -> np.ndarray:
    """(side, side, 3) uint8: ``photo`` enlarged (bicubic), or a smooth generated scene."""
    if photo is not None:
        return np.asarray(Image.open(photo).convert("RGB").resize((side, side), Image.BICUBIC))
    small = np.random.default_rng(0).integers(0, 256, (side // 8, side // 8, 3), np.uint8)
    return np.asarray(Image.fromarray(small).resize((side, side), Image.BICUBIC))


def encode_rows(threads: list[int], side: int, photo: Path | None) -> None:
    from srgan_cli import images

    try:
        from srgan_cli import png
    except ImportError:  # code from before png.py: its one single-threaded writer
        png = None

    pixels = big_photo(side, photo)
    megabytes = pixels.nbytes / 1e6
    print(f"| encoder ({side}x{side} RGB, {megabytes:.1f} MB raw) | s | MB/s raw | file MB |")
    print("|---|---|---|---|")
    start = time.perf_counter()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    pillow = time.perf_counter() - start
    print(f"| Pillow save() default (level 6), 1 thread | {pillow:.2f} | "
          f"{megabytes / pillow:.0f} | {len(buffer.getvalue()) / 1e6:.1f} |", flush=True)
    for count in threads if png is not None else [1]:
        start = time.perf_counter()
        if png is None:
            data = images.png_codec._encode_png(pixels)
        else:
            with png.Deflater(count) as deflater:
                data = images.png_codec._encode_png(pixels, deflater=deflater)
        took = time.perf_counter() - start
        print(f"| srgan writer, level 1, {count} thread(s) | {took:.2f} | "
              f"{megabytes / took:.0f} | {len(data) / 1e6:.1f} |", flush=True)


def folder_row(n_images: int, size: int) -> None:
    from srgan_cli.models import Generator, GeneratorConfig
    from srgan_cli.upscale import Upscaler, upscale_batch

    torch.manual_seed(0)
    network = Generator(GeneratorConfig(scale=4, num_blocks=1, channels=8))
    upscaler = Upscaler(network, device="cpu", precision="fp32", tile="auto")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="srgan-folder-io-") as tmp:
        jobs = []
        for i in range(n_images):  # as benchmark.time_end_to_end: noise, bicubic-enlarged 8x
            small = rng.integers(0, 256, (size // 8, size // 8, 3), np.uint8)
            path = Path(tmp) / f"in{i}.png"
            Image.fromarray(small).resize((size, size), Image.BICUBIC).save(path)
            jobs.append((path, Path(tmp) / "out" / path.name))
        start = time.perf_counter()
        summary = upscale_batch(upscaler, jobs)
        folder = time.perf_counter() - start
        assert not summary.failed, summary.failed
        outputs = [np.asarray(Image.open(dst).convert("RGB")) for _, dst in jobs]
        start = time.perf_counter()
        for src, _ in jobs:  # the network alone on the decoded inputs: the folder's floor
            upscaler.upscale_pixels(torch.from_numpy(
                np.array(Image.open(src).convert("RGB"))).permute(2, 0, 1).float() / 255)
        model = time.perf_counter() - start
        start = time.perf_counter()
        write_like_the_pipeline(outputs, Path(tmp) / "again")
        ours = time.perf_counter() - start
        start = time.perf_counter()
        for i, pixels in enumerate(outputs):
            Image.fromarray(pixels).save(Path(tmp) / f"pillow{i}.png")
        pillow = time.perf_counter() - start
    print(f"| folder of {n_images} {size}x{size} PNGs, tiny network | {folder:.2f} s | "
          f"Pillow serial save() of the outputs {pillow:.2f} s | ratio {folder / pillow:.2f}x | "
          f"network alone {model:.2f} s | the outputs written by the pipeline's writers "
          f"{ours:.2f} s ({ours / pillow:.2f}x Pillow) |", flush=True)


def write_like_the_pipeline(outputs: list[np.ndarray], folder: Path) -> None:
    """The outputs written by as many threads as ``upscale_batch`` has writers."""
    from concurrent.futures import ThreadPoolExecutor

    from srgan_cli import images, upscale

    limits = getattr(upscale, "PipelineLimits", None)
    writers = limits.for_machine().writers if limits else upscale.WRITERS
    pictures = [images.Picture(rgb=torch.from_numpy(o).permute(2, 0, 1)) for o in outputs]
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(lambda i: images.write_image(pictures[i], folder / f"{i}.png"),
                      range(len(pictures))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encode-threads", default="1,2")
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--folder-only", action="store_true")
    parser.add_argument("--photo", type=Path, help="the encoded image, enlarged to --side "
                        "(e.g. ../shared/datasets/Set14/baboon.png); default: generated")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"Pillow {Image.__version__}\n")
    if not args.folder_only:
        encode_rows([int(t) for t in args.encode_threads.split(",")], args.side, args.photo)
        print()
    folder_row(args.images, args.size)


if __name__ == "__main__":
    main()
