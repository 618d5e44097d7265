"""The Python API behind ``srgan upscale``: an ``Upscaler`` and the batch loop over files.

    from srgan_cli import Upscaler
    up = Upscaler("srgan-x4")               # or a path, or hf://owner/repo/file.safetensors
    up.upscale_file("photo.jpg", "photo_x4.png")
    sr = up.upscale_tensor(lr)              # (N, 3, H, W) in [0, 1] -> (N, 3, 4H, 4W) in [0, 1]
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import images
from .checkpoints import DEFAULT_MODEL, PERCEPTION_ENDS, load_model, load_perception_model
from .errors import ImageError, InputError, SrganError
from .fast import prepare_for_inference
from .models import Generator
from .tiling import count_tiles, upscale_tiled

DEFAULT_TILE = 512
"""Core tile size in LR pixels; images up to this size on both sides run in one pass."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_lacks_fast(dtype: torch.dtype | None) -> bool:
    """Whether this CPU has no native instructions for ``dtype`` (bf16/fp16 then run slowly).

    Without AVX-512-BF16/AMX (or AVX-512-FP16), oneDNN emulates reduced precision: measured
    5x slower than fp32 and with 10x the memory on an AVX2 machine.
    """
    checks = {torch.bfloat16: "_is_mkldnn_bf16_supported",
              torch.float16: "_is_mkldnn_fp16_supported"}
    if dtype not in checks:
        return False
    try:
        return not getattr(torch.ops.mkldnn, checks[dtype])()
    except (AttributeError, RuntimeError):  # private API: assume nothing when it is missing
        return False


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU if there is one, else the CPU.

    Raises SrganError (one line) for a device that does not exist here: an unknown name,
    CUDA without a GPU or past the last GPU, MPS without Apple's Metal.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise SrganError(f"unknown device {str(device)!r}: use auto, cpu, cuda, cuda:N "
                         "or mps") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SrganError(f"device {str(device)!r}: CUDA is not available on this machine "
                             "(use --device cpu)")
        if chosen.index is not None and chosen.index >= count:
            raise SrganError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif chosen.type == "mps":
        if not torch.backends.mps.is_available():
            raise SrganError(f"device {str(device)!r}: MPS (Apple Metal) is not available "
                             "on this machine (use --device cpu)")
    elif chosen.type != "cpu":
        raise SrganError(f"device {str(device)!r} is not supported: use auto, cpu, cuda, "
                         "cuda:N or mps")
    return chosen


MIN_SIDE = 16
"""Smaller inputs are padded (edge pixels repeated) to this many pixels per side, and the
result cropped back: on a 1-3 px image every pixel is a border pixel, and the network's
zero padding would darken it (measured: a 1x1 mid-grey image came out at 9% brightness)."""


def check_image_tensor(lr: object) -> None:
    """Refuse, with one line saying what is expected, anything but (N, 3, H, W) or (3, H, W)
    floating-point RGB in [0, 1]: the API boundary of ``Upscaler``. Raises InputError."""
    expected = "expected a float torch.Tensor (N, 3, H, W) or (3, H, W), RGB in [0, 1]"
    if not isinstance(lr, torch.Tensor):
        hint = (": for an (H, W, 3) uint8 array use torch.from_numpy(a).permute(2, 0, 1)"
                ".float() / 255" if type(lr).__module__ == "numpy" else "")
        raise InputError(f"{expected}, got {type(lr).__module__}.{type(lr).__name__}{hint}")
    shape = tuple(lr.shape)
    if lr.dim() not in (3, 4):
        raise InputError(f"{expected}, got a {lr.dim()}-D tensor of shape {shape}")
    if lr.shape[-3] != 3:
        hint = (" (channels last? use .permute(2, 0, 1) or .permute(0, 3, 1, 2))"
                if lr.shape[-1] == 3 else
                " (grey: .expand(3, -1, -1) per image; RGBA: take [:3] or [:, :3])")
        raise InputError(f"{expected}, got {lr.shape[-3]} channels in shape {shape}{hint}")
    if lr.shape[-1] == 0 or lr.shape[-2] == 0 or (lr.dim() == 4 and lr.shape[0] == 0):
        raise InputError(f"{expected}, got an empty tensor of shape {shape}")
    if not lr.is_floating_point():
        raise InputError(f"{expected}, got dtype {str(lr.dtype).removeprefix('torch.')}: "
                         "use .float() / 255 for 8-bit images")
    low, high = (float(v) for v in torch.aminmax(lr.detach().float()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{expected}, got NaN or infinite values")
    if low < -1e-3 or high > 1 + 1e-3:
        hint = ": divide 0-255 images by 255" if high > 1.5 else ""
        raise InputError(f"{expected}, got values from {low:g} to {high:g}{hint}")


def pad_small(batch: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad (N, C, H, W) by repeating edge pixels to at least MIN_SIDE per side.

    Returns the padded batch and the box (top, left, H, W) of the original in it.
    """
    height, width = batch.shape[-2:]
    pad_h, pad_w = max(MIN_SIDE - height, 0), max(MIN_SIDE - width, 0)
    if not pad_h and not pad_w:
        return batch, (0, 0, height, width)
    top, left = pad_h // 2, pad_w // 2
    padded = F.pad(batch, (left, pad_w - left, top, pad_h - top), mode="replicate")
    return padded, (top, left, height, width)


def crop_padding(out: torch.Tensor, box: tuple[int, int, int, int], scale: int) -> torch.Tensor:
    """The upscaled original of a ``pad_small`` batch: crop ``box`` x ``scale`` from ``out``."""
    top, left, height, width = (v * scale for v in box)
    if out.shape[-2:] == (height, width):
        return out
    return out[..., top:top + height, left:left + width].contiguous()


def check_finite_output(out: torch.Tensor) -> None:
    """A network output with NaN (broken weights, reduced-precision overflow) must never be
    written as a black image: raise ImageError, which fails that one file."""
    if not bool(torch.isfinite(out).all()):
        raise ImageError("the model produced NaN values (broken weights, or try "
                         "--precision fp32); nothing written")


def autocast_dtype(
    precision: str, device: torch.device, cuda_auto: str = "fp16"
) -> torch.dtype | None:
    """The autocast dtype for a precision name (``None``: plain fp32).

    ``auto`` is fp32 off CUDA and ``cuda_auto`` on CUDA: fp16 for inference, bf16 for
    training (whose gradients need bf16's range without a loss scaler).
    """
    if precision not in PRECISIONS:
        raise SrganError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = cuda_auto if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class Upscaler:
    """A loaded generator plus how to run it: device, precision, tiling and optimization.

    ``optimize`` (default on) runs ``fast.prepare_for_inference``'s copy of the generator:
    BatchNorm folded, channels_last, the tail conv before the last shuffle. It computes the
    same function (fp32 outputs agree to about 1e-6); ``optimize=False`` runs the network as
    trained, for comparisons. ``precision`` applies either way.

    ``perception`` (0 to 1) replaces ``model`` with a mix of the shipped models' weights:
    0 = ``srresnet-x4`` (highest PSNR, smooth), 1 = ``srgan-x4`` (sharpest textures), in
    between = linear interpolation of the two networks (``checkpoints.interpolate_generators``).
    """

    def __init__(
        self,
        model: str | Generator = DEFAULT_MODEL,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | None = DEFAULT_TILE,
        overlap: int | None = None,
        optimize: bool = True,
        perception: float | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.dtype = autocast_dtype(precision, self.device)
        if perception is not None:
            if not (isinstance(model, str) and model in (DEFAULT_MODEL, *PERCEPTION_ENDS)):
                raise SrganError("perception mixes the shipped srresnet-x4 and srgan-x4; "
                                 "it cannot be combined with another model")
            self.generator = load_perception_model(perception, device=self.device)
        elif isinstance(model, Generator):
            self.generator = model.to(self.device).eval()
        else:
            self.generator = load_model(model, device=self.device)
        if optimize:
            self.generator = prepare_for_inference(self.generator)
        if tile is not None and tile < 0:
            raise SrganError(f"--tile must be 0 (off) or a positive size, got {tile}")
        self.tile = tile or None
        self.overlap = self.generator.config.receptive_radius() if overlap is None else overlap

    @property
    def scale(self) -> int:
        return self.generator.scale

    @torch.no_grad()
    def _run(self, lr: torch.Tensor) -> torch.Tensor:
        """One network pass on the device: (N, 3, h, w) [0, 1] -> float32 clamped to [0, 1]."""
        x = lr.to(self.device, torch.float32)
        if self.dtype is None:
            out = self.generator(x)
        else:
            with torch.autocast(self.device.type, dtype=self.dtype):
                out = self.generator(x)
        return out.float().clamp_(0, 1).to(lr.device)

    def num_tiles(self, height: int, width: int) -> int:
        return count_tiles(height, width, self.tile)

    def upscale_tensor(
        self, lr: torch.Tensor, on_tile: Callable[[], None] | None = None
    ) -> torch.Tensor:
        """(N, 3, H, W) or (3, H, W) float in [0, 1] -> x``scale``, float32 in [0, 1].

        The result stays on ``lr``'s device; only one tile at a time visits the model's.
        """
        check_image_tensor(lr)
        single = lr.dim() == 3
        batch, box = pad_small(lr.unsqueeze(0) if single else lr)
        out = upscale_tiled(self._run, batch, self.scale, self.tile, self.overlap, on_tile)
        out = crop_padding(out, box, self.scale)
        check_finite_output(out)
        return out[0] if single else out

    def upscale_picture(
        self, picture: images.Picture, on_tile: Callable[[], None] | None = None
    ) -> images.Picture:
        """Upscale a decoded picture: the network on RGB, a separate resize for alpha."""
        if picture.alpha is None:
            return picture.with_pixels(self.upscale_tensor(picture.rgb, on_tile))
        rgb = images.bleed_colour(picture.rgb, picture.alpha)  # hidden colour must not leak
        alpha = images.upscale_alpha(picture.alpha, self.scale)
        return picture.with_pixels(self.upscale_tensor(rgb, on_tile), alpha)

    def upscale_file(
        self,
        src: str | os.PathLike,
        dst: str | os.PathLike,
        max_pixels: int = images.DEFAULT_MAX_PIXELS,
        quality: int = 95,
        on_tile: Callable[[], None] | None = None,
        overwrite: bool = False,
    ) -> list[str]:
        """Read ``src``, upscale it and write ``dst`` atomically; returns warnings.

        Never writes over ``src``; an existing ``dst`` is replaced only with ``overwrite``
        (ImageError otherwise, before any work is done).
        """
        images.check_safe_to_write(Path(src), Path(dst), overwrite)
        picture = images.read_image(Path(src), max_pixels=max_pixels)
        result = self.upscale_picture(picture, on_tile)
        return picture.warnings + images.write_image(result, Path(dst), quality=quality)


# --------------------------------------------------------------------------- batches


@dataclass
class FileResult:
    """What happened to one input: ``written``, ``skipped`` or ``failed`` (with a reason)."""

    src: Path
    dst: Path | None
    status: str
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class BatchSummary:
    results: list[FileResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    def to_dict(self) -> dict:
        return {
            "written": self.count("written"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "files": [
                {"input": str(r.src), "output": None if r.dst is None else str(r.dst),
                 "status": r.status, "reason": r.reason, "warnings": r.warnings}
                for r in self.results
            ],
        }


def upscale_batch(
    upscaler: Upscaler,
    jobs: Iterable[tuple[Path, Path]],
    skip_existing: bool = False,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    quality: int = 95,
    on_start: Callable[[Path, int], None] | None = None,
    on_tile: Callable[[], None] | None = None,
    on_done: Callable[[FileResult], None] | None = None,
) -> BatchSummary:
    """Upscale each (input, output) pair; one bad file never stops the rest.

    ``on_start(src, n_tiles)``, ``on_tile()`` and ``on_done(result)`` drive progress displays.
    """
    summary = BatchSummary()
    for src, dst in jobs:
        if skip_existing and dst.exists():
            result = FileResult(src, dst, "skipped", "output exists")
        else:
            try:
                picture = images.read_image(src, max_pixels=max_pixels)
                if on_start:
                    height, width = picture.rgb.shape[-2:]
                    on_start(src, upscaler.num_tiles(height, width))
                out = upscaler.upscale_picture(picture, on_tile)
                warnings = picture.warnings + images.write_image(out, dst, quality=quality)
                result = FileResult(src, dst, "written", warnings=warnings)
            except SrganError as e:
                result = FileResult(src, dst, "failed", str(e))
            except torch.cuda.OutOfMemoryError:
                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()
                result = FileResult(src, dst, "failed", "out of GPU memory: try a smaller --tile")
        summary.results.append(result)
        if on_done:
            on_done(result)
    return summary
