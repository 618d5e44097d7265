"""Conversion: Pillow images and numpy arrays to and from ``Picture``.

For ``Upscaler.upscale_image``: images in memory go through the same decoding (_decode) and
the same choice of output channels (_output_channels) as files do.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch
from PIL import Image

from ..errors import ImageError, InputError
from .picture import Picture
from .reading import _decode
from .writing import _output_channels, _to_pillow, _to_uint

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

