"""Where training time goes: samples/s and the data-wait share in ``log.jsonl`` and the live
display. CPU only, offline."""

from __future__ import annotations

import pytest
from test_train import log_records, tiny

from srgan_cli.training.display import speed_text
from srgan_cli.training.speed import SPEED_KEYS, Speed, SpeedWindow
from srgan_cli.training.train import train


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
