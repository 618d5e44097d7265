"""`srgan train` under torchrun: two CPU processes (gloo) against one process on the same
global batch, rank 0 writing alone, and resuming with another number of processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train import log_records, random_png, tiny

from srgan_cli.checkpoints import read_metadata
from srgan_cli.errors import TrainingError
from srgan_cli.training import data
from srgan_cli.training.config import load_config, save_config, with_steps
from srgan_cli.training.distributed import Shard
from srgan_cli.training.speed import SPEED_KEYS
from srgan_cli.training.state import restore_rng, rng_tensors
from srgan_cli.training.train import train


def torchrun_train(*args: str, cwd) -> subprocess.CompletedProcess:
    """``srgan train`` in two torchrun processes on the CPU (gloo), whatever the machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "srgan_cli", "train", "-q", "--device", "cpu", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(folder, config file, single-process run): one pretrain step and one GAN step on a
    global batch of 4."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "hr").mkdir()
    for i in range(3):
        random_png(root / "hr" / f"{i}.png", (48, 40), seed=i)
    config = tiny(root / "hr", phase="all", pretrain_steps=1, gan_steps=1, batch_size=4,
                  workers=0, precision="fp32")  # the comparisons below are fp32's tolerances
    assert config.device == "cpu"  # like the torchrun runs: the states are compared
    config_file = save_config(config, root / "tiny.toml")
    train(config, root / "single")
    return root, config_file, root / "single"


def train_losses(run_dir) -> list[dict]:
    """The numbers of the ``train`` records of a run's log (step, lr, losses)."""
    return [{k: v for k, v in r.items() if k not in ("type", "phase", *SPEED_KEYS)}
            for r in log_records(run_dir) if r["type"] == "train"]


def test_each_rank_takes_its_share_of_the_global_batch(tmp_path):
    random_png(tmp_path / "a.png", (40, 40))
    dataset = data.PatchDataset(data.scan_folders([tmp_path], 16), 16, 4, seed=0, cache=True)
    whole = data.batches(dataset, 4, start_step=2, workers=0)
    shares = [data.batches(dataset, 4, 2, workers=w, share=Shard(r, 2))
              for r, w in ((0, 0), (1, 1))]
    for _ in range(2):
        _, hr = next(whole)
        halves = [next(share)[1] for share in shares]
        assert all(h.shape[0] == 2 for h in halves)
        assert torch.equal(torch.cat(halves).sort(dim=0).values, hr.sort(dim=0).values)
    with pytest.raises(TrainingError, match="batch size 5 is the global batch"):
        data.rank_batch_size(5, 2)


def test_two_processes_with_sync_bn_train_like_one_then_resume_alone(setup):
    root, config_file, single = setup
    run = root / "ddp"
    torchrun_train("--config", str(config_file), "--out", str(run), "--sync-bn", cwd=root)

    # rank 0 alone wrote: one record per step, the same losses as one process
    one, two = train_losses(single), train_losses(run)
    assert [r["step"] for r in two] == [1, 2]
    for mine, expected in zip(two, one, strict=True):
        assert mine == pytest.approx(expected, rel=1e-5)
    assert log_records(run)[0]["processes"] == 2

    # gradients: Adam's first moments (0.1 x the gradient after one step), per network
    a, b = load_file(single / "state.safetensors"), load_file(run / "state.safetensors")
    assert a.keys() == b.keys()
    for prefix in ("opt_g", "opt_d"):
        keys = [k for k in a if k.startswith(prefix) and k.endswith(".exp_avg")]
        scale = max(a[k].abs().max() for k in keys)
        for k in keys:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4 * scale, msg=k)

    # resume with one process: the step count and the log go on
    extended = load_config(run / "config.toml")
    train(with_steps(extended, 2), run, resume=True)
    records = log_records(run)
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3, 4]
    assert [r["processes"] for r in records if r["type"] == "start"] == [2, 1]
    assert json.loads(read_metadata(run / "generator.safetensors")["training"])["step"] == 4


def test_resume_a_one_process_run_with_two_without_sync_bn(setup):
    root, _, single = setup
    run = root / "resumed"
    shutil.copytree(single, run)
    torchrun_train("--out", str(run), "--resume", "--steps", "2", cwd=root)
    records = log_records(run)
    steps = [r["step"] for r in records if r["type"] == "train"]
    assert steps == [1, 2, 3, 4], "rank 0 alone logs each step, from where the run stopped"
    assert [r["processes"] for r in records if r["type"] == "start"] == [1, 2]
    state = load_file(run / "state.safetensors")
    assert any(k.startswith("discriminator.") for k in state)
    assert all(torch.isfinite(v).all() for k, v in state.items() if v.is_floating_point())
    assert not list(run.glob(".*.tmp")), "no half-written files"



def test_two_processes_train_the_unet_discriminator_like_one(setup):
    """With sync-BN (the generator's BatchNorm), and the U-Net has none. Spectral norm's
    power-iteration buffers are not broadcast (``forward_sync_buffers`` off): they stay equal
    on every rank because the weights are."""
    root, config_file, _ = setup
    config = load_config(config_file, {"discriminator": "unet"})
    unet_file = save_config(config, root / "unet.toml")
    train(config, root / "unet-single")
    run = root / "unet-ddp"
    torchrun_train("--config", str(unet_file), "--out", str(run), "--sync-bn", cwd=root)
    for mine, expected in zip(train_losses(run), train_losses(root / "unet-single"),
                              strict=True):
        assert mine == pytest.approx(expected, rel=1e-5)
    a = load_file(root / "unet-single" / "state.safetensors")
    b = load_file(run / "state.safetensors")
    assert a.keys() == b.keys() and "discriminator.conv8.parametrizations.weight.0._u" in a
    for key in (k for k in a if k.startswith("discriminator.") and k.endswith(("_u", "_v"))):
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-4, msg=key)
    d_moments = [k for k in a if k.startswith("opt_d.") and k.endswith(".exp_avg")]
    scale = max(a[k].abs().max() for k in d_moments)  # DDP averaged D's gradients
    for key in d_moments:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-4 * scale, msg=key)


def test_two_processes_make_the_same_realistic_batches_as_one(setup):
    """Realistic degradations run on each rank's device for its share of the batch: a
    sample's LR depends only on its plan, so two processes train like one."""
    root, config_file, _ = setup
    config = load_config(config_file, {"degradation": "realistic", "phase": "pretrain",
                                       "pretrain_steps": 2})
    real_file = save_config(config, root / "real.toml")
    train(config, root / "real-single")
    run = root / "real-ddp"
    torchrun_train("--config", str(real_file), "--out", str(run), "--sync-bn", cwd=root)
    one, two = train_losses(root / "real-single"), train_losses(run)
    assert [r["step"] for r in two] == [1, 2]
    for mine, expected in zip(two, one, strict=True):
        assert mine == pytest.approx(expected, rel=1e-5)


def test_the_rng_state_keys_follow_the_runs_device_not_the_process(monkeypatch):
    """Issue 21: the single-process reference run saved ``rng.cuda.0`` when an earlier test
    in the same pytest process had initialised CUDA, the torchrun processes never did: the
    key sets differed on a GPU machine. Now only a CUDA run saves (and restores) them."""
    gpu_state = torch.zeros(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [gpu_state])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    cpu_run = rng_tensors(torch.device("cpu"))
    assert set(cpu_run) == {"rng.torch"}
    cuda_run = rng_tensors(torch.device("cuda"))
    assert set(cuda_run) == {"rng.torch", "rng.cuda.0"}
    restore_rng(cuda_run, torch.device("cpu"))  # a CUDA run resumed on the CPU
    assert restored == []
    restore_rng(cuda_run, torch.device("cuda"))
    assert len(restored) == 1 and torch.equal(restored[0][0], gpu_state)
