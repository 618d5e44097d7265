"""Discriminator cost: parameters and forward+backward time of ``vgg`` and ``unet``, side by side.

    uv run --frozen python benchmarks/discriminator_speed.py --size 128 --batch 4 --device cpu

Builds each discriminator as ``srgan train`` does (``models.build_discriminator``, train
mode, default width 64), then times one forward and backward of a random (batch, 3, size,
size) batch in [0, 1], alternating the two networks in rounds so that a loaded machine
slows both alike. The first pass of each is a warm-up (not timed). Prints medians and the
ratio unet / vgg.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from srgan_cli.models import DISCRIMINATORS, build_discriminator


def forward_backward_seconds(disc: torch.nn.Module, batch: torch.Tensor) -> float:
    """Wall time of one forward + backward (the sum of the logits as the loss)."""
    if batch.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    disc(batch).float().sum().backward()
    if batch.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="patch side in pixels")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch = torch.rand(args.batch, 3, args.size, args.size, device=device)
    nets = {kind: build_discriminator(kind, args.channels).to(device).train()
            for kind in DISCRIMINATORS}
    for net in nets.values():
        forward_backward_seconds(net, batch)  # warm-up
    times: dict[str, list[float]] = {kind: [] for kind in nets}
    for _ in range(args.rounds):
        for kind, net in nets.items():
            net.zero_grad(set_to_none=True)
            times[kind].append(forward_backward_seconds(net, batch))
    print(f"batch {args.batch} x 3 x {args.size} x {args.size}, {args.device}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds")
    base = statistics.median(times["vgg"])
    for kind, values in times.items():
        params = sum(p.numel() for p in nets[kind].parameters())
        median = statistics.median(values)
        print(f"{kind:5s} {params / 1e6:6.2f} M parameters  {median * 1000:8.1f} ms "
              f"forward+backward (median; rounds: {', '.join(f'{v * 1000:.0f}' for v in values)})"
              f"  x vgg {median / base:.2f}")


if __name__ == "__main__":
    main()
