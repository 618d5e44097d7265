"""How much memory the network may use, and the tile size that fits in it (``--tile auto``).

The generator's peak memory grows linearly with the pixels of the tile it runs on (tile plus
its overlap on each side). ``auto_tile`` divides a memory budget by the bytes one input
pixel costs and takes the square root:

- CUDA: the budget is the device's free memory (``torch.cuda.mem_get_info``), capped by
  ``--max-memory``, times a safety margin; the bytes per pixel are measured once with a
  small probe pass at the chosen precision.
- CPU and MPS: the budget is ``--max-memory``, else ``DEFAULT_HOST_BUDGET`` (at most half
  the memory available), and never more than the memory available (``available_memory``:
  the free RAM, or what is left under a container's cgroup limit); the bytes per pixel are
  estimated from the architecture. Images that fit the budget run in one pass (tiles cost
  compute: each repeats its overlap).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path

import torch

from .models import Generator

MIN_TILE = 64
"""Smallest core tile (LR pixels) that auto and out-of-memory retries go down to."""

SAFETY = 0.8
"""Fraction of a budget the network may plan to use (allocator slack, fragmentation)."""

DEFAULT_HOST_BUDGET = 4 * 2**30
"""CPU/MPS budget for one forward pass without ``--max-memory`` (4 GiB)."""

PROBE_SIDE = 128
"""Side (LR pixels) of the probe pass that measures CUDA bytes per pixel."""

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_size(text: str | int) -> int:
    """``"4GiB"``, ``"512MB"``, ``"2g"``, ``"1e9"`` or an int -> bytes; ValueError if bad.

    Decimal units (kB, MB, GB; k, m, g) are powers of 1000, binary ones (KiB, MiB, GiB) of 1024.
    """
    if isinstance(text, numbers.Integral) and not isinstance(text, bool):  # numpy ints too
        size = int(text)
    elif isinstance(text, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
        if not match or match.group(2) not in _UNITS:
            raise ValueError(f"expected a size like 4GiB or 512MB, got {text!r}")
        value = float(match.group(1)) * _UNITS[match.group(2)]
        if not math.isfinite(value):  # "1e400" or 400 digits: float overflows to inf
            raise ValueError(f"{text!r} is too large for a memory size")
        size = int(value)
    else:
        raise ValueError(f"expected a number of bytes (int) or a size like '4GiB', "
                         f"got {type(text).__name__} {text!r}")
    if size <= 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return size


def estimated_bytes_per_pixel(generator: Generator, element_size: int) -> int:
    """Peak activation bytes per LR input pixel of one forward pass, from the architecture.

    The largest moment is the last upsampling stage: its input (C channels at 4^(s-1) times
    the LR pixels), its conv output and the shuffled copy (4C each), plus the LR features
    kept for the long skip (about 3C). Measured on CPU for the paper's SRResNet in fp32:
    about 11 kB per pixel (1.04 GB peak RSS for 256x256, torch included); this gives 10 kB.
    """
    config = generator.config
    stages = config.num_upsample_stages
    per_pixel = 9 * 4 ** max(stages - 1, 0) + 3
    return per_pixel * config.channels * element_size


def cuda_accounting(device: torch.device) -> bool:
    """Whether ``device``'s memory is CUDA's: the budget from its free memory and the bytes
    per pixel measured by a probe pass (its allocator counts peaks); else (CPU, MPS) a host
    budget and an estimate from the architecture."""
    return device.type == "cuda"


@torch.no_grad()
def measured_bytes_per_pixel(run, device: torch.device, probe: int = PROBE_SIDE) -> int:
    """CUDA: peak allocated bytes of one ``run`` on a (1, 3, probe, probe) input, per pixel.

    ``run`` may raise torch.OutOfMemoryError (a GPU that another process fills): the caller
    retries with a smaller probe (``Upscaler.tile_for``).
    """
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run(torch.rand(1, 3, probe, probe, device=device))
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    return math.ceil(peak / probe**2)


def _read_int(path: str, key: str | None = None) -> int | None:
    """An integer from a /proc or /sys file (``key``: the ``key: value kB`` line), else None."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    if key is not None:
        match = re.search(rf"^{key}:\s*(\d+)\s*kB", text, re.MULTILINE)
        return None if match is None else int(match.group(1)) * 1024
    text = text.strip()
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def available_memory() -> int | None:
    """Bytes of host memory this process could still use, or None if unknown.

    Linux: ``MemAvailable`` from /proc/meminfo, lowered to what is left under the cgroup
    (container) limit if there is one; elsewhere the physical RAM (``os.sysconf``).
    """
    known = [_read_int("/proc/meminfo", "MemAvailable")]
    for limit, usage in (("memory.max", "memory.current"),  # cgroup v2, then v1
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        cap, used = _read_int(f"/sys/fs/cgroup/{limit}"), _read_int(f"/sys/fs/cgroup/{usage}")
        if cap is not None and used is not None and cap < 2**60:  # v1: 2**63 means none
            known.append(max(cap - used, 0))
    known = [k for k in known if k is not None]
    return min(known) if known else host_ram()


def host_ram() -> int | None:
    """The machine's RAM in bytes, or None where the OS does not say (not POSIX)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def host_budget(max_memory: int | None) -> int:
    """CPU/MPS budget: ``max_memory``, else ``DEFAULT_HOST_BUDGET`` capped at half the
    available memory; never more than ``available_memory()`` (a cap, never a raise)."""
    available = available_memory()
    if max_memory is not None:
        return max_memory if available is None else min(max_memory, available)
    if available is None:  # unknown: assume enough
        return DEFAULT_HOST_BUDGET
    return min(DEFAULT_HOST_BUDGET, available // 2)


def pipeline_budget() -> int:
    """Bytes of decoded inputs and finished outputs a folder's pipeline may hold at once
    (``upscale.PipelineLimits``): ``DEFAULT_HOST_BUDGET``, at most a quarter of the RAM.

    4 GiB holds 85 outputs of 4096x4096 RGB (enough to keep every core of a large machine
    writing) but only one gigapixel output, so huge images are written one at a time.
    """
    ram = host_ram()
    return DEFAULT_HOST_BUDGET if ram is None else min(DEFAULT_HOST_BUDGET, ram // 4)


def device_budget(device: torch.device, max_memory: int | None) -> int:
    """Bytes the network may use on ``device``: free CUDA memory or the host budget, capped."""
    if cuda_accounting(device):
        free, _ = torch.cuda.mem_get_info(device)
        return free if max_memory is None else min(free, max_memory)
    return host_budget(max_memory)


def auto_tile(
    height: int, width: int, overlap: int, bytes_per_pixel: int, budget: int
) -> int | None:
    """The core tile size (LR pixels) for an image, or ``None`` when it fits in one pass.

    The tile plus ``overlap`` on each side must fit ``SAFETY * budget``. Never below
    ``MIN_TILE``; a multiple of 8 (friendlier to convolution kernels).
    """
    usable = SAFETY * budget / max(bytes_per_pixel, 1)
    if height * width <= usable:
        return None
    side = int(math.sqrt(usable)) - 2 * overlap
    return max(MIN_TILE, side // 8 * 8)


def smallest_tile_bytes(overlap: int, bytes_per_pixel: int) -> int:
    """Network memory of the smallest tile ``auto_tile`` plans: ``MIN_TILE`` plus ``overlap``
    on each side. A budget below this cannot be honoured (the tile never gets smaller)."""
    return (MIN_TILE + 2 * overlap) ** 2 * bytes_per_pixel
