"""Shared fixtures: tiny generators and checkpoints that the tests make themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srgan_cli.checkpoints import save_checkpoint
from srgan_cli.models import Generator, GeneratorConfig

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def hr_dir(tmp_path: Path) -> Path:
    """Three random 48x40 (width x height) RGB training images."""
    folder = tmp_path / "hr"
    folder.mkdir()
    for seed in range(3):
        pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{seed}.png")
    return folder


@pytest.fixture
def shared_dir() -> Path:
    """The shared data folder beside the checkout; tests that need it skip without it."""
    if not SHARED_DIR.is_dir():
        pytest.skip("../shared is not present")
    return SHARED_DIR


TINY = GeneratorConfig(scale=4, num_blocks=1, channels=8)


def make_generator(config: GeneratorConfig = TINY, seed: int = 0) -> Generator:
    """A small generator with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    gen = Generator(config)
    for m in gen.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return gen.eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A saved x4 checkpoint of a 1-block, 8-channel generator."""
    return save_checkpoint(make_generator(), tmp_path / "tiny-x4.safetensors",
                           training={"phase": "test"})


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``python -m srgan_cli ARGS`` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "srgan_cli", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)
