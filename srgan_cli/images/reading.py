"""Reading and decoding: any common image file into a ``Picture``, upright, with its metadata.

EXIF orientation, ICC profiles, grey and palette modes, tRNS keys, 16-bit grey, 16-bit colour
PNG (png_codec.py), and the decompression-bomb guard: our own ``max_pixels`` is checked from
the header, and Pillow's process-wide guard is never switched off (``_pillow_accepts``).
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from .picture import Picture
from .png_codec import _png16_colour, _png_colour_chunks

# Pillow's own hard decompression-bomb limit (2 * Image.MAX_IMAGE_PIXELS), 179.0 MP.
DEFAULT_MAX_PIXELS = 178_956_970

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}  # not LAB: its "A" is a colour axis
_ORIENTATION_TAG = 0x0112


def read_image(source: str | Path | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Read one image file upright (EXIF orientation applied) into a Picture.

    source: a path, or a binary file object that can seek (e.g. ``io.BytesIO`` of stdin).
    Images above max_pixels (width * height) are refused from the file header, before any
    pixel memory is allocated. Raises ImageError with a one-line reason for every expected
    failure: missing, unreadable, empty, a directory, not an image, corrupt, too large.
    """
    if not isinstance(source, (str, os.PathLike)):
        return _read(source, max_pixels)
    path = Path(source)
    try:
        file = path.open("rb")
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as error:
        raise ImageError(f"cannot open: {error.strerror or error}") from None
    with file:
        return _read(file, max_pixels)


def _read(file: BinaryIO, max_pixels: int) -> Picture:
    """read_image of an open file: the size check from the header, then the decode."""
    if not file.read(1):
        raise ImageError("file is empty")
    file.seek(0)
    try:
        with _pillow_accepts(max_pixels), Image.open(file) as image:
            _check_pixel_count(image.size, max_pixels)
            return _decode(image, file)
    except Image.DecompressionBombError as error:  # above Pillow's own limit, see below
        raise ImageError(_bomb_reason(file, max_pixels, error)) from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error):
        raise ImageError("truncated or corrupt image data") from None


def read_rgb_uint8(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """``read_image``'s upright colour as (3, H, W) uint8 RGB, rounded; alpha is dropped.

    The reader of training and benchmark images, whose degradation and metrics work on 8-bit
    levels: the same decoding as ``srgan upscale`` (EXIF orientation, 16-bit grey scaled,
    not clipped), and the same ImageError for a file that cannot be used.
    """
    rgb = read_image(path, max_pixels=max_pixels).rgb
    return rgb.mul(255).round_().clamp_(0, 255).to(torch.uint8)


# Pillow's decompression-bomb guard is one process-wide setting, Image.MAX_IMAGE_PIXELS:
# Image.open (and some decoders) refuse images above twice that. We never switch it off:
# a program that embeds srgan (a web service, a notebook) keeps its guard in every thread.
# Our own limit (max_pixels) is checked from the header; only a limit above Pillow's raises
# the setting, for that one read, while holding this lock.
_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_accepts(max_pixels: int) -> Iterator[None]:
    """Let Pillow's guard pass images of up to ``max_pixels`` pixels during this block.

    At or below Pillow's limit nothing changes. Above it, Image.MAX_IMAGE_PIXELS is raised
    to max_pixels (never None) and put back afterwards, all under _PILLOW_LIMIT_LOCK: reads
    that raise it run one at a time, so none can restore another's value, and a read that
    does not raise it decides against the un-raised value (read under the lock).
    """
    with _PILLOW_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
    if limit is None or max_pixels <= 2 * limit:
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _bomb_reason(file: BinaryIO, max_pixels: int, error: Exception) -> str:
    """Why an image that Pillow's guard refused is refused, with its size from the header.

    Pillow refuses above twice its limit, which _pillow_accepts keeps at max_pixels or more,
    so the image is above ours too. The header is read again (no pixels decoded) with
    Pillow's limit raised for the purpose, like any read above it.
    """
    try:
        file.seek(0)
        with _pillow_accepts(sys.maxsize), Image.open(file) as image:
            size = image.size
    except Exception:  # noqa: BLE001 - the size is only for the message
        return f"refused by Pillow's decompression-bomb guard: {error}"
    if size[0] * size[1] <= max_pixels:  # e.g. a GIF frame larger than its canvas
        return f"refused by Pillow's decompression-bomb guard: {error}"
    return _too_many_pixels(size, max_pixels)


def _check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    if size[0] * size[1] > max_pixels:
        raise ImageError(_too_many_pixels(size, max_pixels))


def _too_many_pixels(size: tuple[int, int], max_pixels: int) -> str:
    width, height = size
    return (f"image is {width}x{height} = {width * height / 1e6:.1f} MP, "
            f"above the {max_pixels / 1e6:.1f} MP limit (--max-pixels)")


def _decode(image: Image.Image, file: BinaryIO | None) -> Picture:
    """Pixels and metadata of an opened image (first frame); see the module docstring.

    file: the image's file, for what Pillow does not give (16-bit colour PNG, gAMA/cHRM/sRGB
    chunks); None for an image that only exists in memory (``picture_from_pillow``).
    """
    notes: list[str] = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"animated image: only the first of {frames} frames is upscaled")
    image.load()  # decode now so corrupt data fails here, inside read_image's error handling
    png_file = file if image.format == "PNG" else None
    colour16 = None if png_file is None else _png16_colour(png_file, notes)
    if colour16 is not None:
        channels, grayscale, bit_depth = colour16, colour16.shape[0] == 2, 16
    else:
        channels, grayscale, bit_depth = _pillow_channels(image, notes)
    if channels.shape[0] in (1, 2):  # grey (+ alpha) -> three equal colour channels
        channels = torch.cat([channels[:1].expand(3, -1, -1), channels[1:]])

    raw_exif, orientation = _exif(image, notes)
    channels = _apply_orientation(channels, orientation)

    icc = image.info.get("icc_profile") or None
    wanted_space = b"GRAY" if grayscale else b"RGB "
    if icc is not None and icc[16:20] != wanted_space:
        notes.append(f"colour profile for {icc[16:20].decode('latin-1').strip()} dropped")
        icc = None
    dpi = image.info.get("dpi")
    png_colour = () if png_file is None else _png_colour_chunks(png_file)
    return Picture(
        rgb=channels[:3].contiguous(),
        alpha=channels[3:].contiguous() if channels.shape[0] == 4 else None,
        grayscale=grayscale,
        bit_depth=bit_depth,
        format=image.format,
        icc_profile=icc,
        exif=raw_exif,
        dpi=(float(dpi[0]), float(dpi[1])) if dpi else None,
        png_colour=png_colour,
        warnings=notes,
    )


def _exif(image: Image.Image, notes: list[str]) -> tuple[bytes | None, int]:
    """The raw EXIF to write back (None: none) and the orientation to apply (1 = upright).

    When the orientation is applied, the EXIF written back says 1. EXIF that Pillow cannot
    parse (a malformed PNG eXIf chunk, say) is dropped with a note: it is metadata, and the
    pixels are fine, so it must not fail the image.
    """
    raw = image.info.get("exif") or None
    try:
        exif = image.getexif()
        orientation = exif.get(_ORIENTATION_TAG, 1)
        if raw is not None and orientation != 1:
            exif[_ORIENTATION_TAG] = 1
            raw = exif.tobytes()
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError, OSError,
            struct.error):
        notes.append("malformed EXIF metadata dropped")
        return None, 1
    return raw, orientation if isinstance(orientation, int) else 1


def _pillow_channels(image: Image.Image, notes: list[str]) -> tuple[torch.Tensor, bool, int]:
    """(C, H, W) float32 [0, 1] with C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)."""
    mode = image.mode
    key = image.info.get("transparency")  # a grey level that means "transparent" (tRNS)
    if mode.startswith("I"):  # I;16, I;16B, ... and 32-bit I (clipped to 16 bits)
        raw = np.array(image)
        grey = torch.from_numpy(raw.astype(np.float32).clip(0, 65535) / 65535)[None]
        if isinstance(key, int):
            grey = torch.cat([grey, torch.from_numpy(raw != key).float()[None]])
        return grey, True, 16
    if mode == "F":
        raise ImageError("unsupported pixel format: 32-bit floating point")
    if mode == "L" and isinstance(key, int):  # Pillow's convert("LA") would ignore the key
        raw = np.array(image, dtype=np.uint8)
        grey = torch.from_numpy(raw).float()[None] / 255
        return torch.cat([grey, torch.from_numpy(raw != key).float()[None]]), True, 8
    if mode in ("1", "L", "LA", "La"):
        target, grayscale = ("LA" if "A" in mode or "a" in mode else "L"), True
    else:
        if mode == "CMYK":
            notes.append("CMYK converted to RGB without colour management")
        bits = image.tag_v2.get(258, (8,)) if image.format == "TIFF" else (8,)
        if max(bits) > 8:
            notes.append("16-bit colour TIFF read as 8 bits per channel (Pillow limitation)")
        has_alpha = mode in _ALPHA_MODES or "transparency" in image.info
        target, grayscale = ("RGBA" if has_alpha else "RGB"), False
    if image.mode != target or "transparency" in image.info:  # no needless whole-image copy
        try:
            image = image.convert(target)
        except ValueError:
            raise ImageError(f"unsupported pixel format: {mode}") from None
    pixels = np.array(image, dtype=np.uint8).reshape(image.height, image.width, -1)
    return _unit_chw(torch.from_numpy(pixels)), grayscale, 8


def _unit_chw(pixels: torch.Tensor) -> torch.Tensor:
    """(H, W, C) uint8 -> (C, H, W) contiguous float32 in [0, 1], with one float buffer only."""
    out = torch.empty(pixels.shape[2], *pixels.shape[:2])
    return out.copy_(pixels.permute(2, 0, 1)).div_(255)


def _apply_orientation(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn (C, H, W) pixels upright for an EXIF orientation value 1..8 (others: unchanged)."""
    h, w = -2, -1
    turned = {
        2: lambda t: t.flip(w),
        3: lambda t: t.flip(h, w),
        4: lambda t: t.flip(h),
        5: lambda t: t.transpose(h, w),
        6: lambda t: torch.rot90(t, -1, (h, w)),
        7: lambda t: t.transpose(h, w).flip(h, w),
        8: lambda t: torch.rot90(t, 1, (h, w)),
    }
    return turned[orientation](pixels) if orientation in turned else pixels


# ----------------------------------------------------------------------------- alpha


def declared_size(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int, bool] | None:
    """(width, height, grayscale) as an image file's header declares them, without decoding
    pixels; None for anything read_image would refuse (it says why when the file is read).

    For planning (``check_output_size`` before any work): the EXIF orientation is not
    applied, which is fine for its limits, the same for width and height.
    """
    try:
        with _pillow_accepts(max_pixels), Image.open(path) as image:
            width, height = image.size
            grey = image.mode in ("1", "L", "LA", "La") or image.mode.startswith("I")
    except Exception:  # noqa: BLE001 - any failure is read_image's to report
        return None
    return (width, height, grey) if width * height <= max_pixels else None
