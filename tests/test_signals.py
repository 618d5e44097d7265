"""Ctrl-C and SIGTERM (signals.py): one line and exit 130 however early Ctrl-C comes, and
`srgan train` stopped by SIGTERM saves its step, exits 143 and resumes bit for bit, on every
rank at the same step. CPU only, offline, tiny networks and images made here."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from test_train import assert_same_states, config_file, generator_step, log_records, tiny

from srgan_cli.training.config import save_config
from srgan_cli.training.train import train

pytestmark = pytest.mark.usefixtures("keep_signal_handlers")


# ------------------------------------------------------------------ Ctrl-C at start-up


def test_ctrl_c_during_start_up_is_one_line():
    # Ctrl-C 20 ms after the entry point starts: torch and the CLI are still importing
    script = ("import signal, sys\n"
              "from srgan_cli.__main__ import run\n"
              "def stop(*_):\n    raise KeyboardInterrupt\n"
              "signal.signal(signal.SIGALRM, stop)\n"
              "signal.setitimer(signal.ITIMER_REAL, 0.02)\n"
              "sys.argv = ['srgan', 'models']\n"
              "run()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "interrupted\n"


@pytest.mark.parametrize("delay", [0.2, 0.8, 2.0])
def test_a_real_sigint_during_imports_never_gives_a_traceback(delay):
    """SIGINT is held back while modules import (a half-imported numpy would fail later)."""
    import time

    # "ready" once the interpreter runs our code, so the signal never hits Python's start-up
    script = ("import sys\nsys.stderr.write('ready\\n'); sys.stderr.flush()\n"
              "from srgan_cli.__main__ import run\nsys.argv = ['srgan', 'models']\nrun()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline() == "ready\n"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    if proc.returncode == -signal.SIGINT:  # it had finished and was shutting down
        assert "srresnet-x4" in out
        return
    assert proc.returncode in (0, 130), err
    if proc.returncode == 130:
        assert err == "interrupted\n"


# ----------------------------------------------------------------- SIGTERM in training


SIGTERM_AT_STEP_2 = """
import signal, sys
from srgan_cli.training import train as train_module
real_train = train_module.train

def on_step(step):
    if step == 2:
        signal.raise_signal(signal.SIGTERM)

train_module.train = lambda *args, **kwargs: real_train(*args, on_step=on_step, **kwargs)
from srgan_cli.__main__ import run
sys.argv = ["srgan", "train", *sys.argv[1:]]
run()
"""


def test_sigterm_saves_the_step_exits_143_and_resumes_bit_for_bit(tmp_path, hr_dir):
    config = tiny(hr_dir, pretrain_steps=4, pretrain_schedule="cosine")
    train(config, tmp_path / "straight")
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", SIGTERM_AT_STEP_2, "--config",
         str(save_config(config, tmp_path / "tiny.toml")), "--out", str(run), "-q"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"terminated at step 2: saved {run}" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "terminated"
    assert generator_step(run) == 2, "SIGTERM saved the step it stopped at"
    assert [r["step"] for r in log_records(run) if r["type"] == "train"] == [1, 2]

    train(config, run, resume=True)
    assert_same_states(tmp_path / "straight", run)


DDP_SIGTERM = """
import os, signal, sys
import torch.distributed as dist
from srgan_cli.signals import Interrupted
from srgan_cli.training.config import load_config
from srgan_cli.training.train import train

rank, steps = int(os.environ["RANK"]), []

def on_step(step):
    steps.append(step)
    if rank == 1 and step == 2:  # only one rank gets the signal
        signal.raise_signal(signal.SIGTERM)

try:
    train(load_config(sys.argv[1]), sys.argv[2], on_step=on_step)
except Interrupted as e:
    print(f"rank {rank} stopped after step {steps[-1]} by signal {e.signum}", flush=True)
    dist.destroy_process_group()
    sys.exit(128 + e.signum)
"""


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path, hr_dir):
    config = config_file(tmp_path, hr_dir, pretrain_steps=6, batch_size=4, workers=0)
    run = tmp_path / "run"
    script = tmp_path / "ddp_sigterm.py"
    script.write_text(DDP_SIGTERM)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", str(script), str(config), str(run)], capture_output=True, text=True,
        timeout=300, cwd=tmp_path)
    for rank in (0, 1):
        assert f"rank {rank} stopped after step 2 by signal 15" in proc.stdout, (
            proc.stdout + proc.stderr[-3000:])
    assert generator_step(run) == 2
    assert [r["step"] for r in log_records(run) if r["type"] == "train"] == [1, 2]
