"""`srgan train` on tiny networks and tiny images: phases, exact resume, NaN handling,
checkpoint format, run-folder safety, and the helpers the other training tests import. CPU
only, offline. Configs: test_train_config.py; run folders: test_run_folder.py."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from srgan_cli import losses
from srgan_cli.checkpoints import load_generator, read_metadata
from srgan_cli.cli import main
from srgan_cli.degradation import bicubic_downscale
from srgan_cli.errors import TrainingError
from srgan_cli.training import data
from srgan_cli.training import state as train_state
from srgan_cli.training.config import TrainConfig, load_config, make_config, save_config
from srgan_cli.training.train import EMA, learning_rate, train


def random_png(path, size, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(path)
    return path


@pytest.fixture
def image_dirs(tmp_path):
    """(train dir, val dir): three 40x48 images (one grayscale, in a subfolder), one too small."""
    train_dir, val_dir = tmp_path / "hr", tmp_path / "val"
    (train_dir / "sub").mkdir(parents=True)
    val_dir.mkdir()
    random_png(train_dir / "a.png", (48, 40), seed=1)
    random_png(train_dir / "b.png", (40, 48), seed=2)
    random_png(train_dir / "sub" / "gray.png", (44, 40), mode="L", seed=3)
    random_png(train_dir / "tiny.png", (12, 12), seed=4)
    random_png(val_dir / "v.png", (26, 22), seed=5)
    return train_dir, val_dir


def tiny(train_dir, **options) -> TrainConfig:
    """A config that trains in well under a second per step on a CPU."""
    values = dict(data=[str(train_dir)], patch_size=16, batch_size=2, num_blocks=1, channels=8,
                  disc_channels=8, vgg_weights="random", vgg_layer="relu2_2", device="cpu",
                  log_every=1, val_every=1000, save_every=1000, phase="pretrain",
                  pretrain_steps=4)
    return make_config({**values, **options})


def config_file(tmp_path: Path, hr_dir: Path, name: str = "tiny.toml", **options) -> Path:
    """``tiny(hr_dir, **options)`` saved as ``tmp_path / name``, for ``--config``."""
    return save_config(tiny(hr_dir, **options), tmp_path / name)


def tiny_train_config(tmp_path: Path, **extra) -> Path:
    """A TOML config with no data folder (given by ``--data``): a 1-block, 8-channel pretrain
    on the CPU, plus ``extra``."""
    config = tmp_path / "tiny.toml"
    values = {"num_blocks": 1, "channels": 8, "patch_size": 16, "batch_size": 2,
              "device": "cpu", "phase": "pretrain", **extra}
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return config


def interrupt_at(step):
    def on_step(done):
        if done == step:
            signal.raise_signal(signal.SIGINT)
    return on_step


def log_records(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def generator_step(run_dir: Path) -> int:
    """The training step the run folder's generator.safetensors was saved at."""
    return json.loads(read_metadata(run_dir / "generator.safetensors")["training"])["step"]


def assert_same_states(run_a: Path, run_b: Path) -> dict[str, torch.Tensor]:
    """Two run folders' training states hold the same tensors, bit for bit; returns run_a's."""
    a, b = load_file(run_a / "state.safetensors"), load_file(run_b / "state.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    return a


# --------------------------------------------------------------------------- data


def test_patches_use_the_shared_bicubic_and_are_reproducible(image_dirs):
    found = data.scan_folders([image_dirs[0]], patch_size=16)
    assert len(found.paths) == 3 and [p.name for p in found.too_small] == ["tiny.png"]
    dataset = data.PatchDataset(found, patch_size=16, scale=4, seed=0, cache=True)
    lr, hr = dataset[5]
    assert lr.dtype == hr.dtype == torch.uint8
    assert hr.shape == (3, 16, 16) and lr.shape == (3, 4, 4)
    pil_hr = Image.fromarray(hr.permute(1, 2, 0).numpy())
    expected = torch.from_numpy(np.asarray(bicubic_downscale(pil_hr, 4)).copy()).permute(2, 0, 1)
    assert torch.equal(lr, expected)
    streamed = data.PatchDataset(found, patch_size=16, scale=4, seed=0, cache=False)
    assert all(torch.equal(a, b) for a, b in zip(dataset[5], streamed[5], strict=True))
    assert not torch.equal(dataset[6][1], hr)
    in_process = data.batches(dataset, 2, start_step=3, workers=0)
    with_workers = data.batches(streamed, 2, start_step=3, workers=1)
    for _ in range(2):
        (lr_a, hr_a), (lr_b, hr_b) = next(in_process), next(with_workers)
        assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
    assert torch.equal(next(data.batches(dataset, 2, 0, 0))[1][1], dataset[1][1])


def test_no_usable_images_is_a_training_error(tmp_path):
    random_png(tmp_path / "small.png", (10, 10))
    with pytest.raises(TrainingError, match="1 smaller than the 16 px patch"):
        data.scan_folders([tmp_path], patch_size=16)


# --------------------------------------------------------------------------- pieces


def test_ema_update_formula():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, 0.9 * before + 0.1 * model.weight)


def test_learning_rate_schedules():
    config = TrainConfig(lr=1e-4)
    assert learning_rate(config, "constant", 90, 100) == 1e-4
    assert learning_rate(config, "step", 49, 100) == 1e-4
    assert learning_rate(config, "step", 50, 100) == pytest.approx(1e-5)
    assert learning_rate(config, "cosine", 0, 100) == pytest.approx(1e-4)
    assert learning_rate(config, "cosine", 50, 100) == pytest.approx(5e-5)


def test_losses():
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert losses.pixel_loss(a, b, "mse") == pytest.approx(0.25)
    assert losses.pixel_loss(a, b, "l1") == pytest.approx(0.5)
    confident = torch.tensor([[20.0]])
    assert losses.discriminator_loss(confident, -confident, "bce") < 1e-6
    assert losses.generator_adversarial_loss(-confident, "bce") == pytest.approx(20, rel=1e-3)
    assert losses.discriminator_loss(torch.ones(2, 1), torch.zeros(2, 1), "lsgan") == 0


# --------------------------------------------------------------------------- training


def test_pretrain_writes_a_complete_run_folder(tmp_path, image_dirs):
    train_dir, val_dir = image_dirs
    run = tmp_path / "run"
    config = tiny(train_dir, val=[str(val_dir)], val_every=2, save_every=1, keep=2)
    path = train(config, run)
    assert path == run / "generator.safetensors"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000003.safetensors", "step_00000004.safetensors"]
    assert (run / "best.safetensors").is_file() and (run / "state.safetensors").is_file()
    assert load_config(run / "config.toml") == config
    records = log_records(run)
    assert records[0]["too_small"] == 1 and records[0]["images"] == 3
    train_records = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    assert all(r["pixel"] > 0 and r["it_s"] > 0 for r in train_records)
    vals = [r for r in records if r["type"] == "val"]
    assert [r["step"] for r in vals] == [2, 4] and all(0 < r["ssim"] <= 1 for r in vals)
    with Image.open(run / "curves.png") as plot:
        assert plot.width >= 600 and len(plot.getcolors(2**16)) > 3


def test_trained_checkpoint_loads_in_upscale(tmp_path, image_dirs):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--data", str(image_dirs[0]), "--out", str(run), "--phase", "pretrain",
        "--steps", "2", "--patch-size", "16", "--batch-size", "2", "--device", "cpu", "-q",
        "--config", str(save_config(tiny(image_dirs[0]), tmp_path / "tiny.toml"))])
    assert result.exit_code == 0, result.output
    checkpoint = run / "generator.safetensors"
    meta = read_metadata(checkpoint)
    training = json.loads(meta["training"])
    assert meta["format"] == "srgan-checkpoint" and meta["scale"] == "4"
    assert training["phase"] == "pretrain" and training["step"] == 2
    assert training["data"] == [str(image_dirs[0])] and "pixel" in training["losses"]
    assert load_generator(checkpoint).config.channels == 8
    random_png(tmp_path / "in.png", (10, 8))
    result = CliRunner().invoke(main, ["upscale", str(tmp_path / "in.png"), "-o",
                                       str(tmp_path / "out.png"), "--model", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").size == (40, 32)


def test_gan_phase_trains_both_networks_from_init(tmp_path, image_dirs):
    pretrained = train(tiny(image_dirs[0], pretrain_steps=1), tmp_path / "pre")
    config = tiny(image_dirs[0], phase="gan", gan_steps=3, init=str(pretrained), ema=0.5,
                  pixel_weight=0.1, gan_loss="lsgan", num_blocks=3)
    run = tmp_path / "gan"
    train(config, run)
    assert load_config(run / "config.toml").num_blocks == 1, "architecture taken from --init"
    state = load_file(run / "state.safetensors")
    start = load_file(pretrained)
    assert not torch.equal(state["generator.tail.weight"], start["tail.weight"])
    assert any(k.startswith("discriminator.") for k in state)
    assert any(k.startswith("opt_d.") for k in state)
    saved = load_file(run / "generator.safetensors")
    assert torch.equal(saved["tail.weight"], state["ema.tail.weight"]), "ready model = EMA"
    records = [r for r in log_records(run) if r["type"] == "train"]
    assert all(r["content"] > 0 and r["d"] > 0 and r["adv"] > 0 and "pixel" in r
               for r in records)


def test_gan_phase_needs_a_pretrained_generator(tmp_path, image_dirs):
    with pytest.raises(TrainingError, match="--init"):
        train(tiny(image_dirs[0], phase="gan"), tmp_path / "run")


@pytest.mark.parametrize("phase,pretrain_steps,gan_steps,stop", [
    ("pretrain", 6, 0, 3),
    ("all", 2, 4, 2),  # stopped at the phase boundary
    ("all", 2, 4, 4),  # stopped inside the GAN phase
])
def test_resume_is_bit_for_bit(tmp_path, image_dirs, phase, pretrain_steps, gan_steps, stop):
    config = tiny(image_dirs[0], phase=phase, pretrain_steps=pretrain_steps, gan_steps=gan_steps,
                  ema=0.9, pretrain_schedule="step", gan_schedule="cosine")
    train(config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", on_step=interrupt_at(stop))
    assert json.loads(read_metadata(tmp_path / "stopped" / "generator.safetensors")
                      ["training"])["step"] == stop, "Ctrl-C saved a checkpoint"
    train(config, tmp_path / "stopped", resume=True)
    assert_same_states(tmp_path / "straight", tmp_path / "stopped")
    steps = [r["step"] for r in log_records(tmp_path / "stopped") if r["type"] == "train"]
    assert steps == list(range(1, pretrain_steps + gan_steps + 1))


def nan_pixel_loss_at_call(monkeypatch, nth: int) -> None:
    """Make the ``nth`` call of the pixel loss (the ``nth`` pretraining step) return NaN."""
    real_loss, calls = losses.pixel_loss, []

    def nan_on_nth_call(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == nth else loss

    monkeypatch.setattr(losses, "pixel_loss", nan_on_nth_call)


def test_a_nonfinite_step_is_skipped_and_reported(tmp_path, image_dirs, monkeypatch):
    nan_pixel_loss_at_call(monkeypatch, 2)
    run = tmp_path / "run"
    train(tiny(image_dirs[0], pretrain_steps=3), run)
    records = log_records(run)
    assert [r["step"] for r in records if r["type"] == "nonfinite"] == [2]
    assert records[-1]["step"] == 3 and math.isfinite(records[-1]["pixel"])


def test_repeated_nonfinite_losses_stop_training(tmp_path, image_dirs):
    config = tiny(image_dirs[0], lr=1e30, pretrain_steps=50, max_nonfinite=2)
    with pytest.raises(TrainingError, match="non-finite loss .* for 2 steps in a row"):
        train(config, tmp_path / "run")
    assert any(r["type"] == "nonfinite" for r in log_records(tmp_path / "run"))


def test_run_folder_is_never_overwritten_by_accident(tmp_path, image_dirs):
    run = tmp_path / "run"
    config = tiny(image_dirs[0], pretrain_steps=1)
    train(config, run)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config, run)
    train(config, run, overwrite=True)
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(config, tmp_path / "empty", resume=True)


def test_cli_resume_extends_a_run_and_reports_errors_in_one_line(tmp_path, image_dirs):
    run = tmp_path / "run"
    cfg = save_config(tiny(image_dirs[0], pretrain_steps=1), tmp_path / "tiny.toml")
    runner = CliRunner()
    assert runner.invoke(main, ["train", "--config", str(cfg), "--out", str(run), "-q"]
                         ).exit_code == 0
    again = runner.invoke(main, ["train", "--config", str(cfg), "--out", str(run), "-q"])
    assert again.exit_code == 1 and "already holds a run" in again.output
    assert "Traceback" not in again.output
    more = runner.invoke(main, ["train", "--out", str(run), "--resume", "--steps", "2", "-q"])
    assert more.exit_code == 0, more.output
    assert load_config(run / "config.toml").pretrain_steps == 2
    assert json.loads(read_metadata(run / "generator.safetensors")["training"])["step"] == 2
    bad = runner.invoke(main, ["train", "--out", str(tmp_path / "x"), "--data", "nowhere", "-q"])
    assert bad.exit_code == 1 and "training data folder not found: nowhere" in bad.output


def test_training_state_has_no_pickles(tmp_path, image_dirs):
    run = tmp_path / "run"
    train(tiny(image_dirs[0], pretrain_steps=1), run)
    tensors, info = train_state.load_state(run / "state.safetensors")
    assert info["step"] == 1 and info["phase"] == "pretrain"
    assert tensors["rng.torch"].dtype == torch.uint8
    assert {k.split(".")[0] for k in tensors} == {"generator", "opt_g", "rng"}


def test_stop_at_ends_a_run_early_with_the_schedule_of_the_whole_phase(tmp_path, image_dirs):
    """``stop_at`` reproduces a run that stopped early: the same state as Ctrl-C at that step."""
    config = tiny(image_dirs[0], pretrain_steps=6, pretrain_schedule="cosine")
    train(make_config({"stop_at": 3}, config), tmp_path / "stop_at")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "ctrl_c", on_step=interrupt_at(3))
    assert json.loads(read_metadata(tmp_path / "stop_at" / "generator.safetensors")
                      ["training"])["step"] == 3
    a = load_file(tmp_path / "stop_at" / "state.safetensors")
    b = load_file(tmp_path / "ctrl_c" / "state.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lrs = [r["lr"] for r in log_records(tmp_path / "stop_at") if r["type"] == "train"]
    assert lrs == [learning_rate(config, "cosine", i, 6) for i in range(3)]
    with pytest.raises(TrainingError, match="stop_at"):
        make_config({"stop_at": -1})


def test_shipped_recipes_are_valid_configs():
    """recipes/*.toml load as training configs (they reproduce the shipped weights)."""
    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
    assert len(recipes) >= 3
    for path in recipes:
        config = load_config(path)
        assert config.scale == 4 and config.num_blocks == 16, path.name


def test_scan_keeps_the_decoded_images_only_when_they_fit(image_dirs):
    """A cached dataset reuses the scan's decoded images instead of decoding them again."""
    from srgan_cli import images

    kept = data.scan_folders([image_dirs[0]], patch_size=16, keep_bytes=2**30)
    assert kept.decoded is not None and len(kept.decoded) == len(kept.paths) == 3
    for path, image in zip(kept.paths, kept.decoded, strict=True):
        assert torch.equal(image, images.read_rgb_uint8(path))
    dataset = data.PatchDataset(kept, patch_size=16, scale=4, seed=0, cache=True)
    assert dataset.cache is kept.decoded
    too_big = data.scan_folders([image_dirs[0]], patch_size=16, keep_bytes=kept.decoded_bytes - 1)
    assert too_big.decoded is None


def test_a_resume_that_does_not_fit_its_state_changes_nothing(tmp_path, hr_dir):
    """A resume with options the saved networks do not fit is one clear error, and the run
    folder (its config.toml and log too) stays as it was, so a plain --resume still works."""
    run = tmp_path / "run"
    config = tiny(hr_dir, pretrain_steps=4, stop_at=2)
    train(config, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    wider = make_config({**config.__dict__, "channels": 16, "stop_at": 0})
    with pytest.raises(TrainingError, match="the saved generator does not fit the network"):
        train(wider, run, resume=True)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    train(make_config({**config.__dict__, "stop_at": 0}), run, resume=True)
    assert [r["step"] for r in log_records(run) if r["type"] == "train"] == [1, 2, 3, 4]
