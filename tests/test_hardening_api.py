"""Hardening, second pass: the Upscaler API's arguments and the upscale options (items 6, 9,
15, 16, 19, 20, 21 and 22 of the issue). Every test here failed on 234db95."""

import inspect
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_generator
from PIL import Image

from srgan_cli import InputError, Upscaler, memory
from srgan_cli import upscale as upscale_module
from srgan_cli.cli import main
from srgan_cli.upscale import upscale_batch


def invoke(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def usage_error(result):
    """Exit 2, one line, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def png(path, size=(5, 5)):
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def cpu_upscaler(**options):
    return Upscaler(make_generator(), device="cpu", precision="fp32", **options)


# ------------------------------------------------------------------ 6. upscale_pixels


@pytest.mark.parametrize("rgb, bit_depth, message", [
    (torch.full((3, 8, 8), 200, dtype=torch.uint8), 8, "dtype uint8"),
    (torch.full((3, 8, 8), 200.0), 8, "divide 0-255 images by 255"),
    (torch.rand(1, 3, 8, 8), 8, r"\(3, H, W\), RGB in \[0, 1\], got a 4-D tensor"),
    (torch.rand(3, 8, 8), 12, "bit_depth must be 8 or 16, got 12"),
])
def test_upscale_pixels_checks_its_input_like_upscale_tensor(rgb, bit_depth, message):
    with pytest.raises(InputError, match=message):
        cpu_upscaler(tile=0).upscale_pixels(rgb, bit_depth)


# ------------------------------------------------------------------ 9, 15. outscale, max-memory


@pytest.mark.parametrize("option", [
    ["--outscale", "1e9"], ["--outscale", "1000"], ["--outscale", "17"],
    ["--max-memory", "1e400"], ["--max-memory", "1" + "0" * 400],
])
def test_absurd_outscale_and_max_memory_are_usage_errors(tmp_path, tiny_checkpoint, option):
    result = invoke("upscale", png(tmp_path / "a.png"), "--model", tiny_checkpoint, *option)
    usage_error(result)
    assert not (tmp_path / "a_x4.png").exists()


def test_outputs_above_the_pixel_limit_fail_their_file_before_the_network(tmp_path):
    big, small = png(tmp_path / "big.png", (48, 40)), png(tmp_path / "small.png", (5, 5))
    jobs = [(big, tmp_path / "big_out.png"), (small, tmp_path / "small_out.png")]
    started = []
    summary = upscale_batch(cpu_upscaler(outscale=16), jobs, max_pixels=2000,
                            on_start=lambda src, tiles: started.append(src.name))
    big_result, small_result = summary.results
    # 48x40 is below --max-pixels 2000, but x16 it is 768x640, above 16 x 2000 output pixels
    assert big_result.status == "failed"
    assert big_result.reason == ("output would be 768x640 = 491,520 pixels, above the limit of "
                                 "32,000 (16 x --max-pixels): lower --outscale or raise "
                                 "--max-pixels")
    assert small_result.status == "written"
    assert Image.open(tmp_path / "small_out.png").size == (80, 80)
    assert started == ["small.png"], "the network never ran on the refused file"
    assert not (tmp_path / "big_out.png").exists()


def test_output_pixel_limit_in_the_cli_is_one_line_per_file(tmp_path, tiny_checkpoint):
    png(tmp_path / "big.png", (48, 40))
    result = invoke("upscale", tmp_path / "big.png", "--model", tiny_checkpoint,
                    "--max-pixels", 2000, "--outscale", 16)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{tmp_path / 'big.png'}: output would be 768x640" in result.output
    assert "0 written, 0 skipped, 1 failed" in result.output


# ------------------------------------------------------------------ 16. API arguments


@pytest.mark.parametrize("options, message", [
    ({"max_memory": 1.5}, "--max-memory: expected a number of bytes"),
    ({"max_memory": "1e400"}, "too large"),
    ({"outscale": "2"}, "--outscale must be a number above 0 and at most 16, got str '2'"),
    ({"outscale": 1e9}, "--outscale must be a number above 0 and at most 16, got 1e"),
    ({"outscale": float("nan")}, "--outscale must be a number"),
    ({"tile": 2.5}, "--tile must be auto, 0 .off. or a whole number of pixels, got 2.5"),
    ({"tile": -5}, "--tile must be"),
    ({"tile": True}, "--tile must be"),
    ({"tile_batch": 0}, "tile_batch must be a whole number at least 1, got 0"),
])
def test_bad_upscaler_arguments_are_refused_at_construction(options, message):
    with pytest.raises(InputError, match=message):
        Upscaler(make_generator(), device="cpu", **options)


@pytest.mark.parametrize("perception", [2, -0.5, "0.5", float("nan"), True])
def test_bad_perception_is_refused_before_any_model_is_loaded(monkeypatch, perception):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(upscale_module, "load_perception_model", no_loading)
    with pytest.raises(InputError, match="--perception must be a number from 0 to 1"):
        Upscaler(perception=perception, device="cpu")


@pytest.mark.parametrize("options, message", [
    ({"quality": 500}, "--quality must be a whole number from 1 to 100, got 500"),
    ({"quality": 0}, "--quality must be a whole number from 1 to 100, got 0"),
    ({"png_compression": 42}, "--png-compression must be a whole number from 0 to 9"),
    ({"max_pixels": 0}, "--max-pixels must be a whole number at least 1"),
])
def test_bad_write_options_are_refused_before_the_image_is_computed(
    tmp_path, monkeypatch, options, message
):
    up = cpu_upscaler(tile=0)

    def no_compute(*args, **kwargs):
        raise AssertionError("the image was computed")

    monkeypatch.setattr(Upscaler, "upscale_picture", no_compute)
    src = png(tmp_path / "a.png")
    with pytest.raises(InputError, match=message):
        up.upscale_file(src, tmp_path / "a.jpg", **options)
    with pytest.raises(InputError, match=message):
        upscale_batch(up, [(src, tmp_path / "b.jpg")], **options)
    assert not (tmp_path / "a.jpg").exists() and not (tmp_path / "b.jpg").exists()


def test_overlap_is_not_an_option_but_the_receptive_radius():
    """Less overlap than the receptive radius gives seams, more only costs time."""
    assert "overlap" not in inspect.signature(Upscaler).parameters
    gen = make_generator()
    assert cpu_upscaler().overlap == gen.config.receptive_radius()


# ------------------------------------------------------------------ 22. --tile below the overlap


def test_a_tile_smaller_than_the_overlap_is_raised_to_it():
    up = cpu_upscaler(tile=1)
    overlap = up.overlap
    assert up.tile == overlap
    assert up.notes == [f"--tile 1 is smaller than the network's {overlap}-pixel overlap: "
                        f"using {overlap}-pixel tiles"]
    assert up.num_tiles(17, 21) == -(-17 // overlap) * -(-21 // overlap)  # not 17 * 21
    assert cpu_upscaler(tile=overlap).notes == []


def test_cli_says_so_when_it_raises_the_tile(tmp_path, tiny_checkpoint):
    result = invoke("upscale", png(tmp_path / "a.png", (21, 17)), "--model", tiny_checkpoint,
                    "--tile", 1)
    assert result.exit_code == 0, result.output
    assert "warning: --tile 1 is smaller than the network's" in result.output
    assert Image.open(tmp_path / "a_x4.png").size == (84, 68)


# ------------------------------------------------------------------ 19. --shard and planning


def test_each_planning_problem_is_reported_by_one_shard_only(tmp_path, tiny_checkpoint):
    inputs = [png(tmp_path / f"{name}.png") for name in "abcd"]
    missing = tmp_path / "missing.png"
    reports, exit_codes = [], []
    for index in range(3):
        result = invoke("upscale", *inputs, missing, "--model", tiny_checkpoint,
                        "--shard", f"{index}/3", "--json")
        summary = json.loads(result.stdout)
        reports += [f for f in summary["files"] if f["status"] == "failed"]
        exit_codes.append(result.exit_code)
    assert [f["input"] for f in reports] == [str(missing)], "reported exactly once"
    assert sorted(exit_codes) == [0, 0, 1], "only the shard that owns it fails"
    assert len(list(tmp_path.glob("*_x4.png"))) == 4


# ------------------------------------------------------------------ 20. the CPU memory budget


def test_parse_size_takes_ints_and_strings_only():
    assert memory.parse_size(np.int64(4096)) == 4096
    for bad in (1.5, 4e9, True, None):
        with pytest.raises(ValueError, match="expected a number of bytes"):
            memory.parse_size(bad)


def test_max_memory_on_cpu_is_capped_at_the_available_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 25 * 10**9)
    assert memory.host_budget(2**40) == 25 * 10**9  # --max-memory 1TiB on a 25 GB machine
    assert memory.host_budget(2**30) == 2**30  # below the machine: the value itself
    assert memory.host_budget(None) == memory.DEFAULT_HOST_BUDGET
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * 2**30)
    assert memory.host_budget(None) == 2**30  # default: at most half of what is available
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    assert memory.host_budget(None) == memory.DEFAULT_HOST_BUDGET


def test_a_6000x4000_image_is_tiled_despite_max_memory_1tib(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 25 * 10**9)
    up = cpu_upscaler(max_memory="1TiB")
    assert 4000 * 6000 * up.bytes_per_pixel() > 25 * 10**9, "one pass would not fit"
    assert up.tile_for(4000, 6000) is not None


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


# ------------------------------------------------------------------ 21. NaN in float options


@pytest.mark.parametrize("args", [
    ["upscale", "a.png", "--perception", "nan"],
    ["upscale", "a.png", "--outscale", "nan"],
    ["upscale", "a.png", "--outscale", "inf"],
    ["benchmark", "--perception", "nan"],
    ["benchmark", "--perception", "inf"],
    ["train", "--out", "run", "--lr", "nan"],
    ["train", "--out", "run", "--ema", "inf"],
])
def test_nan_and_infinity_in_float_options_are_usage_errors(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    png(tmp_path / "a.png")
    result = invoke(*args)
    usage_error(result)
    assert "is not a finite number" in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "a_x4.png").exists()
