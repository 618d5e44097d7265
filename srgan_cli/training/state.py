"""The training state for exact resume, as one safetensors file (no pickles).

``RUN_DIR/state.safetensors`` holds, as tensors, the networks' state dicts (``generator.*``,
``ema.*``, ``discriminator.*``), the optimizer states (``opt_g.<param>.<name>``,
``opt_d.<param>.<name>``) and the RNG states (``rng.torch``; ``rng.cuda.<i>`` for a run on
CUDA only: uint8). Its metadata key ``state`` is a JSON document with everything else:
step, phase, optimizer param groups, best validation score, the kind of discriminator
(``vgg`` / ``unet``). One file written atomically means the tensors and the JSON can never
disagree.

Learning rates are a pure function of the step (``train.learning_rate``) and training
batches a pure function of (seed, step) (``data.py``), so neither needs saving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..checkpoints import save_safetensors
from ..errors import TrainingError

STATE_FORMAT = "srgan-train-state"
STATE_VERSION = 1


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict into tensors (``prefix.<param>.<name>``) and JSON."""
    state = optimizer.state_dict()
    tensors, extra = {}, {}
    for param, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{param}.{name}"] = value
            else:
                extra.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "extra": extra}


# How an optimizer runs, not what it learned: taken from the optimizer being restored into,
# so a state saved on a GPU (fused Adam) resumes on a CPU and back.
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, info: dict
) -> None:
    """Inverse of ``optimizer_tensors``, onto ``optimizer`` as it was built for this machine.

    The saved state tensors come back as contiguous CPU tensors; each one shaped like its
    parameter is then laid out exactly like it (device, dtype and strides: channels_last
    too). Fused Adam needs that: on CUDA it refuses mismatched tensors, on CPU it silently
    pairs the wrong elements.
    """
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            param, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(param), {})[name] = value
    for param, values in info["extra"].items():
        state.setdefault(int(param), {}).update(values)
    if len(info["param_groups"]) != len(optimizer.param_groups):
        raise TrainingError(f"training state: {prefix} has {len(info['param_groups'])} "
                            f"parameter groups, the optimizer {len(optimizer.param_groups)}")
    groups = [{**saved, **{k: current[k] for k in IMPLEMENTATION_KEYS if k in current}}
              for saved, current in zip(info["param_groups"], optimizer.param_groups, strict=True)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    for group in optimizer.param_groups:
        for param in group["params"]:
            param_state = optimizer.state.get(param, {})
            for name, value in param_state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    param_state[name] = laid_out_like(value, param)


def laid_out_like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` on ``param``'s device, in ``param``'s dtype (if floating) and strides."""
    dtype = param.dtype if value.is_floating_point() else value.dtype
    if (value.device, value.dtype, value.stride()) == (param.device, dtype, param.stride()):
        return value
    return torch.empty_like(param, dtype=dtype).copy_(value)


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def restore_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Load the ``prefix.*`` tensors into ``module``; a TrainingError if they do not fit it."""
    start = len(prefix) + 1
    saved = {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    try:
        module.load_state_dict(saved)
    except RuntimeError as e:  # missing / unexpected keys, other shapes
        raise TrainingError(f"training state: the saved {prefix} does not fit the network the "
                            "config builds (resume with the options it was saved with)") from e


def rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG states a run on ``device`` uses, as uint8 tensors: the CPU generator's
    (``rng.torch``) always, every CUDA generator's (``rng.cuda.<i>``) for a CUDA run only.

    Keyed on the run's device, never on whether CUDA happens to be initialised in this
    process (other work in it may have done that): a CPU run saves the same keys anywhere.
    """
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    """Set the RNG states ``rng_tensors`` saved; CUDA ones only for a CUDA run."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and device.type == "cuda":
        torch.cuda.set_rng_state_all(cuda)


def save_state(path: Path, tensors: dict[str, torch.Tensor], info: dict) -> Path:
    """Write tensors + JSON ``info`` to one safetensors file, atomically."""
    metadata = {"format": STATE_FORMAT, "format_version": str(STATE_VERSION),
                "state": json.dumps(info, sort_keys=True)}
    return save_safetensors(tensors, path, metadata)


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, info) written by ``save_state``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as e:
        raise TrainingError(f"{path}: unreadable training state ({e})") from e
    if metadata.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path}: not an srgan training state file")
    if int(metadata.get("format_version", 0)) > STATE_VERSION:
        raise TrainingError(f"{path}: training state from a newer srgan; upgrade srgan-cli")
    return tensors, json.loads(metadata["state"])


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Keep only the ``keep`` newest ``step_*.safetensors`` files of ``folder``."""
    old = sorted(folder.glob("step_*.safetensors"))[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
