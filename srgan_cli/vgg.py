"""Frozen VGG16/VGG19 feature extractors: the one VGG used by the content loss and by LPIPS.

The conv stack is built in torchvision's exact ``features.N`` index layout, so torchvision
state dicts and the offline safetensors files (keys ``features.N.weight`` / ``.bias``) load
directly. Layers are named ``conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ...``; a
"tap" is one of these names, e.g. ``relu5_4`` (the paper's VGG54) or ``relu2_2`` (VGG22).

Inputs are always RGB float tensors in [0, 1]; each weight set brings its own input
normalisation (``Normalization``), which the module applies internally.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

Arch = Literal["vgg16", "vgg19"]

# Convolutions per block (each block ends in a 2x2 max-pool), as in torchvision's VGG configs.
BLOCK_CONVS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
BLOCK_CHANNELS = (64, 128, 256, 512, 512)

# Environment variables naming local safetensors files; vgg16 weights live in the LPIPS file.
WEIGHTS_ENV_VARS: dict[str, str] = {"vgg19": "SRGAN_VGG19_WEIGHTS", "vgg16": "SRGAN_LPIPS_WEIGHTS"}


@dataclass(frozen=True)
class Normalization:
    """Per-channel RGB normalisation applied to [0, 1] input as ``(x - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


IMAGENET_NORMALIZATION = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def layer_names(arch: Arch) -> list[str]:
    """Names of torchvision's ``vgg*().features`` layers, in index order."""
    if arch not in BLOCK_CONVS:
        raise ValueError(f"unknown VGG arch {arch!r}; expected one of {sorted(BLOCK_CONVS)}")
    names = []
    for block, n_convs in enumerate(BLOCK_CONVS[arch], start=1):
        for conv in range(1, n_convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return names


def min_input_size(arch: Arch, tap: str) -> int:
    """The smallest input side, in pixels, that reaches ``tap``: each 2x2 max-pool up to it
    halves the size, and one on a 1-pixel map fails (16 for relu5_4, 2 for relu2_2)."""
    names = layer_names(arch)
    return 2 ** sum(name.startswith("pool") for name in names[:names.index(tap) + 1])


def build_features(arch: Arch, depth: int) -> nn.Sequential:
    """The first ``depth`` layers of torchvision's ``vgg*().features`` (randomly initialised)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for name in layer_names(arch)[:depth]:
        if name.startswith("conv"):
            out_channels = BLOCK_CHANNELS[int(name[4]) - 1]
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
            in_channels = out_channels
        elif name.startswith("relu"):
            layers.append(nn.ReLU(inplace=False))  # not in-place: taps may be any layer
        else:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def find_local_vgg(arch: Arch) -> Path | None:
    """Path from ``SRGAN_VGG19_WEIGHTS`` (vgg19) or ``SRGAN_LPIPS_WEIGHTS`` (vgg16), else None."""
    value = os.environ.get(WEIGHTS_ENV_VARS[arch], "").strip()
    return Path(value).expanduser() if value else None


def _floats(text: str, label: str) -> tuple[float, ...] | None:
    """Parse the bracketed list following ``label`` in ``text`` (e.g. 'mean [0.1, 0.2, 0.3]')."""
    match = re.search(rf"{label}\s*\[([^\]]*)\]", text)
    return tuple(float(v) for v in match.group(1).split(",")) if match else None


def normalization_from_metadata(
    metadata: dict[str, str] | None, source: str = "file"
) -> Normalization:
    """Input normalisation described by a safetensors file's metadata.

    Preferred: JSON lists under keys ``mean`` and ``std`` (for [0, 1] RGB input; ``std``
    optional, default 1). Otherwise the free-text ``input`` key of the shared files is parsed:
    'subtract mean [..]; no std division' (Caffe VGG19) or 'RGB scaled to [-1,1], then
    (x - shift)/scale with shift [..], scale [..]' (LPIPS), converted to [0, 1] input.
    """
    metadata = metadata or {}
    if "mean" in metadata:
        mean = tuple(float(v) for v in json.loads(metadata["mean"]))
        std = tuple(float(v) for v in json.loads(metadata.get("std", "[1, 1, 1]")))
    else:
        text = metadata.get("input", "")
        shift, scale = _floats(text, "shift"), _floats(text, "scale")
        mean = _floats(text, "mean")
        if shift is not None and scale is not None and "[-1,1]" in text.replace(" ", ""):
            # ((2x - 1) - shift) / scale == (x - (1 + shift) / 2) / (scale / 2)
            mean = tuple((1 + s) / 2 for s in shift)
            std = tuple(s / 2 for s in scale)
        elif mean is not None and "no std division" in text:
            std = (1.0, 1.0, 1.0)
        else:
            raise ValueError(
                f"cannot determine the input normalisation of {source}: add safetensors "
                'metadata keys "mean" and "std" as JSON lists of 3 floats, for RGB input in '
                '[0, 1] normalised as (x - mean) / std, e.g. mean="[0.485, 0.456, 0.406]" '
                'std="[0.229, 0.224, 0.225]"'
            )
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"normalisation of {source} needs 3 values each, got {mean=} {std=}")
    return Normalization(mean=mean, std=std)  # type: ignore[arg-type]


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], Normalization]:
    """All float32 tensors of a safetensors weight file and its input normalisation.

    FileNotFoundError for a missing file; ValueError for anything else wrong with it (not
    safetensors, corrupt or cut short, no normalisation), its message naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VGG weight file not found: {path}")
    if path.suffix != ".safetensors":
        raise ValueError(f"only .safetensors weight files are supported, got {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            normalization = normalization_from_metadata(f.metadata(), source=str(path))
            tensors = {key: f.get_tensor(key).float() for key in list(f.keys())}
    except SafetensorError as e:  # corrupt or cut short: a ValueError like the other faults
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    return tensors, normalization


def _imagenet_state_dict(arch: Arch) -> dict[str, Tensor]:
    """torchvision's IMAGENET1K_V1 ``features`` weights (downloads on first use)."""
    from torchvision import models

    if arch == "vgg19":
        model = models.vgg19(weights=models.VGG19_Weights.IMAGENET1K_V1)
    else:
        model = models.vgg16(weights=models.VGG16_Weights.IMAGENET1K_V1)
    return {f"features.{k}": v for k, v in model.features.state_dict().items()}


class VGGFeatures(nn.Module):
    """Frozen VGG feature extractor returning activations at named taps.

    Args:
        arch: "vgg19" or "vgg16".
        taps: layer names to return, e.g. ("relu5_4",) or LPIPS' five relu*_2/3 layers.
        weights: "imagenet" (torchvision download), a local ``.safetensors`` path in
            torchvision layout (normalisation from its metadata), or None (random init, tests).

    forward(x): x (N, 3, H, W) float RGB in [0, 1] -> {tap: (N, C, H', W') float32}.
    The stack is truncated after the deepest tap; parameters are frozen and the module
    stays in eval mode, but gradients flow to ``x`` (for perceptual losses).
    """

    def __init__(
        self, arch: Arch, taps: Sequence[str], weights: str | Path | None = "imagenet"
    ) -> None:
        super().__init__()
        names = layer_names(arch)
        taps = [taps] if isinstance(taps, str) else list(taps)
        unknown = [t for t in taps if t not in names]
        if not taps or unknown:
            raise ValueError(f"unknown or no {arch} taps {unknown or taps}; choose from {names}")
        self.arch, self.taps = arch, tuple(taps)
        self.tap_index = {t: names.index(t) for t in taps}
        self.features = build_features(arch, depth=max(self.tap_index.values()) + 1)

        if weights is None:
            normalization = IMAGENET_NORMALIZATION
        elif weights == "imagenet":
            normalization = IMAGENET_NORMALIZATION
            self._load_features(_imagenet_state_dict(arch), source=f"torchvision {arch}")
        else:
            tensors, normalization = read_safetensors(weights)
            self._load_features(tensors, source=str(weights))
        self.normalization = normalization
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(normalization.std).view(1, 3, 1, 1))

        self.requires_grad_(False)
        self.eval()

    def _load_features(self, tensors: dict[str, Tensor], source: str) -> None:
        """Copy ``features.N.*`` tensors for the kept layers; extra keys (deeper layers,
        LPIPS heads) are ignored, missing keys or wrong shapes raise ValueError."""
        expected = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        missing = [k for k in expected if k not in tensors]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ValueError(f"{source} is not a torchvision {self.arch} layout: missing "
                             f"{missing[0]}{more}")
        for key, param in expected.items():
            if tensors[key].shape != param.shape:
                raise ValueError(
                    f"{source}: {key} has shape {tuple(tensors[key].shape)}, "
                    f"expected {tuple(param.shape)} for {self.arch}"
                )
        prefix = len("features.")
        self.features.load_state_dict({k[prefix:]: tensors[k].float() for k in expected})

    def train(self, mode: bool = True) -> VGGFeatures:
        """Always stays in eval mode (it is a fixed feature extractor)."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: (N, 3, H, W) float RGB in [0, 1] -> {tap name: activations}."""
        x = (x - self.mean) / self.std
        wanted = {i: t for t, i in self.tap_index.items()}
        out: dict[str, Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
        return out
