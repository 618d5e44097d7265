"""Blur kernels of the realistic degradation (Real-ESRGAN, Wang et al. 2021, section 3).

Every kernel is a (K, K) float32 tensor that sums to 1, K odd. The families:

- ``iso`` / ``aniso``: Gaussian, ``exp(-0.5 * d)`` with ``d = c^T S^-1 c`` the squared
  Mahalanobis distance of pixel offset ``c`` under covariance ``S = R diag(sx^2, sy^2) R^T``
  (``iso``: ``sx = sy``, no rotation).
- ``generalized_iso`` / ``generalized_aniso``: ``exp(-0.5 * d^beta)``, flatter or peakier
  than a Gaussian.
- ``plateau_iso`` / ``plateau_aniso``: ``1 / (1 + d^beta)``, a flat top with heavy tails.
- ``sinc``: the ideal circular low-pass filter of cutoff ``omega_c`` (rad/pixel), whose
  ringing imitates over-sharpened and resampled images.

Random draws come from a ``torch.Generator`` so a kernel is a pure function of its seed.
"""

from __future__ import annotations

import math

import torch

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
                "plateau_aniso")


def uniform(gen: torch.Generator, low: float, high: float) -> float:
    """One float drawn uniformly from [low, high)."""
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def choice(gen: torch.Generator, probs: tuple[float, ...]) -> int:
    """An index drawn with the given (not necessarily normalised) probabilities."""
    weights = torch.tensor(probs, dtype=torch.float64)
    return int(torch.multinomial(weights, 1, generator=gen))


def offsets(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) pixel offsets from the centre of a (size, size) grid, float64."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    return x, y


def mahalanobis(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """``c^T S^-1 c`` on a (size, size) grid for the rotated covariance ``S`` (see above)."""
    x, y = offsets(size)
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = cos * x + sin * y, -sin * x + cos * y  # offsets in the kernel's own axes
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def shaped_kernel(kind: str, size: int, sigma_x: float, sigma_y: float, theta: float,
                  beta: float = 1.0) -> torch.Tensor:
    """A Gaussian-family kernel (``kind`` without the _iso/_aniso suffix), normalised."""
    d = mahalanobis(size, sigma_x, sigma_y, theta)
    # "gaussian" is "generalized" with beta = 1
    k = 1 / (1 + d ** beta) if kind == "plateau" else torch.exp(-0.5 * d ** beta)
    return (k / k.sum()).float()


def sinc_kernel(size: int, omega_c: float) -> torch.Tensor:
    """Circular low-pass kernel ``omega_c J1(omega_c r) / (2 pi r)``, normalised."""
    x, y = offsets(size)
    r = torch.sqrt(x ** 2 + y ** 2)
    safe = torch.where(r == 0, torch.ones_like(r), r)
    k = omega_c * torch.special.bessel_j1(omega_c * safe) / (2 * math.pi * safe)
    k = torch.where(r == 0, torch.full_like(r, omega_c ** 2 / (4 * math.pi)), k)
    return (k / k.sum()).float()


def pad_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a (K, K) kernel to (size, size), centred (same filter, fixed shape)."""
    pad = (size - kernel.shape[-1]) // 2
    return torch.nn.functional.pad(kernel, (pad, pad, pad, pad))


def draw_beta(gen: torch.Generator, beta_range: tuple[float, float]) -> float:
    """Real-ESRGAN's shape draw: half the time in [low, 1), half the time in [1, high)."""
    low, high = beta_range
    return uniform(gen, low, 1.0) if uniform(gen, 0, 1) < 0.5 else uniform(gen, 1.0, high)


def random_kernel(gen: torch.Generator, kinds: tuple[str, ...], probs: tuple[float, ...],
                  size: int, sigma: tuple[float, float], betag: tuple[float, float],
                  betap: tuple[float, float]) -> torch.Tensor:
    """One kernel of a family drawn with ``probs``: sigmas from ``sigma``, rotation in
    [-pi, pi) for anisotropic ones, beta from ``betag`` (generalized) or ``betap`` (plateau)."""
    kind = kinds[choice(gen, probs)]
    family, _, shape = kind.rpartition("_")
    sigma_x = uniform(gen, *sigma)
    if shape == "iso":
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y, theta = uniform(gen, *sigma), uniform(gen, -math.pi, math.pi)
    if family == "":
        return shaped_kernel("gaussian", size, sigma_x, sigma_y, theta)
    beta = draw_beta(gen, betag if family == "generalized" else betap)
    return shaped_kernel(family, size, sigma_x, sigma_y, theta, beta)
