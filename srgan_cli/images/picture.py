"""``Picture``: one decoded image and its metadata, and the pixel conventions.

Pixels are float32 tensors in [0, 1], RGB as (3, H, W), alpha as (1, H, W); results of the
upscaler hold final integers instead (``quantise``): uint8 for 8-bit, uint16 for 16-bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


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
