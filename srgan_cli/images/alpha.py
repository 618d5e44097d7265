"""Alpha: transparency through the upscaler.

The colour under fully transparent pixels is replaced before upscaling (``bleed_colour``, a
push-pull pyramid), so that hidden garbage does not bleed into visible edges; the alpha
channel itself is resized bicubically (``upscale_alpha``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upscale_alpha(alpha: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic resize of an alpha channel: (1, H, W) -> (1, scale*H, scale*W), in [0, 1]."""
    size = (alpha.shape[-2] * scale, alpha.shape[-1] * scale)
    big = F.interpolate(alpha[None].float(), size=size, mode="bicubic", align_corners=False)
    return big[0].clamp(0, 1)


def bleed_colour(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Replace the colour under fully transparent pixels by that of nearby visible pixels.

    rgb: (3, H, W), alpha: (1, H, W), both float in [0, 1]. Whatever colour hides under
    alpha == 0 (often garbage) would otherwise be smeared into the visible edge by the network.
    Visible pixels keep their colour; hidden ones get an alpha-weighted average of their
    surroundings, found by a "push-pull" pyramid (downsample until every pixel has a value).
    """
    if not bool((alpha <= 0).any()) or not bool((alpha > 0).any()):
        return rgb
    return _push_pull(rgb * alpha, alpha)


def _push_pull(weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Fill the pixels with zero weight from a half-size copy of the image, recursively."""
    seen = weight > 0
    colour = torch.where(seen, weighted / weight.clamp_min(1e-12), torch.zeros_like(weighted))
    if bool(seen.all()) or min(weight.shape[-2:]) <= 1:
        return colour
    small_weighted = F.avg_pool2d(weighted[None], 2, ceil_mode=True)[0]
    small_weight = F.avg_pool2d(weight[None], 2, ceil_mode=True)[0]
    small = _push_pull(small_weighted, small_weight)
    filled = F.interpolate(small[None], size=weight.shape[-2:], mode="nearest")[0]
    return torch.where(seen, colour, filled)
