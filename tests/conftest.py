"""Shared fixtures and helpers: tiny generators, checkpoints and images that the tests make
themselves, and the CLI run in this process or in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from srgan_cli.checkpoints import save_checkpoint
from srgan_cli.cli import main
from srgan_cli.models import Generator, GeneratorConfig
from srgan_cli.upscale import Upscaler

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


def cpu_upscaler(**options) -> Upscaler:
    """An Upscaler of ``make_generator()`` on the CPU in fp32 (exact values), with ``options``."""
    return Upscaler(make_generator(), device="cpu", precision="fp32", **options)


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


def invoke(*args) -> Result:
    """Run ``srgan ARGS`` in this process (click's CliRunner); arguments may be paths."""
    return CliRunner().invoke(main, [*map(str, args)])


def one_line_error(result: Result, text: str | None = None, exit_code: int = 1) -> None:
    """The command failed with ``exit_code`` and no traceback; given ``text``, it said so in
    exactly one ``error:`` line containing ``text``."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    if text is not None:
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and text in errors[0], result.output


def png(path: Path, size: tuple[int, int] = (5, 5), colour=(200, 30, 30)) -> Path:
    """A flat RGB PNG of ``size`` (width, height) at ``path``, its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def keep_signal_handlers():
    """The CLI installs a SIGTERM handler in this process: put the earlier ones back."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in before.items():
        signal.signal(s, handler)
