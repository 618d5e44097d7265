"""Where training time goes: samples/s and the data-wait share in ``log.jsonl`` and the live
display, and ``benchmarks/train_speed.py`` run on a CPU at tiny sizes. CPU only, offline."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import log_records, tiny

from srgan_cli.training.display import speed_text
from srgan_cli.training.speed import SPEED_KEYS, Speed, SpeedWindow
from srgan_cli.training.train import train

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
ROWS = {("pretrain", "bicubic"), ("gan", "bicubic"), ("pretrain", "realistic"),
        ("gan", "realistic")}


def test_speed_window_counts_samples_and_the_share_spent_on_data():
    now = [0.0]
    window = SpeedWindow(clock=lambda: now[0])
    for _ in range(4):
        with window.waiting_for_data():
            now[0] += 0.25  # getting a batch
        now[0] += 0.75  # the step's own work
        window.step_done()
    with window.paused():
        now[0] += 10.0  # validation or saving: not training time
    assert window.read(batch_size=8) == Speed(it_s=1.0, samples_s=8.0, data_wait=0.25)
    now[0] += 2.0
    window.step_done()  # the next window starts at the read
    assert window.read(batch_size=8) == Speed(it_s=0.5, samples_s=4.0, data_wait=0.0)


def test_the_display_shows_samples_per_second():
    assert speed_text(Speed(it_s=2.5, samples_s=40.0, data_wait=0.25)) == (
        "2.50 it/s 40.0 samples/s data 25%")


def test_train_records_carry_samples_per_second_and_the_data_wait(tmp_path, hr_dir):
    run = tmp_path / "run"
    train(tiny(hr_dir, batch_size=2, pretrain_steps=4, log_every=2, save_every=2), run)
    records = [r for r in log_records(run) if r["type"] == "train"]
    assert [r["step"] for r in records] == [2, 4]
    for record in records:
        assert set(SPEED_KEYS) <= record.keys()
        assert record["samples_s"] == pytest.approx(2 * record["it_s"])
        assert 0 < record["data_wait"] < 1


def run_benchmark(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(BENCHMARK), *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_train_speed_benchmark_runs_on_a_cpu_at_tiny_sizes(hr_dir):
    result = run_benchmark("--device", "cpu", "--batch-size", "2", "--patch-size", "32",
                           "--steps", "3", "--warmup", "1", "--data", str(hr_dir), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["device"] == "cpu" and document["batch_size"] == 2
    rows = document["rows"]
    assert {(r["phase"], r["degradation"]) for r in rows} == ROWS and len(rows) == 4
    for row in rows:
        assert row["patch_size"] == 32 and row["steps"] == 3
        assert row["samples_s"] == pytest.approx(2 * 3 / row["seconds"])
        assert row["ms_per_step"] == pytest.approx(1000 * row["seconds"] / 3)
        assert 0 <= row["data_wait"] <= 1  # logged by this code (null for older code)


def test_train_speed_benchmark_compares_with_a_baseline_checkout(hr_dir):
    """The checkout itself as the baseline: the rows of both and their ratio."""
    repo = BENCHMARK.parents[1]
    result = run_benchmark("--device", "cpu", "--batch-size", "2", "--patch-size", "16",
                           "--steps", "2", "--warmup", "1", "--rows", "pretrain-bicubic",
                           "--data", str(hr_dir), "--baseline", str(repo), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    (row,), (old,) = document["rows"], document["baseline"]["rows"]
    assert Path(document["baseline"]["code"]) == repo / "srgan_cli"
    assert row["baseline_samples_s"] == old["samples_s"]
    assert row["ratio"] == pytest.approx(row["samples_s"] / old["samples_s"])


def test_train_speed_benchmark_refuses_a_baseline_without_code(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_speed", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--baseline", str(tmp_path), "--json"])
    assert exit_info.value.code == 2
    assert f"--baseline {tmp_path}: no srgan_cli package there" in capsys.readouterr().err
