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


def tile_windows(
    height: int, width: int, tile: int, overlap: int
) -> Iterator[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """Each tile's core (top, left, bottom, right) with its window: core plus ``overlap``
    of context on each side, clipped at the image border."""
    for top, left, bottom, right in tile_grid(height, width, tile):
        window = (max(top - overlap, 0), max(left - overlap, 0),
                  min(bottom + overlap, height), min(right + overlap, width))
        yield (top, left, bottom, right), window


@torch.no_grad()
def upscale_tiled(
    net: Callable[[torch.Tensor], torch.Tensor],
    lr: torch.Tensor,
    scale: int,
    tile: int | None,
    overlap: int,
    on_tile: Callable[[], None] | None = None,
    out: torch.Tensor | None = None,
    batch: int = 1,
) -> torch.Tensor:
    """Run ``net`` over ``lr`` (N, C, H, W) tile by tile -> (N, C, scale*H, scale*W).

    ``tile`` is the core tile size in LR pixels (``None`` or 0: one pass over the whole
    image). ``on_tile`` is called after each tile, for progress bars. ``net`` may return
    any dtype on any device (e.g. uint8 on the GPU, already quantised): each tile's core
    is copied into ``out`` as soon as it is computed, so only O(tile) stays on ``net``'s
    device. ``out`` may be any (N, C, sH, sW) tensor or view (e.g. of an (H, W, C) host
    buffer); without it one is allocated with ``net``'s output dtype on ``lr``'s device.
    ``batch`` > 1 runs up to that many equally shaped tiles (N = 1 only) in one pass.
    """
    n, _, height, width = lr.shape
    pieces = (list(tile_windows(height, width, tile, overlap)) if tile else
              [((0, 0, height, width), (0, 0, height, width))])
    if len(pieces) == 1:
        pieces = [((0, 0, height, width), (0, 0, height, width))]
    batch = batch if n == 1 else 1
    i = 0
    while i < len(pieces):
        group = [pieces[i]]
        shape = _window_shape(pieces[i][1])
        while (len(group) < batch and i + len(group) < len(pieces)
               and _window_shape(pieces[i + len(group)][1]) == shape):
            group.append(pieces[i + len(group)])
        i += len(group)
        windows = [lr[:, :, t0:b0, l0:r0] for _, (t0, l0, b0, r0) in group]
        sr = net(windows[0] if len(windows) == 1 else torch.cat(windows))
        if out is None:
            out = torch.empty((n, sr.shape[1], height * scale, width * scale), dtype=sr.dtype,
                              device=lr.device, pin_memory=sr.is_cuda and not lr.is_cuda)
        for k, ((top, left, bottom, right), (t0, l0, _, _)) in enumerate(group):
            core = sr[k * n:(k + 1) * n, :, (top - t0) * scale:(bottom - t0) * scale,
                      (left - l0) * scale:(right - l0) * scale]
            out[:, :, top * scale:bottom * scale, left * scale:right * scale].copy_(
                core, non_blocking=True)  # pinned host buffer on CUDA: overlaps the next tile
            if on_tile:
                on_tile()
    assert out is not None
    if out.device.type == "cpu" and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # non-blocking copies into host memory must land first
    return out


def _window_shape(window: tuple[int, int, int, int]) -> tuple[int, int]:
    t0, l0, b0, r0 = window
    return b0 - t0, r0 - l0
