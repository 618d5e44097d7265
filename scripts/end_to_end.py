"""End-to-end folder throughput against model-only time, side by side in one run.

    uv run --frozen python scripts/end_to_end.py --model srgan-x4 --size 256 --images 4

The rows ``srgan benchmark --speed`` adds per size (model only; N generated PNGs through
``srgan upscale``'s pipelined and serial batch loops), without its baseline and ablation
rows, which at large sizes take minutes and many GB on a CPU. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

from srgan_cli.benchmark import speed_generator, time_config, time_end_to_end
from srgan_cli.upscale import Upscaler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--size", type=int, action="append", required=True)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    name, generator = speed_generator(args.model)
    upscaler = Upscaler(generator, device=args.device, precision=args.precision, tile="auto")
    print(f"{name} on {upscaler.device}\n")
    print("| input | row | ms / image | images/s | x model only | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for size in args.size:
        model = time_config(upscaler, size, args.repeats, args.warmup,
                            "model only (tile auto)", name, args.precision)
        rows = [model] + [time_end_to_end(upscaler, size, args.images, name, args.precision,
                                          pipeline) for pipeline in (True, False)]
        for row in rows:
            print(f"| {size}x{size} | {row.label} | {row.ms:.0f} | {1000 / row.ms:.3f} | "
                  f"{row.ms / model.ms:.2f}x | {row.peak_mem_mb:.0f} |", flush=True)


if __name__ == "__main__":
    main()
