"""The SRGAN networks: the SRResNet generator and the discriminator (Ledig et al., CVPR 2017).

Value convention, used by every module of srgan (the one place it is stated):

* Images are float tensors, RGB, shape (N, 3, H, W), values in [0, 1].
* The generator maps an LR batch (N, 3, H, W) in [0, 1] to an SR batch
  (N, 3, scale*H, scale*W) in approximately [0, 1]; it is not clamped so that
  training sees true gradients. Clamp with ``.clamp(0, 1)`` before saving.
* The discriminator takes HR or SR patches of any size in [0, 1] and returns one
  logit per image, shape (N, 1).

The VGG19 feature extractor for the perceptual loss lives in ``vgg.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

VALUE_RANGE = (0.0, 1.0)
"""Range of every image tensor srgan passes around (inputs and outputs of the networks)."""

SUPPORTED_SCALES = (2, 4, 8)


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of an SRResNet generator; a checkpoint stores it so a file rebuilds its model.

    The defaults are the paper's: 16 residual blocks of 64 channels, x4 by two sub-pixel stages.
    """

    scale: int = 4
    num_blocks: int = 16
    channels: int = 64
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {self.scale}")
        if self.num_blocks < 0 or self.channels < 1 or self.in_channels < 1:
            raise ValueError(f"invalid generator config: {self}")

    @property
    def num_upsample_stages(self) -> int:
        return int(math.log2(self.scale))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GeneratorConfig:
        """Build from a dict, ignoring unknown keys (forward compatibility), ints coerced."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in values.items() if k in names})

    def receptive_radius(self) -> int:
        """How many LR pixels on each side influence one output pixel (rounded up).

        Tiling uses this as its overlap, so tiled and untiled outputs agree exactly
        (up to float rounding) instead of being blended over a seam.
        """
        lr_radius = 4.0  # head: 9x9 conv at LR resolution
        lr_radius += self.num_blocks * 2 * 1  # two 3x3 convs per residual block
        lr_radius += 1  # body tail: 3x3 conv
        resolution = 1
        for _ in range(self.num_upsample_stages):
            lr_radius += 1 / resolution  # 3x3 conv before each PixelShuffle
            resolution *= 2
        lr_radius += 4 / resolution  # tail: 9x9 conv at output resolution
        return math.ceil(lr_radius)


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity skip. (N, C, H, W) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class UpsampleStage(nn.Module):
    """x2 sub-pixel upsampling: conv3x3 C -> 4C, PixelShuffle(2), PReLU.

    (N, C, H, W) -> (N, C, 2H, 2W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class Generator(nn.Module):
    """SRResNet: (N, 3, H, W) in [0, 1] -> (N, 3, scale*H, scale*W), approximately [0, 1]."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GeneratorConfig()
        c = config.channels
        self.head = nn.Sequential(nn.Conv2d(config.in_channels, c, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*[ResidualBlock(c) for _ in range(config.num_blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        stages = [UpsampleStage(c) for _ in range(config.num_upsample_stages)]
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(c, config.in_channels, 9, padding=4)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        features = features + self.body_tail(self.body(features))  # the long skip
        return self.tail(self.upsample(features))


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The paper's discriminator: eight 3x3 convs 64 -> 512, dense 1024, dense 1."""

    channels: int = 64
    in_channels: int = 3
    hidden: int = 1024
    pooled_size: int = 6  # a 96 px patch is 6x6 after four stride-2 convs

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Discriminator(nn.Module):
    """(N, 3, H, W) in [0, 1], any H, W >= 16 -> (N, 1) real/fake logits.

    Conv widths 64, 64, 128, 128, 256, 256, 512, 512, stride 2 on every second
    layer, BN from the second layer on, LeakyReLU(0.2). An adaptive average pool to
    6x6 before the dense layers lets it take any patch size; for the paper's 96 px
    patches the pool is the identity, so the network is exactly the paper's.
    """

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DiscriminatorConfig()
        layers: list[nn.Module] = []
        in_ch = config.in_channels
        for i in range(8):
            out_ch = config.channels * 2 ** (i // 2)
            stride = 2 if i % 2 == 1 else 1
            layers.append(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(config.pooled_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * config.pooled_size**2, config.hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(config.hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))
