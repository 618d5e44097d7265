"""The Python API behind ``srgan upscale``: an ``Upscaler`` and the batch loop over files.

    from srgan_cli import Upscaler
    up = Upscaler("srresnet-x4")            # or a path, or hf://owner/repo/file.safetensors
    up.upscale_file("photo.jpg", "photo_x4.png")
    sr = up.upscale_tensor(lr)              # (N, 3, H, W) in [0, 1] -> (N, 3, 4H, 4W) in [0, 1]
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import images, memory, png
from .checkpoints import DEFAULT_MODEL, MIXES, load_mixed_model, load_model
from .errors import ImageError, InputError, SrganError
from .fast import prepare_for_inference
from .models import Generator
from .outscale import check_output_pixels, check_outscale, outscale_size, resize_lanczos
from .precision import autocast_dtype
from .tiling import count_tiles, upscale_tiled


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


def check_image_tensor(lr: object, batched: bool = True) -> None:
    """Refuse, with one line saying what is expected, anything but (N, 3, H, W) or (3, H, W)
    floating-point RGB in [0, 1]: the API boundary of ``Upscaler``. Raises InputError.

    ``batched=False``: only (3, H, W) is accepted (``upscale_pixels``).
    """
    shapes = "(N, 3, H, W) or (3, H, W)" if batched else "(3, H, W)"
    expected = f"expected a float torch.Tensor {shapes}, RGB in [0, 1]"
    if not isinstance(lr, torch.Tensor):
        hint = (": for an (H, W, 3) uint8 array use torch.from_numpy(a).permute(2, 0, 1)"
                ".float() / 255" if type(lr).__module__ == "numpy" else "")
        raise InputError(f"{expected}, got {type(lr).__module__}.{type(lr).__name__}{hint}")
    shape = tuple(lr.shape)
    if lr.dim() not in ((3, 4) if batched else (3,)):
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


def parse_tile(tile: object) -> int | str | None:
    """``"auto"``, a core tile size in LR pixels (an int or a string of digits), or
    ``None``/0 (whole image). InputError (one line) for anything else: -5, 2.5, "big"."""
    if tile is None or (isinstance(tile, str) and tile == "auto"):
        return tile
    if isinstance(tile, str) and tile.strip().isdigit():
        tile = int(tile)
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 0:
        raise InputError(f"--tile must be auto, 0 (off) or a whole number of pixels, "
                         f"got {tile!r}")
    return int(tile) or None


def check_whole(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int from ``low`` to ``high`` (None: no upper bound); InputError (one
    line) for anything else, floats, strings and bools included."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low
            or (high is not None and value > high)):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InputError(f"{name} must be a whole number {span}, got {value!r}")
    return int(value)


def check_mix(value: object, knob: str) -> float | None:
    """``None`` or a number from 0 to 1 (NaN and strings refused); InputError otherwise."""
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0 <= value <= 1):  # NaN fails the comparison too
        raise InputError(f"--{knob} must be a number from 0 to 1, got {value!r}")
    return float(value)


def check_write_options(max_pixels: object, quality: object, png_compression: object) -> None:
    """The reading and writing options of ``upscale_file``/``upscale_batch``, checked before
    any image is read (a bad ``quality`` would otherwise fail only at the write)."""
    check_whole("--max-pixels", max_pixels, 1)
    check_whole("--quality", quality, *images.QUALITY_RANGE)
    check_whole("--png-compression", png_compression, *images.PNG_COMPRESSION_RANGE)


@dataclass
class TileStats:
    """Which tile sizes ran (``None``: whole image) and how many out-of-memory retries."""

    used: dict[int | None, int] = field(default_factory=dict)
    oom_retries: int = 0

    def describe(self) -> str:
        """One line for the end of a batch, e.g. ``tile 512 (3 images); 1 out-of-memory retry``."""
        if not self.used:
            return ""
        parts = [f"{'whole image' if t is None else f'tile {t}'} ({n} image{'s' * (n != 1)})"
                 for t, n in sorted(self.used.items(), key=lambda kv: -(kv[0] or 1 << 30))]
        text = ", ".join(parts)
        if self.oom_retries:
            text += (f"; {self.oom_retries} out-of-memory "
                     f"retr{'ies' if self.oom_retries != 1 else 'y'} with a halved tile")
        return text


def tta_average(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Self-ensemble: the mean of ``run`` over the 8 flips/rotations of ``x``, each undone.

    x: (N, C, H, W); ``run`` maps it to (N, C, sH, sW). Costs 8 passes; the network sees
    every orientation, so its orientation-dependent errors partly cancel (higher PSNR).
    """
    total = None
    for flip in (False, True):
        for turns in range(4):
            t = torch.rot90(x.flip(-1) if flip else x, turns, (-2, -1))
            y = torch.rot90(run(t), -turns, (-2, -1))
            y = y.flip(-1) if flip else y
            total = y.to(torch.float32, copy=True) if total is None else total.add_(y)
    assert total is not None
    return total.div_(8)


class Upscaler:
    """A loaded generator plus how to run it: device, precision, tiling and optimization.

    ``optimize`` (default on) runs ``fast.prepare_for_inference``'s copy of the generator:
    BatchNorm folded, channels_last, the tail conv before the last shuffle. It computes the
    same function (fp32 outputs agree to about 1e-6); ``optimize=False`` runs the network as
    trained, for comparisons. ``precision`` applies either way.

    ``perception`` (0 to 1) replaces ``model`` with a mix of the shipped models' weights:
    0 = ``srresnet-x4`` (highest PSNR, smooth), 1 = ``srgan-x4`` (sharpest textures), in
    between = linear interpolation of the two networks (``checkpoints.interpolate_generators``).
    ``denoise`` (0 to 1) mixes the same way from ``srresnet-x4`` (0: for clean inputs, keeps
    noise and JPEG blocks as detail) to ``srgan-real-x4`` (1: removes them); between keeps
    some grain as texture. At most one of the two knobs.

    ``tile``: ``"auto"`` (default) picks the tile from the memory budget (``memory.py``;
    ``max_memory`` caps it, bytes or a size such as ``"4GiB"``), an int is a fixed core tile
    in LR pixels, 0/``None`` one pass. On ``torch.OutOfMemoryError`` the tile is halved
    (down to ``memory.MIN_TILE``) and the image retried; later images keep the smaller
    tile. ``stats`` records the tiles used and the retries. ``outscale`` resizes the x4
    result (Lanczos) to ``round(size * outscale)``; ``tta`` averages the 8 flips/rotations;
    ``tile_batch`` runs up to that many equally shaped tiles of one image per pass.

    Each tile sees ``overlap`` (the network's receptive radius) pixels of context on each
    side, so tiles leave no seams; it is not an option, since less context gives seams and
    more only costs time. A fixed tile smaller than ``overlap`` is raised to it (see
    ``notes``). Every argument is checked here, before any model is loaded: a bad value
    raises InputError (a ValueError) or SrganError with one line.
    """

    def __init__(
        self,
        model: str | Generator = DEFAULT_MODEL,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | str | None = "auto",
        optimize: bool = True,
        max_memory: int | str | None = None,
        outscale: float | None = None,
        tta: bool = False,
        tile_batch: int = 1,
        perception: float | None = None,
        denoise: float | None = None,
    ) -> None:
        self.tile = parse_tile(tile)
        try:
            self.max_memory = None if max_memory is None else memory.parse_size(max_memory)
        except ValueError as e:
            raise InputError(f"--max-memory: {e}") from None
        self.outscale = check_outscale(outscale)
        knobs = {knob: check_mix(value, knob) for knob, value in
                 (("perception", perception), ("denoise", denoise)) if value is not None}
        self.tta = tta
        self.tile_batch = check_whole("tile_batch", tile_batch, 1)
        self.device = pick_device(device)
        self.dtype = autocast_dtype(precision, self.device)
        if len(knobs) > 1:
            raise SrganError("perception and denoise cannot be combined: each mixes two "
                             "shipped models; choose one")
        if knobs:
            (knob, t), = knobs.items()
            ends = MIXES[knob]
            if not (isinstance(model, str) and model in (DEFAULT_MODEL, *ends)):
                raise SrganError(f"{knob} mixes the shipped {ends[0]} and {ends[1]}; "
                                 "it cannot be combined with another model")
            self.generator = load_mixed_model(knob, t, device=self.device)
        elif isinstance(model, Generator):
            self.generator = model.to(self.device).eval()
        else:
            self.generator = load_model(model, device=self.device)
        if optimize:
            self.generator = prepare_for_inference(self.generator)
        self.notes: list[str] = []  # options adjusted, one line each (the CLI prints them)
        if isinstance(self.tile, int) and self.tile < self.overlap:
            self.notes.append(f"--tile {self.tile} is smaller than the network's "
                              f"{self.overlap}-pixel overlap: using {self.overlap}-pixel tiles")
            self.tile = self.overlap
        self.stats = TileStats()
        self._tile_cap: int | None = None  # lowered by out-of-memory retries
        self._bytes_per_pixel: int | None = None

    @property
    def scale(self) -> int:
        return self.generator.scale

    @property
    def overlap(self) -> int:
        """LR pixels of context around each tile: the network's receptive radius."""
        return self.generator.config.receptive_radius()

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the final image for an input of this size (with ``outscale``)."""
        if self.outscale is None:
            return height * self.scale, width * self.scale
        return outscale_size(height, width, self.outscale)

    def check_output(self, height: int, width: int, grey: bool, fmt: str,
                     max_pixels: int) -> None:
        """Refuse, before any compute, the output of a (height, width) input (``grey``: one
        channel) that is above the output pixel limit (``outscale.check_output_pixels``) or
        that ``fmt`` cannot store (``images.check_output_size``): ImageError, one line."""
        out_height, out_width = self.output_size(height, width)
        check_output_pixels((out_height, out_width), max_pixels)
        images.check_output_size(fmt, out_width, out_height, 1 if grey else 3)

    def memory_warning(self) -> str | None:
        """A line when ``max_memory`` is below what the smallest auto tile needs (that tile
        then runs anyway), else None. On CUDA this measures the network once (a small pass)."""
        if self.tile != "auto" or self.max_memory is None:
            return None
        need = memory.smallest_tile_bytes(self.overlap, self.bytes_per_pixel())
        if need <= self.max_memory:
            return None
        return (f"--max-memory ({self.max_memory:,} bytes) is less than the smallest tile "
                f"needs (about {need / 1e6:,.0f} MB for {memory.MIN_TILE}-pixel tiles); "
                "running those anyway")

    # ------------------------------------------------------------------ one network pass

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network (with TTA if asked) on device tensors: float32 clamped to [0, 1]."""

        def run(t: torch.Tensor) -> torch.Tensor:
            if self.dtype is None:
                return self.generator(t).float()
            with torch.autocast(self.device.type, dtype=self.dtype):
                return self.generator(t).float()

        out = tta_average(run, x) if self.tta else run(x)
        check_finite_output(out)  # before quantising: NaN would round to a black image
        return out.clamp_(0, 1)

    def _device_net(self, top: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """A tile function for ``upscale_tiled``: host (N, 3, h, w) -> device output.

        ``top`` None: float32 in [0, 1]; 255: quantised on the device to uint8 (rounded);
        65535: to 16 bits, returned as int16 with uint16's bit pattern (CUDA's support for
        uint16 arithmetic is thin; int32 -> int16 wraps to exactly those bits). The copy to
        the host then moves 1 or 2 bytes per channel, not 4.
        """

        def net(lr: torch.Tensor) -> torch.Tensor:
            x = lr.to(self.device, torch.float32, non_blocking=True)
            out = self._forward(x)
            if top is None:
                return out
            out = out.mul_(top).round_()
            return out.to(torch.uint8) if top == 255 else out.to(torch.int32).to(torch.int16)

        return net

    # ------------------------------------------------------------------ tiles and memory

    def bytes_per_pixel(self) -> int:
        """Network memory per LR input pixel at this precision (times ``tile_batch``).

        CUDA: measured once by a probe pass of ``_probe_side()`` pixels; may raise
        torch.OutOfMemoryError (``tile_for`` retries). CPU/MPS: estimated, no pass.
        """
        if self._bytes_per_pixel is None:
            if memory.cuda_accounting(self.device):
                per_pixel = memory.measured_bytes_per_pixel(self._forward, self.device,
                                                            self._probe_side())
            else:
                size = 2 if self.dtype is not None else 4
                per_pixel = memory.estimated_bytes_per_pixel(self.generator, size)
            self._bytes_per_pixel = per_pixel * self.tile_batch
        return self._bytes_per_pixel

    def _probe_side(self) -> int:
        """``memory.PROBE_SIDE``, or the tile cap once out-of-memory retries lowered it."""
        return min(memory.PROBE_SIDE, self._tile_cap or memory.PROBE_SIDE)

    def tile_for(self, height: int, width: int) -> int | None:
        """The core tile size for an image of this size (``None``: one pass).

        An out-of-memory error in the probe pass (``bytes_per_pixel``) is retried like one
        in the tiles: the tile cap becomes half the probe's side (counted in
        ``stats.oom_retries``) and the probe runs again at that size; ImageError once the
        cap is ``memory.MIN_TILE``.
        """
        tile = self.tile
        if tile == "auto":
            budget = memory.device_budget(self.device, self.max_memory)
            while True:
                try:
                    per_pixel = self.bytes_per_pixel()
                    break
                except torch.OutOfMemoryError:
                    self._halve_tile(self._probe_side())
            tile = memory.auto_tile(height, width, self.overlap, per_pixel, budget)
        if self._tile_cap is not None and (tile is None or tile > self._tile_cap):
            tile = self._tile_cap if max(height, width) > self._tile_cap else None
        return tile

    def num_tiles(self, height: int, width: int) -> int:
        return count_tiles(height, width, self.tile_for(height, width))

    def _halve_tile(self, current: int) -> int:
        """After torch.OutOfMemoryError with tiles of ``current`` pixels (the whole image's
        side when untiled): free the cache, count the retry, and cap the tile at half.

        Raises ImageError when ``current`` is already ``memory.MIN_TILE``.
        """
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if current <= memory.MIN_TILE:
            raise ImageError(f"out of memory even with {memory.MIN_TILE}-pixel tiles; "
                             "try --max-memory, --precision fp16 or another device") from None
        self._tile_cap = max(memory.MIN_TILE, current // 2)
        self.stats.oom_retries += 1
        return self._tile_cap

    def _assemble(
        self, lr: torch.Tensor, top: int | None, out: torch.Tensor | None,
        on_tile: Callable[[], None] | None,
    ) -> torch.Tensor:
        """Tile ``lr`` (N, 3, H, W) into ``out``, halving the tile on out-of-memory."""
        height, width = lr.shape[-2:]
        tile = self.tile_for(height, width)
        if self.device.type == "cuda" and not lr.is_cuda:
            lr = lr.pin_memory()  # so the tiles' uploads can overlap compute
        while True:
            try:
                result = upscale_tiled(self._device_net(top), lr, self.scale, tile,
                                       self.overlap, on_tile, out, self.tile_batch)
            except torch.OutOfMemoryError:
                tile = self._halve_tile(tile or max(height, width))
                continue
            self.stats.used[tile] = self.stats.used.get(tile, 0) + 1
            return result

    # ------------------------------------------------------------------ public API

    def upscale_tensor(
        self, lr: torch.Tensor, on_tile: Callable[[], None] | None = None
    ) -> torch.Tensor:
        """(N, 3, H, W) or (3, H, W) float in [0, 1] -> x``scale``, float32 in [0, 1].

        The result stays on ``lr``'s device; only one tile at a time visits the model's.
        ``outscale`` does not apply here (it works on the final integer pixels).
        """
        check_image_tensor(lr)
        single = lr.dim() == 3
        batch, box = pad_small(lr.unsqueeze(0) if single else lr)
        out = crop_padding(self._assemble(batch, None, None, on_tile), box, self.scale)
        return out[0] if single else out

    def upscale_pixels(
        self, rgb: torch.Tensor, bit_depth: int = 8, on_tile: Callable[[], None] | None = None
    ) -> torch.Tensor:
        """(3, H, W) float [0, 1] on the host -> (3, sH, sW) uint8 (or uint16 for 16 bits).

        The result is a view of one (sH, sW, 3) host buffer (pinned on CUDA) that each tile's
        core is written into as soon as it is quantised on the device: device memory stays
        O(tile), host memory is the output plus O(tile). No ``outscale`` here. Checks its
        input as ``upscale_tensor`` does (InputError), and ``bit_depth`` is 8 or 16.
        """
        check_image_tensor(rgb, batched=False)
        if isinstance(bit_depth, bool) or bit_depth not in (8, 16):
            raise InputError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
        top = 65535 if bit_depth == 16 else 255
        dtype = torch.int16 if bit_depth == 16 else torch.uint8  # int16: see _device_net
        batch, box = pad_small(rgb[None])  # tiny inputs: edge padding, cropped again below
        height, width = batch.shape[-2:]
        hwc = torch.empty((height * self.scale, width * self.scale, 3), dtype=dtype,
                          pin_memory=self.device.type == "cuda")
        out = hwc.permute(2, 0, 1)[None]
        self._assemble(batch, top, out, on_tile)
        out = crop_padding(out, box, self.scale)
        return out[0] if bit_depth != 16 else out[0].view(torch.uint16)

    def upscale_picture(
        self, picture: images.Picture, on_tile: Callable[[], None] | None = None
    ) -> images.Picture:
        """Upscale a decoded picture to its final integer pixels (uint8/uint16, see Picture).

        The network runs on RGB, alpha gets a separate bicubic resize; ``outscale`` then
        resizes both to the final size.
        """
        rgb, alpha = picture.rgb, None
        if picture.alpha is not None:
            rgb = images.bleed_colour(picture.rgb, picture.alpha)  # hidden colour must not leak
            alpha = images.quantise(images.upscale_alpha(picture.alpha, self.scale),
                                    picture.bit_depth)
        big = self.upscale_pixels(rgb, picture.bit_depth, on_tile)
        if self.outscale is not None:
            size = outscale_size(*rgb.shape[-2:], self.outscale)
            big = resize_lanczos(big, size)
            alpha = None if alpha is None else resize_lanczos(alpha, size)
        return picture.with_pixels(big, alpha)

    def upscale_image(self, image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
        """Upscale an image in memory: a Pillow image, or numpy pixels; the same kind back.

        Pillow: handled as ``srgan upscale`` handles a file (``images.picture_from_pillow``):
        the result keeps the mode (L, LA, RGB, RGBA, I;16; palette becomes RGB or RGBA,
        CMYK RGB), alpha (upscaled separately), EXIF orientation applied, and the ICC
        profile, EXIF and DPI (scaled) in ``result.info``. numpy: (H, W) or (H, W, C)
        uint8 or uint16, C = 1, 2 (grey + alpha), 3 or 4; the result has the same dtype and
        layout. Float images in [0, 1]: ``upscale_tensor``. Things the user should know
        (a first frame only, a colour profile dropped) are issued as Python warnings.
        Raises InputError for anything else.
        """
        if isinstance(image, Image.Image):
            picture = images.picture_from_pillow(image)
            result, notes = images.picture_to_pillow(self.upscale_picture(picture))
        elif isinstance(image, np.ndarray):
            picture = images.picture_from_array(image)
            result, notes = images.picture_to_array(self.upscale_picture(picture),
                                                    two_d=image.ndim == 2), []
        else:
            hint = (": use upscale_tensor for tensors" if isinstance(image, torch.Tensor)
                    else "")
            raise InputError("expected a PIL.Image.Image or a numpy (H, W) or (H, W, C) "
                             f"uint8/uint16 array, got {type(image).__module__}."
                             f"{type(image).__name__}{hint}")
        for note in picture.warnings + notes:
            warnings.warn(note, stacklevel=2)
        return result

    def upscale_file(
        self,
        src: str | os.PathLike | BinaryIO,
        dst: str | os.PathLike | BinaryIO,
        max_pixels: int = images.DEFAULT_MAX_PIXELS,
        quality: int = 95,
        on_tile: Callable[[], None] | None = None,
        overwrite: bool = False,
        png_compression: int = images.DEFAULT_PNG_COMPRESSION,
        format: str | None = None,
    ) -> list[str]:
        """Read ``src``, upscale it and write ``dst`` atomically; returns warnings.

        Never writes over ``src``; an existing ``dst`` is replaced only with ``overwrite``
        (ImageError otherwise, before any work is done). Either may instead be a binary file
        object (``src`` one that can seek, e.g. ``io.BytesIO``); the bytes are written to
        ``dst`` at once when the image is complete. ``format`` (png, jpg, webp, tif, bmp):
        the output format; by default ``dst``'s extension, or for a file object the input's
        own format (PNG if it cannot be written, e.g. GIF). An output the format cannot
        store (``images.check_output_size``), or above the pixel limit
        (``outscale.check_output_pixels``), is refused before the network runs; bad options
        raise InputError first.
        """
        check_write_options(max_pixels, quality, png_compression)
        to_path = isinstance(dst, (str, os.PathLike))
        if to_path and isinstance(src, (str, os.PathLike)):
            images.check_safe_to_write(Path(src), Path(dst), overwrite)
        elif to_path and not overwrite and (Path(dst).exists() or Path(dst).is_symlink()):
            raise ImageError(f"{dst} exists (pass overwrite=True to replace it)")
        picture = images.read_image(src, max_pixels=max_pixels)
        fmt = images.format_for(dst, format) if to_path else images.format_to_write(
            picture.format, format)
        self.check_output(*picture.rgb.shape[-2:], picture.grayscale, fmt, max_pixels)
        result = self.upscale_picture(picture, on_tile)
        if to_path:
            return picture.warnings + images.write_image(result, Path(dst), fmt, quality,
                                                         png_compression)
        data, notes = images.encode_image(result, fmt, quality, png_compression)
        dst.write(data)
        dst.flush()
        return picture.warnings + notes


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


@dataclass(frozen=True)
class PipelineLimits:
    """How much of the machine a folder's pipeline may use (``upscale_batch``).

    readers: threads decoding the next inputs while the device computes; at most this many
        + 1 decoded inputs wait for the device.
    writers: threads converting, encoding and writing results (Pillow and zlib release the
        GIL, so they run on separate cores).
    deflate: threads deflating pieces of large PNGs (``png.py``), shared by all writers.
    memory: bytes of finished outputs that may wait for a writer or be in writing; a new
        output waits until older ones are written when it would pass this (one alone always
        may). Decoded inputs count too: no input is read ahead while the budget is full.
    """

    readers: int
    writers: int
    deflate: int
    memory: int

    @classmethod
    def for_machine(cls, cores: int | None = None) -> PipelineLimits:
        """Scaled with the cores this process may use, within ``memory.pipeline_budget()``.

        Decoding costs about 1/16 of encoding (the output has 16x the pixels at x4), so a
        quarter of the cores read and every core writes.
        """
        cores = cores or png.available_cores()
        return cls(readers=max(2, cores // 4), writers=max(2, cores), deflate=cores,
                   memory=memory.pipeline_budget())


class _Inline:
    """An executor that runs each task when it is submitted: the serial path, same code."""

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as error:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(error)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _done(result: FileResult) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future


def picture_bytes(picture: images.Picture) -> int:
    """Bytes of pixel memory a picture holds (colour and alpha)."""
    alpha = 0 if picture.alpha is None else picture.alpha.nbytes
    return picture.rgb.nbytes + alpha


def upscale_batch(
    upscaler: Upscaler,
    jobs: Iterable[tuple[Path, Path]],
    skip_existing: bool = False,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    quality: int = 95,
    on_start: Callable[[Path, int], None] | None = None,
    on_tile: Callable[[], None] | None = None,
    on_done: Callable[[FileResult], None] | None = None,
    png_compression: int = images.DEFAULT_PNG_COMPRESSION,
    pipeline: bool = True,
    limits: PipelineLimits | None = None,
) -> BatchSummary:
    """Upscale each (input, output) pair; one bad file never stops the rest.

    A bounded pipeline (``limits``, default ``PipelineLimits.for_machine()``): reader
    threads decode ahead, this thread runs the network, writer threads convert, encode and
    write (atomically), large PNGs deflated on all cores. Finished outputs that wait are
    held within ``limits.memory`` bytes, whatever the number or size of the files.
    ``pipeline=False`` runs the same steps one after another in this thread (a PNG is still
    deflated on ``limits.deflate`` threads); the files written are bit-identical, whatever
    the limits.

    Results (and ``on_done(result)``) come in input order, as files complete;
    ``on_start(src, n_tiles)`` and ``on_tile()`` drive progress displays. On Ctrl-C
    (KeyboardInterrupt) queued work is dropped, writes already running finish (each file
    appears whole or not at all), the threads end, and the interrupt propagates.
    """
    check_write_options(max_pixels, quality, png_compression)
    jobs = list(jobs)
    limits = limits or PipelineLimits.for_machine()
    summary = BatchSummary()
    readers = ThreadPoolExecutor(limits.readers, "srgan-read") if pipeline else _Inline()
    writers = ThreadPoolExecutor(limits.writers, "srgan-write") if pipeline else _Inline()
    deflater = png.Deflater(limits.deflate)

    def read(src: Path, dst: Path) -> images.Picture | FileResult:
        if skip_existing and dst.exists():
            return FileResult(src, dst, "skipped", "output exists")
        try:
            picture = images.read_image(src, max_pixels=max_pixels)
            upscaler.check_output(*picture.rgb.shape[-2:], picture.grayscale,
                                  images.format_for(dst), max_pixels)
            return picture
        except SrganError as e:
            return FileResult(src, dst, "failed", str(e))

    def write(src: Path, dst: Path, out: images.Picture, warnings: list[str]) -> FileResult:
        try:
            warnings = warnings + images.write_image(out, dst, quality=quality,
                                                     png_compression=png_compression,
                                                     deflater=deflater)
        except SrganError as e:
            return FileResult(src, dst, "failed", str(e))
        except Exception as e:  # noqa: BLE001 - an encoder's surprise fails this file only
            return FileResult(src, dst, "failed", f"cannot write: {type(e).__name__}: {e}")
        return FileResult(src, dst, "written", warnings=warnings)

    reads: deque[Future] = deque()  # decoding or decoded, in input order
    waiting: deque[tuple[Future, int]] = deque()  # results in input order, with bytes held

    def held() -> int:
        """Bytes of finished outputs waiting or in writing, and of decoded inputs waiting."""
        decoded = sum(picture_bytes(f.result()) for f in reads
                      if f.done() and isinstance(f.result(), images.Picture))
        return decoded + sum(size for _, size in waiting)

    def read_ahead(index: int) -> None:
        while index + len(reads) < len(jobs) and len(reads) <= limits.readers:
            if reads and held() > limits.memory:
                return
            reads.append(readers.submit(read, *jobs[index + len(reads)]))

    def finish_oldest() -> None:
        result = waiting.popleft()[0].result()
        summary.results.append(result)
        if on_done:
            on_done(result)

    try:
        for index, (src, dst) in enumerate(jobs):
            read_ahead(index)
            picture = reads.popleft().result()
            outcome = picture if isinstance(picture, FileResult) else compute(
                upscaler, picture, src, dst, on_start, on_tile)
            if isinstance(outcome, FileResult):
                waiting.append((_done(outcome), 0))
            else:
                size = picture_bytes(outcome)
                while waiting and held() + size > limits.memory:
                    finish_oldest()
                waiting.append((writers.submit(write, src, dst, outcome, picture.warnings),
                                size))
            while waiting and waiting[0][0].done():
                finish_oldest()
        while waiting:
            finish_oldest()
    finally:  # also on Ctrl-C: drop queued work, let running writes finish, end the threads
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)
        deflater.close()  # after the writers, whose running writes still deflate
    return summary


def refuse_unstorable(
    upscaler: Upscaler, jobs: list[tuple[Path, Path]],
    max_pixels: int = images.DEFAULT_MAX_PIXELS, skip_existing: bool = False,
) -> tuple[list[tuple[Path, Path]], list[FileResult]]:
    """Split jobs, before any compute, into those whose result the output format can store
    and a failed FileResult for each other one (``Upscaler.check_output``: WebP above 16383
    pixels a side, JPEG above 65500, above the output pixel limit, ...), from each input's
    header (the batch checks the decoded image again: ``upscale_batch``). With
    ``skip_existing``, jobs whose output exists are kept unchecked (the batch skips them)."""
    storable: list[tuple[Path, Path]] = []
    refused: list[FileResult] = []
    for src, dst in jobs:
        if skip_existing and dst.exists():
            storable.append((src, dst))
            continue
        declared = images.declared_size(src, max_pixels)
        try:
            if declared is not None:
                width, height, grey = declared
                upscaler.check_output(height, width, grey, images.format_for(dst), max_pixels)
        except ImageError as e:
            refused.append(FileResult(src, dst, "failed", str(e)))
            continue
        storable.append((src, dst))
    return storable, refused


def compute(
    upscaler: Upscaler, picture: images.Picture, src: Path, dst: Path,
    on_start: Callable[[Path, int], None] | None, on_tile: Callable[[], None] | None,
) -> images.Picture | FileResult:
    """Run the network on one decoded picture here: the result, or why it failed."""
    try:
        if on_start:
            height, width = picture.rgb.shape[-2:]
            on_start(src, upscaler.num_tiles(height, width))
        return upscaler.upscale_picture(picture, on_tile)
    except SrganError as e:
        return FileResult(src, dst, "failed", str(e))
    except torch.OutOfMemoryError:  # outside the tiles and the probe (e.g. alpha): not retried
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
        return FileResult(src, dst, "failed", "out of memory: try --max-memory")
