"""`srgan benchmark` on careless input: datasets that share a name, outputs inside the data,
bad LPIPS weights, bad numbers, and what --speed cannot time. CPU only, offline, tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from srgan_cli import benchmark, metrics
from srgan_cli.cli import main
from srgan_cli.errors import SrganError


def bench(*args):
    return CliRunner().invoke(main, ["benchmark", *map(str, args)])


def make_dataset(folder: Path, seeds=(0, 1), size=(40, 36)) -> Path:
    folder.mkdir(parents=True)
    for seed in seeds:
        img = Image.effect_mandelbrot(size, (-2, -1.2, 0.6, 1.2), 40 + seed * 25).convert("RGB")
        img.save(folder / f"img{seed}.png")
    return folder


def rows_of(result) -> dict[str, dict]:
    assert result.exit_code == 0, result.output
    return {r["dataset"]: r for r in json.loads(result.stdout)["results"]}


def test_datasets_with_the_same_folder_name_get_distinct_rows_and_outputs(tmp_path):
    first = make_dataset(tmp_path / "x" / "ds", seeds=(0, 1))
    second = make_dataset(tmp_path / "y" / "ds", seeds=(2,))
    result = bench("-m", "bicubic", "-d", first, "-d", second, "--json",
                   "--save-images", tmp_path / "sr", "--compare", tmp_path / "cmp")
    rows = rows_of(result)
    assert {name: r["n"] for name, r in rows.items()} == {"x/ds": 2, "y/ds": 1}
    assert sorted(p.relative_to(tmp_path / "sr").as_posix()
                  for p in (tmp_path / "sr").rglob("*.png")) == [
        "x/ds/bicubic/img0.png", "x/ds/bicubic/img1.png", "y/ds/bicubic/img2.png"]
    assert len(list((tmp_path / "cmp").rglob("*.png"))) == 3


def test_a_folder_given_twice_is_scored_once(tmp_path):
    data = make_dataset(tmp_path / "ds")
    rows = rows_of(bench("-m", "bicubic", "-d", data, "-d", tmp_path / "." / "ds", "--json"))
    assert {name: r["n"] for name, r in rows.items()} == {"ds": 2}


def test_paper_figures_still_found_by_the_folder_name(tmp_path):
    labels = benchmark.dataset_labels([tmp_path / "a" / "Set5", tmp_path / "b" / "Set5"])
    assert sorted(labels.values()) == ["a/Set5", "b/Set5"]
    score = benchmark.ImageScore("bicubic", "a/Set5", "img", 1.0, 0.5, 1.0, None, 1.0)
    assert benchmark.summarize([score])[0]["paper_psnr_y"] == pytest.approx(28.43)


def test_images_sharing_a_stem_do_not_overwrite_each_other(tmp_path):
    data = make_dataset(tmp_path / "ds", seeds=(0,))
    Image.open(data / "img0.png").save(data / "img0.bmp")
    result = bench("-m", "bicubic", "-d", data, "--json", "--per-image",
                   "--save-images", tmp_path / "sr")
    assert result.exit_code == 0, result.output
    names = sorted(s["image"] for s in json.loads(result.stdout)["per_image"])
    assert names == ["img0.bmp", "img0.png"]
    assert len(list((tmp_path / "sr").rglob("*.png"))) == 2


@pytest.mark.parametrize("option", ["--save-images", "--compare"])
@pytest.mark.parametrize("where", ["inside", "parent"])
def test_outputs_that_would_land_in_a_data_folder_are_refused(tmp_path, option, where):
    data = make_dataset(tmp_path / "ds")
    out = data / "results" if where == "inside" else tmp_path  # tmp_path/ds/... is the data
    result = bench("-m", "bicubic", "-d", data, option, out)
    assert result.exit_code == 1
    assert "inside the data folder" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in data.rglob("*")) == ["img0.png", "img1.png"]
    # and the next run scores the same two images
    assert rows_of(bench("-m", "bicubic", "-d", data, "--json"))["ds"]["n"] == 2


@pytest.mark.parametrize("option", ["--save-images", "--compare"])
def test_outputs_below_a_file_are_one_line_errors(tmp_path, option):
    data = make_dataset(tmp_path / "ds")
    (tmp_path / "file.txt").write_text("x")
    for out in (tmp_path / "file.txt", tmp_path / "file.txt" / "sub"):
        result = bench("-m", "bicubic", "-d", data, option, out)
        assert result.exit_code == 1, result.output
        assert "is a file, not a folder" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--repeats", "0"], ["--scale", "0"], ["--scale", "-4"],
                                  ["--tile", "-5"]])
def test_bad_numbers_are_usage_errors(tmp_path, args):
    data = make_dataset(tmp_path / "ds")
    result = bench("-m", "bicubic", "-d", data, *args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


def test_speed_of_a_pseudo_model_is_explained():
    result = bench("--speed", "-m", "bicubic", "--size", "16")
    assert result.exit_code == 2
    assert "Pillow resize with no network to time" in result.output
    with pytest.raises(SrganError, match="no network to time"):
        benchmark.speed_generator("nearest")


def lpips_file_of_another_network(path: Path) -> Path:
    """A safetensors file that is not VGG16 + LPIPS (one unrelated tensor)."""
    import torch

    save_file({"features.0.weight": torch.zeros(8, 3, 3, 3)}, str(path),
              metadata={"mean": "[0.5, 0.5, 0.5]", "std": "[0.5, 0.5, 0.5]"})
    return path


@pytest.mark.parametrize("kind", ["missing", "corrupt", "not safetensors", "other network"])
@pytest.mark.parametrize("via_env", [False, True])
def test_bad_lpips_weights_are_one_line_errors(tmp_path, kind, via_env):
    data = make_dataset(tmp_path / "ds")
    path = tmp_path / ("w.pth" if kind == "not safetensors" else "w.safetensors")
    if kind == "corrupt":
        path.write_bytes(b"\x00garbage" * 50)
    elif kind == "not safetensors":
        path.write_bytes(b"PK\x03\x04")
    elif kind == "other network":
        lpips_file_of_another_network(path)
    args = ["benchmark", "-m", "bicubic", "-d", str(data)]
    if via_env:
        result = CliRunner().invoke(main, args, env={"SRGAN_LPIPS_WEIGHTS": str(path)})
    else:
        result = CliRunner().invoke(main, [*args, "--lpips-weights", str(path)])
    assert result.exit_code == 1, result.output
    assert "error: LPIPS weights" in result.output and str(path) in result.output
    assert "Traceback" not in result.output
    with pytest.raises(SrganError, match="LPIPS weights"):
        metrics.load_lpips(path)
