"""srgan: 4x photo super-resolution with SRGAN (Ledig et al., CVPR 2017).

The public API is small:

    from srgan_cli import Upscaler, load_model
    Upscaler("srgan-x4").upscale_file("photo.jpg", "photo_x4.png")

Images are float tensors (N, 3, H, W), RGB, values in [0, 1] throughout (see ``models.py``).
"""

__version__ = "0.1.0"

from .checkpoints import load_model, save_checkpoint  # noqa: E402
from .errors import CheckpointError, ImageError, InputError, SrganError  # noqa: E402
from .models import Discriminator, Generator, GeneratorConfig  # noqa: E402
from .upscale import Upscaler  # noqa: E402

__all__ = [
    "CheckpointError",
    "Discriminator",
    "Generator",
    "GeneratorConfig",
    "ImageError",
    "InputError",
    "SrganError",
    "Upscaler",
    "__version__",
    "load_model",
    "save_checkpoint",
]
