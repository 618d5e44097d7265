"""Training speed: samples/s, ms per step and the share of time spent waiting for data, for
the pretrain and GAN phases on bicubic and realistic data.

    python benchmarks/train_speed.py --device cpu --batch-size 2 --patch-size 32 --steps 3
    python benchmarks/train_speed.py --batch-size 64 --steps 50 --warmup 10 --baseline /tmp/base
    python benchmarks/train_speed.py --device cuda --batch-size 64 --compile step --warmup 10
    python benchmarks/train_speed.py --device cpu --rows pretrain-realistic \
        --precision fp32 --precision bf16 --baseline /tmp/base

``--precision`` may be repeated: every row runs in each, side by side in one table (``auto``
is fp32 or bf16 as ``srgan train`` picks it, ``srgan_cli/precision.py``). ``--preset photo``
runs the realistic rows on that chain instead of Real-ESRGAN's.

Each row is one short training run through the public ``train(config, run_dir, on_step=...)``,
the loop ``srgan train`` runs, with full-size networks (16 blocks, 64 channels), validation
off and no checkpoint until the end: ``--warmup`` steps untimed (cuDNN autotuning,
torch.compile, DataLoader start-up), then ``--steps`` steps timed between two ``on_step``
callbacks, each after a ``torch.cuda.synchronize()`` on CUDA. The loop logs (one host-device
sync) every gcd(warmup, steps) steps, as ``srgan train`` does every ``log_every``; the share
of time spent waiting for data is read from the run's ``log.jsonl`` (``data_wait``, null for
code from before it was logged).

``--compile step`` (``srgan train --compile step``) compiles the first steps and, on CUDA,
records its CUDA graphs in the next ones: give it ``--warmup 5`` or more, so that none of
that is timed.

GAN rows start from a randomly initialised generator and use a randomly initialised VGG19
(the real one costs the same). Data: ``--data DIR``; by default ``../shared/datasets/T91``
beside the checkout when present, else 16 random 256x256 PNGs made in a temporary folder.
Patch size: ``--patch-size``; by default the recipes' (96 for bicubic rows, 128 for
realistic ones).

``--baseline DIR``, a checkout of an older commit (``git worktree add /tmp/base 234db95``),
also runs the same rows on that code, after this code's: this script again, in a subprocess
with ``PYTHONPATH=DIR``, on the same data; the table and the JSON then give both and the
ratio current / baseline. The script drives only what both versions have: ``train``,
``make_config`` and ``RANDOM_VGG`` (``srgan_cli.training.*``, or ``srgan_cli.train`` and
``srgan_cli.train_config`` before the training subpackage), and ``save_checkpoint``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROWS = ("pretrain-bicubic", "gan-bicubic", "pretrain-realistic", "gan-realistic")
DEFAULT_PATCH = {"bicubic": 96, "realistic": 128}  # the recipes' patch sizes
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "T91"
RANDOM_IMAGES, RANDOM_SIZE = 16, 256


def training_api():
    """``(train, make_config, RANDOM_VGG, COMPILE_MODES)`` of the ``srgan_cli`` on the path:
    its training subpackage, or the flat modules of versions from before it; the modes are
    None for versions whose ``compile`` is a boolean."""
    try:
        train_module = importlib.import_module("srgan_cli.training.train")
        config_module = importlib.import_module("srgan_cli.training.config")
    except ImportError:
        train_module = importlib.import_module("srgan_cli.train")
        config_module = importlib.import_module("srgan_cli.train_config")
    return (train_module.train, config_module.make_config, config_module.RANDOM_VGG,
            getattr(config_module, "COMPILE_MODES", None))


def compile_value(mode: str, modes: tuple[str, ...] | None) -> str | bool:
    """``--compile``'s mode as the code on the path takes it: the mode itself, or for code
    from before the modes (``modes`` None, ``compile`` a boolean) true for ``networks`` and
    false otherwise (such code has no ``step``: it runs eagerly, the speed to beat)."""
    return mode if modes is not None else mode == "networks"


def code_dir() -> str:
    """The folder of the ``srgan_cli`` package this process runs."""
    return str(Path(importlib.import_module("srgan_cli").__file__).resolve().parent)


def random_images(folder: Path) -> Path:
    """``RANDOM_IMAGES`` random RGB PNGs of ``RANDOM_SIZE`` px in ``folder`` (seeded)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(RANDOM_IMAGES):
        pixels = rng.integers(0, 256, (RANDOM_SIZE, RANDOM_SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


def random_generator(path: Path) -> Path:
    """A randomly initialised full-size x4 generator saved as a checkpoint: a GAN row's
    ``init`` (its cost is that of a trained one)."""
    from srgan_cli.checkpoints import save_checkpoint
    from srgan_cli.models import Generator, GeneratorConfig

    torch.manual_seed(0)
    return save_checkpoint(Generator(GeneratorConfig()), path, {"phase": "benchmark"})


def data_wait_share(log_path: Path, first: int, last: int) -> float | None:
    """The share of the time of steps ``first + 1 .. last`` spent waiting for data, from the
    ``train`` records of those steps (windows of equal steps, so each weighs 1 / it_s);
    None when the records have no ``data_wait``."""
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    windows = [r for r in records if r["type"] == "train" and first < r["step"] <= last]
    if not windows or any(r.get("data_wait") is None for r in windows):
        return None
    weights = [1 / r["it_s"] for r in windows]
    return sum(w * r["data_wait"] for w, r in zip(weights, windows, strict=True)) / sum(weights)


def measure(row: str, precision: str, args: argparse.Namespace, data: Path, init: Path,
            work: Path) -> dict:
    """Train row ``row`` (e.g. "gan-bicubic") in ``precision`` for ``args.warmup +
    args.steps`` steps and time the last ``args.steps``."""
    train, make_config, random_vgg, modes = training_api()
    phase, degradation = row.split("-")
    patch = args.patch_size or DEFAULT_PATCH[degradation]
    timed_end = args.warmup + args.steps
    values = {
        "data": [str(data)], "phase": phase, "degradation": degradation,
        "batch_size": args.batch_size, "patch_size": patch, "device": args.device,
        "precision": precision, "compile": compile_value(args.compile, modes),
        "workers": args.workers,
        # one step more than timed: the phase's last step would save before on_step
        f"{phase}_steps": timed_end + 1, "stop_at": timed_end,
        "log_every": math.gcd(args.warmup, args.steps), "val_every": 10**9,
        "save_every": 10**9, "keep": 1, "vgg_weights": random_vgg, "seed": 0,
    }
    if phase == "gan":
        values["init"] = str(init)
    if degradation == "realistic" and args.preset:
        values["realistic"] = {"preset": args.preset}
    device = torch.device(args.device)
    marks: dict[int, float] = {}

    def on_step(step: int) -> None:
        if step in (args.warmup, timed_end):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks[step] = time.perf_counter()

    run_dir = work / f"{row}-{precision}"
    train(make_config(values), run_dir, on_step=on_step)
    seconds = marks[timed_end] - marks[args.warmup]
    return {"phase": phase, "degradation": degradation, "precision": precision,
            "batch_size": args.batch_size,
            "patch_size": patch, "steps": args.steps, "seconds": seconds,
            "ms_per_step": 1000 * seconds / args.steps,
            "samples_s": args.batch_size * args.steps / seconds,
            "data_wait": data_wait_share(run_dir / "log.jsonl", args.warmup, timed_end)}


def measure_all(args: argparse.Namespace, data: Path) -> dict:
    """This process's code on every row of ``args.rows``: the JSON document."""
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        work = Path(tmp)
        init = random_generator(work / "init.safetensors")
        rows = []
        for row in args.rows:
            for precision in args.precision:
                print(f"{row}, {precision}: {args.warmup} + {args.steps} steps ...",
                      file=sys.stderr, flush=True)
                rows.append(measure(row, precision, args, data, init, work))
    device = torch.device(args.device)
    return {"device": args.device,
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else f"CPU, {torch.get_num_threads()} threads"),
            "torch": torch.__version__, "code": code_dir(), "data": str(data),
            "batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps,
            "precision": args.precision, "workers": args.workers, "rows": rows,
            "compile": compile_value(args.compile, training_api()[3])}  # as this code ran it


def child_arguments(args: argparse.Namespace, precision: str, data: Path) -> list[str]:
    """The options that make another run of this script measure the same rows in
    ``precision``, as JSON (one precision per run: older versions take one)."""
    options = ["--device", args.device, "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--rows", ",".join(args.rows), "--precision", precision,
               "--workers", str(args.workers), "--data", str(data), "--compile", args.compile,
               "--json"]
    if args.patch_size:
        options += ["--patch-size", str(args.patch_size)]
    if args.preset:
        options += ["--preset", args.preset]
    return options


def measure_baseline(args: argparse.Namespace, data: Path) -> dict:
    """The same rows on the code in ``args.baseline``: this script in a subprocess whose
    ``srgan_cli`` comes from there (``PYTHONPATH``), once per precision; one document."""
    baseline = args.baseline.resolve()
    path = os.pathsep.join(p for p in (str(baseline), os.environ.get("PYTHONPATH")) if p)
    documents = []
    for precision in args.precision:
        result = subprocess.run([sys.executable, __file__, *child_arguments(args, precision, data)],
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": path})
        if result.returncode:
            sys.exit(f"error: the baseline run ({baseline}) failed with exit code "
                     f"{result.returncode}")
        document = json.loads(result.stdout)
        if not Path(document["code"]).is_relative_to(baseline):
            sys.exit(f"error: the baseline run imported srgan_cli from {document['code']}, "
                     f"not from {baseline}")
        for row in document["rows"]:  # older versions' rows do not say their precision
            row.setdefault("precision", precision)
        documents.append(document)
    return {**documents[0], "precision": list(args.precision),
            "rows": [row for document in documents for row in document["rows"]]}


def add_ratios(document: dict, baseline: dict) -> None:
    """Give each current row its baseline's samples/s and the ratio current / baseline."""
    before = {(r["phase"], r["degradation"], r["precision"]): r for r in baseline["rows"]}
    for row in document["rows"]:
        old = before[(row["phase"], row["degradation"], row["precision"])]
        row["baseline_samples_s"] = old["samples_s"]
        row["ratio"] = row["samples_s"] / old["samples_s"]
    document["baseline"] = baseline


def compile_text(document: dict) -> str:
    """The compile mode of a document, and its baseline's when there is one (code from
    before the modes ran with a boolean: networks or off)."""
    def mode(doc: dict) -> str:
        value = doc["compile"]
        return value if isinstance(value, str) else "networks" if value else "off"

    baseline = document.get("baseline")
    return mode(document) + (f" (baseline: {mode(baseline)})" if baseline else "")


def print_table(document: dict) -> None:
    baseline = document.get("baseline")
    print(f"training speed on {document['device']} ({document['device_name']}), torch "
          f"{document['torch']}: batch {document['batch_size']}, {document['steps']} steps "
          f"timed after {document['warmup']}, compile "
          f"{compile_text(document)}, data {document['data']}")
    header = (f"{'row':20s} {'precision':9s} {'patch':>5s} {'ms/step':>9s} {'samples/s':>10s} "
              f"{'data wait':>9s}")
    if baseline:
        header += f" {'baseline samples/s':>18s} {'ratio':>6s}"
    print(header)
    for row in document["rows"]:
        wait = "-" if row["data_wait"] is None else f"{row['data_wait']:.0%}"
        line = (f"{row['phase'] + '-' + row['degradation']:20s} {row['precision']:9s} "
                f"{row['patch_size']:5d} "
                f"{row['ms_per_step']:9.1f} {row['samples_s']:10.1f} {wait:>9s}")
        if baseline:
            line += f" {row['baseline_samples_s']:18.1f} {row['ratio']:6.2f}"
        print(line)
    if baseline:
        print(f"current code: {document['code']}; baseline: {baseline['code']}")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def row_list(text: str) -> list[str]:
    rows = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        raise argparse.ArgumentTypeError(
            f"unknown row {', '.join(unknown) or '(none)'}; choose from {', '.join(ROWS)}")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--batch-size", type=positive, default=16)
    parser.add_argument("--patch-size", type=positive,
                        help="HR patch size [default: 96 bicubic, 128 realistic]")
    parser.add_argument("--steps", type=positive, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=positive, default=5, help="untimed steps first")
    parser.add_argument("--rows", type=row_list, default=list(ROWS),
                        help=f"comma-separated, from {','.join(ROWS)} [default: all]")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), action="append",
                        help="repeat for several, side by side [default: auto]")
    parser.add_argument("--preset", choices=("real-esrgan", "photo"),
                        help="the realistic rows' chain [default: real-esrgan]")
    parser.add_argument("--compile", nargs="?", const="networks", default="off",
                        choices=("off", "networks", "step"),
                        help="srgan train --compile: off, networks (also --compile alone) or "
                        "step; a --baseline from before the modes runs step as off")
    parser.add_argument("--workers", type=int, default=-1, help="DataLoader workers, -1 = auto")
    parser.add_argument("--data", type=Path, help=f"HR images [default: {DEFAULT_DATA} if "
                        "present, else random PNGs]")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--baseline", type=Path, help="checkout of older code to compare with")
    args = parser.parse_args(argv)
    args.precision = args.precision or ["auto"]
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.baseline is not None and not (args.baseline / "srgan_cli").is_dir():
        parser.error(f"--baseline {args.baseline}: no srgan_cli package there")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="train_speed_data_") as tmp:
        data = args.data or (DEFAULT_DATA if DEFAULT_DATA.is_dir()
                             else random_images(Path(tmp) / "hr"))
        document = measure_all(args, data.resolve())
        if args.baseline is not None:
            add_ratios(document, measure_baseline(args, data.resolve()))
    if args.json:
        print(json.dumps(document, indent=1))
    else:
        print_table(document)


if __name__ == "__main__":
    main()
