"""Generator checkpoints: safetensors files that carry their own architecture.

A checkpoint is a safetensors file holding the generator's state dict; its metadata
(string to string) holds everything needed to rebuild and trust it:

* ``format`` = ``srgan-checkpoint``, ``format_version`` = ``1``
* ``architecture`` = ``srresnet`` and ``config``: JSON of ``GeneratorConfig`` (its ``norm``
  too; files without it, the shipped weights among them, are ``batch``)
* ``scale``: the upscaling factor (also inside ``config``; repeated for quick reading)
* ``value_range``: ``[0, 1]``, the image convention of ``models.py``
* ``training``: JSON of how it was trained (data, phase, steps, losses, ...), free-form

A model is named in one of three ways (see ``resolve_model``): a registry name
(``srresnet-x4``, ``srgan-x4``: the shipped weights, sha256-verified), a local path,
or ``hf://owner/repo/path/file.safetensors[@revision]`` on the Hugging Face Hub.
Pickle files (``.pth``, ``.pt``, ...) are refused: loading a pickle can run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import CheckpointError
from .fast import without_batchnorm
from .models import VALUE_RANGE, Generator, GeneratorConfig

FORMAT_NAME = "srgan-checkpoint"
FORMAT_VERSION = 1
HUB_PREFIX = "hf://"
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl", ".pickle", ".bin")


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: a file in ``weights/`` (shipped) and optionally a Hub source for it."""

    name: str
    filename: str
    sha256: str | None
    description: str
    hub: str | None = None  # hf://... to download from when the file is not shipped


REGISTRY: dict[str, RegisteredModel] = {
    "srresnet-x4": RegisteredModel(
        name="srresnet-x4",
        filename="srresnet-x4.safetensors",
        sha256="0d5ad39edb44c2dcf3809ccfb5ab52f48051bc4324ed5bd5c01cebf12c386797",
        description="SRResNet x4 trained with a pixel loss: highest PSNR, smoother textures",
    ),
    "srgan-x4": RegisteredModel(
        name="srgan-x4",
        filename="srgan-x4.safetensors",
        sha256="c241ecf2ac3cb1d8b8cf85587d26dba4fe2dd7d71bb04b02c48004676c9b2324",
        description="SRGAN x4 (VGG54 + adversarial): photo-realistic textures",
    ),
    "srgan-real-x4": RegisteredModel(
        name="srgan-real-x4",
        filename="srgan-real-x4.safetensors",
        sha256="9d2aa311fa70cf732267066deb89257bf9236727d1db7daba68e752acebfef5c",
        description="SRResNet x4 fine-tuned on JPEG, noise and blur: for real photos",
    ),
}
# the default of upscale: it beats srresnet-x4 on every degraded realistic-eval row (docs/models.md)
DEFAULT_MODEL = "srgan-real-x4"

MIXES: dict[str, tuple[str, str]] = {
    "perception": ("srresnet-x4", "srgan-x4"),
    "denoise": ("srresnet-x4", "srgan-real-x4"),
}
"""The knobs that mix two shipped models' weights (``interpolate_generators``), and their
ends: 0 = the first, 1 = the second. ``perception`` goes from fidelity to realistic
textures, ``denoise`` from the clean-input model to the one for real photos (its JPEG,
noise and blur removed), which was fine-tuned from it, so the two mix weight by weight."""


def weights_dir() -> Path:
    """The folder of shipped checkpoints: inside the installed package, else the checkout's."""
    packaged = Path(__file__).resolve().parent / "weights"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "weights"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- saving


def checkpoint_metadata(config: GeneratorConfig, training: dict | None = None) -> dict[str, str]:
    """The metadata block written into every checkpoint."""
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "architecture": "srresnet",
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "scale": str(config.scale),
        "value_range": json.dumps(list(VALUE_RANGE)),
        "training": json.dumps(training or {}, sort_keys=True),
        "created_by": f"srgan-cli {__version__}",
    }


def save_checkpoint(
    generator: Generator, path: str | os.PathLike, training: dict | None = None
) -> Path:
    """Write ``generator`` as a safetensors checkpoint, atomically (temp file, then rename)."""
    state = {k: v.to(torch.float32) for k, v in generator.state_dict().items()}
    return save_safetensors(state, path, checkpoint_metadata(generator.config, training))


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]
) -> Path:
    """Write tensors (moved to the CPU) and string metadata to ``path`` atomically.

    The file is written beside its target and renamed into place, so an interrupted save
    never leaves a truncated checkpoint under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- loading


def refuse_pickle(path: Path) -> None:
    """Raise a clear error for pickle-based checkpoints instead of unpickling them."""
    looks_like_pickle = path.suffix.lower() in PICKLE_SUFFIXES
    if not looks_like_pickle and path.is_file():
        with open(path, "rb") as f:
            head = f.read(2)
        looks_like_pickle = head in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
    if looks_like_pickle:
        raise CheckpointError(
            f"refusing to load {path}: it is a Python pickle (.pth/.pt), and loading a pickle "
            "can run arbitrary code. srgan reads only .safetensors. To convert a state dict you "
            "trust: python -c \"import torch; from safetensors.torch import save_file; "
            f"save_file(torch.load('{path}', weights_only=True), "
            f"'{path.with_suffix('.safetensors')}')\""
        )


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (empty dict if it has none)."""
    path = Path(path)
    refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def infer_config(state: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Rebuild the architecture from tensor shapes, for files converted without srgan metadata."""
    try:
        head = state["head.0.weight"]  # (channels, in_channels, 9, 9)
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
        stages = {int(m.group(1)) for k in state if (m := re.match(r"upsample\.(\d+)\.", k))}
    except KeyError as e:
        raise CheckpointError(f"not an SRResNet state dict (missing {e})") from e
    batchnorm = any(re.match(r"(body\.\d+\.bn\d|body_tail\.1)\.", k) for k in state)
    return GeneratorConfig(
        scale=2 ** len(stages), num_blocks=len(blocks),
        channels=head.shape[0], in_channels=head.shape[1], norm="batch" if batchnorm else "none",
    )


def checkpoint_config(
    path: Path, metadata: dict[str, str], state: dict[str, torch.Tensor]
) -> GeneratorConfig:
    """The architecture a checkpoint describes (its ``config`` metadata, else its tensor
    shapes); CheckpointError with one line for metadata that is not a valid config."""
    try:
        if "config" not in metadata:
            return infer_config(state)
        values = json.loads(metadata["config"])
        if not isinstance(values, dict):
            raise ValueError("config is not a JSON object")
        return GeneratorConfig.from_dict(values)
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        reason = " ".join(str(e).split())
        raise CheckpointError(f"{path}: bad checkpoint metadata ({reason})") from None


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """Build the generator a checkpoint file describes and load its weights (eval mode)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a directory: {path}")
    metadata = read_metadata(path)
    try:
        version = int(metadata.get("format_version", FORMAT_VERSION))
    except ValueError:
        raise CheckpointError(f"{path}: bad checkpoint metadata: format_version "
                              f"{metadata['format_version']!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this srgan "
            f"understands ({FORMAT_VERSION}); upgrade srgan-cli"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    config = checkpoint_config(path, metadata, state)
    generator = Generator(config)
    try:
        generator.load_state_dict(state)
    except RuntimeError as e:
        first_line = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not match its architecture ({first_line})"
        ) from e
    return generator.to(device).eval()


# --------------------------------------------------------------------------- naming models


def parse_hub_spec(spec: str) -> tuple[str, str, str | None]:
    """``hf://owner/repo/path/file.safetensors[@rev]`` -> (repo_id, filename, revision)."""
    rest = spec[len(HUB_PREFIX):]
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts):
        raise CheckpointError(
            f"bad Hub model name {spec!r}: expected hf://owner/repo/path/file.safetensors[@revision]"
        )
    return "/".join(parts[:2]), "/".join(parts[2:]), revision


def download_from_hub(spec: str) -> Path:
    """Download (or reuse from the Hugging Face cache) the file an ``hf://`` name points to."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, filename, revision = parse_hub_spec(spec)
    refuse_pickle(Path(filename))  # by its name, before anything is downloaded
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: first
        raise CheckpointError(
            f"{spec}: cannot reach the Hugging Face Hub and the file is not in the local cache"
        ) from e
    except EntryNotFoundError as e:
        raise CheckpointError(f"{spec}: no file {filename!r} in Hub repo {repo_id}") from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"{spec}: no revision {revision!r} in Hub repo {repo_id}") from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(f"{spec}: Hub repo {repo_id} not found (or private)") from e
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"{spec}: download failed ({str(e).splitlines()[0]})") from e


def verify_sha256(path: Path, expected: str, name: str) -> None:
    actual = sha256_file(path)
    if actual != expected.lower():
        raise CheckpointError(
            f"{name}: checksum mismatch for {path} (sha256 {actual[:16]}..., expected "
            f"{expected[:16]}...): the file is corrupt or not the released weights; delete it "
            "and download again"
        )


def resolve_model(
    spec: str, sha256: str | None = None, registry: dict[str, RegisteredModel] | None = None
) -> Path:
    """Turn a model name into a verified local checkpoint path.

    ``spec`` is a registry name, an ``hf://`` Hub name, or a local path. Registry files are
    checked against their sha256; ``sha256`` adds the same check for any other name.
    """
    registry = REGISTRY if registry is None else registry
    if spec in registry:
        entry = registry[spec]
        path = weights_dir() / entry.filename
        if not path.is_file():
            if entry.hub is None:
                raise CheckpointError(
                    f"model {spec!r} is not available: {path} is missing (a source checkout "
                    "or installed wheel ships it in weights/; reinstall srgan-cli), or pass "
                    "--model PATH_OR_hf://... to use another"
                )
            path = download_from_hub(entry.hub)
        expected = entry.sha256 or sha256
    elif spec.startswith(HUB_PREFIX):
        path, expected = download_from_hub(spec), sha256
    else:
        path, expected = Path(spec).expanduser(), sha256
        refuse_pickle(path)
        if not path.exists():
            known = ", ".join(sorted(registry))
            raise CheckpointError(f"no model named {spec!r}: not a file, and not one of: {known}")
    if expected:
        verify_sha256(path, expected, spec)
    return path


def load_model(
    spec: str = DEFAULT_MODEL, device: str | torch.device = "cpu", sha256: str | None = None
) -> Generator:
    """Load a generator by registry name, local path or ``hf://`` name (eval mode)."""
    path = resolve_model(spec, sha256=sha256)
    return load_generator(path, device=device)


# --------------------------------------------------------------------------- interpolation


def interpolate_generators(fidelity: Generator, realism: Generator, t: float) -> Generator:
    """A generator whose weights are ``(1 - t) * fidelity + t * realism`` (ESRGAN's network
    interpolation, Wang et al. 2018): one knob from the PSNR model to the GAN model.

    Both networks must share one architecture (``GeneratorConfig``) but for ``norm``; ``t``
    is in [0, 1]. ``t = 0`` and ``t = 1`` return exact copies of ``fidelity`` and ``realism``
    (of the folded one, below, when their ``norm`` differs). Float tensors (weights, BN
    statistics) are mixed; integer ones (``num_batches_tracked``) are taken from
    ``fidelity``. The result is on ``fidelity``'s device, in eval mode.

    A ``batch`` and a ``none`` network cannot be mixed weight by weight (one has tensors the
    other lacks), so the ``batch`` one is first folded into the equal ``none`` network
    (``fast.without_batchnorm``): the weights a ``none`` run started from it (``--init``)
    began with. The mix is then a ``none`` network; its ends compute the two inputs'
    functions up to float rounding.
    """
    if not 0.0 <= t <= 1.0:
        raise CheckpointError(f"perception must be between 0 and 1, got {t}")
    if replace(fidelity.config, norm="none") != replace(realism.config, norm="none"):
        raise CheckpointError(
            "cannot mix two different architectures: "
            f"{fidelity.config.to_dict()} and {realism.config.to_dict()} (the scale, blocks "
            "and channels must match)"
        )
    if fidelity.config.norm != realism.config.norm:
        fidelity, realism = (g if g.config.norm == "none" else without_batchnorm(g)
                             for g in (fidelity, realism))
    a, b = fidelity.state_dict(), realism.state_dict()
    mixed = {}
    for name, value in a.items():
        other = b[name].to(value.device)
        if t == 0.0 or not value.is_floating_point():
            mixed[name] = value.clone()
        elif t == 1.0:
            mixed[name] = other.clone()
        else:
            mixed[name] = torch.lerp(value.double(), other.double(), t).to(value.dtype)
    out = Generator(fidelity.config).to(next(fidelity.parameters()).device)
    out.load_state_dict(mixed)
    return out.eval()


def load_mixed_model(knob: str, t: float, device: str | torch.device = "cpu") -> Generator:
    """The two shipped models of ``MIXES[knob]`` mixed at ``t`` (0 = the first, 1 = the
    second)."""
    if not 0.0 <= t <= 1.0:
        raise CheckpointError(f"{knob} must be between 0 and 1, got {t}")
    first, second = (load_model(name, device=device) for name in MIXES[knob])
    return interpolate_generators(first, second, t)

