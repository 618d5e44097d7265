"""The LR degradation shared by training and benchmarking: Pillow bicubic downscale.

HR images are first cropped (top-left anchored, like BasicSR's ``mod_crop``) so both sides
are multiples of the scale; then ``Image.BICUBIC`` resizes by exactly 1/scale. Pillow's
bicubic filter widens its support when downscaling (antialiasing), like MATLAB ``imresize``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (any mode) -> (3, H, W) uint8 RGB tensor."""
    array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) uint8, or float in [0, 1] (rounded to 8 bits) -> RGB PIL image."""
    if x.dtype != torch.uint8:
        x = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).contiguous().cpu().numpy())


def downscale_tensor(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """``bicubic_downscale`` on a tensor: (3, H, W) uint8 -> (3, H//scale, W//scale) uint8."""
    return pil_to_tensor(bicubic_downscale(tensor_to_pil(hr), scale))


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
