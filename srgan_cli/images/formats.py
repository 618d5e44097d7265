"""The formats srgan writes: file name endings, what each format can store, its limits.

One table (``_WRITERS``) says, per format, which Pillow modes it stores as they are, which
channel counts keep 16 bits, what metadata it carries and how large a side it accepts; the
writers (writing.py), the output planners (files.py) and the command line all read it here.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ImageError

# File name endings we write, with their format, and all that mean "this should be an image".
_EXTENSION_FORMATS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}  # fmt: skip
IMAGE_EXTENSIONS = frozenset(_EXTENSION_FORMATS) | {".gif"}

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
(docs/performance.md, "PNG compression"; scripts/png_levels.py). 16-bit PNGs use the
default strategy."""

PNG_COMPRESSION_RANGE = (0, 9)
"""The zlib levels a PNG may be written with (``--png-compression``)."""

QUALITY_RANGE = (1, 100)
"""JPEG/WebP ``quality`` (``--quality``); WebP at 100 is lossless."""


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
