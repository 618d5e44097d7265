"""Training SRResNet / SRGAN: ``train(config, run_dir)`` runs the phases of a ``TrainConfig``.

Phases (Ledig et al. 2017): ``pretrain`` trains the generator alone with a pixel loss (MSE,
the paper's SRResNet); ``gan`` starts from a pretrained generator and alternates one
discriminator update and one generator update with the loss
``VGG54 content + 1e-3 x adversarial`` (the paper's SRGAN); ``all`` runs both.

Steps are counted across the whole run: with ``phase = "all"`` the GAN phase continues the
step numbers of the pretraining phase. The run folder holds (see docs/training.md, "Run folder"):

    config.toml               the resolved options: the run's recipe
    generator.safetensors     the latest generator (EMA weights with --ema), ready to use
    best.safetensors          best by validation score in the current phase
    checkpoints/step_*.safetensors   the last ``keep`` step checkpoints
    state.safetensors         everything --resume needs (optimizers, RNG, discriminator, EMA)
    log.jsonl                 one JSON record per log interval, validation and event
    curves.png                losses and validation curves, drawn at the end

Under torchrun (``torchrun --nproc-per-node N -m srgan_cli train ...``) every process
(rank) runs this same loop on its share of each global batch (``data.py``); generator and
discriminator are wrapped in DistributedDataParallel, which averages their gradients, so a
step is the step one process would take on the whole batch (exactly so with ``sync_bn``,
whose BatchNorm uses the statistics of the whole batch). Losses are averaged over the
ranks before they are checked and logged, so every rank skips the same non-finite steps.
Only rank 0 writes the run folder and validates (the others wait for it at the next step);
the networks start identical on every rank (same seeds, and DDP copies rank 0's weights)
and the data is the only randomness. The state holds the unwrapped networks, so a run can
be resumed with any number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console

from .. import benchmark, losses, metrics
from ..checkpoints import load_generator, resolve_model, save_checkpoint
from ..degradation import RealisticDegradation
from ..errors import CheckpointError, ImageError, SrganError, TrainingError
from ..fast import without_batchnorm
from ..images import check_writable_folder
from ..models import Generator, GeneratorConfig, build_discriminator
from ..precision import autocast_dtype, prefers_channels_last
from ..signals import Interrupted, deferred_interrupt, describe
from ..upscale import Upscaler
from ..vgg import VGGFeatures
from . import data, distributed, sync_batchnorm
from .config import RANDOM_VGG, TOML_HEADER, TrainConfig, save_config
from .display import Display
from .loss_window import LossWindow, StepLosses
from .plot import plot_curves
from .speed import SpeedWindow
from .state import (
    load_state,
    module_tensors,
    optimizer_tensors,
    prune_checkpoints,
    restore_module,
    restore_optimizer,
    restore_rng,
    rng_tensors,
    save_state,
)

CONFIG_FILE = "config.toml"
GENERATOR_FILE = "generator.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.safetensors"
LOG_FILE = "log.jsonl"
PLOT_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
RUN_FILES = (CONFIG_FILE, GENERATOR_FILE, BEST_FILE, STATE_FILE, LOG_FILE, PLOT_FILE)


class NothingToTrain(TrainingError):
    """A resumed run already is at (or past) the step its config ends at: nothing was done
    and the run folder is unchanged. The CLI says so and exits 0."""


@dataclass(frozen=True)
class Phase:
    """One phase of a run: global steps ``start`` (done before it) to ``end``."""

    name: str
    start: int
    end: int

    @property
    def steps(self) -> int:
        return self.end - self.start


def plan_phases(config: TrainConfig) -> list[Phase]:
    phases, start = [], 0
    for name, steps in config.phases:
        phases.append(Phase(name, start, start + steps))
        start += steps
    return phases


def learning_rate(config: TrainConfig, schedule: str, phase_step: int, phase_steps: int) -> float:
    """The learning rate of step ``phase_step`` (0-based) of a phase of ``phase_steps`` steps:
    the schedule's, times ``(phase_step + 1) / warmup_steps`` during the phase's first
    ``warmup_steps`` steps (a linear warm-up whose last step reaches the schedule's rate).

    A pure function of the step, so a resumed run continues the same rates."""
    rate = scheduled_rate(config, schedule, phase_step, phase_steps)
    if phase_step + 1 < config.warmup_steps:  # (the last warm-up step: the schedule's, exactly)
        rate = rate * (phase_step + 1) / config.warmup_steps
    return rate


def scheduled_rate(config: TrainConfig, schedule: str, phase_step: int, phase_steps: int) -> float:
    """The schedule's learning rate at ``phase_step``, from the peak ``config.scaled_lr``."""
    peak = config.scaled_lr
    if schedule == "step":
        decayed = phase_step >= config.decay_at * phase_steps
        return peak * (config.decay_factor if decayed else 1.0)
    if schedule == "cosine":
        return 0.5 * peak * (1 + math.cos(math.pi * phase_step / max(phase_steps, 1)))
    return peak


def cuda_kernels(device: torch.device) -> bool:
    """Whether training uses fused Adam and channels_last tensors: on CUDA, where they pay.
    (Both also run on a CPU, where the tests use them to cover the GPU's resume path; fused
    Adam rounds differently from the CPU's default Adam, so CPU runs keep the latter.)"""
    return device.type == "cuda"


def step_compile_mode(device: torch.device) -> str | None:
    """``torch.compile``'s mode for ``compile = "step"``: ``reduce-overhead`` (CUDA graphs)
    on CUDA, where launches and Python overhead are a large part of a step; the default
    elsewhere (a CPU has no graphs to replay)."""
    return "reduce-overhead" if device.type == "cuda" else None


def optimizer_step(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """``optimizer.step()`` when ``finite`` (a 0-d bool tensor) is true; else weights and
    optimizer state stay exactly as they are (a skipped update).

    Fused Adam decides on the device, through the ``found_inf`` flag mixed-precision
    training uses (as ``torch.amp.GradScaler`` does): the host never waits for the GPU.
    Other optimizers (the CPU's) read the flag, which on a CPU costs no wait.
    """
    if optimizer.param_groups[0].get("fused"):
        optimizer.found_inf = finite.logical_not().float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif finite:
        optimizer.step()


class EMA:
    """Exponential moving average of a generator's weights.

    After each update: ``ema = decay * ema + (1 - decay) * weights`` for every parameter;
    buffers (BatchNorm running statistics) are copied as they are. Multi-tensor (foreach)
    kernels: a few launches per step, not a few per parameter.
    """

    def __init__(self, model: Generator, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: Generator, finite: torch.Tensor | None = None) -> None:
        """Move the average towards ``model``; not when ``finite`` (a 0-d bool tensor on the
        model's device) is false, the step having been skipped. Decided on the device, so
        the host does not wait for it."""
        averages, targets = list(self.model.parameters()), list(model.parameters())
        buffers, new_buffers = list(self.model.buffers()), list(model.buffers())
        if finite is not None:
            # Weights are finite after a skipped step (it changed none), but its forward pass
            # may have left NaN statistics in the BatchNorm buffers.
            targets = select_by_arithmetic(finite, targets, averages)
            new_buffers = select_by_where(finite, new_buffers, buffers)
        torch._foreach_lerp_(averages, [t.detach() for t in targets], 1 - self.decay)
        if buffers:
            torch._foreach_copy_(buffers, new_buffers)


def select_by_arithmetic(condition: torch.Tensor, if_true: list[torch.Tensor],
                         if_false: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[a if condition else b ...]`` for a 0-d bool tensor, on its device (no host sync),
    as ``a * c + b * (1 - c)``: exact when ``a`` and ``b`` are finite; multi-tensor kernels
    that keep each tensor's layout (channels_last weights)."""
    take = condition.to(if_true[0].dtype)
    chosen = torch._foreach_mul([a.detach() for a in if_true], take)
    torch._foreach_add_(chosen, torch._foreach_mul(if_false, 1 - take))
    return chosen


def select_by_where(condition: torch.Tensor, if_true: list[torch.Tensor],
                    if_false: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[a if condition else b ...]`` for small tensors (BatchNorm buffers), exact whatever
    the values: one ``torch.where`` on each list flattened into one vector per dtype."""
    chosen = list(if_true)
    for dtype in {t.dtype for t in if_true}:
        index = [i for i, t in enumerate(if_true) if t.dtype == dtype]
        flat = torch.where(condition, torch.cat([if_true[i].reshape(-1) for i in index]),
                           torch.cat([if_false[i].reshape(-1) for i in index]))
        parts = flat.split([if_true[i].numel() for i in index])
        for i, part in zip(index, parts, strict=True):
            chosen[i] = part.view_as(if_true[i])
    return chosen


def resolve_init(config: TrainConfig) -> TrainConfig:
    """Take the generator architecture from ``config.init`` when it names a checkpoint; the
    run keeps its ``norm``, which the checkpoint must be able to start (``init_generator``)."""
    if not config.init:
        return config
    gen_config = load_generator(resolve_model(config.init)).config
    check_init_norm(gen_config.norm, config.norm)
    return replace(config, scale=gen_config.scale, num_blocks=gen_config.num_blocks,
                   channels=gen_config.channels)


def check_init_norm(source: str, run: str) -> None:
    """A ``none`` checkpoint cannot start a ``batch`` run: BatchNorm statistics cannot be
    recovered from a network without them (the other way round they fold away)."""
    if source == "none" and run == "batch":
        raise TrainingError('the checkpoint has no BatchNorm (norm = "none") and this run '
                            'asks for norm = "batch": train with --norm none')


def init_generator(source: Generator, norm: str) -> Generator:
    """``source`` as the starting point of a run with ``norm``: itself when the norms match;
    for a ``batch`` source and a ``none`` run, the equal ``none`` network (each BatchNorm's
    eval-mode statistics folded into its conv, ``fast.without_batchnorm``)."""
    check_init_norm(source.config.norm, norm)
    return source if source.config.norm == norm else without_batchnorm(source)


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> list[Path]:
    """Never lose a run by accident: refuse to start afresh over an existing one.

    Returns the files to remove once the new run is ready to start: with ``overwrite`` the
    earlier run's files; else the leftovers of a start that never saved (``stale_files``),
    as a folder without a training state holds nothing to resume.
    """
    try:
        check_writable_folder(run_dir)
    except ImageError as e:
        raise TrainingError(f"--out: {e}") from None
    if resume:
        if not (run_dir / STATE_FILE).is_file():
            raise TrainingError(f"nothing to resume in {run_dir}: no {STATE_FILE} (the run "
                                "saved nothing; start it again without --resume)")
        return []
    if overwrite:
        return run_files(run_dir)
    stale = stale_files(run_dir)
    existing = [p for p in run_files(run_dir) if p not in stale]
    names = sorted({p.relative_to(run_dir).parts[0] for p in existing})
    if (run_dir / STATE_FILE).is_file():
        raise TrainingError(
            f"{run_dir} already holds a run ({', '.join(names)}): use --resume to continue "
            "it, --overwrite to start again, or another --out folder")
    if existing:
        raise TrainingError(
            f"{run_dir} holds {', '.join(names)} but no {STATE_FILE} to resume from: use "
            "--overwrite to start again, or another --out folder")
    return stale


def run_files(run_dir: Path) -> list[Path]:
    """The files a run writes that exist in ``run_dir`` (its step checkpoints included)."""
    found = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    return found + sorted((run_dir / CHECKPOINT_DIR).glob("step_*.safetensors"))


def stale_files(run_dir: Path) -> list[Path]:
    """Leftovers of a run that stopped before its first save (a crash, a kill): its own
    ``config.toml`` and ``log.jsonl`` (told from a user's files by their first line), and
    ``curves.png`` beside such a log. Nothing when a training state was saved."""
    if (run_dir / STATE_FILE).exists():
        return []
    config, log = run_dir / CONFIG_FILE, run_dir / LOG_FILE
    stale = [config] if first_line(config) == TOML_HEADER else []
    try:
        ours = json.loads(first_line(log) or "null")["type"] == "start"
    except (ValueError, TypeError, KeyError):
        ours = False
    if ours:
        stale += [log] + [p for p in [run_dir / PLOT_FILE] if p.exists()]
    return stale


def first_line(path: Path) -> str | None:
    """The first line of a text file, None if it cannot be read as one."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return None


class Trainer:
    """The state of one run: networks, optimizers, data stream, step counter, run folder.

    ``rank`` and ``world`` place this process among those torchrun started (0 and 1 alone);
    ``device`` is the one ``distributed.init`` picked for it.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, display: Display,
                 device: torch.device, rank: int = 0, world: int = 1) -> None:
        self.config, self.run_dir, self.display = config, run_dir, display
        self.device, self.share = device, distributed.Shard(rank, world)
        self.main = rank == 0  # the one process that writes the run folder and validates
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError(f"--device {config.device}: CUDA is not available")
        self.dtype = autocast_dtype(config.precision, self.device, cuda_auto="bf16")
        self.channels_last = config.channels_last and prefers_channels_last(self.device, self.dtype)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        torch.manual_seed(config.seed)
        gen_config = GeneratorConfig(scale=config.scale, num_blocks=config.num_blocks,
                                     channels=config.channels, norm=config.norm)
        self.generator = self.place(Generator(gen_config)).train()
        self.ema = EMA(self.generator, config.ema) if config.ema > 0 else None
        self.g_parallel = self.parallel(self.generator)
        self.discriminator: torch.nn.Module | None = None  # models.DISCRIMINATORS
        self.content_loss: losses.ContentLoss | None = None
        self.opt_g: torch.optim.Optimizer | None = None
        self.opt_d: torch.optim.Optimizer | None = None
        self.step, self.nonfinite = 0, 0
        self.best: dict = {}  # {"phase", "metric", "score", "step"}
        self.last_losses: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        self.window = LossWindow()  # losses of the steps not yet read from the device
        self.stop_signal = 0  # the signal (SIGINT, SIGTERM) that asked the loop to stop

        self.data_summary = self.prepare_data()
        self.val_sets = self.load_validation() if config.val and self.main else []
        self.lpips = metrics.load_lpips(config.lpips_weights or None) if self.val_sets else None
        self.vgg: VGGFeatures | None = None  # the GAN phase's, loaded by ``prepare``
        self.resumed: tuple[dict, dict] | None = None  # (tensors, state) of ``load``

    # ------------------------------------------------------------------ setup

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(self.device)
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP for several processes (BatchNorm synchronised with ``sync_bn``), else itself.
        Only the wrapper's ``.module``, the network itself, is saved, averaged and scored."""
        if self.share.count == 1:
            return module
        if self.config.sync_bn:  # in place below the root: the same module, the same state
            module = sync_batchnorm.convert(module, self.device)
        return distributed.parallel(module, self.device)

    def compiled(self, module: torch.nn.Module) -> torch.nn.Module:
        """``compile = "networks"``: the network through ``torch.compile``, else itself."""
        return torch.compile(module) if self.config.compile == "networks" else module

    def compiled_step(self, function: Callable) -> Callable:
        """``compile = "step"``: ``function`` (a part of the step from batch to losses,
        networks included) through ``torch.compile`` as one graph, its backward compiled with
        it (AOTAutograd); else ``function`` itself. On CUDA in ``reduce-overhead`` mode: the
        graph is replayed as a CUDA graph (cudagraph trees), one launch instead of hundreds.

        Kept outside, in eager mode: the data path and the realistic chain (``to_device``,
        variable shapes), the optimizers (fused Adam and its on-device skip, ``found_inf``),
        the EMA (foreach) and validation (the plain model through ``Upscaler``, whose image
        sizes vary). The batch shape is fixed within a phase (global batch / processes), as
        CUDA graphs need: every call of a compiled step sees the same shapes. BatchNorm
        (``norm = "batch"``) updates its running statistics inside the graph, which
        cudagraph trees support; ``step`` is meant for ``norm = "none"`` and was not
        measured with BatchNorm. Several processes (DDP) are refused (``check_compile_mode``).
        """
        if self.config.compile != "step":
            return function
        # dynamic=False: graphs specialised to the phase's one batch shape, as CUDA graphs
        # are (a later run in the same process with other patches compiles its own)
        return torch.compile(function, mode=step_compile_mode(self.device), dynamic=False)

    def prepare_data(self) -> dict:
        cfg = self.config
        found = data.scan_folders(cfg.data, cfg.patch_size, keep_bytes=cfg.cache_mb * 2**20)
        cached = found.decoded is not None
        realistic = cfg.realistic if cfg.degradation == "realistic" else None
        self.dataset = data.PatchDataset(found, cfg.patch_size, cfg.scale, cfg.seed, cached,
                                         realistic)
        # cached bicubic batches are made on the device, their crops drawn in a thread;
        # realistic plans cost far more than a crop: they want worker processes even cached
        cheap = cached and realistic is None
        self.workers = cfg.workers if cfg.workers >= 0 else data.auto_workers(cheap)
        self.left_out = found.reasons  # path -> why it is not used
        return {"images": len(found.paths), "too_small": len(found.too_small),
                "unreadable": len(found.unreadable), "cached": cached,
                "batches": data.batch_path(self.dataset), "workers": self.workers,
                "degradation": cfg.degradation,
                "decoded_mb": round(found.decoded_bytes / 2**20, 1)}

    def load_init(self) -> None:
        """Start the generator from ``config.init`` (architecture already matched; a
        BatchNorm checkpoint starting a ``norm = "none"`` run is folded first, so the run
        starts from the same function)."""
        try:
            source = load_generator(resolve_model(self.config.init))
            source = init_generator(source, self.config.norm)
        except (CheckpointError, TrainingError) as e:
            raise TrainingError(f"--init: {e}") from e
        self.generator.load_state_dict(source.state_dict())
        if self.ema is not None:
            self.ema = EMA(self.generator, self.config.ema)

    def adam(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        betas = (self.config.beta1, self.config.beta2)
        fused = cuda_kernels(self.device)  # one kernel per step, skipped on the device
        return torch.optim.Adam(module.parameters(), lr=self.config.lr, betas=betas, fused=fused)

    def enter_phase(self, phase: Phase) -> None:
        """Fresh optimizers for the phase; the GAN phase builds discriminator and VGG."""
        cfg = self.config
        self.phase = phase
        self.g_forward = self.compiled(self.g_parallel)
        self.pretrain_losses = self.compiled_step(self.pixel_losses)
        self.opt_g = self.adam(self.generator)
        if phase.name == "gan":
            torch.manual_seed(cfg.seed + 1)
            disc = build_discriminator(cfg.discriminator, cfg.disc_channels)
            self.discriminator = self.place(disc).train()
            d_parallel = self.parallel(self.discriminator)
            self.d_forward = self.compiled(d_parallel)
            # The generator step runs D without DDP: D is not updated there, and DDP
            # expects every forward to be followed by a backward reaching D's parameters.
            self.d_judge = (self.d_forward if d_parallel is self.discriminator
                            else self.compiled(self.discriminator))
            self.opt_d = self.adam(self.discriminator)
            if self.content_loss is None:
                self.content_loss = self.place(losses.ContentLoss(
                    self.vgg, cfg.vgg_layer, cfg.vgg_divisor))
                self.content_forward = self.compiled(self.content_loss)
            # three graphs, as D is updated between the generator's forward and its loss
            self.gan_generate = self.compiled_step(self.generate)
            self.gan_d_loss = self.compiled_step(self.discriminator_loss)
            self.gan_g_losses = self.compiled_step(self.generator_losses)
        self.best = {} if self.best.get("phase") != phase.name else self.best

    def build_vgg(self) -> VGGFeatures:
        """The GAN phase's frozen VGG19, on the CPU: loaded when the run starts, before the
        run folder is written, so a missing, corrupt or wrong-network ``--vgg-weights`` file
        is one clear error and leaves nothing behind. ``random`` weights (tests) come from
        their own seed, without touching the global random state."""
        name = self.config.vgg_weights
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 2)
            try:
                return VGGFeatures("vgg19", (self.config.vgg_layer,),
                                   weights=None if name == RANDOM_VGG else name)
            except FileNotFoundError:
                raise TrainingError(f"--vgg-weights {name}: no such file") from None
            except (OSError, ValueError) as e:  # their messages name the file
                raise TrainingError(f"--vgg-weights: {e}") from None

    # ------------------------------------------------------------------ state

    def save(self) -> None:
        """Step checkpoint, latest generator, then the training state (the commit point).
        Rank 0 writes them; the other ranks only note the step."""
        self.settle()  # the non-finite count it saves, and the decision to stop first
        if not self.main:
            self.saved_step = self.step
            return
        model = self.ema.model if self.ema is not None else self.generator
        info = self.training_info()
        ckpt_dir = self.run_dir / CHECKPOINT_DIR
        save_checkpoint(model, ckpt_dir / f"step_{self.step:08d}.safetensors", info)
        prune_checkpoints(ckpt_dir, self.config.keep)
        save_checkpoint(model, self.run_dir / GENERATOR_FILE, info)
        tensors = {**module_tensors(self.generator, "generator"), **rng_tensors(self.device)}
        state = {"step": self.step, "phase": self.phase.name, "nonfinite": self.nonfinite,
                 "best": self.best, "last_val": self.last_val, "last_losses": self.last_losses}
        if self.ema is not None:
            tensors.update(module_tensors(self.ema.model, "ema"))
        for name, optimizer in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            if optimizer is not None:
                opt_tensors, state[name] = optimizer_tensors(optimizer, name)
                tensors.update(opt_tensors)
        if self.discriminator is not None:
            tensors.update(module_tensors(self.discriminator, "discriminator"))
            state["discriminator"] = self.config.discriminator
        save_state(self.run_dir / STATE_FILE, tensors, state)
        self.saved_step = self.step

    def training_info(self) -> dict:
        """The ``training`` metadata of saved checkpoints."""
        cfg = self.config
        return {"phase": self.phase.name, "step": self.step, "phase_step":
                self.step - self.phase.start, "phase_steps": self.phase.steps, "data": cfg.data,
                "losses": self.last_losses, "validation": self.last_val,
                "ema": cfg.ema, "run": self.run_dir.name, "config": cfg.to_dict()}

    def load(self) -> tuple[dict, dict]:
        """Read the state file; the networks are restored now, optimizers in ``restore``.
        A state the config's networks do not fit (another width or discriminator) is a
        TrainingError here, before the run folder changes."""
        tensors, state = load_state(self.run_dir / STATE_FILE)
        self.check_continues(state["phase"], state["step"])
        restore_module(self.generator, tensors, "generator")
        if self.ema is not None and any(k.startswith("ema.") for k in tensors):
            restore_module(self.ema.model, tensors, "ema")
        if any(k.startswith("discriminator.") for k in tensors):  # fits? (restored later)
            cfg = self.config
            saved = state.get("discriminator", "vgg")  # states from before the choice: vgg
            if saved != cfg.discriminator:
                raise TrainingError(
                    f"{self.run_dir / STATE_FILE}: saved with discriminator = {saved!r}, but the "
                    f"config asks for {cfg.discriminator!r}; resume with --discriminator "
                    f"{saved}, or start a new run")
            restore_module(build_discriminator(cfg.discriminator, cfg.disc_channels), tensors,
                           "discriminator")
        self.step, self.nonfinite = state["step"], state["nonfinite"]
        self.best, self.last_val = state["best"], state["last_val"]
        self.last_losses = state["last_losses"]
        restore_rng(tensors, self.device)  # before entering a phase, which draws from it
        return tensors, state

    def check_continues(self, saved_phase: str, step: int) -> None:
        """Refuse a resume whose config would not go on with the saved phase where it
        stopped: a phase the config does not run (``--phase gan`` on a pretraining run would
        count the pretraining steps as GAN steps), or a phase the config ends before the
        saved step (the next one would start late, at a decayed learning rate)."""
        plan = plan_phases(self.config)
        phase = next((p for p in plan if p.name == saved_phase), None)
        path = self.run_dir / STATE_FILE
        if phase is None or step < phase.start:
            hint = (f"resume with --phase all (the GAN phase follows the pretraining), or "
                    f"start a GAN run from its generator: --phase gan --init "
                    f"{self.run_dir / GENERATOR_FILE} --out NEW_FOLDER"
                    if saved_phase == "pretrain" else "resume with --phase gan")
            raise TrainingError(f"{path}: saved in the {saved_phase} phase at step {step}, "
                                f"which --phase {self.config.phase} does not continue; {hint}")
        if phase != plan[-1] and step > phase.end:
            raise TrainingError(
                f"{path}: saved at step {step} of the {saved_phase} phase, which this config "
                f"ends at step {phase.end}: resume with --steps {step} or more")

    def restore(self, tensors: dict, state: dict) -> None:
        """Optimizers and discriminator of the phase the state was saved in."""
        restore_optimizer(self.opt_g, tensors, "opt_g", state["opt_g"])
        if self.discriminator is not None:
            restore_module(self.discriminator, tensors, "discriminator")
            restore_optimizer(self.opt_d, tensors, "opt_d", state["opt_d"])

    # ------------------------------------------------------------------ steps

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def to_device(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of the data stream -> (lr, hr) float in [0, 1], ready for the networks."""
        pair = data.to_training_pair(batch, self.device)
        if not self.channels_last:
            return pair
        return tuple(x.contiguous(memory_format=torch.channels_last) for x in pair)

    def training_pairs(self, stream):
        """The data stream's batches made ready (``to_device``), in order. On a CPU the next
        pair is made by a thread while this step trains: the realistic chain there is ops on
        the same cores as the step, which otherwise wait for it (GPUs queue it instead). The
        pairs are the same either way: each is a pure function of its batch."""
        def made():
            try:
                for batch in stream:
                    yield self.to_device(batch)
            finally:  # the stream's threads and worker processes end with this
                stream.close()

        return data.prefetch(made(), depth=1) if self.device.type == "cpu" else made()

    @staticmethod
    def step_losses(named: dict[str, torch.Tensor]) -> StepLosses:
        """Loss tensors -> one float32 vector and whether all are finite, on the device (no
        host sync; the loop reads them later, see ``loss_window.py``).

        Under torchrun: the means over the ranks, i.e. the losses of the global batch, so
        every rank takes the same decision.
        """
        stacked = torch.stack([v.detach().float() for v in named.values()])
        values = distributed.mean_over_ranks(stacked)
        return StepLosses(tuple(named), values, torch.isfinite(values).all())

    def generate(self, lr: torch.Tensor) -> torch.Tensor:
        """The generator's SR batch, (N, 3, sH, sW), under the run's autocast (bf16 on CUDA:
        bf16 values, unclamped)."""
        with self.autocast():
            return self.g_forward(lr)

    def pixel_losses(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pretrain step's differentiable part: {"pixel": 0-d loss} of lr -> hr."""
        return {"pixel": losses.pixel_loss(self.generate(lr), hr, self.config.pixel_loss)}

    def discriminator_loss(self, hr: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The discriminator's 0-d loss on real ``hr`` and ``fake`` (a detached SR batch)."""
        with self.autocast():
            real_logits, fake_logits = self.d_forward(hr), self.d_forward(fake)
        return losses.discriminator_loss(real_logits, fake_logits, self.config.gan_loss)

    def generator_losses(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's 0-d losses in the GAN phase: content, adversarial (from the
        discriminator, whose parameters the caller has frozen), pixel when weighted, and
        their weighted sum ``g``, the one to minimise."""
        cfg = self.config
        with self.autocast():
            content = self.content_forward(sr, hr)
            adversarial = losses.generator_adversarial_loss(self.d_judge(sr), cfg.gan_loss)
        g_loss = content + cfg.adv_weight * adversarial
        named = {"content": content, "adv": adversarial}
        if cfg.pixel_weight > 0:
            named["pixel"] = losses.pixel_loss(sr, hr, cfg.pixel_loss)
            g_loss = g_loss + cfg.pixel_weight * named["pixel"]
        return {**named, "g": g_loss}

    def begin_step(self) -> None:
        """With CUDA graphs (``compile = "step"`` on CUDA): tell cudagraph trees that a new
        step begins, so the previous step's graph outputs (losses, ``sr``) may be overwritten
        by this step's replays. Nothing kept across steps refers to them: ``step_losses``
        copies the losses into a fresh tensor (``torch.stack``), and ``sr`` lives within its
        step. Without the mark, a replay before the last one's backward is an error."""
        if self.config.compile == "step" and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()

    def pretrain_step(self, lr: torch.Tensor, hr: torch.Tensor) -> StepLosses:
        self.begin_step()
        named = self.pretrain_losses(lr, hr)
        result = self.step_losses(named)
        self.opt_g.zero_grad(set_to_none=True)
        named["pixel"].backward()  # even when not finite: the step, not the backward, is skipped
        optimizer_step(self.opt_g, result.finite)
        return result

    def gan_step(self, lr: torch.Tensor, hr: torch.Tensor) -> StepLosses:
        self.begin_step()
        sr = self.gan_generate(lr)
        d_loss = self.gan_d_loss(hr, sr.detach())
        d_result = self.step_losses({"d": d_loss})
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        optimizer_step(self.opt_d, d_result.finite)

        self.discriminator.requires_grad_(False)  # the generator step leaves D's grads alone
        named = self.gan_g_losses(sr, hr)
        self.discriminator.requires_grad_(True)
        g_result = self.step_losses(named)
        self.opt_g.zero_grad(set_to_none=True)
        named["g"].backward()
        optimizer_step(self.opt_g, g_result.finite)
        return StepLosses(g_result.names + d_result.names,
                          torch.cat([g_result.values, d_result.values]),
                          g_result.finite & d_result.finite)

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR-Y, SSIM-Y (and LPIPS when available) on ``--val``, scored exactly as
        ``srgan benchmark`` scores a model (same degradation, quantisation and border).

        Runs with realistic degradations are scored as ``srgan benchmark --degradation
        realistic-eval`` does (the mean over its clean, JPEG, noise + JPEG and blur + JPEG
        inputs): what such a model is for, and so what picks its best checkpoint."""
        model = self.ema.model if self.ema is not None else self.generator
        was_training = model.training
        precision = "bf16" if self.dtype == torch.bfloat16 else "fp32"
        upscaler = Upscaler(model, device=self.device, precision=precision)  # sets eval mode

        def method(lr_image):
            return upscaler.upscale_tensor(benchmark.pil_to_float(lr_image))

        kind = "realistic-eval" if self.config.degradation == "realistic" else "bicubic"
        scale = self.config.scale
        scores = [score for name, hr_images in self.val_sets
                  for _, make_lr in benchmark.lr_makers(name, kind, scale)
                  for score, _ in benchmark.score_dataset("val", method, name, hr_images, scale,
                                                          self.lpips, make_lr=make_lr)]
        model.train(was_training)
        result = {"psnr": statistics.fmean(s.psnr_y for s in scores),
                  "ssim": statistics.fmean(s.ssim_y for s in scores)}
        if self.lpips is not None:
            result["lpips"] = statistics.fmean(s.lpips for s in scores)
        return result

    def load_validation(self) -> list[tuple[str, list]]:
        """The ``--val`` folders' HR images; unreadable ones and ones too small to score
        (SSIM's 11x11 window inside the border) are left out, each with a message."""
        sets = []
        for folder in map(Path, self.config.val):
            kept, skipped = benchmark.load_dataset(folder, self.config.scale)
            for path, reason in skipped:
                self.display.message(f"{path}: skipped for validation ({reason})")
            if kept:
                sets.append((folder.name, kept))
        if not sets:
            raise TrainingError(f"no usable validation images in {', '.join(self.config.val)}")
        return sets

    def update_best(self, val: dict[str, float]) -> bool:
        """Keep ``best.safetensors``: PSNR-Y when pretraining, LPIPS (else PSNR-Y) in GAN."""
        metric = "lpips" if self.phase.name == "gan" and "lpips" in val else "psnr"
        score = val[metric]
        better = (score < self.best["score"] if metric == "lpips" else score > self.best["score"]
                  ) if self.best else True
        if better:
            self.best = {"phase": self.phase.name, "metric": metric, "score": score,
                         "step": self.step}
            model = self.ema.model if self.ema is not None else self.generator
            save_checkpoint(model, self.run_dir / BEST_FILE, self.training_info())
        return better

    # ------------------------------------------------------------------ the loop

    def log(self, record: dict) -> None:
        if not self.main:
            return
        with open(self.run_dir / LOG_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def trim_log(self) -> None:
        """On resume, drop records written after the state being resumed from."""
        path = self.run_dir / LOG_FILE
        if self.main and path.is_file():
            records = [json.loads(line) for line in path.read_text().splitlines() if line]
            kept = [r for r in records if r.get("step", 0) <= self.step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def prepare(self, resume: bool) -> None:
        """What can still fail before the run folder is written: the saved state of a
        resumed run (checked against the config first, as it is cheap), then the VGG19 of
        the GAN phase. Raises NothingToTrain when a resumed run has no step left."""
        if resume:
            self.resumed = self.load()
            if self.step >= plan_phases(self.config)[-1].end or self.stopped_at_step():
                raise NothingToTrain(f"already at step {self.step}: nothing to train")
        if dict(self.config.phases).get("gan", 0) > 0:
            self.vgg = self.build_vgg()

    def run(self, resume: bool, on_step: Callable[[int], None] | None) -> None:
        cfg = self.config
        resumed = self.resumed
        if self.main:  # only now: a resume that does not fit its state leaves config.toml be
            save_config(cfg, self.run_dir / CONFIG_FILE)
        if resume:
            self.trim_log()
            self.display.message(f"resuming {self.run_dir} at step {self.step}")
        elif cfg.init:
            self.load_init()
        summary = self.data_summary
        self.log({"type": "start", "step": self.step, "resume": resume,
                  "processes": self.share.count, **summary})
        skipped = summary["too_small"] + summary["unreadable"]
        if skipped:
            self.display.message(
                f"skipped {summary['too_small']} images smaller than {cfg.patch_size} px and "
                f"{summary['unreadable']} unreadable files")
            for path, reason in self.left_out.items():
                self.display.message(f"{path}: skipped ({reason})")
        self.saved_step = self.step
        stream = None
        with deferred_interrupt(self.request_stop), contextlib.ExitStack() as ends:
            # the batch stream's threads and worker processes end with the loop, not at exit
            ends.callback(lambda: stream is not None and stream.close())
            for phase in plan_phases(cfg):
                if self.step >= phase.end:
                    continue
                if self.stopped_at_step():
                    break
                self.enter_phase(phase)
                if resumed is not None:  # optimizers only if saved in this very phase
                    tensors, state = resumed
                    if state["phase"] == phase.name:
                        self.restore(tensors, state)
                    resumed = None
                stream = stream or self.training_pairs(data.batches(
                    self.dataset, cfg.batch_size, self.step, self.workers,
                    self.device.type == "cuda", self.share, device=self.device))
                self.run_phase(phase, stream, on_step)
                if self.agreed_stop():
                    break
            if self.step != self.saved_step:
                self.save()
            self.plot()
        if self.stop_requested:
            if self.main:  # said even with --quiet: the user needs to know
                self.display.console.print(
                    f"{describe(self.stop_signal)} at step {self.step}: saved {self.run_dir} "
                    f"(continue with srgan train --out {self.run_dir} --resume)",
                    highlight=False, soft_wrap=True)
            distributed.barrier()  # no rank exits (so torchrun stops none) before it is saved
            raise Interrupted(self.stop_signal)

    def stopped_at_step(self) -> bool:
        """Whether the config's ``stop_at`` step is reached (a run cut short on purpose, e.g.
        to reproduce a run that stopped early; the schedule still spans the whole phase)."""
        return 0 < self.config.stop_at <= self.step

    @property
    def stop_requested(self) -> bool:
        return self.stop_signal > 0

    def request_stop(self, signum: int) -> None:
        """Ctrl-C or SIGTERM (``signum``): stop after the current step, and save."""
        self.stop_signal = signum

    def agreed_stop(self) -> bool:
        """Ctrl-C or SIGTERM reaches the ranks at different moments (or only one of them):
        all stop when one asked to, and report the same signal (SIGTERM over Ctrl-C)."""
        self.stop_signal = distributed.max_over_ranks(self.stop_signal)
        return self.stop_requested

    def stop_now(self, boundary: bool) -> bool:
        """Whether to stop before the next step: one process stops at once after a signal;
        several agree at the next ``boundary`` step (log, validation or save), as a vote
        every step would make every GPU wait every step."""
        if self.share.count == 1:
            return self.stop_requested
        return boundary and self.agreed_stop()

    def run_phase(self, phase: Phase, stream, on_step: Callable[[int], None] | None) -> None:
        cfg = self.config
        schedule = cfg.pretrain_schedule if phase.name == "pretrain" else cfg.gan_schedule
        step_fn = self.pretrain_step if phase.name == "pretrain" else self.gan_step
        self.display.phase(phase.name, self.step, phase.end)
        self.window = LossWindow()
        speed, boundary = SpeedWindow(), True  # timings of the steps since the last log
        while (self.step < phase.end and not self.stop_now(boundary)
               and not self.stopped_at_step()):
            lr_value = learning_rate(cfg, schedule, self.step - phase.start, phase.steps)
            for optimizer in (self.opt_g, self.opt_d if phase.name == "gan" else None):
                for group in optimizer.param_groups if optimizer else []:
                    group["lr"] = lr_value
            with speed.waiting_for_data():
                batch = next(stream)
            step_losses = step_fn(*batch)
            if self.ema is not None:
                self.ema.update(self.generator, step_losses.finite)
            self.step += 1
            speed.step_done()
            self.window.add(self.step, step_losses)
            log_due = self.step % cfg.log_every == 0 or self.step == phase.end
            val_due = self.step % cfg.val_every == 0 or self.step == phase.end
            save_due = self.step % cfg.save_every == 0 or self.step == phase.end
            boundary = log_due or val_due or save_due  # the same steps on every rank
            if boundary:
                self.settle()
            if log_due:  # after settle: the window's time includes the GPU's work
                rate = speed.read(cfg.batch_size)
                self.last_losses = self.window.means() or self.last_losses
                self.log({"type": "train", "phase": phase.name, "step": self.step,
                          "lr": lr_value, **rate.record(), **self.last_losses})
                self.display.update(self.step, rate, self.last_losses)
            else:
                self.display.update(self.step)
            if self.val_sets and val_due:
                with speed.paused():
                    self.last_val = self.validate()
                    best = self.update_best(self.last_val)
                self.log({"type": "val", "phase": phase.name, "step": self.step, "best": best,
                          **self.last_val})
                self.display.update(self.step, val=self.last_val)
            if save_due:
                with speed.paused():
                    self.save()
            if on_step is not None:
                on_step(self.step)

    def settle(self) -> None:
        """Read the pending steps' losses (one host-device sync): count the non-finite
        ones in a row, and stop after ``max_nonfinite``. Before anything is logged,
        validated or saved, so a run never saves past the step it should have stopped at."""
        for step, values, finite in self.window.read():
            if finite:
                self.nonfinite = 0
            else:
                self.on_nonfinite(step, values)

    def on_nonfinite(self, step: int, values: dict[str, float]) -> None:
        """A non-finite loss at ``step``: its update was skipped; stop after
        ``max_nonfinite`` in a row."""
        self.nonfinite += 1
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        self.log({"type": "nonfinite", "phase": self.phase.name, "step": step,
                  "losses": {k: str(v) for k, v in values.items()}})
        self.display.message(f"step {step}: non-finite loss ({bad}), update skipped")
        if self.nonfinite >= self.config.max_nonfinite:
            saved = f"last saved: step {self.saved_step}" if self.saved_step else "nothing saved"
            raise TrainingError(
                f"stopped at step {step}: non-finite loss ({bad}) for {self.nonfinite} "
                f"steps in a row ({saved}); lower --lr or check the data")

    def plot(self) -> None:
        if self.main:
            plot_run(self.run_dir)


def plot_run(run_dir: Path) -> Path | None:
    """Draw ``curves.png`` from ``log.jsonl``: losses (log10) and validation scores."""
    path = run_dir / LOG_FILE
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    loss_curves: dict[str, list] = {}
    val_curves: dict[str, dict[str, list]] = {"psnr": {}, "ssim": {}, "lpips": {}}
    for r in records:
        if r["type"] == "train":
            for key in ("pixel", "content", "adv", "g", "d"):
                if key in r and r[key] > 0:
                    loss_curves.setdefault(key, []).append((r["step"], math.log10(r[key])))
        elif r["type"] == "val":
            for key, curves in val_curves.items():
                if key in r:
                    curves.setdefault(r["phase"], []).append((r["step"], r[key]))
    return plot_curves({"training losses (log10)": loss_curves,
                        "validation PSNR-Y (dB)": val_curves["psnr"],
                        "validation SSIM-Y": val_curves["ssim"],
                        "validation LPIPS (lower is better)": val_curves["lpips"]},
                       run_dir / PLOT_FILE)


def check_compile_mode(config: TrainConfig) -> None:
    """Refuse ``compile = "step"`` with several processes, before joining their group: DDP
    reduces gradients from hooks that fire during the backward, which a compiled (and on
    CUDA graphed) step does not run as DDP expects; ``networks`` is the mode DDP supports."""
    processes = int(os.environ["WORLD_SIZE"]) if distributed.under_torchrun() else 1
    if config.compile == "step" and processes > 1:
        raise TrainingError('compile = "step" does not run under torchrun with several '
                            'processes: use --compile networks (or off)')


def warn_ignored_options(config: TrainConfig, console: Console) -> None:
    """Say when options of the config have no effect (said even with --quiet)."""
    if config.degradation != "realistic" and config.realistic != RealisticDegradation():
        console.print(f"warning: the [realistic] table is ignored: degradation is "
                      f"{config.degradation!r} (set degradation = \"realistic\" to use it)",
                      markup=False, highlight=False, soft_wrap=True)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = True,
    console: Console | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """Run (or ``resume``) the training ``config`` describes in ``run_dir``.

    Returns the path of the trained generator (``RUN_DIR/generator.safetensors``). Raises
    ``TrainingError`` for bad options, missing data and repeated non-finite losses,
    ``NothingToTrain`` (a TrainingError) when a resumed run is already at its last step, and
    ``signals.Interrupted`` (a KeyboardInterrupt) after saving when Ctrl-C or SIGTERM
    stopped it. ``on_step(step)`` is called after every step. Under torchrun every rank
    calls this; ``config.batch_size`` is the global batch, split evenly over the ranks.
    """
    run_dir = Path(run_dir)
    if not config.data:
        raise TrainingError("no training data: pass --data DIR (or data = [...] in the config)")
    if config.phase == "gan" and not config.init and not resume:
        raise TrainingError("the GAN phase starts from a pretrained generator: pass --init "
                            "CHECKPOINT, or use --phase all")
    check_compile_mode(config)
    rank, world, device = distributed.init(config.device)  # under torchrun: join the group
    data.rank_batch_size(config.batch_size, world)  # refuse an uneven split before writing
    main = rank == 0
    stale = check_run_dir(run_dir, resume, overwrite) if main else []
    if not resume:
        try:
            config = resolve_init(config)
        except SrganError as e:
            raise TrainingError(f"--init: {e}") from e
    with Display(quiet or not main, console) as display:
        # data, validation images and networks first: a run that cannot start (or Ctrl-C
        # now) leaves no run folder behind, so the same command can simply be run again
        trainer = Trainer(config, run_dir, display, device, rank, world)
        try:
            trainer.prepare(resume)
        except NothingToTrain:  # every rank decided so from the same state
            distributed.finish()
            raise
        if main:
            warn_ignored_options(config, display.console)
            for path in stale:
                path.unlink(missing_ok=True)
            run_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier()  # the other ranks read the run folder once rank 0 has prepared it
        trainer.run(resume, on_step)
    distributed.finish()
    return run_dir / GENERATOR_FILE
