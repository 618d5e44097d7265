"""The SRGAN losses: pixel (MSE / L1), VGG content loss, adversarial (BCE / least squares).

All image inputs are float RGB (N, 3, H, W) in [0, 1]; discriminator outputs are logits of
any shape: (N, 1) from the paper's discriminator, (N, 1, H, W) per pixel from the U-Net. The
adversarial losses average over every logit. Every loss returns a float32 scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .vgg import VGGFeatures

PIXEL_LOSSES = ("mse", "l1")
GAN_LOSSES = ("bce", "lsgan")


def pixel_loss(sr: Tensor, hr: Tensor, kind: str = "mse") -> Tensor:
    """Mean squared error (the paper's SRResNet loss) or mean absolute error."""
    sr, hr = sr.float(), hr.float()
    if kind == "mse":
        return F.mse_loss(sr, hr)
    if kind == "l1":
        return F.l1_loss(sr, hr)
    raise ValueError(f"unknown pixel loss {kind!r}; choose one of {PIXEL_LOSSES}")


class ContentLoss(nn.Module):
    """VGG content loss: MSE between VGG features of SR and HR, each multiplied by 1/divisor.

    The paper's VGG54 is the activation after conv5_4 (tap ``relu5_4``), rescaled by
    1/12.75 so the loss is of a magnitude comparable to the pixel MSE.
    """

    def __init__(self, vgg: VGGFeatures, tap: str = "relu5_4", divisor: float = 12.75) -> None:
        super().__init__()
        self.vgg, self.tap, self.divisor = vgg, tap, divisor

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        sr_features = self.vgg(sr)[self.tap]
        with torch.no_grad():
            hr_features = self.vgg(hr)[self.tap]
        return F.mse_loss(sr_features.float() / self.divisor, hr_features.float() / self.divisor)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "bce") -> Tensor:
    """Loss of the discriminator: real patches -> 1, generated patches -> 0."""
    real, fake = real_logits.float(), fake_logits.float()
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    if kind == "lsgan":
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
    raise ValueError(f"unknown GAN loss {kind!r}; choose one of {GAN_LOSSES}")


def generator_adversarial_loss(fake_logits: Tensor, kind: str = "bce") -> Tensor:
    """Adversarial loss of the generator: make the discriminator call SR patches real.

    ``bce`` is the paper's non-saturating -log D(G(lr)).
    """
    fake = fake_logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "lsgan":
        return 0.5 * (fake - 1).pow(2).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose one of {GAN_LOSSES}")
