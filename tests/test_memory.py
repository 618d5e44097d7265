"""How much memory upscaling may use (memory.py): --max-memory sizes, the host and device
budgets, what the machine and its cgroup have left, and the tile sizes --tile auto picks from
them. CPU only, offline; GPU memory is mocked."""

import numpy as np
import pytest
import torch
from conftest import cpu_upscaler, invoke, make_generator, png

from srgan_cli import memory
from srgan_cli.errors import SrganError
from srgan_cli.upscale import Upscaler

# ------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("text, size", [("4GiB", 4 * 2**30), ("512MB", 512 * 10**6),
                                        ("2g", 2 * 10**9), ("1.5 KiB", 1536), ("1000", 1000)])
def test_parse_size(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "4 GiBs", "-1GB", "0", "GB"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError):
        memory.parse_size(text)


def test_parse_size_takes_ints_and_strings_only():
    assert memory.parse_size(np.int64(4096)) == 4096
    for bad in (1.5, 4e9, True, None):
        with pytest.raises(ValueError, match="expected a number of bytes"):
            memory.parse_size(bad)


# ----------------------------------------------------------------------------- budgets


def test_max_memory_on_cpu_is_capped_at_the_available_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 25 * 10**9)
    assert memory.host_budget(2**40) == 25 * 10**9  # --max-memory 1TiB on a 25 GB machine
    assert memory.host_budget(2**30) == 2**30  # below the machine: the value itself
    assert memory.host_budget(None) == memory.DEFAULT_HOST_BUDGET
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * 2**30)
    assert memory.host_budget(None) == 2**30  # default: at most half of what is available
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    assert memory.host_budget(None) == memory.DEFAULT_HOST_BUDGET


def test_available_memory_reads_meminfo_and_the_cgroup_limit(monkeypatch):
    files = {"/proc/meminfo": 8 * 2**30, "/sys/fs/cgroup/memory.max": 3 * 2**30,
             "/sys/fs/cgroup/memory.current": 2**30}
    monkeypatch.setattr(memory, "_read_int", lambda path, key=None: files.get(path))
    assert memory.available_memory() == 2 * 2**30  # what the container has left
    del files["/sys/fs/cgroup/memory.max"]
    assert memory.available_memory() == 8 * 2**30


def test_read_int_parses_meminfo_lines_and_cgroup_files(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal: 16000 kB\nMemAvailable:    1000 kB\n")
    (tmp_path / "max").write_text("max\n")
    (tmp_path / "current").write_text("4096\n")
    assert memory._read_int(str(tmp_path / "meminfo"), "MemAvailable") == 1000 * 1024
    assert memory._read_int(str(tmp_path / "max")) is None  # no limit
    assert memory._read_int(str(tmp_path / "current")) == 4096
    assert memory._read_int(str(tmp_path / "absent")) is None


# -------------------------------------------------------------------------- auto tiles


def test_auto_tile_from_a_mocked_free_gpu_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 80 * 2**30))
    cuda = torch.device("cuda")
    assert memory.device_budget(cuda, None) == 10 * 2**30
    assert memory.device_budget(cuda, 4 * 2**30) == 4 * 2**30  # --max-memory caps it
    budget, per_pixel, overlap = 4 * 2**30, 10_000, 40
    tile = memory.auto_tile(4000, 6000, overlap, per_pixel, budget)
    side = tile + 2 * overlap
    assert tile % 8 == 0
    assert side**2 * per_pixel <= memory.SAFETY * budget < (side + 8) ** 2 * per_pixel
    assert memory.auto_tile(100, 100, overlap, per_pixel, budget) is None  # fits: one pass
    assert memory.auto_tile(4000, 6000, overlap, per_pixel, 2**20) == memory.MIN_TILE


def test_upscaler_auto_tile_follows_max_memory():
    gen = make_generator()
    roomy = Upscaler(gen, device="cpu", precision="fp32", tile="auto")
    assert roomy.tile_for(64, 64) is None
    tight = Upscaler(gen, device="cpu", precision="fp32", tile="auto", max_memory="50MB")
    tile = tight.tile_for(2000, 3000)
    assert tile is not None and memory.MIN_TILE <= tile < 2000
    with pytest.raises(SrganError, match="--max-memory"):
        Upscaler(gen, device="cpu", max_memory="plenty")


def test_a_6000x4000_image_is_tiled_despite_max_memory_1tib(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 25 * 10**9)
    up = cpu_upscaler(max_memory="1TiB")
    assert 4000 * 6000 * up.bytes_per_pixel() > 25 * 10**9, "one pass would not fit"
    assert up.tile_for(4000, 6000) is not None


def test_max_memory_below_the_smallest_tile_is_warned(tmp_path, tiny_checkpoint):
    up = cpu_upscaler(max_memory="1B")
    need = memory.smallest_tile_bytes(up.overlap, up.bytes_per_pixel())
    assert up.memory_warning() == (
        f"--max-memory (1 bytes) is less than the smallest tile needs (about "
        f"{need / 1e6:,.0f} MB for {memory.MIN_TILE}-pixel tiles); running those anyway")
    assert cpu_upscaler(max_memory="4GiB").memory_warning() is None
    assert cpu_upscaler(max_memory="1B", tile=0).memory_warning() is None  # not auto
    result = invoke("upscale", png(tmp_path / "a.png"), "--model", tiny_checkpoint,
                    "--max-memory", "1B")
    assert result.exit_code == 0, result.output
    assert "warning: --max-memory (1 bytes) is less than the smallest tile" in result.output
