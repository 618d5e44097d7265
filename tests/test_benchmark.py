"""`srgan benchmark`: the protocol on synthetic data (always) and on Set5/Set14 (if present),
and careless input: datasets that share a name, outputs inside the data, bad LPIPS weights, bad
numbers, images read as `srgan upscale` reads them, and what --speed cannot time."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_generator, one_line_error, png
from PIL import Image
from safetensors.torch import save_file
from test_images import exif_bytes

from srgan_cli import benchmark, metrics
from srgan_cli.benchmark import load_dataset, paper_key, pil_to_float, summarize
from srgan_cli.cli import main
from srgan_cli.degradation import tensor_to_pil
from srgan_cli.errors import SrganError
from srgan_cli.models import GeneratorConfig


def bench(*args):
    return CliRunner().invoke(main, ["benchmark", *map(str, args)])


@pytest.fixture
def dataset(tmp_path):
    """Two small HR images with sizes that are not multiples of 4."""
    folder = tmp_path / "Tiny"
    folder.mkdir()
    for i, size in enumerate([(50, 42), (37, 45)]):
        img = Image.effect_mandelbrot(size, (-2, -1.2, 0.6, 1.2), 60 + i * 20).convert("RGB")
        img.save(folder / f"img{i}.png")
    return folder


def test_json_results_for_pseudo_models_and_a_network(dataset, tiny_checkpoint):
    result = bench("--model", "bicubic", "--model", "nearest", "--model", tiny_checkpoint,
                   "--data", dataset, "--json", "--per-image")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {r["model"]: r for r in doc["results"]}
    assert set(rows) == {"bicubic", "nearest", str(tiny_checkpoint)}
    for r in rows.values():
        assert r["dataset"] == "Tiny" and r["n"] == 2
        assert set(r) >= {"psnr_y", "ssim_y", "psnr_rgb", "lpips", "lr_psnr"}
        assert r["lpips"] is None  # no weights given
    assert rows["bicubic"]["psnr_y"] > rows["nearest"]["psnr_y"] > rows[str(tiny_checkpoint)][
        "psnr_y"]
    assert rows["bicubic"]["paper_psnr_y"] is None  # no paper figure for this dataset
    assert len(doc["per_image"]) == 6
    assert doc["speed"] == []


def test_tta_adds_a_self_ensemble_row_per_network(dataset, tiny_checkpoint):
    result = bench("--model", "bicubic", "--model", tiny_checkpoint, "--data", dataset, "--tta",
                   "--json")
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.stdout)["results"]}
    assert set(rows) == {"bicubic", str(tiny_checkpoint), f"{tiny_checkpoint}+tta"}
    assert rows[f"{tiny_checkpoint}+tta"]["psnr_y"] != rows[str(tiny_checkpoint)]["psnr_y"]


def test_table_saved_images_and_comparisons(dataset, tiny_checkpoint, tmp_path):
    result = bench("--model", "bicubic", "--model", tiny_checkpoint, "--data", dataset,
                   "--save-images", tmp_path / "sr", "--compare", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    assert "PSNR-Y" in result.output and "bicubic" in result.output
    assert "LPIPS omitted" in result.output
    saved = Image.open(tmp_path / "sr" / "Tiny" / "bicubic" / "img0.png")
    assert saved.size == (48, 40)  # cropped to a multiple of 4
    sheet = Image.open(tmp_path / "cmp" / "Tiny" / "img0.png")
    assert sheet.width == 4 * 48  # LR nearest | bicubic | model | HR


def test_wrong_scale_and_missing_data_are_one_line_errors(dataset, tmp_path):
    from srgan_cli.checkpoints import save_checkpoint

    x2 = save_checkpoint(make_generator(GeneratorConfig(scale=2, num_blocks=1, channels=8)),
                         tmp_path / "x2.safetensors")
    result = bench("--model", x2, "--data", dataset)
    assert result.exit_code == 1 and "upscales x2, but --scale is 4" in result.output
    result = bench("--model", "bicubic", "--data", tmp_path / "nowhere")
    assert result.exit_code == 1 and "dataset folder not found" in result.output
    assert bench("--model", "bicubic").exit_code == 2


def test_speed_mode_has_a_baseline_row(tiny_checkpoint):
    result = bench("--speed", "--model", tiny_checkpoint, "--size", "16,24", "--device", "cpu",
                   "--precision", "fp32", "--tile", "0", "--tile", "8", "--repeats", "1",
                   "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["speed"]
    # per size: baseline, 4 single levers, 2 tiles, model only + 2 end-to-end rows
    assert len(rows) == 2 * (1 + 4 + 2 + 3)
    assert rows[0]["label"].startswith("baseline")
    assert [r["label"] for r in rows[5:7]] == ["fast path: fp32, tile off",
                                               "fast path: fp32, tile 8"]
    for row in rows:
        assert row["ms"] > 0 and row["mpix_per_s"] > 0 and row["peak_mem_mb"] > 0
        assert row["memory_kind"] == "process RSS"
    assert [r["label"].split(":")[0] for r in rows[7:10]] == ["model only", "end to end",
                                                              "end to end"]
    assert "pipelined" in rows[8]["label"] and "serial" in rows[9]["label"]
    table = bench("--speed", "--model", tiny_checkpoint, "--size", "16", "--device", "cpu",
                  "--repeats", "1", "--no-ablation")
    assert table.exit_code == 0 and "x baseline" in table.output


def test_helpers():
    img = Image.new("RGB", (3, 2), (255, 0, 128))
    assert tensor_to_pil(pil_to_float(img)).tobytes() == img.tobytes()
    assert paper_key("srgan-x4") == "srgan" and paper_key("weights/srresnet-x4.safetensors") == (
        "srresnet") and paper_key("mine.safetensors") is None
    assert summarize([]) == []


def test_set5_and_set14_bicubic_reproduce_the_known_figures(shared_dir):
    result = bench("--model", "bicubic", "--data", shared_dir / "datasets" / "Set5", "--data",
                   shared_dir / "datasets" / "Set14", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["dataset"]: r for r in json.loads(result.stdout)["results"]}
    assert round(rows["Set5"]["psnr_y"], 2) == 28.43 == rows["Set5"]["paper_psnr_y"]
    assert round(rows["Set14"]["psnr_y"], 2) == 26.09


# ---------------------------------------------------------------------- careless input


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


def test_benchmark_reads_like_upscale_and_writes_valid_json(tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    ramp = (np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) * 28).astype(np.uint16)
    Image.fromarray(ramp).save(data / "grey16.png")  # I;16: convert("RGB") clipped to white
    png(tmp_path / "whole.png", size=(48, 48))
    (data / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    png(data / "small.png", size=(3, 3))
    Image.new("RGB", (48, 32), "white").save(data / "phone.jpg", exif=exif_bytes(6))
    result = bench("--data", data, "-m", "bicubic", "--json", "--per-image")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout, parse_constant=lambda token: pytest.fail(token))
    psnr = {s["image"]: s["psnr_y"] for s in doc["per_image"]}
    assert psnr["grey16"] is not None and psnr["grey16"] < 60, "a real ramp, not all white"
    assert psnr["phone"] is None, "identical white images: +inf dB is written as null"
    assert {Path(s["path"]).name for s in doc["skipped"]} == {"cut.png", "small.png"}


def test_benchmark_applies_exif_orientation(tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    Image.new("RGB", (48, 32), "white").save(data / "phone.jpg", exif=exif_bytes(6))
    (name, image), = load_dataset(data)[0]
    assert image.size == (32, 48)


def test_benchmark_never_replaces_earlier_saved_images(tmp_path):
    data = tmp_path / "set"
    png(data / "a.png", size=(48, 48))
    args = ["--data", data, "-m", "bicubic", "--save-images", tmp_path / "sr", "--compare",
            tmp_path / "cmp"]
    assert bench(*args).exit_code == 0
    saved = tmp_path / "sr" / "set" / "bicubic" / "a.png"
    saved.write_bytes(b"mine")
    again = bench(*args)
    one_line_error(again)
    assert "exists" in again.output and "--overwrite" in again.output
    assert saved.read_bytes() == b"mine"
    assert bench(*args, "--overwrite").exit_code == 0
    assert Image.open(saved).size == (48, 48)


def test_colour_shift_is_the_mean_difference_per_channel_in_levels():
    hr = torch.full((3, 12, 12), 0.5)
    sr = hr.clone()
    sr[0] += 2 / 255  # red two levels up everywhere
    sr[2, 4:8, 4:8] -= 16 / 255  # a blue patch in the middle: 16 of the 16 shaved pixels
    sr[1, 0, :] += 1.0  # the border row is shaved off
    r, g, b = benchmark.colour_shift(sr, hr, border=4)
    assert r == pytest.approx(2) and g == pytest.approx(0) and b == pytest.approx(-16)


def test_json_rows_give_the_mean_colour_shift(dataset, tiny_checkpoint):
    result = bench("--model", "bicubic", "--model", tiny_checkpoint, "--data", dataset,
                   "--json", "--per-image", "--device", "cpu")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    for row in doc["results"]:
        shifts = [s["colour_shift"] for s in doc["per_image"] if s["model"] == row["model"]]
        assert row["colour_shift"] == pytest.approx(np.mean(shifts, axis=0).tolist())
    bicubic = next(r for r in doc["results"] if r["model"] == "bicubic")
    assert max(map(abs, bicubic["colour_shift"])) < 1  # a resize keeps the mean colour
