"""srgan: 4x photo super-resolution with SRGAN (Ledig et al., CVPR 2017).

The public API is small:

    from srgan_cli import Upscaler, load_model
    Upscaler("srresnet-x4").upscale_file("photo.jpg", "photo_x4.png")

Images are float tensors (N, 3, H, W), RGB, values in [0, 1] throughout (see ``models.py``).

The names below are imported on first use (PEP 562), so ``import srgan_cli`` itself is
instant and the ``srgan`` command can answer Ctrl-C during its (slow) torch import with one
line instead of a traceback (see ``__main__.run``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CheckpointError": "errors",
    "Discriminator": "models",
    "Generator": "models",
    "GeneratorConfig": "models",
    "ImageError": "errors",
    "InputError": "errors",
    "SrganError": "errors",
    "UNetDiscriminator": "models",
    "Upscaler": "upscale",
    "load_model": "checkpoints",
    "save_checkpoint": "checkpoints",
}

__all__ = [
    "CheckpointError",
    "Discriminator",
    "Generator",
    "GeneratorConfig",
    "ImageError",
    "InputError",
    "SrganError",
    "UNetDiscriminator",
    "Upscaler",
    "__version__",
    "load_model",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from .checkpoints import load_model, save_checkpoint
    from .errors import CheckpointError, ImageError, InputError, SrganError
    from .models import Discriminator, Generator, GeneratorConfig, UNetDiscriminator
    from .upscale import Upscaler


def __getattr__(name: str) -> Any:
    """Import an exported name's module on first use."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
