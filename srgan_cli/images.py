"""Images in, images out: read any common image file into float tensors and write results back.

Convention: pixels are float32 tensors in [0, 1], RGB as (3, H, W), alpha as (1, H, W).

How the upscaler uses this module::

    picture = read_image(path)                  # raises ImageError: report it, go on
    rgb = picture.rgb
    if picture.alpha is not None:
        rgb = bleed_colour(rgb, picture.alpha)  # hidden colour must not leak into edges
    big_rgb = network(rgb)                      # (3, sH, sW)
    big_alpha = None if picture.alpha is None else upscale_alpha(picture.alpha, scale)
    warnings = write_image(picture.with_pixels(big_rgb, big_alpha), out_path)

Decisions (see also the docstrings below):

- Grayscale (1, L, LA, I;16) is read as three equal RGB channels and written back as grayscale.
- Palette images (P, with or without transparency) are written as RGB or RGBA.
- A PNG tRNS key (one transparent grey level or RGB colour, 8 or 16 bits) becomes an alpha
  channel; LAB is colour (its "A" is an axis, not alpha) and is written as RGB.
- A PNG's gAMA, cHRM and sRGB chunks are written back unchanged to PNG outputs.
- CMYK is converted to RGB without colour management (its CMYK profile is dropped, with a
  warning); YCbCr JPEGs come out of the decoder as RGB.
- Bit depth comes from the file's mode, never from pixel values: 16-bit PNG (grey, grey+alpha,
  RGB, RGBA; Pillow alone would keep 8 bits of 16-bit colour, see _png16_colour) and I;16 TIFF
  are 16-bit. Pillow reads 48/64-bit TIFF as 8 bits; that is reported as a warning.
- Animated GIF/WebP/PNG: only the first frame is upscaled, with a warning.
- EXIF orientation is applied on reading; the EXIF written back says "upright" (1). EXIF
  that Pillow cannot parse is dropped with a warning (the pixels are fine).
- Pillow's process-wide bomb guard (Image.MAX_IMAGE_PIXELS) is never switched off; our own
  max_pixels is checked from the header (see _pillow_accepts).
- Each format's size limit (WebP 16383 px a side, JPEG 65500, BMP < 4 GiB) is checked
  before encoding, and before any compute by planners (check_output_size, declared_size).
- JPEG and BMP have no alpha: writing real transparency to them raises ImageError.
- write_image is atomic: a temporary file next to the target, then os.replace.
- PNG files are written by our own streaming writer (_write_png), a block of rows at a time,
  so a gigapixel output needs no second whole-image copy; other formats go through Pillow.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from srgan_cli import png
from srgan_cli.errors import ImageError, InputError

# File name endings we write, with their format, and all that mean "this should be an image".
_EXTENSION_FORMATS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}  # fmt: skip
IMAGE_EXTENSIONS = frozenset(_EXTENSION_FORMATS) | {".gif"}

# Pillow's own hard decompression-bomb limit (2 * Image.MAX_IMAGE_PIXELS), 179.0 MP.
DEFAULT_MAX_PIXELS = 178_956_970

# What each writable format can store. modes: Pillow modes written as they are; sixteen:
# channel counts (1 = L ... 4 = RGBA) kept at 16 bits; icc/exif/dpi: metadata the format
# carries; max_side: the largest width and height its encoder accepts (measured: libwebp
# 16383, libjpeg-turbo 65500; PNG 2^31 - 1 by its specification).
_WRITERS: dict[str, dict] = {
    "PNG": {"modes": {"L", "LA", "RGB", "RGBA"}, "sixteen": {1, 2, 3, 4}, "icc": True,
            "exif": True, "dpi": True, "max_side": 2**31 - 1},
    "JPEG": {"modes": {"L", "RGB"}, "sixteen": set(), "icc": True, "exif": True, "dpi": True,
             "max_side": 65500},
    "WEBP": {"modes": {"RGB", "RGBA"}, "sixteen": set(), "icc": True, "exif": True,
             "dpi": False, "max_side": 16383},
    "TIFF": {"modes": {"L", "LA", "RGB", "RGBA"}, "sixteen": {1}, "icc": True, "exif": False,
             "dpi": True, "max_side": 2**32 - 1},
    "BMP": {"modes": {"L", "RGB"}, "sixteen": set(), "icc": False, "exif": False, "dpi": True,
            "max_side": 2**31 - 1},
}
_BMP_MAX_BYTES = 2**32 - 1  # its header stores the file size in 32 bits
_DEFAULT_EXTENSION = ".png"  # for inputs whose own format cannot be written (e.g. GIF)

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}  # not LAB: its "A" is a colour axis
_PNG_COLOUR_CHUNKS = (b"gAMA", b"cHRM", b"sRGB")  # how to interpret the stored values
_ORIENTATION_TAG = 0x0112
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights Pillow uses for RGB -> L


@dataclass
class Picture:
    """One decoded image plus the metadata that travels with it.

    rgb: (3, H, W) float32 in [0, 1]; grayscale images have three equal channels. Results
        of the upscaler hold final integer pixels instead: uint8 (0..255) for 8-bit,
        uint16 (0..65535) for 16-bit pictures (see ``quantise``); write_image takes both.
    alpha: (1, H, W) like rgb (float or the same integer dtype), or None when the image has
        no transparency channel.
    grayscale: write back as grayscale (L, LA, 16-bit grey).
    bit_depth: 8 or 16 bits per channel, from the source mode (never from pixel values).
    format: Pillow's name of the source format ("PNG", "JPEG", ...).
    icc_profile: ICC colour profile bytes (only an RGB or GRAY profile), or None.
    exif: raw EXIF bytes with the orientation already applied (tag set to 1), or None.
    dpi: (x, y) dots per inch, or None.
    png_colour: the raw gAMA, cHRM and sRGB chunks of a PNG source, written back to PNG.
    warnings: things the user should know about this image (first frame only, ...).
    """

    rgb: torch.Tensor
    alpha: torch.Tensor | None = None
    grayscale: bool = False
    bit_depth: int = 8
    format: str | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    png_colour: tuple[tuple[bytes, bytes], ...] = ()
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.rgb.shape[-1], self.rgb.shape[-2]

    def with_pixels(self, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> Picture:
        """The same picture metadata around new pixels, e.g. the upscaled ones.

        rgb: (3, H', W') float in [0, 1]; alpha: (1, H', W') or None. DPI is scaled by H'/H and
        W'/W so the printed size stays the same. Warnings are not copied.
        """
        dpi = self.dpi
        if dpi is not None:
            width, height = self.size
            dpi = (dpi[0] * rgb.shape[-1] / width, dpi[1] * rgb.shape[-2] / height)
        return replace(self, rgb=rgb, alpha=alpha, dpi=dpi, warnings=[])


# ----------------------------------------------------------------------------- reading


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


def quantise(pixels: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Float [0, 1] -> final integer pixels: uint8 0..255, or uint16 0..65535 for 16 bits.

    Rounded, never truncated; integer input is returned as it is.
    """
    if not pixels.is_floating_point():
        return pixels
    top, dtype = (65535, torch.uint16) if bit_depth == 16 else (255, torch.uint8)
    return (pixels.float().clamp(0, 1) * top).round_().to(dtype)


def _unit(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels as float32 in [0, 1], from float or uint8/uint16 integers."""
    if pixels.is_floating_point():
        return pixels
    return pixels.float() / (255 if pixels.dtype == torch.uint8 else 65535)


def upscale_alpha(alpha: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic resize of an alpha channel: (1, H, W) -> (1, scale*H, scale*W), in [0, 1]."""
    size = (alpha.shape[-2] * scale, alpha.shape[-1] * scale)
    big = F.interpolate(alpha[None].float(), size=size, mode="bicubic", align_corners=False)
    return big[0].clamp(0, 1)


def bleed_colour(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Replace the colour under fully transparent pixels by that of nearby visible pixels.

    rgb: (3, H, W), alpha: (1, H, W), both float in [0, 1]. Whatever colour hides under
    alpha == 0 (often garbage) would otherwise be smeared into the visible edge by the network.
    Visible pixels keep their colour; hidden ones get an alpha-weighted average of their
    surroundings, found by a "push-pull" pyramid (downsample until every pixel has a value).
    """
    if not bool((alpha <= 0).any()) or not bool((alpha > 0).any()):
        return rgb
    return _push_pull(rgb * alpha, alpha)


def _push_pull(weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Fill the pixels with zero weight from a half-size copy of the image, recursively."""
    seen = weight > 0
    colour = torch.where(seen, weighted / weight.clamp_min(1e-12), torch.zeros_like(weighted))
    if bool(seen.all()) or min(weight.shape[-2:]) <= 1:
        return colour
    small_weighted = F.avg_pool2d(weighted[None], 2, ceil_mode=True)[0]
    small_weight = F.avg_pool2d(weight[None], 2, ceil_mode=True)[0]
    small = _push_pull(small_weighted, small_weight)
    filled = F.interpolate(small[None], size=weight.shape[-2:], mode="nearest")[0]
    return torch.where(seen, colour, filled)


# ----------------------------------------------------------------------------- writing


def format_for(path: str | Path, format: str | None = None) -> str:
    """Pillow format name to write (PNG, JPEG, WEBP, TIFF, BMP), from `format` or the suffix."""
    name = (format or _EXTENSION_FORMATS.get(Path(path).suffix.lower(), "")).upper()
    name = {"JPG": "JPEG", "TIF": "TIFF"}.get(name, name)
    if name not in _WRITERS:
        raise ImageError(
            f"cannot write {name or 'files named ' + repr(Path(path).suffix)}; "
            "choose png, jpg, webp, tiff or bmp"
        )
    return name


def format_to_write(source_format: str | None, format: str | None = None) -> str:
    """The format to write when no file name says it (stdout): ``format`` if given, else
    the input's own (Pillow's name, ``Picture.format``), or PNG if that cannot be written."""
    if format is None and source_format in _WRITERS:
        return source_format
    return format_for("", format or _EXTENSION_FORMATS[_DEFAULT_EXTENSION])


DEFAULT_PNG_COMPRESSION = 1
"""zlib level of PNG output (0-9). Level 1 uses zlib's run-length strategy (Z_RLE): on
upscaled photos measured about 4x faster than Pillow's default level 6 at the same size
(README, Performance; scripts/png_levels.py). 16-bit PNGs use the default strategy."""

PNG_COMPRESSION_RANGE = (0, 9)
"""The zlib levels a PNG may be written with (``--png-compression``)."""

QUALITY_RANGE = (1, 100)
"""JPEG/WebP ``quality`` (``--quality``); WebP at 100 is lossless."""


def _png_strategy(level: int) -> int:
    """zlib strategy for an 8-bit PNG level: Z_RLE at level 1, the default otherwise.

    Not for 16-bit PNGs: their noisy low bytes defeat run-length matching (measured 1.4x
    larger files than the default strategy at level 1).
    """
    return zlib.Z_RLE if level == 1 else zlib.Z_DEFAULT_STRATEGY


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


def check_output_size(format: str, width: int, height: int, channels: int = 3) -> None:
    """Raise ImageError if a width x height image cannot be stored in ``format``.

    WebP stores sides of at most 16383 pixels, JPEG 65500 (libjpeg-turbo), PNG 2^31 - 1;
    a BMP file (``channels`` 1 = grey, else colour) must stay below 4 GiB.
    """
    caps = _WRITERS[format]
    side = caps["max_side"]
    if width > side or height > side:
        raise ImageError(f"a {width}x{height} output is too large for {format} (at most "
                         f"{side} pixels a side); choose png or tif")
    if format == "BMP":
        bits = 8 if channels == 1 else 24
        stride = ((width * bits + 7) // 8 + 3) & ~3  # rows are padded to 4 bytes
        size = 14 + 40 + (1024 if channels == 1 else 0) + stride * height  # + grey palette
        if size > _BMP_MAX_BYTES:
            raise ImageError(f"a {width}x{height} output is too large for BMP (files stop at "
                             "4 GiB); choose png or tif")


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


# ----------------------------------------------------------------------------- in memory
# Upscaler.upscale_image: Pillow images and numpy arrays in and out, through the same
# decoding (_decode) and the same choice of output channels (_output_channels) as files.

_PILLOW_MODES = {"modes": {"L", "LA", "RGB", "RGBA"}, "sixteen": {1}}  # as TIFF: I;16 grey
_ARRAY_MODES = {"modes": {"L", "LA", "RGB", "RGBA"}, "sixteen": {1, 2, 3, 4}}  # as PNG


def picture_from_pillow(image: Image.Image) -> Picture:
    """A Pillow image as read_image would decode its file (mode, alpha, 16-bit grey, EXIF
    orientation applied, ICC profile, DPI). Pillow has no 16-bit colour mode: 16-bit colour
    needs a numpy array (``picture_from_array``). Raises ImageError like read_image."""
    try:
        return _decode(image, None)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error):
        raise ImageError("truncated or corrupt image data") from None


def picture_to_pillow(picture: Picture) -> tuple[Image.Image, list[str]]:
    """A (result) Picture as the Pillow image a file would hold, and warnings.

    Mode L, LA, RGB, RGBA or I;16 (16-bit grey), chosen as for a TIFF file. The ICC profile,
    EXIF and DPI go into ``image.info`` under the keys Pillow's readers use (pass them to
    ``save``, e.g. ``exif=image.info["exif"]``, to keep them in a file).
    """
    channels, sixteen, notes = _output_channels(picture, "a Pillow image", _PILLOW_MODES)
    image = _to_pillow(channels, sixteen)
    metadata = {"icc_profile": picture.icc_profile, "exif": picture.exif, "dpi": picture.dpi}
    image.info.update({key: value for key, value in metadata.items() if value is not None})
    return image, notes


def picture_from_array(array: np.ndarray) -> Picture:
    """(H, W) or (H, W, C) uint8/uint16 pixels as a Picture: C = 1 grey, 2 grey + alpha,
    3 RGB, 4 RGBA; uint16 is 16 bits per channel. Raises InputError for anything else."""
    expected = "expected an (H, W) or (H, W, C) uint8 or uint16 array, C = 1, 2, 3 or 4"
    if array.dtype not in (np.uint8, np.uint16):
        hint = (": for float images in [0, 1] use upscale_tensor" if array.dtype.kind == "f"
                else "")
        raise InputError(f"{expected}, got dtype {array.dtype}{hint}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        hint = " (channels first? use a.transpose(1, 2, 0))" if array.ndim == 3 else ""
        raise InputError(f"{expected}, got shape {array.shape}{hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{expected}, got an empty array of shape {array.shape}")
    pixels = array.reshape(*array.shape[:2], -1)
    top = 255 if array.dtype == np.uint8 else 65535
    channels = torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32) / top)
    grey = channels.shape[0] in (1, 2)
    if grey:
        channels = torch.cat([channels[:1].expand(3, -1, -1), channels[1:]])
    return Picture(rgb=channels[:3].contiguous(),
                   alpha=channels[3:].contiguous() if channels.shape[0] == 4 else None,
                   grayscale=grey, bit_depth=8 if top == 255 else 16)


def picture_to_array(picture: Picture, two_d: bool = False) -> np.ndarray:
    """A (result) Picture as (H, W, C) uint8/uint16 pixels, C as a PNG file would store
    them (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA); ``two_d``: grey as (H, W)."""
    pixels, sixteen, _ = _output_channels(picture, "an array", _ARRAY_MODES)
    out = _to_uint(pixels, *((65535, np.uint16) if sixteen else (255, np.uint8)))
    return out[:, :, 0] if two_d and out.shape[2] == 1 else out


# ----------------------------------------------------------------------------- PNG
# Pillow keeps only 8 of the 16 bits of colour PNGs, and cannot write them; these fill the gap.
# All PNG output, 8-bit too, goes through _write_png, which streams (bounded extra memory).

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


_png_chunk = png.chunk  # one PNG chunk as bytes: length, type, body, CRC


def _png_chunks(file: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each chunk of a PNG file, from the first (IHDR) to IEND."""
    file.seek(len(_PNG_SIGNATURE))
    while len(head := file.read(8)) == 8:
        length, kind = struct.unpack(">I4s", head)
        yield kind, file.read(length)
        file.read(4)  # CRC: Pillow has checked the file already
        if kind == b"IEND":
            return


def _png16_colour(file: BinaryIO, notes: list[str]) -> torch.Tensor | None:
    """A 16-bit grey+alpha, RGB or RGBA PNG as (C, H, W) float32 [0, 1]; None for other PNGs.
    An RGB PNG with a tRNS colour key gets a fourth (alpha) channel: 0 where the key matches.

    Pillow reads these with 8 bits per channel. Trick: PNG filters work byte by byte, each byte
    predicted from the bytes one pixel to the left and one row up, so the bytes of one channel
    alone form a valid filtered 16-bit grey image, which Pillow decodes exactly (as I;16).
    """
    chunks = list(_png_chunks(file))
    width, height, depth, colour_type, _, _, interlaced = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 16 or colour_type == 0:  # Pillow reads 16-bit grey by itself
        return None
    if interlaced:
        notes.append("interlaced 16-bit PNG read with 8 bits per channel (Pillow limitation)")
        return None
    channels = {4: 2, 2: 3, 6: 4}[colour_type]
    expected = height * (1 + width * channels * 2)  # a filter-type byte, then the samples
    compressed = b"".join(body for kind, body in chunks if kind == b"IDAT")
    data = zlib.decompressobj().decompress(compressed, expected)
    if len(data) != expected:
        raise ImageError("truncated or corrupt image data")
    rows = np.frombuffer(data, np.uint8).reshape(height, -1)
    filters, samples = rows[:, :1], rows[:, 1:].reshape(height, width, channels, 2)
    grey_header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
    planes = []
    for channel in range(channels):
        scanlines = np.concatenate([filters, samples[:, :, channel].reshape(height, -1)], 1)
        idat = _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 0))
        grey = _PNG_SIGNATURE + grey_header + idat + _png_chunk(b"IEND", b"")
        with Image.open(io.BytesIO(grey)) as plane:
            planes.append(np.array(plane, dtype=np.uint16))
    key = next((body for kind, body in chunks if kind == b"tRNS"), None)
    if colour_type == 2 and key is not None and len(key) == 6:  # one RGB colour is transparent
        red, green, blue = struct.unpack(">HHH", key)
        hidden = (planes[0] == red) & (planes[1] == green) & (planes[2] == blue)
        planes.append(np.where(hidden, 0, 65535).astype(np.uint16))
    return torch.from_numpy(np.stack(planes).astype(np.float32) / 65535)


def _png_colour_chunks(file: BinaryIO) -> tuple[tuple[bytes, bytes], ...]:
    """The gAMA, cHRM and sRGB chunks of a PNG (type, body), to write back unchanged."""
    return tuple((kind, body) for kind, body in _png_chunks(file) if kind in _PNG_COLOUR_CHUNKS)


def _encode_png(pixels: np.ndarray, **options) -> bytes:
    """A whole PNG file as bytes (for small images and tests); see _write_png."""
    buffer = io.BytesIO()
    _write_png(buffer, pixels, **options)
    return buffer.getvalue()


_PNG_BLOCK_BYTES = 1 << 20
"""Raw pixel bytes filtered and compressed at a time by _write_png (about 1 MiB): big enough
for numpy and zlib to run at full speed, small next to any image worth streaming."""


_PNG_FILTER_BYTES = 96 << 10
"""Rows filtered at a time inside a block (about 96 KiB): _filter_rows makes temporaries
several times the size of its rows, which at this size stay in the CPU cache (measured on
the development machine: 31 ms per MiB of RGB rows against 46 ms for whole 1 MiB blocks)."""


def _write_png(
    file: BinaryIO, pixels: np.ndarray, icc_profile: bytes | None = None,
    exif: bytes | None = None, dpi: tuple[float, float] | None = None,
    colour_chunks: tuple[tuple[bytes, bytes], ...] = (),
    level: int = DEFAULT_PNG_COMPRESSION, deflater: png.Deflater | None = None,
) -> None:
    """Write a PNG file from (H, W, C) uint8 or uint16 pixels, C = 1..4 (L, LA, RGB, RGBA).

    Streaming: rows are filtered and compressed a block (about _PNG_BLOCK_BYTES) at a time
    straight into ``file``, so no whole-image copy of the pixels (filtered or compressed) is
    ever held; Pillow's writer would first copy the image into its own 4-bytes-per-pixel
    buffer. Each block is one independently deflated piece (``png.py``), filtered and
    deflated on ``deflater``'s threads (None: a deflater for this file alone, one thread per
    core); the file does not depend on the number of threads. 8-bit rows use the filter
    Pillow picks (see _filter_rows) and zlib strategy _png_strategy(level); 16-bit rows use
    "Sub" and the default strategy (Pillow cannot write 16-bit colour at all).
    Metadata: colour_chunks (gAMA, cHRM, sRGB, unchanged), ICC profile, DPI and EXIF.
    """
    height, width, channels = pixels.shape
    sixteen = pixels.dtype == np.uint16
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16 if sixteen else 8, colour_type, 0, 0, 0)
    file.write(_PNG_SIGNATURE)
    _write_chunk(file, b"IHDR", header)
    for kind, body in colour_chunks:
        _write_chunk(file, kind, body)
    if icc_profile:
        _write_chunk(file, b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
    if dpi:
        per_metre = (round(dpi[0] / 0.0254), round(dpi[1] / 0.0254))
        _write_chunk(file, b"pHYs", struct.pack(">IIB", *per_metre, 1))
    if exif:
        _write_chunk(file, b"eXIf", exif.removeprefix(b"Exif\x00\x00"))

    pixel_bytes = channels * pixels.itemsize
    row_bytes = width * pixel_bytes
    block_rows = max(1, _PNG_BLOCK_BYTES // max(1, row_bytes))

    def row_bytes_of(rows: np.ndarray) -> np.ndarray:
        """(R, W, C) pixels -> (R, row_bytes) uint8 as stored: 16-bit samples big-endian."""
        stored = np.ascontiguousarray(rows, ">u2" if sixteen else np.uint8)
        return stored.view(np.uint8).reshape(len(rows), row_bytes)

    def scanlines(top: int) -> memoryview:
        """The filtered scanlines of the block of rows starting at ``top``, filtered
        _PNG_FILTER_BYTES at a time (the filter's temporaries then stay in the cache)."""
        above = row_bytes_of(pixels[top - 1 : top])[0] if top else np.zeros(row_bytes, np.uint8)
        rows = row_bytes_of(pixels[top : top + block_rows])
        step = max(1, _PNG_FILTER_BYTES // row_bytes)
        parts = [_filter_rows(rows[at : at + step], rows[at - 1] if at else above, pixel_bytes,
                              adaptive=not sixteen) for at in range(0, len(rows), step)]
        return np.concatenate(parts).reshape(-1).data

    strategy = zlib.Z_DEFAULT_STRATEGY if sixteen else _png_strategy(level)
    total = height * (1 + row_bytes)
    with contextlib.ExitStack() as own:
        if deflater is None:
            deflater = own.enter_context(png.Deflater())
        for idat in png.idat_chunks(scanlines, range(0, height, block_rows), total, level,
                                    strategy, deflater):
            file.write(idat)
    _write_chunk(file, b"IEND", b"")


def _write_chunk(file: BinaryIO, kind: bytes, body: bytes) -> None:
    """Write one PNG chunk (length, type, body, CRC)."""
    file.write(png.chunk(kind, body))


def _filter_rows(
    rows: np.ndarray, previous: np.ndarray, pixel_bytes: int, adaptive: bool
) -> np.ndarray:
    """PNG scanlines (filter-type byte + filtered row) for (R, B) uint8 ``rows``.

    ``previous``: the (B,) row above the first. Not adaptive: "Sub" for every row. Adaptive:
    per row, the one of None, Sub, Up and Paeth whose bytes, read as signed, have the least
    absolute sum - libpng's heuristic, which Pillow uses too (on upscaled photos it never
    picked "Average", measured). PNG filters are byte-wise and wrap modulo 256.
    """
    x = rows.astype(np.int16)
    left = np.zeros_like(x)
    left[:, pixel_bytes:] = x[:, :-pixel_bytes]
    sub = (x - left).astype(np.uint8)
    if not adaptive:
        return np.concatenate([np.ones((len(rows), 1), np.uint8), sub], axis=1)
    up_row = np.concatenate([previous[None], rows[:-1]]).astype(np.int16)
    up_left = np.zeros_like(up_row)
    up_left[:, pixel_bytes:] = up_row[:, :-pixel_bytes]
    guess = left + up_row - up_left  # Paeth: whichever neighbour is closest to this guess
    to_left, to_up, to_corner = abs(guess - left), abs(guess - up_row), abs(guess - up_left)
    paeth = np.where((to_left <= to_up) & (to_left <= to_corner), left,
                     np.where(to_up <= to_corner, up_row, up_left))
    candidates = np.stack([rows, sub, (x - up_row).astype(np.uint8),
                           (x - paeth).astype(np.uint8)])  # (4, R, B), filter types 0, 1, 2, 4
    cost = np.abs(candidates.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)
    best = cost.argmin(axis=0)  # the first of equal costs, as in Pillow
    chosen = candidates[best, np.arange(len(rows))]
    types = np.array([0, 1, 2, 4], np.uint8)[best]
    return np.concatenate([types[:, None], chosen], axis=1)


def _write_atomically(path: Path, save: Callable[[BinaryIO], None]) -> None:
    """Call save(file) on a temporary file next to `path`, then rename it to `path`.

    Missing parent folders are made (an output tree mirrors its input tree).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".part", dir=path.parent
        )
    except OSError as error:
        raise ImageError(f"cannot write to {path.parent}: {error.strerror or error}") from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            save(file)
        os.chmod(temporary, _new_file_mode())  # mkstemp makes it private (0600)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ImageError(f"cannot write: {error.strerror or error}") from None
        raise


def _new_file_mode() -> int:
    """Permissions an ordinary new file gets (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# ----------------------------------------------------------------------------- planning


@dataclass
class FolderScan:
    """What ``scan_folder`` found: image paths, sorted by their path below the folder, and
    ``path: reason`` for what it could not look into (a folder link that loops, an
    unreadable folder), so that every name under the folder is accounted for."""

    images: list[Path]
    skipped: dict[Path, str] = field(default_factory=dict)
    errors: dict[Path, str] = field(default_factory=dict)


def scan_folder(folder: str | Path, recursive: bool = True) -> FolderScan:
    """Every path under `folder` with an image extension, following folder links.

    Includes entries that will fail to read (directories named x.png, broken links), so the
    batch can report them. Hidden temporaries from write_image end in .part and are skipped.
    A linked folder is searched like any other, unless it is one of the folders it lies
    in (a loop): then it is listed in ``skipped``. Files reached twice under different names
    (links, hard links) are all listed; ``check_jobs`` decides which name is upscaled.
    """
    folder = Path(folder)
    scan = FolderScan(images=[])
    _scan(folder, recursive, (_file_id(folder),), scan)
    scan.images.sort(key=lambda p: p.relative_to(folder).as_posix())
    return scan


def _scan(folder: Path, recursive: bool, above: tuple, scan: FolderScan) -> None:
    """Add ``folder``'s images (and its subfolders', if recursive) to ``scan``.

    above: (device, inode) of ``folder`` and of each folder it was reached through.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        scan.errors[folder] = f"cannot list this folder: {error.strerror or error}"
        return
    for entry in entries:
        path = folder / entry.name
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            scan.images.append(path)
        if not recursive or not _is_folder(entry):
            continue
        here = _file_id(path)
        if here in above:
            scan.skipped[path] = "link to a folder it is inside of (a loop); not followed"
        else:
            _scan(path, recursive, (*above, here), scan)


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether a folder entry is a folder or a link to one (a broken link is not)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def find_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """``scan_folder``'s image paths alone (for training and benchmark data folders)."""
    return scan_folder(folder, recursive).images


@dataclass
class OutputPlan:
    """Result of planning: (input, output) pairs to process, `path: reason` errors, and
    inputs left out on purpose with why (``{path: reason}``, e.g. a second name of a file)."""

    jobs: list[tuple[Path, Path]]
    errors: list[str]
    skipped: dict[Path, str] = field(default_factory=dict)


def plan_outputs(
    inputs: list[Path],
    input_root: Path | None = None,
    out_dir: Path | None = None,
    out_file: Path | None = None,
    suffix: str = "",
    ext: str | None = None,
) -> OutputPlan:
    """Decide where each input's result goes: ``output_targets`` then ``check_jobs``."""
    plan = output_targets(inputs, input_root, out_dir, out_file, suffix, ext)
    checked = check_jobs(plan.jobs)
    return OutputPlan(checked.jobs, plan.errors + checked.errors)


def output_targets(
    inputs: list[Path],
    input_root: Path | None = None,
    out_dir: Path | None = None,
    out_file: Path | None = None,
    suffix: str = "",
    ext: str | None = None,
) -> OutputPlan:
    """Each input's output path, without looking at the other inputs (see ``check_jobs``).

    inputs: image paths (e.g. from find_images(input_root)).
    input_root: the folder the inputs were found in; its subfolders are recreated in out_dir.
    out_dir: output folder (None: next to each input). out_file: one exact output path
    (only with a single input). Output name: input stem + suffix + ext, where ext (".png" or
    "png") defaults to the input's own extension, or .png when that format cannot be written.

    Raises ImageError for a bad ext, suffix or out_file. Refused, each as one `input: reason`
    error: outputs outside out_dir, and names longer than the file system allows.
    """
    if out_file is not None and len(inputs) != 1:
        raise ImageError(f"an output file name needs exactly one input, got {len(inputs)}")
    if out_file is not None:
        format_for(out_file)  # refuse an unwritable format before any work is done
    if ext is not None:
        ext = ext if ext.startswith(".") else f".{ext}"
        format_for(f"x{ext}")
    check_suffix(suffix + (ext or ""))
    plan = OutputPlan(jobs=[], errors=[])
    for source in inputs:
        try:
            target = out_file or _output_path(source, input_root, out_dir, suffix, ext)
            _check_name_length(target)
        except ImageError as error:
            plan.errors.append(f"{source}: {error}")
            continue
        plan.jobs.append((source, target))
    return plan


def check_suffix(suffix: str) -> None:
    """Refuse a file-name suffix that would lead out of the output's folder."""
    if any(sep in suffix for sep in ("/", "\\", os.sep)):
        raise ImageError("the suffix and extension must not contain path separators")


def check_jobs(
    jobs: list[tuple[Path, Path]], other_inputs: Iterable[Path] = ()
) -> OutputPlan:
    """The one clash check over a whole job list (every argument of a command together).

    One file reached under several names (links, hard links) is upscaled once, under its
    first name that is not a link; each other name is ``skipped`` with the name that is
    done (the same path listed twice is simply done once). Refused, each as one
    `input: reason` error: an output that is any input file of the list or of
    ``other_inputs`` (compared by resolved path and by device and inode), and two inputs
    with the same output (the first keeps it). Letter case is ignored in these comparisons
    only where the output's folder ignores it (``ignores_case``).
    """
    unique, skipped = _one_name_per_file(jobs)
    sources = [source for source, _ in unique] + list(other_inputs)
    input_files = {_file_id(p) for p in sources} - {None}
    input_keys = {fold: {_path_key(p, fold) for p in sources} for fold in (False, True)}
    folds: dict[Path, bool] = {}  # whether each output folder ignores letter case
    taken: dict[str, Path] = {}
    plan = OutputPlan(jobs=[], errors=[], skipped=skipped)
    for source, target in unique:
        folder = _nearest_existing(target.parent)
        if folder not in folds:
            folds[folder] = ignores_case(folder)
        key = _path_key(target, folds[folder])
        if key in input_keys[folds[folder]] or _file_id(target) in input_files:
            plan.errors.append(
                f"{source}: output {target} would overwrite an input file; "
                "use a suffix or another output folder"
            )
        elif key in taken:
            plan.errors.append(f"{source}: output {target} is also the output of {taken[key]}")
        else:
            taken[key] = source
            plan.jobs.append((source, target))
    return plan


def _one_name_per_file(
    jobs: list[tuple[Path, Path]]
) -> tuple[list[tuple[Path, Path]], dict[Path, str]]:
    """Jobs with one name per input file (see check_jobs), and the other names, with why."""
    keys = [_file_id(source) or _path_key(source, False) for source, _ in jobs]
    kept: dict = {}  # file -> index of the job done for it
    for index, (key, (source, _)) in enumerate(zip(keys, jobs, strict=True)):
        if key not in kept or (_through_link(jobs[kept[key]][0]) and not _through_link(source)):
            kept[key] = index
    unique: list[tuple[Path, Path]] = []
    skipped: dict[Path, str] = {}
    for index, (key, (source, _)) in enumerate(zip(keys, jobs, strict=True)):
        done = jobs[kept[key]][0]
        if index == kept[key]:
            unique.append(jobs[index])
        elif os.path.abspath(source) != os.path.abspath(done):
            skipped[source] = f"same file as {done}"
    return unique, skipped


def _through_link(path: Path) -> bool:
    """Whether ``path`` names its file through a link (its own or a linked folder's)."""
    try:
        return path.resolve() != Path(os.path.abspath(path))
    except (OSError, RuntimeError):  # a link loop
        return True


def earlier_results(
    found: list[Path], root: Path, out_dir: Path | None, suffixes: Iterable[str]
) -> dict[Path, str]:
    """Files found in input folder ``root`` that are results of an earlier run, with why.

    One rule, whatever the output mode: a file inside the output folder (when that folder is
    below ``root``), or a file named like the result of another file beside it
    (``a_x4.png`` next to ``a.jpg``, for each of ``suffixes``). A user's own ``b_x4.png``
    with no ``b.*`` beside it is an input like any other.
    """
    out_resolved = None if out_dir is None else out_dir.resolve()
    if out_resolved == root.resolve():
        out_resolved = None
    stems = {(p.parent, p.stem) for p in found}
    skipped: dict[Path, str] = {}
    for path in found:
        if out_resolved is not None and out_resolved in path.resolve().parents:
            skipped[path] = "earlier result: inside the output folder"
            continue
        for suffix in filter(None, suffixes):
            original = path.stem.removesuffix(suffix)
            if original != path.stem and (path.parent, original) in stems:
                skipped[path] = f"earlier result of {original}.* beside it"
                break
    return skipped


def check_writable_folder(folder: Path) -> None:
    """Raise ImageError now if files cannot be created in ``folder`` (or the folders that
    would be made for it), instead of after each image has been upscaled.

    Tries it: a temporary file in the nearest folder that exists, removed at once.
    """
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ImageError(f"cannot write to {folder}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".srgan-write-test."):
            pass
    except OSError as error:
        raise ImageError(f"cannot write to {folder}: {error.strerror or error}") from None


def check_safe_to_write(src: Path, dst: Path, overwrite: bool) -> None:
    """The API's write guard: never the input itself, an existing ``dst`` only if asked."""
    dst_id = _file_id(dst)
    same_path = _path_key(src, False) == _path_key(dst, False)
    if same_path or (dst_id is not None and dst_id == _file_id(src)):
        raise ImageError(f"output {dst} would overwrite the input file")
    if not overwrite and (dst.exists() or dst.is_symlink()):
        raise ImageError(f"{dst} exists (pass overwrite=True to replace it)")


def _output_path(
    source: Path, input_root: Path | None, out_dir: Path | None, suffix: str, ext: str | None
) -> Path:
    if ext is None:
        own = source.suffix.lower()
        ext = own if own in _EXTENSION_FORMATS else _DEFAULT_EXTENSION
    name = f"{source.stem}{suffix}{ext}"
    if out_dir is None:
        return source.with_name(name)
    relative = Path(source.name)
    if input_root is not None:
        try:
            relative = Path(os.path.abspath(source)).relative_to(os.path.abspath(input_root))
        except ValueError:
            raise ImageError(f"not inside the input folder {input_root}") from None
    target = out_dir / relative.parent / name
    try:
        target.resolve().relative_to(out_dir.resolve())
    except ValueError:
        raise ImageError(f"output {target} would be outside the output folder") from None
    return target


def _check_name_length(target: Path) -> None:
    """Refuse an output name longer than its file system allows (usually 255 bytes)."""
    try:
        limit = os.pathconf(_nearest_existing(target.parent), "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    length = len(os.fsencode(target.name)) + len("..") + 8 + len(".part")  # write_image's temp
    if length > limit:
        raise ImageError(
            f"output name {target.name[:40]}... is too long for the file system "
            f"({len(os.fsencode(target.name))} bytes; the limit is {limit} including "
            "a temporary suffix)"
        )


def _path_key(path: Path, fold_case: bool) -> str:
    """A path compared as the file system does: absolute, links resolved, and letter case
    folded when ``fold_case`` (a folder that ignores case, see ``ignores_case``)."""
    try:
        resolved = str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        resolved = os.path.abspath(path)
    return resolved.casefold() if fold_case else resolved


def ignores_case(folder: Path) -> bool:
    """Whether file names in ``folder`` (or the nearest folder above it that exists) ignore
    letter case, as on macOS and Windows by default; most Linux file systems do not.

    Probed, since it depends on the file system (and even on the folder): a temporary file
    is made and looked up with its letter case swapped. A folder that cannot be probed
    (read-only, say) is taken to ignore case, the cautious answer for clash checks.
    """
    try:
        with tempfile.NamedTemporaryFile(prefix=".srgan-case-probe-", dir=_nearest_existing(
                folder)) as probe:
            swapped = Path(probe.name).with_name(Path(probe.name).name.swapcase())
            return swapped.exists() and os.path.samefile(probe.name, swapped)
    except OSError:
        return True


def _nearest_existing(folder: Path) -> Path:
    """``folder`` itself if it exists, else the nearest folder above it that does."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing path, so hard links and case variants compare equal."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
