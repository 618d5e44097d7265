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
ones are decoded on the fly, which is what the DataLoader worker processes are for. The
training loop makes the batches of a cached set on its device instead (``device_batches``):
the images are kept there, each sample's choices are drawn on the CPU exactly as above, and
crops and bicubic LR patches are cut and computed there for the whole batch, so the same
batches cost a few batched ops instead of per-sample copies and a host-to-device transfer.
"""

from __future__ import annotations

import copy
import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from .. import degradation, images, resize
from ..degradation import Plan, RealisticDegradation, downscale_tensor
from ..errors import ImageError, TrainingError
from .distributed import Shard

T = TypeVar("T")

SEED_STEP = 0x9E3779B9
"""Per-sample generator seed = (sample index + seed * SEED_STEP) mod 2**32.

A CPU ``torch.Generator`` (MT19937) keeps only the low 32 bits of its seed, so the run's
seed must move those bits: seed 0 gives each sample its index as seed, and other seeds shift
the whole stream by an odd multiple of the golden-ratio step (distinct for every seed mod
2**32, and far apart for small seeds)."""

CROP_FIELDS = ("image", "top", "left", "flip", "rotations")
"""The columns of a batch of crop choices ((n, 5) int64), see ``PatchDataset.draw_crop``."""


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

    def sample_seed(self, index: int) -> int:
        """The seed of sample ``index``'s generator (``SEED_STEP``)."""
        return (index + self.seed * SEED_STEP) % 2**32

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.sample_seed(index))

    def draw_crop(self, draw: Callable[[int], int]) -> list[int]:
        """A sample's crop choices ``[image, top, left, flip (0/1), rotations (0-3)]``
        (``CROP_FIELDS``), in this order from ``draw(high)``, a random int in [0, high)."""
        i = draw(len(self.paths))
        width, height = self.sizes[i]
        top, left = draw(height - self.patch_size + 1), draw(width - self.patch_size + 1)
        return [i, top, left, draw(2), draw(4)]

    def crop_choices(self, indices: Sequence[int]) -> torch.Tensor:
        """(n, 5) int64: ``draw_crop`` of samples ``indices``, as their generators draw it,
        ten times cheaper than a ``torch.Generator`` per sample.

        A CPU ``torch.Generator`` is an MT19937 seeded with the low 32 bits of its seed, and
        ``torch.randint(high)`` takes one 32-bit output modulo ``high``; numpy's MT19937 with
        the same (legacy) seeding gives the same outputs (tested: ``draw`` equals this).
        """
        if not hasattr(np.random.MT19937, "_legacy_seeding"):  # numpy without it: the slow way
            return torch.tensor([self.draw_crop(torch_draw(self.generator(i))) for i in indices],
                                dtype=torch.int64).reshape(len(indices), len(CROP_FIELDS))
        mt = np.random.MT19937()
        rows = []
        for index in indices:
            mt._legacy_seeding(self.sample_seed(index))
            rows.append(self.draw_crop(lambda high: int(mt.random_raw()) % high))
        return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), len(CROP_FIELDS))

    def draw_plan(self, gen: torch.Generator) -> Plan:
        """The realistic plan of a sample, drawn after its crop from the same generator."""
        p = self.patch_size
        return degradation.draw_plan(gen, self.realistic, (p, p), self.scale)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Plan, torch.Tensor]:
        gen = self.generator(index)
        i, top, left, flip, rotations = self.draw_crop(torch_draw(gen))
        image = self.cache[i] if self.cache is not None else images.read_rgb_uint8(self.paths[i])
        p = self.patch_size
        hr = augment(image[:, top:top + p, left:left + p], bool(flip), rotations).contiguous()
        if self.realistic is not None:
            return self.draw_plan(gen), hr
        return downscale_tensor(hr, self.scale), hr

    def draw(self, index: int) -> tuple[torch.Tensor, Plan]:
        """Only the random choices of sample ``index``, as ``__getitem__`` draws them: its
        crop (5,) int64 (``CROP_FIELDS``) and its realistic plan ({} for bicubic)."""
        gen = self.generator(index)
        crop = torch.tensor(self.draw_crop(torch_draw(gen)))
        return crop, self.draw_plan(gen) if self.realistic is not None else {}


def torch_draw(gen: torch.Generator) -> Callable[[int], int]:
    """``draw(high)`` for ``PatchDataset.draw_crop``: a random int in [0, high) from ``gen``."""
    return lambda high: int(torch.randint(high, (1,), generator=gen))


class Draws(Dataset):
    """``PatchDataset.draw`` as a dataset, for DataLoader workers: no images in it."""

    def __init__(self, dataset: PatchDataset) -> None:
        self.dataset = copy.copy(dataset)
        self.dataset.cache = None  # the workers draw; the images stay with the batch maker

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Plan]:
        return self.dataset.draw(index)


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


def loader(dataset: Dataset, size: int, start_step: int, batch_size: int, share: Shard,
           workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader of ``dataset``'s samples ``sample_indices``, ``size`` per batch, made by
    ``workers`` (>= 1) processes."""
    return DataLoader(
        dataset, batch_size=size, sampler=StreamSampler(batch_size, start_step, share),
        num_workers=workers, pin_memory=pin_memory, persistent_workers=True, prefetch_factor=4,
    )


def batch_path(dataset: PatchDataset) -> str:
    """Where batches are made: ``"device"`` for a cached dataset (``device_batches``: crops
    cut on the training device), ``"workers"`` otherwise (decoded and cut per sample on the
    CPU, in DataLoader workers when there are any)."""
    return "device" if dataset.cache is not None else "workers"


def batches(
    dataset: PatchDataset, batch_size: int, start_step: int, workers: int,
    pin_memory: bool = False, share: Shard | None = None, device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor | Plan, torch.Tensor]]:
    """Endless (lr, hr) uint8 batches (n, 3, h, w), (n, 3, H, W) from step ``start_step`` on
    (or (plans, hr), see ``PatchDataset``): ``share`` of each global batch of ``batch_size``
    samples (n = batch_size / share.count).

    With a ``device`` and a cached dataset (``batch_path``), the batches are made on that
    device (``device_batches``). Otherwise ``workers=0`` builds them in this process, and
    ``workers`` > 0 worker processes of a DataLoader do. All give exactly the same batches.
    """
    share = share or Shard()
    if device is not None and batch_path(dataset) == "device":
        yield from device_batches(dataset, batch_size, start_step, workers, device, share)
        return
    size = rank_batch_size(batch_size, share.count)
    if workers == 0:
        indices = sample_indices(batch_size, start_step, share)
        while True:
            lr, hr = default_collate([dataset[i] for i in itertools.islice(indices, size)])
            yield lr, hr  # batched as the DataLoader batches them
    else:
        yield from loader(dataset, size, start_step, batch_size, share, workers, pin_memory)


# --------------------------------------------------------------------------- device batches
#
# A cached dataset's images live on the training device in one flat uint8 buffer. Only the
# random choices of each sample (crop and realistic plan) are drawn on the CPU, from the same
# per-sample generator as ``PatchDataset.__getitem__``; a batch of crops is then one gather
# there, and its bicubic LR one batched resize: the same batches, without the per-sample
# copies, collation and host-to-device transfer of the image data.

def augmentation_views(patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols), (8, P, P) int64 each: for augmentation ``flip * 4 + rotations``, the
    row and column in the crop of the source of each output pixel (``augment`` applied to
    the source positions)."""
    grid = torch.arange(patch_size)
    positions = torch.stack(torch.meshgrid(grid, grid, indexing="ij"))  # (2, P, P)
    views = torch.stack([augment(positions, bool(flip), rotations)
                         for flip in (0, 1) for rotations in range(4)])
    return views[:, 0].contiguous(), views[:, 1].contiguous()


class DeviceImages:
    """Decoded (3, H, W) uint8 images on ``device``, and augmented crops cut from them.

    The images lie one after another in one flat uint8 buffer, each at its ``offsets`` entry,
    so cutting a batch of crops, with their flips and rotations folded into the indices, is
    one gather, whatever the images' sizes.
    """

    def __init__(self, images_: Sequence[torch.Tensor], patch_size: int,
                 device: torch.device) -> None:
        lengths = torch.tensor([image.numel() for image in images_])
        offsets = lengths.cumsum(0) - lengths
        self.pixels = torch.empty(int(lengths.sum()), dtype=torch.uint8, device=device)
        for image, offset, length in zip(images_, offsets.tolist(), lengths.tolist(),
                                         strict=True):
            self.pixels[offset:offset + length].copy_(image.reshape(-1))  # no second host copy
        self.offsets = offsets.to(device)
        self.heights = torch.tensor([image.shape[-2] for image in images_], device=device)
        self.widths = torch.tensor([image.shape[-1] for image in images_], device=device)
        self.patch_size = patch_size
        self.rows, self.cols = (v.to(device) for v in augmentation_views(patch_size))

    def crops(self, choices: torch.Tensor) -> torch.Tensor:
        """Crop choices (n, 5) int64 (``CROP_FIELDS``) on the device -> (n, 3, P, P) uint8:
        sample i is ``augment(images[i][:, top:top + P, left:left + P], flip, rotations)``."""
        image, top, left, flip, rotations = choices.unbind(1)
        view = flip * 4 + rotations
        rows = top[:, None, None] + self.rows[view]  # (n, P, P) source rows in the image
        cols = left[:, None, None] + self.cols[view]
        pixel = rows * self.widths[image][:, None, None] + cols
        plane = self.heights[image] * self.widths[image]
        channel = torch.arange(3, device=choices.device) * plane[:, None]  # (n, 3)
        start = self.offsets[image][:, None] + channel
        return torch.take(self.pixels, start[:, :, None, None] + pixel[:, None])


def pinned(batch: tuple[torch.Tensor, Plan]) -> tuple[torch.Tensor, Plan]:
    """A batch of draws in page-locked memory, so its copy to a GPU can overlap work."""
    crops, plans = batch
    return crops.pin_memory(), {k: v.pin_memory() for k, v in plans.items()}


def draw_batches(
    dataset: PatchDataset, batch_size: int, start_step: int, workers: int, pin_memory: bool,
    share: Shard,
) -> Iterator[tuple[torch.Tensor, Plan]]:
    """The random choices of ``share`` of each batch from ``start_step`` on: (crops (n, 5)
    int64, plans: a batch of ``draw_plan``s, {} for bicubic), on the CPU.

    ``workers=0``: drawn in a background thread, the next batches while this one trains
    (one thread, in order: the same draws); else by DataLoader worker processes.
    """
    size = rank_batch_size(batch_size, share.count)
    draws = Draws(dataset)
    if workers > 0:
        yield from loader(draws, size, start_step, batch_size, share, workers, pin_memory)
        return
    indices = sample_indices(batch_size, start_step, share)

    def draw_all() -> Iterator[tuple[torch.Tensor, Plan]]:
        while True:
            chosen = list(itertools.islice(indices, size))
            if dataset.realistic is None:
                batch = dataset.crop_choices(chosen), {}
            else:  # the plan continues each sample's torch.Generator
                batch = default_collate([draws[i] for i in chosen])
            yield pinned(batch) if pin_memory else batch

    yield from prefetch(draw_all(), depth=2)


def prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, made up to ``depth`` ahead by a background thread: the same items in the
    same order. An exception there is raised here; closing this iterator stops the thread."""
    made: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                made.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put((None, error))
        finally:  # a generator's own clean-up runs here, in the thread that ran it
            close = getattr(items, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name="srgan-draws", daemon=True)
    producer.start()
    try:
        while True:
            item, error = made.get()
            if error is not None:
                raise error
            yield item
    finally:  # the thread ends before this returns: none runs torch code at interpreter exit
        stop.set()
        producer.join(timeout=30)


def device_batches(
    dataset: PatchDataset, batch_size: int, start_step: int, workers: int,
    device: torch.device, share: Shard,
) -> Iterator[tuple[torch.Tensor | Plan, torch.Tensor]]:
    """``batches`` of a cached dataset, made on ``device``: (lr, hr) uint8 there, or (plans
    on the CPU, hr) for realistic degradations (``to_training_pair`` applies them there).

    The choices are drawn on the CPU (``draw_batches``; ``workers`` processes, or a thread);
    the crops are cut by ``DeviceImages`` and the bicubic LR made by the batched
    ``resize.pil_bicubic_downscale``, both on ``device``. The host never waits for it.
    """
    cuda = device.type == "cuda"
    hr_images = DeviceImages(dataset.cache, dataset.patch_size, device)
    for crops, plans in draw_batches(dataset, batch_size, start_step, workers, cuda, share):
        hr = hr_images.crops(crops.to(device, non_blocking=True))
        if dataset.realistic is not None:
            yield plans, hr
        else:
            yield resize.pil_bicubic_downscale(hr, dataset.scale), hr


def auto_workers(cheap: bool) -> int:
    """Worker processes when not set: none for cached bicubic sets (their batches are made
    on the training device, ``device_batches``), else a few."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if cheap else max(0, min(8, (cpus or 1) - 1))
