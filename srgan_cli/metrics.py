"""Evaluation metrics in the field's standard protocol: PSNR / SSIM on Y, LPIPS, LR consistency.

PSNR and SSIM follow the MATLAB / BasicSR convention: images are quantised to uint8 levels
(``round(x * 255)``), converted to BT.601 studio-range luma Y (MATLAB ``rgb2ycbcr``), shaved
by ``border`` pixels on each side (usually the scale) and compared in float64 on the
[0, 255] scale with peak 255.

All image inputs are float RGB tensors in [0, 1], shape (N, 3, H, W) or (3, H, W);
per-image metrics return float64 tensors of shape (N,) (N = 1 for a single image).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from srgan_cli.degradation import downscale_tensor
from srgan_cli.errors import SrganError
from srgan_cli.vgg import VGGFeatures, find_local_vgg

# MATLAB rgb2ycbcr luma row, for R, G, B in [0, 1] giving Y on the [0, 255] scale (+ 16).
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0


def _batched(x: Tensor) -> Tensor:
    """(3, H, W) -> (1, 3, H, W); (N, C, H, W) unchanged."""
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(
            f"expected an image tensor (N, C, H, W) or (C, H, W), got {tuple(x.shape)}"
        )
    return x


def quantize(x: Tensor) -> Tensor:
    """Float [0, 1] image -> float64 on [0, 255] rounded to integer (uint8) levels (detached)."""
    return x.detach().double().clamp(0, 1).mul(255).round()


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 studio-range luma (MATLAB ``rgb2ycbcr``), on the [0, 1] scale.

    x: (N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) Y in [16/255, 235/255], same dtype.
    Y * 255 = 16 + 65.481 R + 128.553 G + 24.966 B.
    """
    x = _batched(x)
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_y needs 3 channels, got shape {tuple(x.shape)}")
    weights = torch.tensor(Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x * weights).sum(dim=1, keepdim=True) + Y_OFFSET) / 255


def _prepare(sr: Tensor, hr: Tensor, border: int, y_channel: bool) -> tuple[Tensor, Tensor]:
    """Quantise, optionally convert to Y, and shave ``border`` px: two float64 (N, C, H', W')
    tensors on the [0, 255] scale."""
    sr, hr = _batched(sr), _batched(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"image shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    out = []
    for x in (sr, hr):
        x = quantize(x)
        if y_channel:
            x = rgb_to_y(x / 255) * 255
        if border > 0:
            x = x[..., border:-border, border:-border]
        out.append(x)
    if out[0].shape[-1] < 1 or out[0].shape[-2] < 1:
        raise ValueError(f"border {border} leaves no pixels of a {tuple(sr.shape[-2:])} image")
    return out[0], out[1]


def psnr(sr: Tensor, hr: Tensor, border: int, y_channel: bool = True) -> Tensor:
    """Peak signal-to-noise ratio in dB, peak 255 on uint8 levels, per image.

    sr, hr: (N, 3, H, W) float RGB in [0, 1]. y_channel=False compares all RGB channels.
    Returns (N,) float64; identical images give +inf.
    """
    sr, hr = _prepare(sr, hr, border, y_channel)
    mse = (sr - hr).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(255.0**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """(size, size) float64 Gaussian summing to 1 (as MATLAB fspecial / cv2.getGaussianKernel)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(sr: Tensor, hr: Tensor, border: int, y_channel: bool = True) -> Tensor:
    """Structural similarity (Wang et al. 2004), per image, as MATLAB ``ssim_index`` / BasicSR.

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, valid convolution (no
    padding), mean of the SSIM map; for RGB (y_channel=False) the channel SSIMs are averaged.
    sr, hr: (N, 3, H, W) float RGB in [0, 1]. Returns (N,) float64 (1.0 for identical images).
    """
    x, y = _prepare(sr, hr, border, y_channel)
    if min(x.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after the border, got {x.shape[-2:]}")
    channels = x.shape[1]
    window = gaussian_window().to(x.device).expand(channels, 1, 11, 11)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3))


def lr_consistency(sr: Tensor, lr_input: Tensor, scale: int) -> Tensor:
    """Reference-free drift guard: PSNR (RGB, no border) of the bicubic-downscaled SR vs its input.

    sr: (N, 3, s*H, s*W) float RGB in [0, 1], quantised to uint8 and downscaled with the same
    ``degradation.bicubic_downscale`` used to make LR inputs; lr_input: (N, 3, H, W) in [0, 1].
    Returns (N,) float64 dB; low values flag colour / brightness shifts or misalignment.
    """
    sr, lr_input = _batched(sr), _batched(lr_input)
    downs = [downscale_tensor(image, scale) for image in quantize(sr).to(torch.uint8).cpu()]
    down = torch.stack(downs).float().div(255).to(lr_input.device)
    if down.shape != lr_input.shape:
        raise ValueError(
            f"SR {tuple(sr.shape)} downscaled x{scale} gives {tuple(down.shape)}, "
            f"which does not match the LR input {tuple(lr_input.shape)}"
        )
    return psnr(down, lr_input, border=0, y_channel=False)


LPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


class LPIPS(nn.Module):
    """LPIPS v0.1, VGG variant (Zhang et al. 2018): lower = perceptually closer.

    VGG16 activations at ``LPIPS_TAPS`` are unit-normalised over channels, their squared
    difference weighted per channel by the 1x1 linear layers lin0..lin4 (no bias),
    averaged over space and summed over taps.

    weights: a ``.safetensors`` file holding the VGG16 backbone (``features.N.*``) and
    ``lin{i}.weight`` (1, C, 1, 1), e.g. the shared ``vgg16_lpips.safetensors``; None gives
    a random backbone with uniform linear weights 1/C (tests only).
    forward(x, y): (N, 3, H, W) float RGB in [0, 1] each -> (N,) float32. For benchmark
    figures pass quantised images (``quantize(x) / 255``), as for PSNR / SSIM.
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.backbone = VGGFeatures("vgg16", LPIPS_TAPS, weights=weights)
        # Each tap reluB_K directly follows convB_K, whose out_channels is the tap's width.
        convs = [self.backbone.features[self.backbone.tap_index[t] - 1] for t in LPIPS_TAPS]
        channels = [conv.out_channels for conv in convs]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in channels)
        with torch.no_grad():
            for i, lin in enumerate(self.lins):
                if weights is None:
                    lin.weight.fill_(1.0 / lin.in_channels)
                else:
                    lin.weight.copy_(self._read_lin(weights, i, lin.weight.shape))
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _read_lin(path: str | Path, i: int, shape: torch.Size) -> Tensor:
        """Read ``lin{i}.weight`` from the safetensors file, checking its shape."""
        key = f"lin{i}.weight"
        with safe_open(str(path), framework="pt") as f:
            if key not in set(f.keys()):
                raise ValueError(f"{path} has no LPIPS linear layer {key!r}")
            tensor = f.get_tensor(key).float()
        if tensor.shape != shape:
            raise ValueError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, expected {tuple(shape)}"
            )
        return tensor

    @classmethod
    def from_file(cls, path: str | Path) -> LPIPS:
        """LPIPS from one safetensors file holding backbone and linear layers."""
        return cls(weights=path)

    def train(self, mode: bool = True) -> LPIPS:
        """Always stays in eval mode (it is a fixed metric)."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y: (N, 3, H, W) float RGB in [0, 1] -> (N,) distances."""
        fx, fy = self.backbone(_batched(x)), self.backbone(_batched(y))
        total = 0.0
        for tap, lin in zip(LPIPS_TAPS, self.lins, strict=True):
            a, b = _unit_normalize(fx[tap]), _unit_normalize(fy[tap])
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total


def _unit_normalize(f: Tensor, eps: float = 1e-10) -> Tensor:
    """Scale each spatial feature vector to unit L2 norm over channels: (N, C, H, W)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def load_lpips(path: str | Path | None = None) -> LPIPS | None:
    """LPIPS from ``path``, else from ``$SRGAN_LPIPS_WEIGHTS``, else None (omit LPIPS)."""
    path = path if path is not None else find_local_vgg("vgg16")
    if path is None:
        return None
    try:
        return LPIPS.from_file(path)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        # missing, not safetensors, corrupt, or another network's layout
        raise SrganError(f"LPIPS weights {path}: {e}") from e
