"""Writing and encoding: a ``Picture`` into a file (atomically) or into bytes.

Chooses the channels a format can store (grey, alpha, 16 bits or 8, with warnings), refuses
what it cannot (transparency in JPEG/BMP, sizes over its limits), and hands PNG to our own
streaming writer (png_codec.py) and every other format to Pillow.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from .. import png
from ..errors import ImageError
from .files import _write_atomically
from .formats import _WRITERS, DEFAULT_PNG_COMPRESSION, check_output_size, format_for
from .picture import Picture, _unit, quantise
from .png_codec import _write_png

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights Pillow uses for RGB -> L


def write_image(
    picture: Picture, path: str | Path, format: str | None = None, quality: int = 95,
    png_compression: int = DEFAULT_PNG_COMPRESSION, deflater: png.Deflater | None = None,
) -> list[str]:
    """Write a Picture atomically; returns warnings (e.g. 16 bits reduced to 8).

    The file appears under `path` complete or not at all: it is written to a temporary file in
    the same folder, then renamed; on any failure (Ctrl-C included) the temporary is removed.
    Grayscale is written as L/LA (16-bit grey where possible), 8-bit values are rounded.
    16 bits: PNG always, TIFF for grey without alpha; other cases fall back to 8 bits.
    JPEG and BMP cannot store transparency: an alpha channel that is not fully opaque raises
    ImageError (write PNG, WebP or TIFF instead); a fully opaque one is dropped.
    ICC profile, EXIF and DPI are written where the format stores them (EXIF: PNG, JPEG, WebP).
    `quality` applies to JPEG and WebP (WebP at 100 is lossless); `png_compression` is the
    zlib level of PNG output (0 = none, fastest; 9 = smallest, slowest); ``deflater``: the
    threads that deflate a large PNG (None: one per core, for this file alone). A size the
    format cannot store (``check_output_size``) and any encoder failure raise ImageError.
    """
    path = Path(path)
    save, notes = _encoder(picture, format_for(path, format), quality, png_compression,
                           deflater)
    _write_atomically(path, save)
    return notes


def encode_image(
    picture: Picture, format: str, quality: int = 95,
    png_compression: int = DEFAULT_PNG_COMPRESSION,
) -> tuple[bytes, list[str]]:
    """``write_image`` into memory: the whole file's bytes (e.g. for stdout) and warnings."""
    save, notes = _encoder(picture, format_for("", format), quality, png_compression)
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue(), notes


def _encoder(
    picture: Picture, fmt: str, quality: int, png_compression: int,
    deflater: png.Deflater | None = None,
) -> tuple[Callable[[BinaryIO], None], list[str]]:
    """``save(file)`` writing ``picture`` as ``fmt`` (see write_image), and its warnings."""
    caps = _WRITERS[fmt]
    channels, sixteen, notes = _output_channels(picture, fmt, caps)
    check_output_size(fmt, channels.shape[-1], channels.shape[-2], channels.shape[0])
    metadata = {
        "icc_profile": picture.icc_profile if caps["icc"] else None,
        "exif": picture.exif if caps["exif"] else None,
        "dpi": picture.dpi if caps["dpi"] else None,
    }
    if fmt == "PNG":
        top, dtype = (65535, np.uint16) if sixteen else (255, np.uint8)
        pixels = _to_uint(channels, top, dtype)

        def save(file: BinaryIO) -> None:
            _write_png(file, pixels, **metadata, colour_chunks=picture.png_colour,
                       level=png_compression, deflater=deflater)
    else:
        image = _to_pillow(channels, sixteen)
        options = {key: value for key, value in metadata.items() if value is not None}
        if fmt == "JPEG":
            options.update(quality=quality, subsampling=0)
        elif fmt == "WEBP":
            options.update(quality=quality, lossless=quality >= 100)
        elif fmt == "TIFF":
            options.update(compression="tiff_lzw")

        def save(file: BinaryIO) -> None:
            image.save(file, fmt, **options)

    return _encoder_errors(fmt, save), notes


def _encoder_errors(fmt: str, save: Callable[[BinaryIO], None]) -> Callable[[BinaryIO], None]:
    """``save`` with every error of an encoder or of the file turned into one ImageError."""

    def guarded(file: BinaryIO) -> None:
        try:
            save(file)
        except (OSError, ValueError, OverflowError, struct.error, zlib.error) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise ImageError(f"cannot write {fmt}: {reason}") from None

    return guarded


def _output_channels(
    picture: Picture, fmt: str, caps: dict
) -> tuple[torch.Tensor, bool, list[str]]:
    """The (C, H, W) channels to store, in a mode ``caps`` allows, whether they keep 16 bits,
    and warnings. C = 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA); float [0, 1] or the picture's
    integers. ``fmt`` only names the format in messages."""
    notes: list[str] = []
    alpha = picture.alpha
    if alpha is not None and "RGBA" not in caps["modes"]:
        if bool((_unit(alpha) < 1 - 0.5 / 255).any()):  # anything not rounding to opaque
            raise ImageError(f"{fmt} cannot store transparency; write png, webp or tiff instead")
        alpha = None
    grey = picture.grayscale and ("LA" if alpha is not None else "L") in caps["modes"]
    channels = _luma(picture.rgb) if grey else picture.rgb
    if alpha is not None:
        if channels.dtype != alpha.dtype:
            channels, alpha = _unit(channels), _unit(alpha)
        channels = torch.cat([channels, alpha])
    sixteen = picture.bit_depth == 16 and channels.shape[0] in caps["sixteen"]
    if picture.bit_depth == 16 and not sixteen:
        notes.append(f"16-bit image written to {fmt} with 8 bits per channel; png keeps 16")
    return channels, sixteen, notes


def _luma(rgb: torch.Tensor, block_rows: int = 256) -> torch.Tensor:
    """(3, H, W) -> (1, H, W) grey with Pillow's weights.

    Float in, float out. Integer pixels (uint8/uint16) in, the same integers out, rounded:
    computed ``block_rows`` rows at a time, so no whole-image float copy is made (for a
    gigapixel-sized grey output that would be 12 bytes per pixel).
    """
    weights = torch.tensor(_LUMA, device=rgb.device).view(3, 1, 1)
    if rgb.is_floating_point():
        return (rgb * weights.to(rgb.dtype)).sum(0, keepdim=True)
    grey = torch.empty((1, *rgb.shape[1:]), dtype=rgb.dtype, device=rgb.device)
    bits = 8 if rgb.dtype == torch.uint8 else 16
    for top in range(0, rgb.shape[1], block_rows):
        block = _unit(rgb[:, top : top + block_rows])
        grey[:, top : top + block_rows] = quantise((block * weights).sum(0, keepdim=True), bits)
    return grey


def _to_uint(channels: torch.Tensor, top: int, dtype: type) -> np.ndarray:
    """(C, H, W) float [0, 1] -> (H, W, C) integers 0..top, rounded (never truncated).

    Integer channels already at ``top`` come back without a copy when their memory is
    (H, W, C), as the upscaler's output buffer is.
    """
    if not channels.is_floating_point():
        if (255 if channels.dtype == torch.uint8 else 65535) == top:
            return np.ascontiguousarray(channels.cpu().permute(1, 2, 0).numpy())
        channels = _unit(channels)
    scaled = (channels.detach().float().cpu().clamp(0, 1) * top).round()
    return scaled.permute(1, 2, 0).numpy().astype(dtype)


def _to_pillow(channels: torch.Tensor, sixteen: bool) -> Image.Image:
    """(C, H, W) float [0, 1] -> Pillow image: L, LA, RGB, RGBA, or I;16 when sixteen."""
    if sixteen:
        return Image.fromarray(_to_uint(channels, 65535, np.uint16)[:, :, 0])
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels.shape[0]]
    pixels = _to_uint(channels, 255, np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels)
    return image if image.mode == mode else image.convert(mode)  # no needless full copy
