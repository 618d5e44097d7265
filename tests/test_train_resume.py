"""Resuming `srgan train`: across phases (refused where the saved phase would not go on, or
with nothing left to train), and the GPU's training path run on a CPU: fused Adam and
channels_last tensors (what CUDA training uses) through save, resume and skipped steps, and a
step loop that never reads a device value on the host. CPU only, offline."""

from __future__ import annotations

import pytest
import torch
from conftest import invoke, one_line_error
from safetensors.torch import load_file
from test_train import (
    assert_same_states,
    interrupt_at,
    log_records,
    nan_pixel_loss_at_call,
    tiny,
)
from torch.utils._python_dispatch import TorchDispatchMode

from srgan_cli.errors import TrainingError
from srgan_cli.training import train as train_module
from srgan_cli.training.state import load_state, optimizer_tensors, restore_optimizer, save_state
from srgan_cli.training.train import EMA, NothingToTrain, Trainer, train

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


# ----------------------------------------------------------------------- across phases


def test_resume_in_another_phase_is_refused_and_changes_nothing(tmp_path, hr_dir):
    run = tmp_path / "run"
    train(tiny(hr_dir, pretrain_steps=2), run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for steps in ("2", "3"):
        result = invoke("train", "--out", run, "--resume", "--phase", "gan", "--steps", steps,
                        "-q")
        one_line_error(result, "saved in the pretrain phase at step 2, which --phase gan "
                               "does not continue; resume with --phase all")
        assert "trained generator" not in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_with_phase_all_starts_the_gan_phase_at_its_own_step_0(tmp_path, hr_dir):
    run = tmp_path / "run"
    train(tiny(hr_dir, pretrain_steps=2, gan_schedule="step", lr=1e-3), run)
    result = invoke("train", "--out", run, "--resume", "--phase", "all", "--steps", "2", "-q")
    assert result.exit_code == 0, result.output
    gan = [r for r in log_records(run) if r["type"] == "train" and r["phase"] == "gan"]
    assert [(r["step"], r["lr"]) for r in gan] == [(3, 1e-3), (4, pytest.approx(1e-4))]


@pytest.mark.parametrize("steps", ["1", "2"])
def test_resume_with_no_steps_left_says_so_and_changes_nothing(tmp_path, hr_dir, steps):
    run = tmp_path / "run"
    train(tiny(hr_dir, pretrain_steps=2), run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = invoke("train", "--out", run, "--resume", "--steps", steps, "-q")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "already at step 2: nothing to train"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    with pytest.raises(NothingToTrain, match="already at step 2: nothing to train"):
        train(tiny(hr_dir, pretrain_steps=2), run, resume=True)


def test_resume_past_the_end_of_a_phase_that_another_follows_is_refused(tmp_path, hr_dir):
    run = tmp_path / "run"
    train(tiny(hr_dir, pretrain_steps=3), run)
    with pytest.raises(TrainingError, match="saved at step 3 of the pretrain phase, which this "
                                            "config ends at step 2: resume with --steps 3"):
        train(tiny(hr_dir, phase="all", pretrain_steps=2, gan_steps=2), run, resume=True)


# ---------------------------------------------------- the GPU's training path on a CPU


@pytest.fixture
def gpu_kernels(monkeypatch):
    """Train with fused Adam and channels_last on the CPU, as on CUDA."""
    monkeypatch.setattr(train_module, "cuda_kernels", lambda device: True)


def assert_laid_out_like_parameters(optimizer: torch.optim.Optimizer) -> None:
    """Every state tensor matches its parameter's device, dtype and strides; the step
    counter lives on the parameter's device for fused Adam (on the CPU otherwise)."""
    fused = optimizer.param_groups[0]["fused"]
    checked = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state[param].items():
                if name == "step":
                    assert value.device == (param.device if fused else torch.device("cpu"))
                    continue
                assert (value.device, value.dtype, value.stride()) == (
                    param.device, param.dtype, param.stride()), name
                checked += 1
    assert checked >= 2 * len(optimizer.param_groups[0]["params"])


def conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.PReLU(8),
                              torch.nn.Conv2d(8, 3, 3, padding=1))
    return net.to(memory_format=torch.channels_last)


def adam_steps(net, optimizer, steps):
    torch.manual_seed(1)
    for _ in range(steps):
        x = torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad()
        net(x).square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize("saved_fused,resumed_fused", [(True, True), (False, True),
                                                       (True, False)])
def test_restored_adam_state_is_laid_out_like_channels_last_parameters(
        tmp_path, saved_fused, resumed_fused):
    net = conv_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=saved_fused)
    adam_steps(net, optimizer, 2)
    tensors, info = optimizer_tensors(optimizer, "opt")
    save_state(tmp_path / "state.safetensors", tensors, {"opt": info})

    resumed_net = conv_net()
    resumed_net.load_state_dict(net.state_dict())
    resumed = torch.optim.Adam(resumed_net.parameters(), lr=1e-3, fused=resumed_fused)
    tensors, state = load_state(tmp_path / "state.safetensors")
    restore_optimizer(resumed, tensors, "opt", state["opt"])
    assert resumed.param_groups[0]["fused"] == resumed_fused, "this machine's choice is kept"
    assert_laid_out_like_parameters(resumed)

    adam_steps(resumed_net, resumed, 1)
    if saved_fused == resumed_fused:  # the same kernels continue exactly
        adam_steps(net, optimizer, 1)
        for a, b in zip(net.parameters(), resumed_net.parameters(), strict=True):
            assert torch.equal(a, b)


def test_gan_resume_with_fused_adam_and_channels_last_is_bit_for_bit(
        tmp_path, hr_dir, gpu_kernels, monkeypatch):
    config = tiny(hr_dir, phase="all", pretrain_steps=2, gan_steps=4, ema=0.9,
                  gan_schedule="cosine")
    train(config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", on_step=interrupt_at(4))
    trainers, restore = [], Trainer.restore

    def recording_restore(self, tensors, state):
        restore(self, tensors, state)
        trainers.append(self)

    monkeypatch.setattr(Trainer, "restore", recording_restore)
    train(config, tmp_path / "stopped", resume=True)
    (trainer,) = trainers
    assert trainer.channels_last and trainer.opt_d.param_groups[0]["fused"]
    assert trainer.generator.tail.weight.is_contiguous(memory_format=torch.channels_last)
    for optimizer in (trainer.opt_g, trainer.opt_d):
        assert_laid_out_like_parameters(optimizer)
    for average, param in zip(trainer.ema.model.parameters(), trainer.generator.parameters(),
                              strict=True):
        assert (average.device, average.dtype, average.stride()) == (
            param.device, param.dtype, param.stride())
    assert_same_states(tmp_path / "straight", tmp_path / "stopped")


def test_fused_adam_skips_a_nonfinite_step_on_the_device(tmp_path, hr_dir, gpu_kernels,
                                                         monkeypatch):
    nan_pixel_loss_at_call(monkeypatch, 2)
    run = tmp_path / "run"
    train(tiny(hr_dir, pretrain_steps=3, log_every=3), run)
    records = log_records(run)
    assert [r["step"] for r in records if r["type"] == "nonfinite"] == [2]
    state = load_file(run / "state.safetensors")
    assert state["opt_g.0.step"].item() == 2, "the skipped step did not count"
    assert all(torch.isfinite(v).all() for k, v in state.items() if k.startswith("generator."))


def test_a_nonfinite_streak_between_log_records_stops_at_its_step(tmp_path, hr_dir):
    config = tiny(hr_dir, lr=1e30, pretrain_steps=50, max_nonfinite=2, log_every=10)
    with pytest.raises(TrainingError, match="stopped at step 3: .* for 2 steps in a row"):
        train(config, tmp_path / "run")
    records = log_records(tmp_path / "run")
    assert [r["step"] for r in records if r["type"] == "nonfinite"] == [2, 3]
    assert not (tmp_path / "run" / "state.safetensors").exists(), "nothing saved past it"


class NoHostReads(TorchDispatchMode):
    """Fails on any read of a tensor's value by the host (``.item()``, ``bool()``, ...)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        assert func is not torch.ops.aten._local_scalar_dense.default, "host read"
        return func(*args, **(kwargs or {}))


def test_training_steps_never_wait_for_the_device(tmp_path, hr_dir, gpu_kernels,
                                                   monkeypatch):
    """With the GPU's kernels, a step (losses, both optimizers, EMA) reads nothing back;
    the losses are read at the log interval."""
    calls = []

    def no_tolist(tensor):
        raise AssertionError("host read (tolist)")

    def guarded(method):
        def wrapped(*args, **kwargs):
            calls.append(method.__name__)
            with NoHostReads(), monkeypatch.context() as patch:
                patch.setattr(torch.Tensor, "tolist", no_tolist)
                return method(*args, **kwargs)
        return wrapped

    for owner, name in ((Trainer, "gan_step"), (Trainer, "pretrain_step"), (EMA, "update")):
        monkeypatch.setattr(owner, name, guarded(getattr(owner, name)))
    config = tiny(hr_dir, phase="all", pretrain_steps=2, gan_steps=3, ema=0.9,
                  pixel_weight=0.1, log_every=2)
    train(config, tmp_path / "run")
    assert calls.count("pretrain_step") == 2 and calls.count("gan_step") == 3
    assert calls.count("update") == 5
    train_records = [r for r in log_records(tmp_path / "run") if r["type"] == "train"]
    assert [r["step"] for r in train_records] == [2, 4, 5]
    assert all(r["g"] > 0 and r["d"] > 0 for r in train_records[1:])


def test_ema_update_skipped_on_the_device_keeps_everything():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    ema = EMA(model, decay=0.9)
    model(torch.rand(2, 3, 4, 4))  # new BatchNorm statistics
    with torch.no_grad():
        model[0].weight.add_(1.0)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    ema.update(model, torch.tensor(True))
    assert torch.allclose(ema.model[0].weight, 0.9 * before["0.weight"] + 0.1 * model[0].weight)
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    assert ema.model[1].num_batches_tracked == 1

    after = {k: v.clone() for k, v in ema.model.state_dict().items()}
    model[1].running_mean.fill_(float("nan"))  # what a diverging forward leaves behind
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model(torch.rand(2, 3, 4, 4))
    ema.update(model, torch.tensor(False))
    for key, value in ema.model.state_dict().items():
        assert torch.equal(value, after[key]), key
