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
- EXIF orientation is applied on reading; the EXIF written back says "upright" (1).
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
import tempfile
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
from srgan_cli.errors import ImageError

# File name endings we write, with their format, and all that mean "this should be an image".
_EXTENSION_FORMATS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}  # fmt: skip
IMAGE_EXTENSIONS = frozenset(_EXTENSION_FORMATS) | {".gif"}

# Pillow's own hard decompression-bomb limit (2 * Image.MAX_IMAGE_PIXELS), 179.0 MP.
DEFAULT_MAX_PIXELS = 178_956_970

# What each writable format can store. modes: Pillow modes written as they are;
# icc/exif/dpi: metadata the format carries. 16-bit output: PNG (all), TIFF (grey only).
_WRITERS: dict[str, dict] = {
    "PNG": {"modes": {"L", "LA", "RGB", "RGBA"}, "icc": True, "exif": True, "dpi": True},
    "JPEG": {"modes": {"L", "RGB"}, "icc": True, "exif": True, "dpi": True},
    "WEBP": {"modes": {"RGB", "RGBA"}, "icc": True, "exif": True, "dpi": False},
    "TIFF": {"modes": {"L", "LA", "RGB", "RGBA"}, "icc": True, "exif": False, "dpi": True},
    "BMP": {"modes": {"L", "RGB"}, "icc": False, "exif": False, "dpi": True},
}
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


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Read one image file upright (EXIF orientation applied) into a Picture.

    Images above max_pixels (width * height) are refused from the file header, before any
    pixel memory is allocated. Raises ImageError with a one-line reason for every expected
    failure: missing, unreadable, empty, a directory, not an image, corrupt, too large.
    """
    path = Path(path)
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
        if os.fstat(file.fileno()).st_size == 0:
            raise ImageError("file is empty")
        try:
            with _own_pixel_limit(), Image.open(file) as image:
                _check_pixel_count(image.size, max_pixels)
                return _decode(image, file)
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


@contextlib.contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Switch off Pillow's global bomb check while we apply our own (configurable) limit."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} MP, "
            f"above the {max_pixels / 1e6:.1f} MP limit (--max-pixels)"
        )


def _decode(image: Image.Image, file: BinaryIO) -> Picture:
    """Pixels and metadata of an opened image (first frame); see the module docstring."""
    notes = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"animated image: only the first of {frames} frames is upscaled")
    image.load()  # decode now so corrupt data fails here, inside read_image's error handling
    colour16 = _png16_colour(file, notes) if image.format == "PNG" else None
    if colour16 is not None:
        channels, grayscale, bit_depth = colour16, colour16.shape[0] == 2, 16
    else:
        channels, grayscale, bit_depth = _pillow_channels(image, notes)
    if channels.shape[0] in (1, 2):  # grey (+ alpha) -> three equal colour channels
        channels = torch.cat([channels[:1].expand(3, -1, -1), channels[1:]])

    exif = image.getexif()
    orientation = exif.get(_ORIENTATION_TAG, 1)
    channels = _apply_orientation(channels, orientation)
    raw_exif = image.info.get("exif")
    if raw_exif and orientation != 1:
        exif[_ORIENTATION_TAG] = 1
        raw_exif = exif.tobytes()

    icc = image.info.get("icc_profile") or None
    wanted_space = b"GRAY" if grayscale else b"RGB "
    if icc is not None and icc[16:20] != wanted_space:
        notes.append(f"colour profile for {icc[16:20].decode('latin-1').strip()} dropped")
        icc = None
    dpi = image.info.get("dpi")
    png_colour = _png_colour_chunks(file) if image.format == "PNG" else ()
    return Picture(
        rgb=channels[:3].contiguous(),
        alpha=channels[3:].contiguous() if channels.shape[0] == 4 else None,
        grayscale=grayscale,
        bit_depth=bit_depth,
        format=image.format,
        icc_profile=icc,
        exif=raw_exif or None,
        dpi=(float(dpi[0]), float(dpi[1])) if dpi else None,
        png_colour=png_colour,
        warnings=notes,
    )


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


DEFAULT_PNG_COMPRESSION = 1
"""zlib level of PNG output (0-9). Level 1 uses zlib's run-length strategy (Z_RLE): on
upscaled photos measured about 4x faster than Pillow's default level 6 at the same size
(README, Performance; scripts/png_levels.py). 16-bit PNGs use the default strategy."""


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
    threads that deflate a large PNG (None: one per core, for this file alone).
    """
    path = Path(path)
    fmt = format_for(path, format)
    caps = _WRITERS[fmt]
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

    sixteen = picture.bit_depth == 16 and (
        fmt == "PNG" or (fmt == "TIFF" and channels.shape[0] == 1)
    )
    if picture.bit_depth == 16 and not sixteen:
        notes.append(f"16-bit image written to {fmt} with 8 bits per channel; png keeps 16")
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

    _write_atomically(path, save)
    return notes


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


def find_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Every path under `folder` with an image extension, sorted.

    Includes entries that will fail to read (directories named x.png, broken links), so the
    batch can report them. Hidden temporaries from write_image end in .part and are skipped.
    """
    folder = Path(folder)
    entries = folder.rglob("*") if recursive else folder.glob("*")
    found = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


@dataclass
class OutputPlan:
    """Result of planning: (input, output) pairs to process and `path: reason` errors."""

    jobs: list[tuple[Path, Path]]
    errors: list[str]


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

    The same input listed twice (by path, link or inode) is done once. Refused, each as one
    `input: reason` error: an output that is any input file of the list or of
    ``other_inputs`` (compared by resolved path, any letter case, and by device and inode),
    and two inputs with the same output (the first keeps it).
    """
    unique: list[tuple[Path, Path]] = []
    seen: set = set()
    for source, target in jobs:
        key = _file_id(source) or _path_key(source)
        if key not in seen:
            seen.add(key)
            unique.append((source, target))
    sources = [source for source, _ in unique] + list(other_inputs)
    input_files = {_file_id(p) for p in sources} - {None}
    input_keys = {_path_key(p) for p in sources}
    taken: dict[str, Path] = {}
    plan = OutputPlan(jobs=[], errors=[])
    for source, target in unique:
        key = _path_key(target)
        if key in input_keys or _file_id(target) in input_files:
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
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
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
    if _path_key(src) == _path_key(dst) or (dst_id is not None and dst_id == _file_id(src)):
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
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    length = len(os.fsencode(target.name)) + len("..") + 8 + len(".part")  # write_image's temp
    if length > limit:
        raise ImageError(
            f"output name {target.name[:40]}... is too long for the file system "
            f"({len(os.fsencode(target.name))} bytes; the limit is {limit} including "
            "a temporary suffix)"
        )


def _path_key(path: Path) -> str:
    """A path compared as the file system might: absolute, links resolved, any letter case."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        resolved = Path(os.path.abspath(path))
    return os.path.normcase(resolved).casefold()


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing path, so hard links and case variants compare equal."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
