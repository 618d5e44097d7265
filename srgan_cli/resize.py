"""Pillow's bicubic downscale of a batch (PLACEHOLDER: another branch brings the real one).

This stand-in loops over the batch on the CPU with ``degradation.downscale_tensor``; the
real module computes the same values as batched tensor ops on the batch's device.
"""

from __future__ import annotations

import torch


def pil_bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, H/scale, W/scale) on ``hr``'s device, equal bit
    for bit to Pillow's ``Image.BICUBIC`` resize by 1/scale of each image."""
    from .degradation import downscale_tensor

    lr = [downscale_tensor(image, scale) for image in hr.cpu()]
    return torch.stack(lr).to(hr.device)
