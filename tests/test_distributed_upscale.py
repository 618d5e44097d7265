"""Sharded upscaling: --shard I/N for job arrays (each planning problem reported by one shard),
and torchrun with two CPU processes (gloo)."""

import json
import subprocess
import sys

import pytest
from conftest import invoke, png, run_cli
from PIL import Image

from srgan_cli.errors import SrganError
from srgan_cli.training.distributed import Shard


def make_folder(folder, n=5):
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (6, 5), (40 * i, 80, 120)).save(folder / f"img{i}.png")
    return folder


def test_shard_split_is_a_partition():
    items = list(range(11))
    shares = [Shard(i, 3).select(items) for i in range(3)]
    assert sorted(x for share in shares for x in share) == items
    assert Shard.parse("2/3") == Shard(2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(SrganError, match="bad shard"):
            Shard.parse(bad)


def test_shard_option_without_torchrun(tmp_path, tiny_checkpoint):
    src = make_folder(tmp_path / "in")
    outputs = []
    for i in range(2):
        proc = run_cli("upscale", str(src), "-o", str(tmp_path / "out"), "--model",
                       str(tiny_checkpoint), "--shard", f"{i}/2", "--json")
        assert proc.returncode == 0, proc.stderr
        outputs.append({f["output"] for f in json.loads(proc.stdout)["files"]})
    assert not outputs[0] & outputs[1], "no file done twice"
    assert len(outputs[0] | outputs[1]) == 5, "no file skipped"
    assert len(list((tmp_path / "out").glob("*.png"))) == 5


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


def test_torchrun_two_processes_upscale_each_file_once(tmp_path, tiny_checkpoint):
    src = make_folder(tmp_path / "in", n=7)
    (src / "broken.png").write_bytes(b"junk")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "srgan_cli", "upscale", str(src), "-o", str(tmp_path / "out"),
           "--model", str(tiny_checkpoint), "--device", "cpu", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, "the broken file fails the run on every rank"
    summary = json.loads(proc.stdout)  # exactly one JSON document: rank 0's combined summary
    assert (summary["written"], summary["failed"]) == (7, 1)
    written = [f["output"] for f in summary["files"] if f["status"] == "written"]
    assert len(set(written)) == 7
    assert len(list((tmp_path / "out").glob("*.png"))) == 7
    # a re-run after a failure finishes only what is missing
    (tmp_path / "out" / "img3.png").unlink()
    again = subprocess.run([*cmd, "--skip-existing"], capture_output=True, text=True,
                           timeout=300)
    summary = json.loads(again.stdout)
    assert (summary["written"], summary["skipped"]) == (1, 6)
