"""The LR degradation shared by training and benchmarking: Pillow bicubic downscale.

HR images are first cropped (top-left anchored, like BasicSR's ``mod_crop``) so both sides
are multiples of the scale; then ``Image.BICUBIC`` resizes by exactly 1/scale. Pillow's
bicubic filter widens its support when downscaling (antialiasing), like MATLAB ``imresize``.
"""

from __future__ import annotations

from PIL import Image


def crop_to_multiple(img: Image.Image, scale: int) -> Image.Image:
    """Crop the right/bottom edges so width and height are multiples of ``scale``."""
    width, height = img.size
    return img.crop((0, 0, width - width % scale, height - height % scale))


def bicubic_downscale(img: Image.Image, scale: int) -> Image.Image:
    """LR image of an HR image: crop to a multiple of ``scale``, then bicubic resize by 1/scale.

    Output size is (width // scale, height // scale); pair it with ``crop_to_multiple(img)``.
    """
    width, height = img.size
    if width < scale or height < scale:
        raise ValueError(f"image of size {img.size} is smaller than the scale {scale}")
    return crop_to_multiple(img, scale).resize((width // scale, height // scale), Image.BICUBIC)


def bicubic_upscale(img: Image.Image, scale: int) -> Image.Image:
    """Bicubic baseline: resize by ``scale`` with Pillow ``Image.BICUBIC``."""
    width, height = img.size
    return img.resize((width * scale, height * scale), Image.BICUBIC)
