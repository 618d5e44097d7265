"""``compile = "off" | "networks" | "step"``: the choice in configs and on the command line,
what each mode compiles, and (slow: torch.compile on a CPU takes a minute or more) that a
``step`` run trains, saves and resumes exactly, close to an eager run. CPU only, offline;
what CUDA graphs do on a GPU is not tested here (docs/training.md "How fast")."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from test_train import assert_same_states, interrupt_at, log_records, random_png, tiny
from test_train_speed import BENCHMARK

from srgan_cli.cli import main
from srgan_cli.errors import TrainingError
from srgan_cli.training import train as train_module
from srgan_cli.training.config import TrainConfig, load_config, make_config
from srgan_cli.training.train import Trainer, step_compile_mode, train


@pytest.fixture
def hr_dir(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    for seed in range(3):
        random_png(folder / f"{seed}.png", (40, 40), seed=seed)
    return folder


# --------------------------------------------------------------------------- the choice


@pytest.mark.parametrize("value,mode", [(False, "off"), (True, "networks"), ("off", "off"),
                                        ("networks", "networks"), ("step", "step")])
def test_config_takes_the_modes_and_the_old_booleans(tmp_path, value, mode):
    assert make_config({"compile": value}).compile == mode
    assert TrainConfig(compile=value).compile == mode
    text = "true" if value is True else "false" if value is False else f'"{value}"'
    (tmp_path / "c.toml").write_text(f"compile = {text}\n")  # an old config.toml: true/false
    assert load_config(tmp_path / "c.toml").compile == mode


def test_an_unknown_mode_is_one_clear_error():
    with pytest.raises(TrainingError, match="compile = 'fast': choose one of off, networks, step"):
        make_config({"compile": "fast"})


@pytest.mark.parametrize("args,mode", [([], None), (["--compile"], "networks"),
                                       (["--compile", "step"], "step"),
                                       (["--compile", "networks"], "networks"),
                                       (["--no-compile"], "off")])
def test_cli_compile_option(tmp_path, monkeypatch, args, mode):
    seen = []
    monkeypatch.setattr(train_module, "train",
                        lambda config, run_dir, **kw: seen.append(config) or run_dir)
    result = CliRunner().invoke(main, ["train", "--data", "d", "--out", str(tmp_path / "r"),
                                       *args, "-q"])
    assert result.exit_code == 0, result.output
    assert seen[0].compile == (mode or "off")


@pytest.mark.parametrize("args,message", [
    (["--compile", "fast"], "'fast' is not one of 'off', 'networks', 'step'"),
    (["--compile", "step", "--no-compile"], "--no-compile and --compile step contradict"),
])
def test_cli_bad_compile_option_is_a_usage_error(tmp_path, args, message):
    result = CliRunner().invoke(main, ["train", "--data", "d", "--out", str(tmp_path / "r"),
                                       *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_step_is_refused_under_torchrun_with_several_processes(tmp_path, hr_dir, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainingError, match='compile = "step" does not run under torchrun'):
        train(tiny(hr_dir, compile="step"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- what is compiled


def record_compiles(monkeypatch) -> list[tuple[str, str | None]]:
    """Make ``torch.compile`` a no-op that records (what, mode) of each call."""
    calls = []

    def fake_compile(target, mode=None, **kwargs):
        calls.append((getattr(target, "__name__", type(target).__name__), mode))
        return target

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


@pytest.mark.parametrize("mode,expected", [
    ("off", []),
    ("networks", [("Generator", None), ("Generator", None), ("Discriminator", None),
                  ("ContentLoss", None)]),
    ("step", [("pixel_losses", None), ("pixel_losses", None), ("generate", None),
              ("discriminator_loss", None), ("generator_losses", None)]),
])
def test_what_each_mode_compiles(tmp_path, hr_dir, monkeypatch, mode, expected):
    """One phase each (pretrain, then GAN): networks compiles each network, step the step's
    differentiable parts, with the default mode on a CPU (``device="cpu"``)."""
    calls = record_compiles(monkeypatch)
    train(tiny(hr_dir, compile=mode, phase="all", pretrain_steps=1, gan_steps=1), tmp_path / "r")
    assert calls == expected


def test_cuda_uses_cuda_graphs_and_marks_each_step(monkeypatch):
    """On CUDA (mocked: no GPU needed) ``step`` compiles in reduce-overhead mode and tells
    cudagraph trees where each step begins; elsewhere it does neither."""
    assert step_compile_mode(torch.device("cuda")) == "reduce-overhead"
    assert step_compile_mode(torch.device("cpu")) is None
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    for compile_mode, device, count in [("step", "cuda", 1), ("step", "cpu", 0),
                                        ("networks", "cuda", 0)]:
        marks.clear()
        fake = SimpleNamespace(config=TrainConfig(compile=compile_mode),
                               device=torch.device(device))
        Trainer.begin_step(fake)
        assert len(marks) == count, (compile_mode, device)


# --------------------------------------------------------------------------- slow: real compile


def train_records(run_dir) -> list[dict]:
    return [r for r in log_records(run_dir) if r["type"] == "train"]


def test_step_mode_trains_saves_and_resumes_exactly_close_to_eager(tmp_path, hr_dir):
    """Slow (real torch.compile on a CPU, ``device="cpu"``): a ``step`` run of both phases
    (BatchNorm-free, EMA on) stopped inside the GAN phase and resumed ends in the very state
    of an uninterrupted one; its losses are those of an eager run up to rounding (compiled
    kernels round differently, so no equality is claimed)."""
    torch._dynamo.reset()
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    config = tiny(hr_dir, compile="step", norm="none", phase="all", pretrain_steps=2,
                  gan_steps=2, ema=0.9, precision="fp32")  # the tolerances below are fp32's
    train(config, tmp_path / "straight")
    compiled_graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
    assert compiled_graphs >= 4, "pretrain, generate, D loss and G losses were compiled"
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", on_step=interrupt_at(3))
    train(config, tmp_path / "stopped", resume=True)
    assert_same_states(tmp_path / "straight", tmp_path / "stopped")
    assert (tmp_path / "straight" / "generator.safetensors").is_file()

    train(make_config({"compile": "off"}, config), tmp_path / "eager")
    step, eager = train_records(tmp_path / "straight"), train_records(tmp_path / "eager")
    assert [r["step"] for r in step] == [r["step"] for r in eager] == [1, 2, 3, 4]
    assert step[0]["pixel"] == pytest.approx(eager[0]["pixel"], rel=1e-4)
    for ours, theirs in zip(step[1:], eager[1:], strict=True):
        for name in ("pixel", "content", "adv", "g", "d"):
            if name in theirs:  # later steps: rounding differences grown through Adam
                assert ours[name] == pytest.approx(theirs[name], rel=1e-3), (ours, name)
    assert 'compile = "step"' in (tmp_path / "straight" / "config.toml").read_text()


# --------------------------------------------------------------------------- the benchmark


def load_benchmark():
    spec = importlib.util.spec_from_file_location("train_speed", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    return benchmark


def test_benchmark_takes_a_mode_and_maps_it_for_code_from_before_the_modes(tmp_path):
    benchmark = load_benchmark()
    parse = benchmark.parse_args
    assert parse(["--device", "cpu"]).compile == "off"
    assert parse(["--device", "cpu"]).precision == ["auto"]
    assert parse(["--device", "cpu", "--precision", "fp32", "--precision", "bf16"]).precision == [
        "fp32", "bf16"]
    assert parse(["--compile", "--device", "cpu"]).compile == "networks"
    args = parse(["--compile", "step", "--device", "cpu"])
    assert args.compile == "step"
    assert benchmark.child_arguments(args, "fp32", tmp_path)[-3:] == [
        "--compile", "step", "--json"]
    assert "fp32" in benchmark.child_arguments(args, "fp32", tmp_path)
    modes = ("off", "networks", "step")
    assert [benchmark.compile_value(m, modes) for m in modes] == list(modes)
    assert [benchmark.compile_value(m, None) for m in modes] == [False, True, False]
    assert benchmark.compile_text({"compile": "step", "baseline": {"compile": False}}) == (
        "step (baseline: off)")
