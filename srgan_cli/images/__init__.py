"""Images in, images out: read any common image file into float tensors and write results back.

Convention: pixels are float32 tensors in [0, 1], RGB as (3, H, W), alpha as (1, H, W).

One module per concern; every name below is importable from ``srgan_cli.images`` itself:

    picture.py    ``Picture`` (pixels + metadata), ``quantise``: the pixel conventions
    formats.py    what each writable format stores and its size limits, ``format_for``,
                  ``check_output_size``, the PNG compression and quality ranges
    reading.py    ``read_image``: decoding (EXIF orientation, ICC, grey, palette, 16-bit),
                  the decompression-bomb guard, ``declared_size`` from the header
    alpha.py      ``bleed_colour`` (push-pull) and ``upscale_alpha``
    writing.py    ``write_image`` / ``encode_image``: output channels, Pillow encoders
    png_codec.py  PNG byte by byte: 16-bit colour reading, the streaming PNG writer and
                  its row filters (the parallel deflate is ``srgan_cli/png.py``)
    convert.py    Pillow images and numpy arrays to and from ``Picture``
    files.py      folder scans, output planning, name and link rules, letter case,
                  ``check_writable_folder``, atomic writes

A test that patches a function must patch it in the module that calls it
(``srgan_cli.images.reading._decode``, not ``srgan_cli.images._decode``).

How the upscaler uses this package::

    picture = read_image(path)                  # raises ImageError: report it, go on
    rgb = picture.rgb
    if picture.alpha is not None:
        rgb = bleed_colour(rgb, picture.alpha)  # hidden colour must not leak into edges
    big_rgb = network(rgb)                      # (3, sH, sW)
    big_alpha = None if picture.alpha is None else upscale_alpha(picture.alpha, scale)
    warnings = write_image(picture.with_pixels(big_rgb, big_alpha), out_path)

Decisions (see also the docstrings in each module):

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

from .alpha import bleed_colour, upscale_alpha
from .convert import picture_from_array, picture_from_pillow, picture_to_array, picture_to_pillow
from .files import (
    FolderScan,
    OutputPlan,
    check_jobs,
    check_safe_to_write,
    check_suffix,
    check_writable_folder,
    earlier_results,
    find_images,
    ignores_case,
    output_targets,
    plan_outputs,
    scan_folder,
)
from .formats import (
    DEFAULT_PNG_COMPRESSION,
    IMAGE_EXTENSIONS,
    PNG_COMPRESSION_RANGE,
    QUALITY_RANGE,
    check_output_size,
    format_for,
    format_to_write,
)
from .picture import Picture, quantise
from .reading import DEFAULT_MAX_PIXELS, declared_size, read_image, read_rgb_uint8
from .writing import encode_image, write_image

__all__ = [
    "DEFAULT_MAX_PIXELS", "DEFAULT_PNG_COMPRESSION", "IMAGE_EXTENSIONS", "PNG_COMPRESSION_RANGE",
    "QUALITY_RANGE", "FolderScan", "OutputPlan", "Picture", "bleed_colour", "check_jobs",
    "check_output_size", "check_safe_to_write", "check_suffix", "check_writable_folder",
    "declared_size", "earlier_results", "encode_image", "find_images", "format_for",
    "format_to_write", "ignores_case", "output_targets", "picture_from_array",
    "picture_from_pillow", "picture_to_array", "picture_to_pillow", "plan_outputs", "quantise",
    "read_image", "read_rgb_uint8", "scan_folder", "upscale_alpha", "write_image",
]  # fmt: skip
