"""Seamless tiled inference: upscale images of any size in bounded memory.

Each tile is run with ``overlap`` LR pixels of real image context around it and only
its core is kept. With ``overlap`` at least the network's receptive radius
(``GeneratorConfig.receptive_radius()``, 40 LR pixels for the paper's SRResNet) every
output pixel sees exactly the inputs it would see untiled, so tiled output equals
untiled output up to float rounding: no blending, no seams, and the same result on
every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


def tile_grid(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """Core regions (top, left, bottom, right) of ``tile``-sized tiles covering the image."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, left, min(top + tile, height), min(left + tile, width)


def count_tiles(height: int, width: int, tile: int | None) -> int:
    if not tile or (height <= tile and width <= tile):
        return 1
    return -(-height // tile) * -(-width // tile)


@torch.no_grad()
def upscale_tiled(
    net: Callable[[torch.Tensor], torch.Tensor],
    lr: torch.Tensor,
    scale: int,
    tile: int | None,
    overlap: int,
    on_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Run ``net`` over ``lr`` (N, C, H, W) tile by tile -> (N, C, scale*H, scale*W).

    ``tile`` is the core tile size in LR pixels (``None`` or 0: one pass over the whole
    image). ``on_tile`` is called after each tile, for progress bars. The output has
    the dtype of ``net``'s output and lives on ``lr``'s device.
    """
    n, _, height, width = lr.shape
    if not tile or (height <= tile and width <= tile):
        out = net(lr)
        if on_tile:
            on_tile()
        return out
    out: torch.Tensor | None = None
    for top, left, bottom, right in tile_grid(height, width, tile):
        # the tile plus its context, clipped at the image border
        t0, l0 = max(top - overlap, 0), max(left - overlap, 0)
        b0, r0 = min(bottom + overlap, height), min(right + overlap, width)
        sr = net(lr[:, :, t0:b0, l0:r0])
        if out is None:
            out = sr.new_empty((n, sr.shape[1], height * scale, width * scale))
        core = sr[:, :, (top - t0) * scale:(bottom - t0) * scale,
                  (left - l0) * scale:(right - l0) * scale]
        out[:, :, top * scale:bottom * scale, left * scale:right * scale] = core
        if on_tile:
            on_tile()
    assert out is not None
    return out
