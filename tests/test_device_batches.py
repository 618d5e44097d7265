"""Batches made on the training device for cached datasets (``data.device_batches``): the
same batches as the per-sample path, bit for bit. CPU only (``device="cpu"`` stands for the
training device), offline, tiny images made here."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from srgan_cli.degradation import RealisticDegradation
from srgan_cli.training import data
from srgan_cli.training.config import make_config
from srgan_cli.training.distributed import Shard
from srgan_cli.training.train import train

CPU = torch.device("cpu")


@pytest.fixture
def train_dir(tmp_path):
    """Three random images of different sizes (so their offsets and widths differ)."""
    folder = tmp_path / "hr"
    folder.mkdir()
    for seed, size in enumerate(((48, 40), (40, 52), (37, 33))):
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{seed}.png")
    return folder


def dataset(folder, realistic=None, seed=0) -> data.PatchDataset:
    found = data.scan_folders([folder], 16, keep_bytes=2**30)
    return data.PatchDataset(found, 16, 4, seed=seed, cache=True, realistic=realistic)


def same_plans(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_crops_cut_by_one_gather_equal_every_augmentation(train_dir):
    """All 8 flip/rotation combinations, on images of different sizes and at their edges."""
    images = dataset(train_dir).cache
    device_images = data.DeviceImages(images, 16, CPU)
    choices = [[i, top, left, flip, rotations] for i, (top, left) in
               ((0, (0, 0)), (1, (52 - 16, 40 - 16)), (2, (5, 21)))
               for flip in (0, 1) for rotations in range(4)]
    crops = device_images.crops(torch.tensor(choices))
    assert crops.shape == (len(choices), 3, 16, 16) and crops.dtype == torch.uint8
    for crop, (i, top, left, flip, rotations) in zip(crops, choices, strict=True):
        expected = data.augment(images[i][:, top:top + 16, left:left + 16], bool(flip),
                                rotations)
        assert torch.equal(crop, expected), (i, flip, rotations)


def test_cheap_crop_draws_equal_the_per_sample_generators(train_dir):
    """``crop_choices`` (numpy's MT19937) draws what each sample's torch.Generator draws,
    also where a range has one value (an image exactly as wide as the patch)."""
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(train_dir / "narrow.png")
    ds = dataset(train_dir, seed=7)
    indices = [*range(300), 2**40 + 5, 2**62 + 3]
    expected = torch.stack([ds.draw(i)[0] for i in indices])
    assert torch.equal(ds.crop_choices(indices), expected)
    assert set(expected[:, 0].tolist()) == {0, 1, 2, 3}, "every image drawn"


def test_the_seed_changes_the_samples_and_seed_0_keeps_them(train_dir):
    """A CPU torch.Generator keeps only the low 32 bits of its seed: the run's seed must
    move them (it used to sit above them, so every seed drew the same crops)."""
    crops = {seed: dataset(train_dir, seed=seed).crop_choices(range(64)) for seed in (0, 1, 2)}
    assert not torch.equal(crops[0], crops[1]) and not torch.equal(crops[1], crops[2])
    assert dataset(train_dir, seed=0).sample_seed(12345) == 12345  # seed 0: as before
    assert len({dataset(train_dir, seed=s).sample_seed(0) for s in range(1000)}) == 1000


@pytest.mark.parametrize("share", [Shard(), Shard(1, 2), Shard(0, 3)])
def test_device_batches_equal_the_per_sample_batches(train_dir, share):
    ds = dataset(train_dir, seed=5)
    per_sample = data.batches(ds, 6, start_step=3, workers=0, share=share)
    on_device = data.batches(ds, 6, start_step=3, workers=0, share=share, device=CPU)
    for _ in range(3):
        (lr_a, hr_a), (lr_b, hr_b) = next(per_sample), next(on_device)
        assert hr_b.shape == (6 // share.count, 3, 16, 16) and lr_b.shape[-2:] == (4, 4)
        assert lr_b.dtype == hr_b.dtype == torch.uint8
        assert torch.equal(hr_a, hr_b) and torch.equal(lr_a, lr_b)
    on_device.close()


def test_realistic_device_batches_hold_the_same_crops_and_plans(train_dir):
    """Realistic: the crops come from the device, the plans from the same per-sample draws
    (in a thread here, and in a worker process: both equal the per-sample path)."""
    ds = dataset(train_dir, realistic=RealisticDegradation())
    per_sample = data.batches(ds, 4, start_step=2, workers=0, share=Shard(1, 2))
    in_thread = data.batches(ds, 4, 2, workers=0, share=Shard(1, 2), device=CPU)
    in_worker = data.batches(ds, 4, 2, workers=1, share=Shard(1, 2), device=CPU)
    for _ in range(2):
        (plans, hr), *others = next(per_sample), next(in_thread), next(in_worker)
        for other_plans, other_hr in others:
            assert torch.equal(hr, other_hr) and same_plans(plans, other_plans)
        lr, _ = data.to_training_pair((plans, hr), CPU)
        assert torch.equal(lr, data.to_training_pair(others[0], CPU)[0])


def test_batch_path_and_default_workers():
    image = torch.zeros(3, 20, 20, dtype=torch.uint8)
    found = data.ImageList([], [(20, 20)], [], [], decoded=[image])
    assert data.batch_path(data.PatchDataset(found, 16, 4, 0, cache=True)) == "device"
    assert data.batch_path(data.PatchDataset(found, 16, 4, 0, cache=False)) == "workers"
    assert data.auto_workers(cheap=True) == 0


def test_prefetch_keeps_the_order_raises_errors_and_stops():
    def numbers():
        yield from range(5)
        raise ValueError("broken image")

    stream = data.prefetch(numbers(), depth=2)
    assert [next(stream) for _ in range(5)] == list(range(5))
    with pytest.raises(ValueError, match="broken image"):
        next(stream)
    before = set(threading.enumerate())
    endless = data.prefetch(iter(lambda: 1, None), depth=2)
    assert next(endless) == 1
    (thread,) = set(threading.enumerate()) - before
    endless.close()
    thread.join(timeout=5)
    assert not thread.is_alive(), "closing the stream stops its thread"


def test_closing_a_prefetched_stream_closes_the_generator_it_reads():
    """The trainer prefetches made pairs on a CPU: closing them must close the data stream
    under them (its own threads and worker processes end with it)."""
    closed = threading.Event()

    def batches():
        try:
            while True:
                yield 1
        finally:
            closed.set()

    stream = data.prefetch(batches(), depth=1)
    assert next(stream) == 1
    stream.close()
    assert closed.wait(timeout=5)


@pytest.mark.parametrize("cache_mb,path", [(64, "device"), (0, "workers")])
def test_the_start_record_says_where_batches_are_made(tmp_path, train_dir, cache_mb, path):
    config = make_config(dict(
        data=[str(train_dir)], patch_size=16, batch_size=2, num_blocks=1, channels=8,
        device="cpu", log_every=1, val_every=1000, save_every=1000, phase="pretrain",
        pretrain_steps=1, cache_mb=cache_mb, workers=0))
    train(config, tmp_path / "run")
    start = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert (start["batches"], start["cached"]) == (path, path == "device")
    # the batch stream ended with the run: no thread of it is left to run at interpreter
    # exit (one that was aborted a torchrun process: "terminate called without an active
    # exception")
    assert not [t for t in threading.enumerate() if t.name == "srgan-draws"]
