"""Image files in and out (minimal stand-in; the full version handles every mode and format)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

DEFAULT_MAX_PIXELS = 178_956_970
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")


@dataclass
class Picture:
    rgb: torch.Tensor  # (3, H, W) float32 in [0, 1]
    alpha: torch.Tensor | None = None  # (1, H, W) float32 in [0, 1]
    warnings: list[str] = field(default_factory=list)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    try:
        with Image.open(path) as im:
            if im.width * im.height > max_pixels:
                raise ImageError(f"{path}: image too large")
            im = im.convert("RGBA")
            t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"{path}: {e}") from e
    t = t.view(im.height, im.width, 4).permute(2, 0, 1).float() / 255
    alpha = None if bool((t[3] == 1).all()) else t[3:].contiguous()
    return Picture(t[:3].contiguous(), alpha)


def bleed_colour(picture: Picture) -> torch.Tensor:
    return picture.rgb


def upscale_alpha(alpha: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(alpha[None], scale_factor=scale, mode="bicubic")[0].clamp(0, 1)


def scaled(picture: Picture, rgb: torch.Tensor, alpha: torch.Tensor | None, scale: int) -> Picture:
    return replace(picture, rgb=rgb, alpha=alpha, warnings=[])


def write_image(picture: Picture, path: Path, quality: int = 95) -> None:
    t = picture.rgb if picture.alpha is None else torch.cat([picture.rgb, picture.alpha])
    arr = (t * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    im = Image.fromarray(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        im.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find_images(folder: Path, recursive: bool = True) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS)


def plan_outputs(inputs, input_root, out_dir, out_file, suffix, ext):
    jobs = []
    for src in inputs:
        if out_file is not None:
            dst = out_file
        else:
            rel = src.relative_to(input_root) if input_root else Path(src.name)
            dst = (out_dir or src.parent) / rel.with_name(rel.stem + suffix + (ext or src.suffix))
        jobs.append((src, dst))
    return jobs, []
