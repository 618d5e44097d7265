"""The SRGAN networks: the SRResNet generator and the discriminator (Ledig et al., CVPR 2017).

Value convention, used by every module of srgan (the one place it is stated):

* Images are float tensors, RGB, shape (N, 3, H, W), values in [0, 1].
* The generator maps an LR batch (N, 3, H, W) in [0, 1] to an SR batch
  (N, 3, scale*H, scale*W) in approximately [0, 1]; it is not clamped so that
  training sees true gradients. Clamp with ``.clamp(0, 1)`` before saving.
* A discriminator takes HR or SR patches in [0, 1] as they are (no normalisation) and
  returns real/fake logits: the paper's ``Discriminator`` one per image, shape (N, 1);
  Real-ESRGAN's ``UNetDiscriminator`` one per pixel, shape (N, 1, H, W). The losses
  (``losses.py``) average over every logit, so both train with the same code.

The VGG19 feature extractor for the perceptual loss lives in ``vgg.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .errors import InputError

VALUE_RANGE = (0.0, 1.0)
"""Range of every image tensor srgan passes around (inputs and outputs of the networks)."""

SUPPORTED_SCALES = (2, 4, 8)

NORMS = ("batch", "none")
"""The generator's normalisation (``GeneratorConfig.norm``): ``batch``, the paper's BatchNorm
after each conv of the body; ``none``, no normalisation (ESRGAN, Real-ESRGAN), whose output
does not depend on statistics averaged over training batches."""


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of an SRResNet generator; a checkpoint stores it so a file rebuilds its model.

    The defaults are the paper's: 16 residual blocks of 64 channels with BatchNorm, x4 by two
    sub-pixel stages. ``norm`` is one of ``NORMS``.
    """

    scale: int = 4
    num_blocks: int = 16
    channels: int = 64
    in_channels: int = 3
    norm: str = "batch"

    def __post_init__(self) -> None:
        if self.scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {self.scale}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.num_blocks < 0 or self.channels < 1 or self.in_channels < 1:
            raise ValueError(f"invalid generator config: {self}")

    @property
    def num_upsample_stages(self) -> int:
        return int(math.log2(self.scale))

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GeneratorConfig:
        """Build from a dict (a checkpoint's ``config``), ignoring unknown keys (forward
        compatibility), each value converted to its field's type. A dict without ``norm``
        (files written before the option existed) describes the paper's ``batch`` network."""
        convert = {f.name: int if f.type == "int" else str for f in fields(cls)}
        return cls(**{k: convert[k](v) for k, v in values.items() if k in convert})

    def receptive_radius(self) -> int:
        """How many LR pixels on each side influence one output pixel (rounded up).

        Tiling uses this as its overlap, so tiled and untiled outputs agree exactly
        (up to float rounding) instead of being blended over a seam. Only the convolutions
        count: BatchNorm (eval mode), PReLU and the shuffle are pointwise, so ``norm`` does not
        change it.
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


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The layer after a body conv: BatchNorm for ``batch``, the identity for ``none``.

    Every conv keeps its bias either way (BatchNorm makes it redundant, not wrong), so a
    ``none`` network's state dict is a ``batch`` one's without the BatchNorm entries, and
    BatchNorm folded into its conv (``fast.without_batchnorm``) loads into it directly.
    """
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity skip. (N, C, H, W) -> same.

    With ``norm = "none"`` both BN are the identity (no parameters, no state)."""

    def __init__(self, channels: int, norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = norm_layer(norm, channels)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = norm_layer(norm, channels)

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
    """SRResNet: (N, 3, H, W) in [0, 1] -> (N, 3, scale*H, scale*W), approximately [0, 1].

    ``config.norm = "none"`` drops BatchNorm (``norm_layer``): the same layers and names
    otherwise, and the same function in train and eval mode."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GeneratorConfig()
        c = config.channels
        self.head = nn.Sequential(nn.Conv2d(config.in_channels, c, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*[ResidualBlock(c, config.norm)
                                    for _ in range(config.num_blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), norm_layer(config.norm, c))
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


@dataclass(frozen=True)
class UNetDiscriminatorConfig:
    """Real-ESRGAN's U-Net discriminator (Wang et al., ICCVW 2021); the defaults are theirs."""

    channels: int = 64
    skip_connection: bool = True
    in_channels: int = 3

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)


UNET_SIZE_MULTIPLE = 8
"""A ``UNetDiscriminator`` input's height and width must be multiples of this (three x2
downsamplings that the decoder undoes exactly)."""


class UNetDiscriminator(nn.Module):
    """(N, 3, H, W) in [0, 1], H and W multiples of 8 -> (N, 1, H, W) per-pixel logits.

    Real-ESRGAN's ``UNetDiscriminatorSN`` (same layers, names and widths; C = ``channels``):
    conv0 3x3 3 -> C; encoder conv1-3 4x4 stride 2, C -> 2C -> 4C -> 8C; decoder: bilinear
    x2 upsampling before each of conv4-6 3x3, 8C -> 4C -> 2C -> C, each output plus the
    encoder's features of its size (``skip_connection``); conv7-8 3x3 C -> C; conv9 3x3
    C -> 1. LeakyReLU(0.2) after every conv but conv9. conv1-8 have spectral normalisation
    and no bias; conv0 and conv9 are plain convs with bias.

    Spectral norm is ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration
    per forward in train mode), so a state dict names ``conv1.parametrizations.weight.original``
    (the parameter) and ``conv1.parametrizations.weight.0._u`` / ``._v`` (the power-iteration
    buffers) where Real-ESRGAN's files say ``conv1.weight_orig``, ``weight_u``, ``weight_v``.
    """

    def __init__(self, config: UNetDiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetDiscriminatorConfig()
        c = config.channels

        def sn_conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Module:
            conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=1, bias=False)
            return spectral_norm(conv)

        self.conv0 = nn.Conv2d(config.in_channels, c, 3, padding=1)
        self.conv1 = sn_conv(c, 2 * c, 4, 2)
        self.conv2 = sn_conv(2 * c, 4 * c, 4, 2)
        self.conv3 = sn_conv(4 * c, 8 * c, 4, 2)
        self.conv4 = sn_conv(8 * c, 4 * c, 3)
        self.conv5 = sn_conv(4 * c, 2 * c, 3)
        self.conv6 = sn_conv(2 * c, c, 3)
        self.conv7 = sn_conv(c, c, 3)
        self.conv8 = sn_conv(c, c, 3)
        self.conv9 = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % UNET_SIZE_MULTIPLE or width % UNET_SIZE_MULTIPLE:
            raise InputError(f"the U-Net discriminator takes sides that are multiples of "
                             f"{UNET_SIZE_MULTIPLE}, got {height}x{width}")
        x0 = F.leaky_relu(self.conv0(x), 0.2)
        x1 = F.leaky_relu(self.conv1(x0), 0.2)  # 1/2 size
        x2 = F.leaky_relu(self.conv2(x1), 0.2)  # 1/4
        x3 = F.leaky_relu(self.conv3(x2), 0.2)  # 1/8
        out = x3
        for conv, skip in ((self.conv4, x2), (self.conv5, x1), (self.conv6, x0)):
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
            out = F.leaky_relu(conv(out), 0.2)
            if self.config.skip_connection:
                out = out + skip
        out = F.leaky_relu(self.conv7(out), 0.2)
        out = F.leaky_relu(self.conv8(out), 0.2)
        return self.conv9(out)


DISCRIMINATORS = ("vgg", "unet")
"""``vgg``: the paper's ``Discriminator``; ``unet``: Real-ESRGAN's ``UNetDiscriminator``."""


def build_discriminator(kind: str, channels: int = 64) -> nn.Module:
    """A new discriminator of ``kind`` (one of ``DISCRIMINATORS``), base width ``channels``."""
    if kind == "vgg":
        return Discriminator(DiscriminatorConfig(channels=channels))
    if kind == "unet":
        return UNetDiscriminator(UNetDiscriminatorConfig(channels=channels))
    raise ValueError(f"unknown discriminator {kind!r}; choose one of {DISCRIMINATORS}")
