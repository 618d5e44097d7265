"""Which number format the networks run in, and which memory layout: one rule for
``upscale``, ``benchmark`` and ``train``.

``auto`` means reduced precision where the hardware runs it natively and fp32 elsewhere:

- CUDA: fp16 for inference, bf16 for training (gradients need bf16's range without a
  loss scaler);
- a CPU with native bf16 (AMX or AVX-512-BF16, e.g. Xeon Sapphire Rapids and later):
  bf16, with channels_last tensors, for both. oneDNN then runs the convolutions on AMX
  (``ONEDNN_VERBOSE=1`` shows ``avx10_1_512_amx``); measured 2.6x fp32's inference speed
  and 2.4x its training samples/s on this project's 2-core machine (docs/performance.md,
  docs/training.md "How fast");
- any other CPU, and MPS: fp32 (oneDNN emulates bf16 there: measured 5x slower than fp32
  and with 10x the memory on an AVX2 machine).
"""

from __future__ import annotations

import torch

from .errors import SrganError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX-512-BF16).

    False when PyTorch cannot tell (its private CPU checks are missing): fp32 is the safe
    guess, as it is correct everywhere and only slower.
    """
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_lacks_fast(dtype: torch.dtype | None) -> bool:
    """Whether this CPU has no native instructions for ``dtype`` (bf16/fp16 then run slowly:
    oneDNN emulates them). False for fp32, and when PyTorch cannot tell."""
    checks = {torch.bfloat16: "_is_mkldnn_bf16_supported",
              torch.float16: "_is_mkldnn_fp16_supported"}
    if dtype not in checks:
        return False
    if dtype == torch.bfloat16 and cpu_has_native_bf16():
        return False
    try:
        return not getattr(torch.ops.mkldnn, checks[dtype])()
    except (AttributeError, RuntimeError):  # private API: assume nothing when it is missing
        return False


def autocast_dtype(
    precision: str, device: torch.device, cuda_auto: str = "fp16"
) -> torch.dtype | None:
    """The autocast dtype for a precision name (``None``: plain fp32).

    ``auto`` is ``cuda_auto`` on CUDA (fp16 for inference, bf16 for training), bf16 on a
    CPU with native bf16 (``cpu_has_native_bf16``), fp32 elsewhere.
    """
    if precision not in PRECISIONS:
        raise SrganError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = auto_precision(device, cuda_auto)
    return _DTYPES[precision]


def auto_precision(device: torch.device, cuda_auto: str = "fp16") -> str:
    """What ``auto`` stands for on ``device``: ``cuda_auto``, ``bf16`` or ``fp32``."""
    if device.type == "cuda":
        return cuda_auto
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def prefers_channels_last(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether training's convolutions run faster on channels_last (NHWC) tensors: on CUDA,
    and under bf16 autocast on CPUs with native bf16 (oneDNN's AMX kernels are NHWC; measured
    about 1.3x on top of bf16). fp32 on a CPU keeps NCHW, as before."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and dtype == torch.bfloat16 and cpu_has_native_bf16()
