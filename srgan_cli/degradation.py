"""The LR degradations shared by training and benchmarking.

``bicubic`` (the paper's protocol) is a Pillow bicubic downscale; ``realistic`` (below) is
Real-ESRGAN's second-order blur/resize/noise/JPEG chain for models meant for real photos;
``REALISTIC_EVAL`` are the fixed degradations ``srgan benchmark`` scores them with.

HR images are first cropped (top-left anchored, like BasicSR's ``mod_crop``) so both sides
are multiples of the scale; then ``Image.BICUBIC`` resizes by exactly 1/scale. Pillow's
bicubic filter widens its support when downscaling (antialiasing), like MATLAB ``imresize``.
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import kernels


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
# with a sinc filter on part of the samples. The steps below are tensor functions on
# (N, 3, H, W) float batches in [0, 1] that run on whatever device the batch is on; the
# random choices of one sample come from one ``torch.Generator`` (``realistic_lr``).

RESIZE_MODES = ("area", "bilinear", "bicubic")
DEGRADATIONS = ("bicubic", "realistic")


def _range(low: float, high: float) -> tuple[float, float]:
    return (float(low), float(high))


@dataclass(frozen=True)
class RealisticDegradation:
    """Every parameter range of the realistic pipeline, with Real-ESRGAN's published defaults
    (``options/train_realesrgan_x4plus.yml``; names as there, ``2`` = second stage).

    Sigmas of blur kernels are in HR pixels; noise sigmas in 8-bit levels (/255);
    ``resize_prob`` is (up, down, keep); ``resize_range`` the scale factor's range.
    """

    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    resize_modes: tuple[str, ...] = RESIZE_MODES
    # first stage
    kernel_list: tuple[str, ...] = kernels.KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, ...] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
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
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
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
        for stage in ("", "2"):
            kinds, probs = self.stage(stage, "kernel_list"), self.stage(stage, "kernel_prob")
            if set(kinds) - set(kernels.KERNEL_TYPES) or len(kinds) != len(probs):
                raise ValueError(f"kernel_list{stage} {kinds} / kernel_prob{stage} {probs}: "
                                 f"one probability per kernel of {', '.join(kernels.KERNEL_TYPES)}")
            if len(self.stage(stage, "resize_prob")) != 3:
                raise ValueError(f"resize_prob{stage}: three probabilities (up, down, keep)")
            if not 1 <= self.stage(stage, "jpeg_range")[1] <= 100:
                raise ValueError(f"jpeg_range{stage}: JPEG qualities are 1 to 100")
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
        """From a config table (lists for the tuples); unknown names are a ValueError."""
        types = {f.name: f.type for f in fields(cls)}
        clean: dict[str, Any] = {}
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


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter (N, C, H, W) with one (K, K) kernel or one per sample (N, K, K), K odd, as
    ``conv2d`` would (cross-correlation), but through the FFT: 2-3x faster on the CPU for the
    7-21 px kernels and 100-200 px images here (equal to ``conv2d`` within ~1e-6).

    Edges are reflected (replicated for images no wider than K // 2); the output has the
    input's shape.
    """
    n, c, h, w = x.shape
    k = kernel.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    size = padded.shape[-2:]
    # correlation = convolution with the flipped kernel; the first K - 1 rows and columns of
    # the circular result wrap around, the rest is exactly the filtered image
    spectrum = torch.fft.rfft2(kernel.to(x).expand(n, k, k).flip(-2, -1), s=size)
    out = torch.fft.irfft2(torch.fft.rfft2(padded) * spectrum[:, None], s=size)
    return out[..., k - 1:, k - 1:].contiguous()


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize (N, C, H, W) to ``size`` (h, w) with torch's area/bilinear/bicubic (no
    antialiasing, as Real-ESRGAN; bicubic may overshoot [0, 1] until the next clamp)."""
    size = (max(1, size[0]), max(1, size[1]))
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def per_sample(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar or (N,) value as an (N, 1, 1, 1) tensor on ``x``'s device."""
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma (ITU-R BT.601 weights)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def add_gaussian_noise(x: torch.Tensor, sigma: float | torch.Tensor, gray: bool | torch.Tensor,
                       gen: torch.Generator) -> torch.Tensor:
    """``x`` + N(0, sigma^2) noise, clamped to [0, 1]; ``sigma`` in [0, 1] units (scalar or
    per sample); ``gray``: the same noise in all channels (luma-only, like a grey sensor)."""
    n, c, h, w = x.shape
    gray_mask = per_sample(gray, x).bool().expand(n, 1, 1, 1)
    noise = torch.zeros_like(x)
    if not gray_mask.all():  # only the draws that are used: less work, same determinism
        colour = torch.randn((n, c, h, w), generator=gen, device=x.device, dtype=x.dtype)
        noise = torch.where(gray_mask, noise, colour)
    if gray_mask.any():
        mono = torch.randn((n, 1, h, w), generator=gen, device=x.device, dtype=x.dtype)
        noise = torch.where(gray_mask, mono.expand_as(x), noise)
    return (x + noise * per_sample(sigma, x)).clamp(0, 1)


def add_poisson_noise(x: torch.Tensor, scale: float | torch.Tensor, gray: bool | torch.Tensor,
                      gen: torch.Generator) -> torch.Tensor:
    """``x`` + ``scale`` x shot noise, clamped to [0, 1] (BasicSR's model: photon counts
    ``Poisson(x * v) / v`` with ``v`` = the number of distinct 8-bit levels of the sample,
    rounded up to a power of two; ``gray``: computed on luma, the same in all channels)."""
    n = x.shape[0]
    gray_mask = per_sample(gray, x).bool().expand(n, 1, 1, 1)

    def shot_noise(source: torch.Tensor) -> torch.Tensor:
        levels8 = (source * 255).round().clamp(0, 255)
        counts = [int(torch.bincount(s.flatten().long(), minlength=256).count_nonzero())
                  for s in levels8]
        v = per_sample(torch.tensor([2.0 ** math.ceil(math.log2(m)) for m in counts]), x)
        q = levels8 / 255
        return torch.poisson(q * v, generator=gen) / v - q

    noise = torch.zeros_like(x)
    if not gray_mask.all():
        noise = torch.where(gray_mask, noise, shot_noise(x))
    if gray_mask.any():
        noise = torch.where(gray_mask, shot_noise(grayscale(x)).expand_as(x), noise)
    return (x + noise * per_sample(scale, x)).clamp(0, 1)


def jpeg(x: torch.Tensor, quality: int | list[int]) -> torch.Tensor:
    """JPEG-compress each image of (N, 3, H, W) in [0, 1] at ``quality`` (one for all or one
    per sample) with Pillow (4:2:0 chroma, its default) and decode it again.

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


def random_kernel(gen: torch.Generator, p: RealisticDegradation, stage: str) -> torch.Tensor:
    """A blur kernel of stage ``""`` (first) or ``"2"``: sinc with ``sinc_prob``, else one of
    ``kernel_list`` (Real-ESRGAN: sinc cutoff in [pi/3, pi), [pi/5, pi) for sizes >= 13)."""
    size = p.kernel_sizes[int(torch.randint(len(p.kernel_sizes), (), generator=gen))]
    if kernels.uniform(gen, 0, 1) < p.stage(stage, "sinc_prob"):
        low = math.pi / 3 if size < 13 else math.pi / 5
        return kernels.sinc_kernel(size, kernels.uniform(gen, low, math.pi))
    return kernels.random_kernel(
        gen, p.stage(stage, "kernel_list"), p.stage(stage, "kernel_prob"), size,
        p.stage(stage, "blur_sigma"), p.stage(stage, "betag_range"),
        p.stage(stage, "betap_range"))


def random_scale(gen: torch.Generator, probs: tuple[float, ...], scale_range: tuple[float, float]
                 ) -> float:
    """Up (in [1, high)), down (in [low, 1)) or keep (1), chosen with ``probs``."""
    kind = kernels.choice(gen, probs)
    if kind == 0:
        return kernels.uniform(gen, 1.0, scale_range[1])
    return kernels.uniform(gen, scale_range[0], 1.0) if kind == 1 else 1.0


def random_mode(gen: torch.Generator, p: RealisticDegradation) -> str:
    return p.resize_modes[int(torch.randint(len(p.resize_modes), (), generator=gen))]


def random_noise(x: torch.Tensor, gen: torch.Generator, p: RealisticDegradation, stage: str
                 ) -> torch.Tensor:
    """Gaussian noise with ``gaussian_noise_prob``, else Poisson; grey with ``gray_noise_prob``."""
    gaussian = kernels.uniform(gen, 0, 1) < p.stage(stage, "gaussian_noise_prob")
    gray = kernels.uniform(gen, 0, 1) < p.stage(stage, "gray_noise_prob")
    if gaussian:
        sigma = kernels.uniform(gen, *p.stage(stage, "noise_range")) / 255
        return add_gaussian_noise(x, sigma, gray, gen)
    return add_poisson_noise(x, kernels.uniform(gen, *p.stage(stage, "poisson_scale_range")),
                             gray, gen)


def random_jpeg(x: torch.Tensor, gen: torch.Generator, p: RealisticDegradation, stage: str
                ) -> torch.Tensor:
    return jpeg(x, round(kernels.uniform(gen, *p.stage(stage, "jpeg_range"))))


def realistic_lr(hr: torch.Tensor, scale: int, params: RealisticDegradation,
                 gen: torch.Generator) -> torch.Tensor:
    """The realistic LR of one HR patch: (3, H, W) uint8 -> (3, H//scale, W//scale) uint8.

    Every random choice comes from ``gen`` in a fixed order, so the result is a pure
    function of the generator's seed (``data.py`` seeds it with (seed, sample index)).
    The float work runs on ``hr``'s device; only the JPEG steps visit the CPU.
    """
    p = params
    x = hr[None].float() / 255
    lr_h, lr_w = hr.shape[-2] // scale, hr.shape[-1] // scale
    # first stage: blur, random resize, noise, JPEG
    x = blur(x, random_kernel(gen, p, ""))
    factor = random_scale(gen, p.resize_prob, p.resize_range)
    x = resize(x, (int(x.shape[-2] * factor), int(x.shape[-1] * factor)), random_mode(gen, p))
    x = random_jpeg(random_noise(x, gen, p, ""), gen, p, "")
    # second stage: the same chain, the resize relative to the LR size
    kernel2 = random_kernel(gen, p, "2")
    if kernels.uniform(gen, 0, 1) < p.second_blur_prob:
        x = blur(x, kernel2)
    factor = random_scale(gen, p.resize_prob2, p.resize_range2)
    x = resize(x, (int(lr_h * factor), int(lr_w * factor)), random_mode(gen, p))
    x = random_noise(x, gen, p, "2")
    # final: [resize to the LR size + sinc filter] and JPEG, in a random order
    sinc = None
    if kernels.uniform(gen, 0, 1) < p.final_sinc_prob:
        size = p.kernel_sizes[int(torch.randint(len(p.kernel_sizes), (), generator=gen))]
        sinc = kernels.sinc_kernel(size, kernels.uniform(gen, math.pi / 3, math.pi))
    jpeg_first = kernels.uniform(gen, 0, 1) >= 0.5
    if jpeg_first:
        x = random_jpeg(x.clamp(0, 1), gen, p, "2")
    x = resize(x, (lr_h, lr_w), random_mode(gen, p))
    if sinc is not None:
        x = blur(x, sinc)
    if not jpeg_first:
        x = random_jpeg(x.clamp(0, 1), gen, p, "2")
    return x[0].clamp(0, 1).mul(255).round().to(torch.uint8)


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
            gen = torch.Generator().manual_seed(seed)
            x = add_gaussian_noise(x, self.noise_sigma / 255, False, gen)
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
