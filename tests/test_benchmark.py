"""`srgan benchmark`: the protocol on synthetic data (always) and on Set5/Set14 (if present)."""

import json

import pytest
from click.testing import CliRunner
from conftest import make_generator
from PIL import Image

from srgan_cli.benchmark import paper_key, pil_to_float, summarize
from srgan_cli.cli import main
from srgan_cli.degradation import tensor_to_pil
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
