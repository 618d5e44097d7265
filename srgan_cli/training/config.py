"""Every option of a training run in one dataclass, with the paper's defaults.

A run is reproducible from its folder: ``RUN_DIR/config.toml`` holds the resolved config.
Options come, in increasing precedence, from these defaults, a config file (TOML or YAML
with the field names below as flat keys; dashes or underscores) and command-line flags.
The one nested table is ``[realistic]``: the ranges of ``degradation = "realistic"``
(``degradation.RealisticDegradation``; keys left out keep Real-ESRGAN's defaults).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..degradation import DEGRADATIONS, RealisticDegradation
from ..errors import TrainingError
from ..losses import GAN_LOSSES, PIXEL_LOSSES
from ..models import DISCRIMINATORS, NORMS, UNET_SIZE_MULTIPLE
from ..vgg import layer_names, min_input_size
from . import COMPILE_MODES

PHASES = ("pretrain", "gan", "all")
SCHEDULES = ("constant", "step", "cosine")
LR_SCALINGS = ("none", "sqrt")
PRECISIONS = ("auto", "fp32", "bf16")
RANDOM_VGG = "random"
TOML_HEADER = "# srgan train: the resolved options of this run"  # how a run's config.toml begins


@dataclass(frozen=True)
class TrainConfig:
    """How to train: data, networks, phases, losses, and how the run is kept."""

    # data: folders of HR images (recursive); HR patch size in pixels
    data: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    scale: int = 4
    patch_size: int = 96
    batch_size: int = 16  # global: split evenly over the processes under torchrun
    workers: int = -1  # DataLoader processes; -1 = auto (0 for cached bicubic sets)
    cache_mb: int = 4096  # sets whose decoded size fits are kept in memory
    degradation: str = "bicubic"  # bicubic (the paper) | realistic (Real-ESRGAN, real photos)
    realistic: RealisticDegradation = field(default_factory=RealisticDegradation)

    # networks (--init's checkpoint gives the generator's scale, blocks and channels; the
    # run keeps its own norm)
    num_blocks: int = 16
    channels: int = 64
    norm: str = "batch"  # batch (the paper) | none (no BatchNorm; --init folds a batch one)
    discriminator: str = "vgg"  # vgg (the paper) | unet (Real-ESRGAN's, spectral norm)
    disc_channels: int = 64  # the discriminator's first conv width (both kinds)
    init: str = ""  # generator to start from: checkpoint path, registry name or hf://

    # phases: "pretrain" (SRResNet, pixel loss), "gan" (SRGAN), "all" (both in sequence)
    phase: str = "all"
    pretrain_steps: int = 1_000_000
    gan_steps: int = 200_000
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    pretrain_schedule: str = "constant"  # constant | step | cosine
    gan_schedule: str = "step"  # the paper: lr x0.1 for the second half
    decay_at: float = 0.5  # step schedule: fraction of the phase's steps
    decay_factor: float = 0.1
    warmup_steps: int = 0  # lr rises linearly over each phase's first N steps; 0 = off
    lr_scaling: str = "none"  # none | sqrt: lr x sqrt(batch_size / lr_reference_batch)
    lr_reference_batch: int = 16  # the batch size ``lr`` is meant for (the paper's 16)

    # losses
    pixel_loss: str = "mse"  # pretrain loss, and the GAN phase's optional pixel term
    pixel_weight: float = 0.0  # GAN phase pixel term (paper: 0)
    adv_weight: float = 1e-3
    gan_loss: str = "bce"  # bce | lsgan
    vgg_layer: str = "relu5_4"  # VGG54
    vgg_divisor: float = 12.75  # features are multiplied by 1/12.75 (paper)
    vgg_weights: str = "imagenet"  # imagenet | path.safetensors | random (tests only)
    lpips_weights: str = ""  # validation LPIPS; "" = $SRGAN_LPIPS_WEIGHTS or none

    # run
    ema: float = 0.0  # EMA decay of generator weights, 0 = off
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto = bf16 on CUDA and on CPUs with native bf16, else fp32
    channels_last: bool = True  # where it pays: CUDA, CPUs with native bf16 (precision.py)
    compile: str = "off"  # off | networks | step (COMPILE_MODES); true / false: networks / off
    sync_bn: bool = False  # torchrun: BatchNorm statistics of the global batch (1 process: no-op)
    log_every: int = 100
    val_every: int = 5000
    save_every: int = 5000
    keep: int = 3  # step checkpoints kept in RUN_DIR/checkpoints
    max_nonfinite: int = 3  # consecutive non-finite steps before stopping
    stop_at: int = 0  # stop (and save) after this global step, schedule unchanged; 0 = never

    def __post_init__(self) -> None:
        if isinstance(self.compile, bool):  # configs from before the modes: compile = true
            object.__setattr__(self, "compile", "networks" if self.compile else "off")
        choices = {"degradation": DEGRADATIONS, "phase": PHASES, "pretrain_schedule": SCHEDULES,
                   "gan_schedule": SCHEDULES, "lr_scaling": LR_SCALINGS, "precision": PRECISIONS,
                   "pixel_loss": PIXEL_LOSSES, "gan_loss": GAN_LOSSES,
                   "discriminator": DISCRIMINATORS, "norm": NORMS, "compile": COMPILE_MODES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise TrainingError(
                    f"{name} = {getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        positive = ("scale", "patch_size", "batch_size", "log_every", "val_every", "save_every",
                    "keep", "max_nonfinite", "channels", "disc_channels", "lr_reference_batch")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("pretrain_steps", "gan_steps", "warmup_steps"):  # 0 skips a phase / warm-up
            if getattr(self, name) < 0:
                raise TrainingError(f"{name} must be at least 0, got {getattr(self, name)}")
        if sum(steps for _, steps in self.phases) < 1:
            raise TrainingError(f"phase {self.phase} has 0 steps to train: set steps (or "
                                "pretrain_steps / gan_steps) to at least 1")
        if self.patch_size % self.scale:
            raise TrainingError(
                f"patch_size {self.patch_size} must be a multiple of the scale {self.scale}")
        if self.vgg_layer not in layer_names("vgg19"):
            raise TrainingError(f"vgg_layer = {self.vgg_layer!r}: not a VGG19 layer; e.g. "
                                "relu5_4 (the paper's VGG54) or relu2_2 (VGG22)")
        gan = dict(self.phases).get("gan", 0) > 0
        smallest = min_input_size("vgg19", self.vgg_layer)
        if gan and self.patch_size < smallest:
            raise TrainingError(
                f"patch_size {self.patch_size} is too small for the GAN phase: its VGG "
                f"content loss at {self.vgg_layer} needs patches of at least {smallest} px")
        if gan and self.discriminator == "unet" and self.patch_size % UNET_SIZE_MULTIPLE:
            raise TrainingError(f"patch_size {self.patch_size} must be a multiple of "
                                f"{UNET_SIZE_MULTIPLE} for the U-Net discriminator")
        if not 0 <= self.ema < 1:
            raise TrainingError(f"ema must be in [0, 1), got {self.ema}")
        if self.stop_at < 0:
            raise TrainingError(f"stop_at must be 0 (off) or a step number, got {self.stop_at}")
        if self.lr <= 0:
            raise TrainingError(f"lr must be positive, got {self.lr}")

    @property
    def phases(self) -> list[tuple[str, int]]:
        """(phase name, steps) in the order they run."""
        plan = {"pretrain": [("pretrain", self.pretrain_steps)], "gan": [("gan", self.gan_steps)]}
        plan["all"] = plan["pretrain"] + plan["gan"]
        return plan[self.phase]

    @property
    def scaled_lr(self) -> float:
        """The peak learning rate: ``lr`` as given with ``lr_scaling = "none"``; with
        ``"sqrt"``, ``lr x sqrt(batch_size / lr_reference_batch)`` (the square-root rule for
        Adam, docs/training.md "Large batches")."""
        if self.lr_scaling == "sqrt":
            return self.lr * math.sqrt(self.batch_size / self.lr_reference_batch)
        return self.lr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_steps(config: TrainConfig, steps: int) -> TrainConfig:
    """Set the step count of the phase(s) ``config.phase`` runs (both for ``all``)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise TrainingError(f"steps must be a whole number of at least 1, got {steps!r}")
    return make_config({f"{name}_steps": steps for name, _ in config.phases}, config)


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def coerce(name: str, value: Any) -> Any:
    """Check/convert one option value to its field's type (lists: a string becomes [it])."""
    kind = FIELD_TYPES[name]
    if name == "compile" and isinstance(value, bool):
        return value  # the old boolean: TrainConfig maps it to its mode
    if kind == "RealisticDegradation":
        if isinstance(value, RealisticDegradation):
            return value
        if not isinstance(value, dict):
            raise TrainingError(f"option {name}: expected a table of options, got {value!r}")
        try:
            return RealisticDegradation.from_dict(value)
        except ValueError as e:
            raise TrainingError(f"[realistic] {e}") from None
    try:
        if kind == "list[str]":
            values = [value] if isinstance(value, str | os.PathLike) else list(value)
            return [str(v) for v in values]
        if kind == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise TrainingError(f"option {name}: {value!r} is not a valid {kind}") from None


def make_config(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: the defaults) with ``values`` applied; unknown names are an error."""
    clean = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in FIELD_TYPES:
            raise TrainingError(f"unknown training option {key!r}; the options are: "
                                f"{', '.join(FIELD_TYPES)} (and steps, in a config file)")
        clean[name] = coerce(name, value)
    return replace(base or TrainConfig(), **clean)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The flat option table of a ``.toml`` or ``.yaml``/``.yml`` file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise TrainingError(f"cannot read config file {path}: {e.strerror or e}") from e
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # PyYAML arrives with huggingface-hub

            values = yaml.safe_load(text) or {}
        else:
            values = tomllib.loads(text)
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise TrainingError(f"{path}: not a valid config file ({one_line(e)})") from e
    if not isinstance(values, dict):
        raise TrainingError(f"{path}: expected a table of options")
    return values


def one_line(error: Exception) -> str:
    """A parser's error as one line: YAML's are several (problem, then a drawn excerpt)."""
    problem, mark = getattr(error, "problem", None), getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < file < ``overrides``. A file's ``steps`` sets the steps of the phase(s) the
    resulting config runs, like ``--steps``."""
    values = read_config_file(path)
    steps = values.pop("steps", None)
    config = make_config(overrides or {}, make_config(values))
    return config if steps is None else with_steps(config, coerce("pretrain_steps", steps))


def toml_value(value: Any) -> str:
    """One TOML value: bool, int, float, string or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def to_toml(config: TrainConfig) -> str:
    """The whole config as flat TOML (``tomllib`` reads it back to an equal config)."""
    lines = [TOML_HEADER, ""]
    values = config.to_dict()
    realistic = values.pop("realistic")
    lines += [f"{name} = {toml_value(value)}" for name, value in values.items()]
    if config.degradation == "realistic" or config.realistic != RealisticDegradation():
        lines += ["", "[realistic]"]
        lines += [f"{name} = {toml_value(value)}" for name, value in realistic.items()]
    return "\n".join(lines) + "\n"


def save_config(config: TrainConfig, path: str | os.PathLike) -> Path:
    """Write ``to_toml(config)`` atomically."""
    return atomic_write_text(Path(path), to_toml(config))


def atomic_write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
