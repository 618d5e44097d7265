"""Training data: random HR crops of folders of images, and their bicubic LR versions.

Every training sample is a pure function of ``(seed, index)``: sample ``index`` draws its
image, crop position, flip and 90-degree rotation from a ``torch.Generator`` seeded with
both. Batch ``step`` holds samples ``step * batch_size ... + batch_size - 1``. So the batches
do not depend on worker processes or on how often a run was stopped and resumed: resuming
at step ``s`` only needs ``s``.

``batch_size`` is the global batch. Under torchrun, rank ``r`` of ``W`` takes the share
``Shard(r, W)`` of every batch: samples ``first + r, first + r + W, ...``. The ranks see
distinct samples (so distinct augmentations), together exactly the batch one process
would see, and resuming with another number of processes continues the same sequence.

The LR patch is made from the augmented HR patch by ``degradation.bicubic_downscale``, the
same function the benchmark uses, so training and evaluation see the same degradation. With
``realistic`` parameters (Real-ESRGAN's blur, resize, noise and JPEG chain) a sample holds
instead the *plan* of its LR patch, ``degradation.draw_plan``: every random choice, drawn
from the same per-sample generator, so such samples too are a pure function of
``(seed, index)``. ``to_training_pair`` then makes the LR patches of a whole batch from
their plans on the training device, as batched tensor ops (``degradation.apply_plans``).

Samples are uint8 tensors (the cheapest to move around); ``to_training_pair`` turns a batch
into the float [0, 1] convention of ``models.py`` on the training device.

Small sets (decoded size up to ``cache_mb``) are decoded once and kept in memory; larger
ones are decoded on the fly, which is what the DataLoader worker processes are for.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from .. import degradation, images
from ..degradation import Plan, RealisticDegradation, downscale_tensor
from ..errors import ImageError, TrainingError
from .distributed import Shard

SEED_STRIDE = 1 << 40
"""Per-sample generator seed = seed * SEED_STRIDE + sample index (mod 2**63)."""


@dataclass
class ImageList:
    """The usable training images of some folders, and what was left out and why."""

    paths: list[Path]
    sizes: list[tuple[int, int]]  # (width, height) per path
    too_small: list[Path]
    unreadable: list[Path]
    reasons: dict[Path, str] = field(default_factory=dict)  # why each left-out file was
    decoded: list[torch.Tensor] | None = None  # the images of ``paths``, if kept by the scan

    @property
    def decoded_bytes(self) -> int:
        return sum(3 * w * h for w, h in self.sizes)


def scan_folders(
    folders: Sequence[str | os.PathLike], patch_size: int, keep_bytes: int = 0
) -> ImageList:
    """All images under ``folders`` (recursively) whose sides are at least ``patch_size``.

    Each file is decoded once here (with ``srgan upscale``'s reader), so that a truncated
    or corrupt image is left out (with its reason) now rather than stopping the run when a
    batch first draws it. If the usable images decode to at most ``keep_bytes``, they are
    kept in ``decoded`` so a cached dataset need not decode them a second time.
    """
    found: list[Path] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise TrainingError(f"training data folder not found: {folder}")
        found += images.find_images(folder, recursive=True)
    result = ImageList([], [], [], [])
    kept: list[torch.Tensor] | None = []
    kept_bytes = 0
    for path in found:
        try:
            image = images.read_rgb_uint8(path)
        except ImageError as e:
            result.unreadable.append(path)
            result.reasons[path] = str(e)
            continue
        height, width = image.shape[-2:]
        size = (width, height)
        if min(size) < patch_size:
            result.too_small.append(path)
            result.reasons[path] = f"{width}x{height} is smaller than the {patch_size} px patch"
        else:
            result.paths.append(path)
            result.sizes.append(size)
            if kept is not None:
                kept.append(image)
                kept_bytes += image.numel()
                if kept_bytes > keep_bytes:
                    kept = None  # too big to keep: a streamed dataset decodes on demand
    result.decoded = kept
    if not result.paths:
        raise TrainingError(
            f"no usable training images in {', '.join(map(str, folders))}: found {len(found)} "
            f"files, {len(result.too_small)} smaller than the {patch_size} px patch"
        )
    return result


def augment(patch: torch.Tensor, flip: bool, rotations: int) -> torch.Tensor:
    """Horizontal flip then ``rotations`` x 90 degrees of a (C, H, W) patch."""
    if flip:
        patch = patch.flip(-1)
    return patch.rot90(rotations, dims=(-2, -1)) if rotations else patch


def to_unit_range(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 in [0, 1], on the batch's device."""
    return batch.float().div_(255)


def to_training_pair(
    batch: tuple[torch.Tensor | Plan, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``batches`` -> (lr, hr) float32 in [0, 1] on ``device``: the LR patches
    copied there, or made there from their realistic plans (``degradation.apply_plans``)."""
    lr, hr = batch
    hr = to_unit_range(hr.to(device, non_blocking=True))
    if isinstance(lr, dict):
        return degradation.apply_plans(hr, lr), hr
    return to_unit_range(lr.to(device, non_blocking=True)), hr


class PatchDataset(Dataset):
    """Sample ``index`` -> (lr, hr): uint8 (3, P/s, P/s) and (3, P, P), P = ``patch_size``;
    with ``realistic``, (plan, hr): the LR patch's ``degradation.draw_plan`` instead.

    ``cache=True`` decodes every image now and keeps them in memory as uint8 tensors;
    otherwise each sample decodes its image from disk (use DataLoader workers then).
    ``realistic``: plan LR patches with these realistic degradations instead of bicubic.
    """

    def __init__(
        self, image_list: ImageList, patch_size: int, scale: int, seed: int, cache: bool,
        realistic: RealisticDegradation | None = None,
    ) -> None:
        if patch_size % scale:
            raise TrainingError(f"patch size {patch_size} must be a multiple of the scale {scale}")
        self.paths, self.sizes = image_list.paths, image_list.sizes
        self.patch_size, self.scale, self.seed = patch_size, scale, seed
        self.realistic = realistic
        self.cache = None
        if cache:
            self.cache = (image_list.decoded if image_list.decoded is not None
                          else [images.read_rgb_uint8(p) for p in self.paths])

    def __len__(self) -> int:  # samples are drawn by index from an endless stream
        return 2**62

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * SEED_STRIDE + index) % 2**63)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Plan, torch.Tensor]:
        gen = self.generator(index)

        def draw(high: int) -> int:
            return int(torch.randint(high, (1,), generator=gen))

        i = draw(len(self.paths))
        width, height = self.sizes[i]
        top, left = draw(height - self.patch_size + 1), draw(width - self.patch_size + 1)
        flip, rotations = bool(draw(2)), draw(4)
        image = self.cache[i] if self.cache is not None else images.read_rgb_uint8(self.paths[i])
        p = self.patch_size
        hr = augment(image[:, top:top + p, left:left + p], flip, rotations).contiguous()
        if self.realistic is not None:
            return degradation.draw_plan(gen, self.realistic, (p, p), self.scale), hr
        return downscale_tensor(hr, self.scale), hr


def rank_batch_size(batch_size: int, processes: int) -> int:
    """Samples per process of a global batch: ``batch_size`` must split evenly."""
    if batch_size % processes:
        raise TrainingError(
            f"batch size {batch_size} is the global batch: it must be a multiple of the "
            f"{processes} processes (each takes an equal share)")
    return batch_size // processes


def sample_indices(batch_size: int, start_step: int, share: Shard) -> Iterator[int]:
    """The sample indices of ``share`` of batches ``start_step``, ``start_step + 1``, ..."""
    for step in itertools.count(start_step):
        yield from share.select(range(step * batch_size, (step + 1) * batch_size))


class StreamSampler(Sampler[int]):
    """``sample_indices`` forever (the DataLoader cuts them into batches)."""

    def __init__(self, batch_size: int, start_step: int, share: Shard) -> None:
        self.batch_size, self.start_step, self.share = batch_size, start_step, share

    def __iter__(self) -> Iterator[int]:
        return sample_indices(self.batch_size, self.start_step, self.share)


def batches(
    dataset: PatchDataset, batch_size: int, start_step: int, workers: int,
    pin_memory: bool = False, share: Shard | None = None,
) -> Iterator[tuple[torch.Tensor | Plan, torch.Tensor]]:
    """Endless (lr, hr) uint8 batches (n, 3, h, w), (n, 3, H, W) from step ``start_step`` on
    (or (plans, hr), see ``PatchDataset``): ``share`` of each global batch of ``batch_size``
    samples (n = batch_size / share.count).

    ``workers=0`` builds batches in this process; otherwise a DataLoader with that many worker
    processes does. Both give exactly the same batches.
    """
    share = share or Shard()
    size = rank_batch_size(batch_size, share.count)
    if workers == 0:
        indices = sample_indices(batch_size, start_step, share)
        while True:
            lr, hr = default_collate([dataset[i] for i in itertools.islice(indices, size)])
            yield lr, hr  # batched as the DataLoader batches them
    else:
        loader = DataLoader(
            dataset, batch_size=size, sampler=StreamSampler(batch_size, start_step, share),
            num_workers=workers, pin_memory=pin_memory, persistent_workers=True,
            prefetch_factor=4,
        )
        yield from loader


def auto_workers(cached: bool, cuda: bool) -> int:
    """Worker processes when not set: none for cached sets on CPU, else a few per GPU."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cached and not cuda:
        return 0
    return max(0, min(2 if cached else 8, (cpus or 1) - 1))
