"""The Python API behind ``srgan upscale``: an ``Upscaler`` and the batch loop over files.

    from srgan_cli import Upscaler
    up = Upscaler("srgan-x4")               # or a path, or hf://owner/repo/file.safetensors
    up.upscale_file("photo.jpg", "photo_x4.png")
    sr = up.upscale_tensor(lr)              # (N, 3, H, W) in [0, 1] -> (N, 3, 4H, 4W) in [0, 1]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import images
from .checkpoints import DEFAULT_MODEL, PERCEPTION_ENDS, load_model, load_perception_model
from .errors import SrganError
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
    """``auto`` -> the first CUDA GPU if there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
        single = lr.dim() == 3
        batch = lr.unsqueeze(0) if single else lr
        out = upscale_tiled(self._run, batch, self.scale, self.tile, self.overlap, on_tile)
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
    ) -> list[str]:
        """Read ``src``, upscale it and write ``dst`` atomically; returns warnings."""
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
