"""The LR degradations shared by training and benchmarking.

``bicubic`` (the paper's protocol) is a Pillow bicubic downscale; ``realistic`` (below) is
Real-ESRGAN's second-order blur/resize/noise/JPEG chain for models meant for real photos,
planned per sample (``draw_plan``, in the DataLoader workers) and run for a whole batch on
the training device (``apply_plans``); ``REALISTIC_EVAL`` are the fixed degradations
``srgan benchmark`` scores such models with.

HR images are first cropped (top-left anchored, like BasicSR's ``mod_crop``) so both sides
are multiples of the scale; then ``Image.BICUBIC`` resizes by exactly 1/scale. Pillow's
bicubic filter widens its support when downscaling (antialiasing), like MATLAB ``imresize``.
"""

from __future__ import annotations

import functools
import io
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate

from . import jpeg as jpeg_codec
from . import kernels
from . import resize as pillow_resize


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


# --------------------------------------------------------------------------- realistic
#
# Real-ESRGAN's "second-order" degradation (Wang et al., ICCVW 2021): the same chain of
# blur -> random resize -> noise -> JPEG applied twice, then a final resize to the LR size
# with a sinc filter on part of the samples. ``RealisticDegradation`` holds every parameter
# range; the batched steps and the plan that drives them follow below.

RESIZE_MODES = ("area", "bilinear", "bicubic", "pillow")
"""torch's area / bilinear / bicubic (no antialiasing, as Real-ESRGAN), and ``pillow``:
Pillow's antialiased bicubic (``Image.BICUBIC``, the benchmark's downscale) in floating point,
without its 8-bit rounding between the two passes."""
DEFAULT_RESIZE_MODES = RESIZE_MODES[:3]
"""Real-ESRGAN's three modes: the default chain's draws are as before ``pillow`` was added."""
DEGRADATIONS = ("bicubic", "realistic")


@dataclass(frozen=True)
class RealisticDegradation:
    """Every parameter range of the realistic pipeline, with Real-ESRGAN's published defaults
    (``options/train_realesrgan_x4plus.yml``; names as there, ``2`` = second stage).

    Sigmas of blur kernels are in HR pixels; noise sigmas in 8-bit levels (/255);
    ``resize_prob`` is (up, down, keep); ``resize_range`` the scale factor's range.

    ``blur_prob``, ``noise_prob``, ``jpeg_prob`` (and ``noise_prob2``, ``jpeg_prob2``; the
    second blur has ``second_blur_prob``): how often a sample gets that step at all. Real-ESRGAN
    applies them always (1, the default); a milder chain for photos (``PHOTO_PRESET``) skips
    them on part of the samples, so that clean, JPEG-only and noise-only inputs are seen too.
    A probability of 1 draws nothing, so the default chain's samples are as before.
    """

    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    resize_modes: tuple[str, ...] = DEFAULT_RESIZE_MODES
    # first stage
    blur_prob: float = 1.0
    kernel_list: tuple[str, ...] = kernels.KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, ...] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    noise_prob: float = 1.0
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 1.0
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # second stage
    second_blur_prob: float = 0.8
    kernel_list2: tuple[str, ...] = kernels.KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, ...] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    noise_prob2: float = 1.0
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_prob2: float = 1.0
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    # final resize to the LR size
    final_sinc_prob: float = 0.8

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            is_prob = f.name.endswith(("_prob", "_prob2"))
            choices = isinstance(value, tuple)  # one probability per option: some must be > 0
            probs = value if choices else (value,)
            if is_prob and (not all(0 <= q <= 1 for q in probs) or choices and sum(probs) == 0):
                raise ValueError(f"{f.name} = {value}: probabilities must be in [0, 1]"
                                 + (", not all 0" if choices else ""))
            is_range = "range" in f.name or "sigma" in f.name
            if is_range and (len(value) != 2 or not 0 <= value[0] <= value[1]):
                raise ValueError(f"{f.name} = {value}: expected [low, high], 0 <= low <= high")
            if "sigma" in f.name and value[0] <= 0:  # a 0-pixel blur divides by zero
                raise ValueError(f"{f.name} = {value}: expected [low, high], 0 < low <= high")
        for stage in ("", "2"):
            kinds, probs = self.stage(stage, "kernel_list"), self.stage(stage, "kernel_prob")
            if set(kinds) - set(kernels.KERNEL_TYPES) or len(kinds) != len(probs):
                raise ValueError(f"kernel_list{stage} {kinds} / kernel_prob{stage} {probs}: "
                                 f"one probability per kernel of {', '.join(kernels.KERNEL_TYPES)}")
            if len(self.stage(stage, "resize_prob")) != 3:
                raise ValueError(f"resize_prob{stage}: three probabilities (up, down, keep)")
            qualities = self.stage(stage, "jpeg_range")
            if not 1 <= qualities[0] <= qualities[1] <= 100:
                raise ValueError(f"jpeg_range{stage} = {qualities}: JPEG qualities are 1 to 100")
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes = {self.kernel_sizes}: odd sizes, at least one")
        if not self.resize_modes or set(self.resize_modes) - set(RESIZE_MODES):
            raise ValueError(f"resize_modes = {self.resize_modes}: choose from "
                             f"{', '.join(RESIZE_MODES)}")

    def stage(self, stage: str, name: str) -> Any:
        """Option ``name`` of the first (``stage=""``) or second (``"2"``) stage."""
        return getattr(self, name + stage)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RealisticDegradation:
        """From a config table (lists for the tuples); unknown names are a ValueError.

        ``preset = "photo"`` (or ``"real-esrgan"``, the defaults) starts from ``PRESETS``;
        the table's other options then override the preset's."""
        types = {f.name: f.type for f in fields(cls)}
        values = dict(values)
        preset = values.pop("preset", "real-esrgan")
        if preset not in PRESETS:
            raise ValueError(f"unknown realistic preset {preset!r}: choose one of "
                             f"{', '.join(PRESETS)}")
        clean: dict[str, Any] = dict(PRESETS[preset])
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in types:
                raise ValueError(f"unknown realistic degradation option {key!r}")
            try:
                if types[name] == "float":
                    clean[name] = float(value)
                elif "str" in types[name]:
                    clean[name] = tuple(str(v) for v in value)
                elif "int" in types[name]:
                    clean[name] = tuple(int(v) for v in value)
                else:
                    clean[name] = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f"realistic option {key}: {value!r} is not a valid "
                                 f"{types[name]}") from None
        return cls(**clean)


PHOTO_PRESET: dict[str, Any] = {
    # one blur on half the samples (lens, focus, a softening filter), then Pillow's bicubic
    # downscale; noise and one JPEG on the LR image, each on part of the samples: the
    # ordinary photo's observation model, and ``realistic-eval``'s, with ranges around its
    # levels (noise 10 -> 1-15, JPEG 75-85 -> 50-95, blur 1.2 -> 0.2-1.6)
    "blur_prob": 0.5, "kernel_sizes": (7, 9, 11, 13), "kernel_list": ("iso", "aniso"),
    "kernel_prob": (0.7, 0.3), "sinc_prob": 0.0, "blur_sigma": (0.2, 1.6),
    "resize_prob": (0.0, 0.0, 1.0), "resize_range": (1.0, 1.0), "resize_modes": ("pillow",),
    "noise_prob": 0.0, "jpeg_prob": 0.0,
    "second_blur_prob": 0.0, "resize_prob2": (0.0, 0.0, 1.0), "resize_range2": (1.0, 1.0),
    "noise_prob2": 0.5, "gaussian_noise_prob2": 0.7, "noise_range2": (1.0, 15.0),
    "poisson_scale_range2": (0.05, 1.0), "gray_noise_prob2": 0.3,
    "jpeg_prob2": 0.7, "jpeg_range2": (50.0, 95.0), "final_sinc_prob": 0.0,
}
"""The ``photo`` preset (``preset = "photo"`` in a ``[realistic]`` table): milder than
Real-ESRGAN's chain, which aims at badly degraded web images (two stages, noise up to 30
levels, JPEG down to 30). About 1 sample in 13 is a clean bicubic downscale."""

PRESETS: dict[str, dict[str, Any]] = {"real-esrgan": {}, "photo": PHOTO_PRESET}
"""Named starting points of ``RealisticDegradation.from_dict``: options over the defaults."""


# --------------------------------------------------------------------------- batched steps
#
# Each step works on a batch of "canvases": (N, C, H, W) float in [0, 1] where sample i's
# image is the top-left ``heights[i] x widths[i]`` corner (the whole canvas if not given),
# because the random resizes give every sample its own size. Outside that corner a canvas
# holds finite values that no step reads into the image. So a step is one set of tensor
# ops for the whole batch, on the batch's device, and a sample's result does not depend on
# the other samples in its batch.


def full_sizes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(heights, widths) of canvases filled by their images: (N,) int64 each."""
    n, _, h, w = x.shape
    return (torch.full((n,), h, dtype=torch.long, device=x.device),
            torch.full((n,), w, dtype=torch.long, device=x.device))


def reflect_index(length: int, pad: int, sizes: torch.Tensor) -> torch.Tensor:
    """(N, length + 2 pad) source indices of each sample's image of size ``sizes[i]``, reflected
    at its edges without repeating them (torch's "reflect" padding, folded again as often as
    needed for images narrower than the pad; a 1 px image repeats its pixel)."""
    i = torch.arange(-pad, length + pad, device=sizes.device)[None]
    n = sizes[:, None]
    period = (2 * (n - 1)).clamp(min=1)
    m = torch.remainder(i, period)
    return torch.where(n > 1, torch.where(m < n, m, period - m), torch.zeros_like(m))


def gather_rows_cols(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, R, S): out[i, :, r, s] = x[i, :, rows[i, r], cols[i, s]]."""
    n, c, _, w = x.shape
    x = x.gather(2, rows[:, None, :, None].expand(n, c, rows.shape[1], w))
    return x.gather(3, cols[:, None, None, :].expand(n, c, rows.shape[1], cols.shape[1]))


def blur(x: torch.Tensor, kernel: torch.Tensor, heights: torch.Tensor | None = None,
         widths: torch.Tensor | None = None) -> torch.Tensor:
    """Filter (N, C, H, W) with one (K, K) kernel or one per sample (N, K, K), K odd, as
    ``conv2d`` would (cross-correlation), but through the FFT: 2-3x faster on the CPU for the
    7-21 px kernels and 100-200 px images here (equal to ``conv2d`` within ~1e-6).

    Each image's edges are reflected (``reflect_index``); the output has the input's shape.
    """
    n, c, h, w = x.shape
    k = kernel.shape[-1]
    pad = k // 2
    if heights is None or widths is None:
        heights, widths = full_sizes(x)
    padded = gather_rows_cols(x, reflect_index(h, pad, heights), reflect_index(w, pad, widths))
    size = [fast_fft_size(s) for s in padded.shape[-2:]]  # zeros after the padded image
    # correlation = convolution with the flipped kernel; the first K - 1 rows and columns of
    # the circular result wrap around, the next H x W are exactly the filtered image
    spectrum = torch.fft.rfft2(kernel.to(x).expand(n, k, k).flip(-2, -1), s=size)
    out = torch.fft.irfft2(torch.fft.rfft2(padded, s=size) * spectrum[:, None], s=size)
    return out[..., k - 1:k - 1 + h, k - 1:k - 1 + w].contiguous()


def fast_fft_size(size: int) -> int:
    """The smallest n >= size with no prime factor above 5: FFTs of such sizes are fast
    (116 = 4 x 29 takes ~4x longer than 120)."""
    n = size
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize (N, C, H, W) to ``size`` (h, w) with torch's area/bilinear/bicubic (no
    antialiasing, as Real-ESRGAN; bicubic may overshoot [0, 1] until the next clamp), or
    Pillow's antialiased bicubic (``pillow``, by ``resize_matrix``)."""
    size = (max(1, size[0]), max(1, size[1]))
    if mode == "pillow":
        (h, w), (oh, ow) = x.shape[-2:], size
        rows = resize_matrix(h, oh, mode, oh, h).to(x)
        cols = resize_matrix(w, ow, mode, ow, w).to(x)
        return rows @ x @ cols.T
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


@functools.lru_cache(maxsize=256)
def resize_matrix(size_in: int, size_out: int, mode: str, canvas_out: int, canvas_in: int
                  ) -> torch.Tensor:
    """``resize`` along one axis as a (canvas_out, canvas_in) float32 matrix ``M``: for an
    image in the top-left ``size_in`` entries of a canvas axis, ``M @ axis`` is its resize to
    ``size_out`` in the top-left ``size_out`` entries, zeros after them.

    Every mode is separable and linear, so the matrix is ``resize`` of the unit impulses; a
    per-sample resize of a batch is then one batched matrix product (``resize_canvas``).
    Cached, as the same sizes recur from sample to sample (square patches ask for the same
    rows and columns): the matrix is shared, never modify it in place.
    """
    matrix = torch.zeros(canvas_out, canvas_in, dtype=torch.float64)
    if mode == "pillow":  # Pillow's coefficients, unrounded: rows sum to 1
        weights = pillow_resize.bicubic_weights(size_in, size_out)
        matrix[:size_out, :size_in] = weights / weights.sum(1, keepdim=True)
        return matrix.float()
    impulses = torch.eye(size_in, dtype=torch.float64).reshape(size_in, 1, size_in, 1)
    columns = resize(impulses, (size_out, 1), mode)[:, 0, :, 0]  # (size_in, size_out)
    matrix[:size_out, :size_in] = columns.T
    return matrix.float()


def resize_canvas(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per-sample resize of (N, C, H, W) by ``resize_matrix`` pairs: rows (N, H', H), cols
    (N, W', W) -> (N, C, H', W')."""
    return rows[:, None] @ x @ cols[:, None].transpose(-1, -2)


def valid_mask(x: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) bool: True on each sample's image in its canvas."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device)[None, :, None] < heights[:, None, None]
    cols = torch.arange(w, device=x.device)[None, None, :] < widths[:, None, None]
    return (rows & cols)[:, None]


def on_rows(x: torch.Tensor, flags: torch.Tensor,
            step: Callable[[torch.Tensor, torch.Tensor | slice], torch.Tensor]) -> torch.Tensor:
    """``x`` (N, ...) with ``step(x[rows], rows)`` in the rows where ``flags`` ((N,) bool on
    the CPU) holds, the others as they are: a step chosen per sample costs only its samples,
    and the choice is read on the host (no device sync)."""
    chosen = flags.nonzero().flatten()
    if len(chosen) == len(x):
        return step(x, slice(None))
    if len(chosen) == 0:
        return x
    rows = chosen.to(x.device, non_blocking=True)  # a plain copy would wait for the GPU
    out = x.clone()
    out[rows] = step(x[rows], rows)
    return out


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma (ITU-R BT.601 weights)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def photon_levels(levels8: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BasicSR's Poisson scale ``v`` per sample: the number of distinct 8-bit levels in the
    image (``levels8`` (N, C, H, W) in 0..255, counted where ``mask``), rounded up to a power
    of two. (N,) float, on the device: no host sync."""
    n = levels8.shape[0]
    counts = torch.zeros(n, 256, dtype=torch.long, device=levels8.device)
    counts.scatter_add_(1, levels8.long().flatten(1), mask.expand_as(levels8).long().flatten(1))
    distinct = (counts > 0).sum(1).clamp(min=1).float()
    return torch.exp2(torch.ceil(torch.log2(distinct)))


# --------------------------------------------------------------------------- random fields
#
# A sample's noise must be a pure function of its seed, whatever the rest of its batch, yet a
# whole batch's fields should take a few launches, not a few per sample. So they come from a
# counter-based generator: the 64 random bits of element ``e`` of stream ``s`` of seed ``k``
# are output ``e + 1`` of splitmix64 (Steele et al. 2014) started at ``mix64(mix64(k) + s)``,
# computed as int64 tensor ops (multiplication wraps modulo 2**64; logical right shifts are
# arithmetic shifts masked), so the bits are the same on every device.

_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (2**64 / golden ratio)
_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # its finaliser's multipliers


def _int64(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic on int64)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser, int64 -> int64: a bijection that scrambles every bit."""
    x = (x ^ _shift_right(x, 30)) * _int64(_MIX[0])
    x = (x ^ _shift_right(x, 27)) * _int64(_MIX[1])
    return x ^ _shift_right(x, 31)


def random_bits(seeds: torch.Tensor, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """(N,) int64 seeds -> (N, *shape) int64 random bits: element e of sample i depends only
    on (seeds[i], stream, e), so a sample's field does not depend on its batch."""
    key = mix64(mix64(seeds.long()) + stream)
    counters = torch.arange(1, math.prod(shape) + 1, device=seeds.device) * _int64(_GOLDEN)
    return mix64(key[:, None] + counters).view(len(seeds), *shape)


def uniform_pair(bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float32 uniforms from int64 random bits: 23 bits in (0, 1), from 2**-24 to
    1 - 2**-24 (safe to take logs and quantiles of), and 24 bits in [0, 1)."""
    high = _shift_right(bits, 41).float()
    low = ((bits >> 16) & 0xFFFFFF).float()
    return (high + 0.5) * 2.0**-23, low * 2.0**-24


def gaussian_field(seeds: torch.Tensor, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """(N, *shape) float32 standard normal values (Box-Muller), see ``random_bits``."""
    radius, angle = uniform_pair(random_bits(seeds, shape, stream))
    return torch.sqrt(-2 * torch.log(radius)) * torch.cos(2 * math.pi * angle)


POISSON_UP, POISSON_DOWN = 2, 6  # steps from the first guess: enough for rates up to 256


def poisson_field(rate: torch.Tensor, seeds: torch.Tensor, stream: int) -> torch.Tensor:
    """Poisson(rate) counts, (N, ...) float32 rates in [0, 256] -> (N, ...) float32, sample
    i drawn from ``seeds[i]`` alone: ``poisson_quantile`` of one uniform per element."""
    u, _ = uniform_pair(random_bits(seeds, tuple(rate.shape[1:]), stream))
    return poisson_quantile(u, rate).float()


def poisson_quantile(u: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """The smallest k with F(k) >= u, F the CDF of Poisson(rate): a uniform u in (0, 1)
    gives a Poisson count (inversion). Rates in [0, 256]; float64 result.

    A Cornish-Fisher guess ``rate + sqrt(rate) z + (z^2 - 1) / 6`` (z the normal quantile of
    u) lies within -1..+5 of k for these rates (see the tests). F at the guess is one
    ``gammaincc(k + 1, rate)``; then fixed numbers of steps up and down along the
    probabilities (p(k + 1) = p(k) rate / (k + 1)) reach k. So every element costs the same
    few batched ops whatever its rate, exact up to float64 rounding.
    """
    u, rate = u.double(), rate.double()
    z = torch.special.ndtri(u)
    guess = torch.floor(rate + rate.sqrt() * z + (z * z - 1) / 6 + 0.5)
    k = torch.where(rate > 0, guess.clamp(min=0), 0.0)
    cdf = torch.special.gammaincc(k + 1, rate)  # F(k)
    pmf = torch.exp(k * torch.log(rate) - rate - torch.lgamma(k + 1))  # p(k); 1 at rate 0
    pmf = torch.where(rate > 0, pmf, 1.0)
    for _ in range(POISSON_UP):  # F(k) < u: one up
        up = cdf < u
        k = k + up.double()
        pmf = torch.where(up, pmf * rate / k, pmf)
        cdf = torch.where(up, cdf + pmf, cdf)
    for _ in range(POISSON_DOWN):  # F(k - 1) = F(k) - p(k) >= u: one down
        down = (k > 0) & (cdf - pmf >= u)
        cdf = torch.where(down, cdf - pmf, cdf)
        pmf = torch.where(down, pmf * k / rate, pmf)
        k = k - down.double()
    return k


def add_noise(x: torch.Tensor, gaussian: torch.Tensor, gray: torch.Tensor,
              amount: torch.Tensor, seeds: torch.Tensor, heights: torch.Tensor | None = None,
              widths: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` + noise, clamped to [0, 1]: per sample either Gaussian, N(0, 1) x ``amount`` (the
    sigma in [0, 1] units), or shot noise, ``amount`` x (Poisson(q v) / v - q) with ``q`` the
    8-bit-rounded image and ``v`` = ``photon_levels`` (BasicSR's model). ``gray``: one field
    for all channels (Gaussian) or computed on luma (Poisson), like a grey sensor.

    ``gaussian``, ``gray``: (N,) bool on the CPU (read here: no device sync); ``amount`` (N,)
    float, ``seeds`` (N,) int64. Each sample's field comes from its own seed
    (``gaussian_field``, ``poisson_field``), so a sample is a pure function of its seed;
    each kind is drawn for its samples of the batch at once (``on_rows``).
    """
    n, c, h, w = x.shape
    # (small host tensors: non_blocking, as a plain copy to a GPU waits for all its work)
    seeds = seeds.to(x.device, non_blocking=True)
    grey = gray.to(x.device, non_blocking=True)
    if heights is None or widths is None:
        heights, widths = full_sizes(x)
    field = torch.zeros_like(x)
    field = on_rows(field, gaussian, lambda _, i: gaussian_field(seeds[i], (c, h, w), stream=0))
    field = on_rows(field, ~gaussian, lambda _, i: shot_noise(x[i], grey[i], seeds[i],
                                                              heights[i], widths[i]))
    field = torch.where(grey.view(n, 1, 1, 1), field[:, :1].expand_as(field), field)
    return (x + field * amount.to(x).view(n, 1, 1, 1)).clamp(0, 1)


def shot_noise(x: torch.Tensor, gray: torch.Tensor, seeds: torch.Tensor, heights: torch.Tensor,
               widths: torch.Tensor) -> torch.Tensor:
    """BasicSR's Poisson noise field of canvases (N, C, H, W) in [0, 1]: Poisson(q v) / v - q
    with ``q`` the 8-bit-rounded image (its luma, repeated, where ``gray``) and ``v`` its
    ``photon_levels``; every channel the same where ``gray``."""
    n = len(x)
    mask = valid_mask(x, heights, widths)
    q = (x.clamp(0, 1) * 255).round()
    luma = (grayscale(q / 255) * 255).round()
    grey = gray.view(n, 1, 1, 1)
    v = torch.where(grey, photon_levels(luma, mask).view(n, 1, 1, 1),
                    photon_levels(q, mask).view(n, 1, 1, 1))
    source = torch.where(grey, luma, q) / 255  # (N, C, H, W): luma in every channel if grey
    return poisson_field(source * v, seeds, stream=1) / v - source


def jpeg(x: torch.Tensor, quality: int | list[int]) -> torch.Tensor:
    """JPEG-compress each image of (N, 3, H, W) in [0, 1] at ``quality`` (one for all or one
    per sample) with Pillow (4:2:0 chroma, its default) and decode it again: the reference
    codec (``srgan benchmark``'s real-photo inputs, and what ``jpeg_canvas`` must equal).

    Pillow runs on the CPU: the batch goes to the host as uint8 and comes back to its device
    (and dtype) holding exactly the decoded 8-bit values / 255.
    """
    qualities = [quality] * len(x) if isinstance(quality, int) else list(quality)
    out = []
    for image, q in zip(x, qualities, strict=True):
        buffer = io.BytesIO()
        tensor_to_pil(image).save(buffer, format="JPEG", quality=int(q))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(pil_to_tensor(decoded))
    return torch.stack(out).to(x.device).to(x.dtype) / 255


def jpeg_canvas(x: torch.Tensor, quality: torch.Tensor, heights: torch.Tensor | None = None,
                widths: torch.Tensor | None = None) -> torch.Tensor:
    """``jpeg`` of each sample's image in its canvas at ``quality[i]`` ((N,) int), on ``x``'s
    device: values are 8-bit levels / 255, equal to Pillow's decode inside each image."""
    as_uint8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)  # tensor_to_pil's rounding
    return jpeg_codec.jpeg(as_uint8, quality, heights, widths).to(x.dtype) / 255


# --------------------------------------------------------------------------- the plan
#
# A sample's degradation is split in two: ``draw_plan`` makes every random choice of one
# sample from its ``torch.Generator`` (in the DataLoader workers, on the CPU: a few small
# kernels and resize matrices), and ``apply_plans`` runs the chain for a whole batch of
# plans as the batched steps above, on the training device. A plan is a dict of tensors
# (``PLAN_KEYS``), so the DataLoader batches it like any sample.

Plan = dict[str, torch.Tensor]


def random_kernel(gen: torch.Generator, p: RealisticDegradation, stage: str) -> torch.Tensor:
    """A blur kernel of stage ``""`` (first) or ``"2"``: sinc with ``sinc_prob``, else one of
    ``kernel_list`` (Real-ESRGAN: sinc cutoff in [pi/3, pi), [pi/5, pi) for sizes >= 13),
    zero-padded to the largest kernel size (the same filter, one shape for the batch)."""
    size = p.kernel_sizes[int(torch.randint(len(p.kernel_sizes), (), generator=gen))]
    if kernels.uniform(gen, 0, 1) < p.stage(stage, "sinc_prob"):
        low = math.pi / 3 if size < 13 else math.pi / 5
        kernel = kernels.sinc_kernel(size, kernels.uniform(gen, low, math.pi))
    else:
        kernel = kernels.random_kernel(
            gen, p.stage(stage, "kernel_list"), p.stage(stage, "kernel_prob"), size,
            p.stage(stage, "blur_sigma"), p.stage(stage, "betag_range"),
            p.stage(stage, "betap_range"))
    return kernels.pad_to(kernel, max(p.kernel_sizes))


def random_scale(gen: torch.Generator, probs: tuple[float, ...], scale_range: tuple[float, float]
                 ) -> float:
    """Up (in [1, high)), down (in [low, 1)) or keep (1), chosen with ``probs``."""
    kind = kernels.choice(gen, probs)
    if kind == 0:
        return kernels.uniform(gen, 1.0, scale_range[1])
    return kernels.uniform(gen, scale_range[0], 1.0) if kind == 1 else 1.0


def random_mode(gen: torch.Generator, p: RealisticDegradation) -> str:
    return p.resize_modes[int(torch.randint(len(p.resize_modes), (), generator=gen))]


def random_noise(gen: torch.Generator, p: RealisticDegradation, stage: str) -> Plan:
    """Gaussian with ``gaussian_noise_prob`` (sigma / 255), else Poisson (scale); grey with
    ``gray_noise_prob``; and the seed of the sample's noise field."""
    gaussian = kernels.uniform(gen, 0, 1) < p.stage(stage, "gaussian_noise_prob")
    gray = kernels.uniform(gen, 0, 1) < p.stage(stage, "gray_noise_prob")
    if gaussian:
        amount = kernels.uniform(gen, *p.stage(stage, "noise_range")) / 255
    else:
        amount = kernels.uniform(gen, *p.stage(stage, "poisson_scale_range"))
    seed = int(torch.randint(2**62, (), generator=gen))
    return {f"gaussian{stage}": torch.tensor(gaussian), f"gray{stage}": torch.tensor(gray),
            f"noise_amount{stage}": torch.tensor(amount, dtype=torch.float32),
            f"noise_seed{stage}": torch.tensor(seed)}


def happens(gen: torch.Generator, prob: float) -> torch.Tensor:
    """A 0-d bool: True with probability ``prob``; drawn only when 0 < prob < 1, so options
    left at 1 (Real-ESRGAN's chain) or 0 do not change the draws that follow."""
    if prob >= 1 or prob <= 0:
        return torch.tensor(prob >= 1)
    return torch.tensor(kernels.uniform(gen, 0, 1) < prob)


def random_quality(gen: torch.Generator, p: RealisticDegradation, stage: str) -> torch.Tensor:
    return torch.tensor(round(kernels.uniform(gen, *p.stage(stage, "jpeg_range"))))


def random_resize(gen: torch.Generator, p: RealisticDegradation, stage: str,
                  size_in: tuple[int, int], canvas_in: tuple[int, int], base: tuple[int, int],
                  canvas_out: tuple[int, int]) -> Plan:
    """The resize matrices of a random factor (relative to ``base``) and mode, and the size."""
    factor = random_scale(gen, p.stage(stage, "resize_prob"), p.stage(stage, "resize_range"))
    mode = random_mode(gen, p)
    size = [max(1, int(b * factor)) for b in base]
    rows = resize_matrix(size_in[0], size[0], mode, canvas_out[0], canvas_in[0])
    cols = resize_matrix(size_in[1], size[1], mode, canvas_out[1], canvas_in[1])
    return {f"rows{stage}": rows, f"cols{stage}": cols, f"size{stage}": torch.tensor(size)}


def canvas(size: int, resize_range: tuple[float, float]) -> int:
    """The largest side a random resize of ``size`` can give (int(size x factor), factor up to
    the range's top, or 1: keep)."""
    return max(size, int(size * max(1.0, resize_range[1])))


def draw_plan(gen: torch.Generator, p: RealisticDegradation, hr_size: tuple[int, int],
              scale: int) -> Plan:
    """Every random choice of one sample's realistic degradation, drawn from ``gen`` in a
    fixed order: a pure function of the generator's seed and of (H, W) = ``hr_size``.

    Keys (shapes for one sample; K = the largest kernel size, C1/C2 the canvases of the two
    random resizes): ``kernel`` (K, K); ``rows``/``cols`` (C1, H)/(C1, W) and ``size`` (2,);
    ``gaussian``, ``gray``, ``noise_amount``, ``noise_seed``, ``quality`` (scalars), whether
    the sample gets each step (``blur``, ``noise``, ``jpeg``: bool); the same with suffix
    ``2`` for the second stage plus ``blur2`` (bool), ``rows2`` (C2, C1); and the
    final step's ``sinc`` (bool), ``kernel_final`` (K, K), ``jpeg_first`` (bool),
    ``rows_final``/``cols_final`` (H/scale, C2)/(W/scale, C2).
    """
    h, w = hr_size
    lr = (h // scale, w // scale)
    canvas1 = (canvas(h, p.resize_range), canvas(w, p.resize_range))
    canvas2 = (canvas(lr[0], p.resize_range2), canvas(lr[1], p.resize_range2))
    plan: Plan = {"kernel": random_kernel(gen, p, ""), "blur": happens(gen, p.blur_prob)}
    # first stage: blur, random resize (relative to HR), noise, JPEG
    plan |= random_resize(gen, p, "", (h, w), (h, w), (h, w), canvas1)
    plan |= random_noise(gen, p, "")
    plan["noise"] = happens(gen, p.noise_prob)
    plan["quality"] = random_quality(gen, p, "")
    plan["jpeg"] = happens(gen, p.jpeg_prob)
    # second stage: the same chain, the resize relative to the LR size
    plan["kernel2"] = random_kernel(gen, p, "2")
    plan["blur2"] = torch.tensor(kernels.uniform(gen, 0, 1) < p.second_blur_prob)
    size1 = (int(plan["size"][0]), int(plan["size"][1]))
    plan |= random_resize(gen, p, "2", size1, canvas1, lr, canvas2)
    plan |= random_noise(gen, p, "2")
    plan["noise2"] = happens(gen, p.noise_prob2)
    # final: [resize to the LR size + sinc filter] and JPEG, in a random order
    plan["sinc"] = torch.tensor(kernels.uniform(gen, 0, 1) < p.final_sinc_prob)
    size = p.kernel_sizes[int(torch.randint(len(p.kernel_sizes), (), generator=gen))]
    sinc = kernels.sinc_kernel(size, kernels.uniform(gen, math.pi / 3, math.pi))
    plan["kernel_final"] = kernels.pad_to(sinc, max(p.kernel_sizes))
    plan["jpeg_first"] = torch.tensor(kernels.uniform(gen, 0, 1) >= 0.5)
    plan["quality2"] = random_quality(gen, p, "2")
    plan["jpeg2"] = happens(gen, p.jpeg_prob2)
    mode = random_mode(gen, p)
    size2 = (int(plan["size2"][0]), int(plan["size2"][1]))
    plan["rows_final"] = resize_matrix(size2[0], lr[0], mode, lr[0], canvas2[0])
    plan["cols_final"] = resize_matrix(size2[1], lr[1], mode, lr[1], canvas2[1])
    return plan


def apply_plans(hr: torch.Tensor, plans: Plan) -> torch.Tensor:
    """The realistic LR of a batch: HR (N, 3, H, W) float in [0, 1] on the training device,
    ``plans`` a batch of ``draw_plan``s (on the CPU) -> (N, 3, H/s, W/s) float32, 8-bit
    levels / 255 (an LR image as a model will meet it: quantised, in [0, 1]).

    Sample i's result depends only on ``hr[i]`` and plan i; all steps are batched tensor ops
    on ``hr``'s device. Always in float32, even inside an autocast region (its matrix
    products would run in bf16 there, and the JPEG step needs float64 matmuls).
    """
    with torch.autocast(hr.device.type, enabled=False):
        return apply_plans_fp32(hr.float(), plans)


def apply_plans_fp32(hr: torch.Tensor, plans: Plan) -> torch.Tensor:
    """``apply_plans`` with autocast off."""
    device = hr.device
    at = {k: v.to(device, non_blocking=True) for k, v in plans.items()}

    def stage_noise(x: torch.Tensor, stage: str, heights: torch.Tensor,
                    widths: torch.Tensor) -> torch.Tensor:
        def noisy(y: torch.Tensor, i: torch.Tensor | slice) -> torch.Tensor:
            chosen = slice(None) if isinstance(i, slice) else i.cpu()
            return add_noise(y, plans[f"gaussian{stage}"][chosen], plans[f"gray{stage}"][chosen],
                             at[f"noise_amount{stage}"][i], at[f"noise_seed{stage}"][i],
                             heights[i], widths[i])
        return on_rows(x, plans[f"noise{stage}"], noisy)

    # first stage
    x = on_rows(hr, plans["blur"], lambda y, i: blur(y, at["kernel"][i]))
    x = resize_canvas(x, at["rows"], at["cols"])
    h1, w1 = at["size"][:, 0], at["size"][:, 1]
    x = on_rows(stage_noise(x, "", h1, w1), plans["jpeg"],
                lambda y, i: jpeg_canvas(y, at["quality"][i], h1[i], w1[i]))
    # second stage
    x = on_rows(x, plans["blur2"], lambda y, i: blur(y, at["kernel2"][i], h1[i], w1[i]))
    x = resize_canvas(x, at["rows2"], at["cols2"])
    h2, w2 = at["size2"][:, 0], at["size2"][:, 1]
    x = stage_noise(x, "2", h2, w2)
    # final: JPEG then resize + sinc, or resize + sinc then JPEG
    first, last = plans["jpeg_first"] & plans["jpeg2"], ~plans["jpeg_first"] & plans["jpeg2"]
    x = on_rows(x, first, lambda y, i: jpeg_canvas(y, at["quality2"][i], h2[i], w2[i]))
    x = resize_canvas(x, at["rows_final"], at["cols_final"])
    x = on_rows(x, plans["sinc"], lambda y, i: blur(y, at["kernel_final"][i]))
    x = on_rows(x, last, lambda y, i: jpeg_canvas(y, at["quality2"][i]))
    return (x.clamp(0, 1) * 255).round() / 255


def realistic_lr(hr: torch.Tensor, scale: int, params: RealisticDegradation,
                 gen: torch.Generator) -> torch.Tensor:
    """The realistic LR of one HR patch: (3, H, W) uint8 -> (3, H//scale, W//scale) uint8,
    a pure function of ``gen``'s seed (``draw_plan`` then ``apply_plans`` on ``hr``'s device).
    """
    plan = default_collate([draw_plan(gen, params, (hr.shape[-2], hr.shape[-1]), scale)])
    lr = apply_plans(hr[None].float() / 255, plan)
    return (lr[0] * 255).round().to(torch.uint8)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalDegradation:
    """One fixed degradation of ``srgan benchmark --degradation realistic-eval``.

    The classic observation model ``LR = JPEG((HR * blur) downscaled x s + noise)``: the
    Gaussian blur (sigma in HR pixels) acts on HR before the bicubic downscale; noise
    (sigma in 8-bit levels, seeded per image) and JPEG act on the LR image a model sees.
    """

    name: str
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int = 0  # 0 = no JPEG

    def lr_image(self, hr: Image.Image, scale: int, seed: int) -> Image.Image:
        """The degraded LR of an HR image (cropped to a multiple of ``scale`` first)."""
        if self.blur_sigma > 0:
            size = 2 * math.ceil(3 * self.blur_sigma) + 1
            kernel = kernels.shaped_kernel("gaussian", size, self.blur_sigma, self.blur_sigma, 0)
            # float64: the 8-bit result cannot depend on the CPU's FFT rounding
            hr = tensor_to_pil(blur(pil_to_tensor(hr)[None].double() / 255, kernel)[0])
        lr = bicubic_downscale(hr, scale)
        if self.noise_sigma == 0 and not self.jpeg_quality:
            return lr
        x = pil_to_tensor(lr)[None].float() / 255
        if self.noise_sigma > 0:
            gen = torch.Generator().manual_seed(seed)  # its own draw: inputs stay as published
            noise = torch.randn(x.shape[1:], generator=gen)
            x = (x + noise * torch.tensor(self.noise_sigma / 255)).clamp(0, 1)
        if self.jpeg_quality:
            x = jpeg(x, self.jpeg_quality)
        return tensor_to_pil(x[0])


REALISTIC_EVAL = (
    EvalDegradation("clean"),
    EvalDegradation("jpeg75", jpeg_quality=75),
    EvalDegradation("noise10+jpeg85", noise_sigma=10, jpeg_quality=85),
    EvalDegradation("blur1.2+jpeg80", blur_sigma=1.2, jpeg_quality=80),
)
"""The fixed degradations of ``realistic-eval`` (``clean`` = the paper's bicubic protocol)."""


def eval_seed(image_name: str, degradation: str) -> int:
    """The noise seed of one (image, degradation): stable across runs and processes."""
    return zlib.crc32(f"{degradation}/{image_name}".encode())
