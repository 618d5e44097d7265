"""What ``precision = auto`` means on each device, and the memory layout that goes with it."""

import dataclasses

import pytest
import torch

from srgan_cli import precision
from srgan_cli.errors import SrganError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(params=[False, True], ids=["cpu-without-bf16", "cpu-with-bf16"])
def native_bf16(request, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_auto_is_bf16_only_on_cpus_with_native_bf16(native_bf16):
    expected = torch.bfloat16 if native_bf16 else None
    assert precision.autocast_dtype("auto", CPU) is expected
    assert precision.autocast_dtype("auto", CPU, cuda_auto="bf16") is expected
    assert precision.auto_precision(CPU) == ("bf16" if native_bf16 else "fp32")


def test_auto_on_cuda_is_the_callers_choice(native_bf16):
    assert precision.autocast_dtype("auto", CUDA) is torch.float16
    assert precision.autocast_dtype("auto", CUDA, cuda_auto="bf16") is torch.bfloat16


def test_named_precisions_are_kept_everywhere(native_bf16):
    for device in (CPU, CUDA):
        assert precision.autocast_dtype("fp32", device) is None
        assert precision.autocast_dtype("bf16", device) is torch.bfloat16
        assert precision.autocast_dtype("fp16", device) is torch.float16


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(SrganError, match="unknown precision 'fp8'.*auto, fp32, bf16, fp16"):
        precision.autocast_dtype("fp8", CPU)


def test_channels_last_on_cuda_and_on_cpus_running_bf16(native_bf16):
    assert precision.prefers_channels_last(CUDA, None)
    assert precision.prefers_channels_last(CPU, torch.bfloat16) is native_bf16
    assert not precision.prefers_channels_last(CPU, None)  # fp32 on a CPU stays NCHW


def test_a_cpu_with_native_bf16_is_never_warned_about_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert not precision.cpu_lacks_fast(torch.bfloat16)
    assert not precision.cpu_lacks_fast(None)


def test_missing_private_cpu_checks_mean_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert precision.cpu_has_native_bf16() is False


def test_trainer_follows_the_rule(tmp_path, monkeypatch, native_bf16):
    from PIL import Image

    from srgan_cli.training.config import make_config
    from srgan_cli.training.display import Display
    from srgan_cli.training.train import Trainer

    (tmp_path / "hr").mkdir()
    Image.new("RGB", (24, 24), (90, 120, 200)).save(tmp_path / "hr" / "a.png")
    config = make_config({"data": [str(tmp_path / "hr")], "patch_size": 16, "num_blocks": 1,
                          "channels": 8, "device": "cpu", "precision": "auto"})
    trainer = Trainer(config, tmp_path / "run", Display(True, None), CPU)
    assert (trainer.dtype is torch.bfloat16) is native_bf16
    assert trainer.channels_last is native_bf16
    weight = trainer.generator.head[0].weight  # the 9x9 conv: (8, 3, 9, 9)
    assert weight.is_contiguous(memory_format=torch.channels_last) is native_bf16
    fp32 = Trainer(dataclasses.replace(config, precision="fp32"), tmp_path / "run32",
                   Display(True, None), CPU)
    assert fp32.dtype is None and not fp32.channels_last
