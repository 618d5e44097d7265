"""JPEG round-trip throughput: images/s of srgan_cli.jpeg.jpeg vs the Pillow round trip.

    uv run --frozen python benchmarks/jpeg_speed.py --sizes 48 128 --batch-size 32 --rounds 5

Both run in this process on the CPU with one thread (``torch.set_num_threads(1)``; Pillow is
single-threaded), on the same batch of synthetic images (smooth colour waves plus noise) with
per-sample qualities drawn from Real-ESRGAN's range 30..95. The Pillow side is
``degradation.jpeg`` (float [0, 1] in and out, as the training pipeline calls it); the tensor
side is ``jpeg.jpeg`` on the uint8 batch. The two alternate in rounds so that a loaded machine
slows both alike; the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from srgan_cli import degradation
from srgan_cli.jpeg import jpeg


def synthetic_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8: smooth colour waves with some noise, like photo patches."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    phase = torch.rand(n, 3, 1, 1, generator=gen) * 6
    waves = 127 + 100 * torch.sin(xx / 6 + phase) * torch.cos(yy / 9 - phase)
    return (waves + 20 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 255).to(
        torch.uint8)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 128])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for size in args.sizes:
        images = synthetic_batch(args.batch_size, size)
        floats = images.float() / 255
        qualities = torch.randint(30, 96, (args.batch_size,),
                                  generator=torch.Generator().manual_seed(1))
        as_list = qualities.tolist()
        pillow_out = degradation.jpeg(floats, as_list)  # warm-up, and the two must agree
        tensor_out = jpeg(images, qualities)
        assert torch.equal((pillow_out * 255).round().to(torch.uint8), tensor_out)
        pillow, tensor = [], []
        for _ in range(args.rounds):
            pillow.append(seconds(lambda: degradation.jpeg(floats, as_list)))  # noqa: B023
            tensor.append(seconds(lambda: jpeg(images, qualities)))  # noqa: B023
        pillow_rate = args.batch_size / statistics.median(pillow)
        tensor_rate = args.batch_size / statistics.median(tensor)
        print(f"{args.batch_size} x {size}x{size}: Pillow {pillow_rate:8.1f} images/s, "
              f"tensor jpeg {tensor_rate:8.1f} images/s, tensor/Pillow "
              f"{tensor_rate / pillow_rate:.2f}")


if __name__ == "__main__":
    main()
