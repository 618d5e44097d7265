"""Training-data throughput: samples/s of the bicubic and realistic LR paths, side by side.

    uv run --frozen python benchmarks/degradation_speed.py ../shared/datasets/T91 \
        --patch-size 96 --batches 20

Times what ``srgan train`` does to get a training pair: ``data.batches`` (crops, and the
bicubic LR or the realistic plan) made on ``--device`` as training makes them for cached
sets (``--path device``: ``data.device_batches``) or per sample on the host (``--path
host``), in this process (``--workers 0``) or with DataLoader workers, then
``data.to_training_pair`` on ``--device`` (for realistic batches: the whole degradation
chain, batched). The two degradations alternate in rounds so that a loaded
machine slows both alike. Images are cached in memory first, so the figures are the cost of
cropping plus making the LR patch.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from srgan_cli.degradation import RealisticDegradation
from srgan_cli.training import data


def samples_per_second(dataset: data.PatchDataset, batch_size: int, batches: int, workers: int,
                       start_step: int, device: torch.device, path: str,
                       check_syncs: bool = False) -> float:
    stream = data.batches(dataset, batch_size, start_step, workers,
                          device=device if path == "device" else None)
    data.to_training_pair(next(stream), device)  # start the workers, warm up (not timed)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    if check_syncs:  # CUDA: warn at every op that makes the host wait for the GPU
        torch.cuda.set_sync_debug_mode("warn")
    start = time.perf_counter()
    for batch in itertools.islice(stream, batches):
        data.to_training_pair(batch, device)
    if check_syncs:
        torch.cuda.set_sync_debug_mode("default")
    sync()
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--patch-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--path", choices=("device", "host"), default="device",
                        help="where crops and bicubic LR are made (training: device)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU work)")
    parser.add_argument("--check-syncs", action="store_true",
                        help="CUDA: warn where making a batch makes the host wait for the GPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    found = data.scan_folders(args.folders, args.patch_size)
    paths = {"bicubic": None, "realistic": RealisticDegradation()}
    datasets = {name: data.PatchDataset(found, args.patch_size, 4, seed=0, cache=True,
                                        realistic=params) for name, params in paths.items()}
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(args.rounds):
        for name, dataset in datasets.items():  # a fresh stretch of the stream each round
            rates[name].append(samples_per_second(dataset, args.batch_size, args.batches,
                                                  args.workers, start_step=1 + r * 1000,
                                                  device=device, path=args.path,
                                                  check_syncs=args.check_syncs))
    print(f"{len(found.paths)} images, patch {args.patch_size}, batch {args.batch_size}, "
          f"workers {args.workers}, device {device}, path {args.path}, threads {args.threads}, "
          f"{args.rounds} rounds x {args.batches} batches")
    base = statistics.median(rates["bicubic"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:10s} {median:8.1f} samples/s (median; rounds: "
              f"{', '.join(f'{v:.1f}' for v in values)})  x bicubic {median / base:.3f}")


if __name__ == "__main__":
    main()
