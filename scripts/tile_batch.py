"""Time tile batching: one 256x256 input, tile 128, ``tile_batch`` 1 against 4 (CPU).

    uv run --frozen python scripts/tile_batch.py

The four 208x208 windows (tile plus context) run one at a time or stacked in one pass;
the output is the same. Two timed runs each, interleaved, after a warm-up.
"""

import time

import torch

from srgan_cli.checkpoints import load_model
from srgan_cli.upscale import Upscaler

gen = load_model("srgan-x4")
lr = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
ups = {b: Upscaler(gen, device="cpu", precision="fp32", tile=128, tile_batch=b) for b in (1, 4)}
for up in ups.values():
    up.upscale_tensor(lr)  # warm-up
times: dict[int, list[float]] = {1: [], 4: []}
for _ in range(2):
    for b, up in ups.items():
        start = time.perf_counter()
        up.upscale_tensor(lr)
        times[b].append(time.perf_counter() - start)
for b in times:
    print(f"tile 128, tile_batch {b}: " + ", ".join(f"{t:.1f} s" for t in times[b]))
