"""The ``srgan`` command line: a thin layer over the Python API.

Exit codes: 0 = everything asked for was done, 1 = some inputs failed (the rest were
still written) or the job could not start, 2 = usage error.
"""

from __future__ import annotations

import functools
import io
import math
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import click
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import __version__, images
from .checkpoints import DEFAULT_MODEL, MIXES, REGISTRY, weights_dir
from .errors import SrganError
from .json_output import to_json
from .models import NORMS
from .signals import describe, exit_status, sigterm_as_interrupt
from .training import COMPILE_MODES

if TYPE_CHECKING:
    from .training.distributed import Shard

err_console = Console(stderr=True)


def friendly_errors(command):
    """Print expected failures (SrganError) as one line and exit 1; ``--debug`` shows tracebacks."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SrganError as e:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False,
                              soft_wrap=True)  # escaped: "[realistic] ..." is not markup
            sys.exit(1)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (signals.Interrupted)
            err_console.print(describe(getattr(e, "signum", signal.SIGINT)), highlight=False)
            sys.exit(exit_status(e))

    return wrapper


class FiniteFloat(click.FloatRange):
    """A float option (optionally in a range) that refuses NaN and infinity as usage errors:
    click's FloatRange lets NaN through, since every comparison with NaN is false."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:  # the help's "[0<=x<=1]"; nothing without bounds
        return "" if self.min is None and self.max is None else super()._describe_range()


def progress_bar(disable: bool) -> Progress:
    """The progress display of long commands: on stderr, gone once the work is done."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err_console, disable=disable, transient=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="srgan")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
def main(debug: bool) -> None:
    """4x photo super-resolution with SRGAN: upscale, train, benchmark."""
    # Our own --max-pixels check applies; Pillow's guard stays in place (images/reading.py) but its
    # warning above 89 MP would only print a line of Pillow's internals to the terminal.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@main.command("models")
def models_command() -> None:
    """List the named models and whether their weights are installed."""
    for name, entry in REGISTRY.items():
        path = weights_dir() / entry.filename
        missing = "on the Hub" if entry.hub else "not trained yet"
        state = "installed" if path.is_file() else missing
        default = " (default)" if name == DEFAULT_MODEL else ""
        click.echo(f"{name}{default}: {entry.description} [{state}]")


def collect_jobs(
    inputs: tuple[Path, ...], output: Path | None, suffix: str | None, fmt: str | None,
    recursive: bool, scale: int, output_is_folder: bool = False,
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]], list[tuple[Path, str]]]:
    """Expand files and folders into (input, output) pairs, checked for clashes as one list.

    Returns the jobs, inputs that cannot be planned (``(path, reason)``) and files of input
    folders left alone as results of an earlier run (``(path, reason)``).
    ``output_is_folder``: ``-o`` was written with a trailing slash, so it names a folder.
    """
    single_file = len(inputs) == 1 and not inputs[0].is_dir()
    out_file = None
    if (output is not None and single_file and output.suffix and not output.is_dir()
            and not output_is_folder):
        out_file = output
    check_format_agrees(out_file, fmt)
    if suffix is None:  # beside the inputs, a suffix keeps the originals safe
        suffix = f"_x{scale}" if output is None else ""
    ext = None if fmt is None else "." + fmt.lower().lstrip(".")
    targets: list[tuple[Path, Path]] = []
    problems: list[tuple[Path, str]] = []
    skipped: list[tuple[Path, str]] = []
    for item in inputs:
        if not item.exists():
            problems.append((item, "no such file or folder"))
            continue
        if item.is_dir():
            scan = images.scan_folder(item, recursive=recursive)
            found = scan.images
            problems += scan.errors.items()
            skipped += scan.skipped.items()
            if not found:
                problems.append((item, "no images found in this folder"))
            earlier = images.earlier_results(found, item, output, (suffix, f"_x{scale}"))
            skipped += earlier.items()
            found = [p for p in found if p not in earlier]
            plan = images.output_targets(found, item, output, None, suffix, ext)
        else:
            plan = images.output_targets([item], None, output, out_file, suffix, ext)
        targets += plan.jobs
        problems += split_errors(plan.errors)
    checked = images.check_jobs(targets)  # one check over every argument's jobs together
    return checked.jobs, problems + split_errors(checked.errors), skipped + list(
        checked.skipped.items())


def check_format_agrees(out_file: Path | None, fmt: str | None) -> None:
    """A usage error when ``-o FILE`` and ``--format`` name different formats."""
    if out_file is not None and fmt is not None and (
            images.format_for(out_file) != images.format_for(out_file, fmt)):
        raise click.UsageError(f"-o {out_file} and --format {fmt} name different formats; "
                               "give only one of them")


def split_errors(errors: list[str]) -> list[tuple[Path, str]]:
    """``path: reason`` lines of an OutputPlan -> (path, reason) pairs."""
    return [(Path(e.split(": ", 1)[0]), e.split(": ", 1)[1]) for e in errors]


def parse_shard(ctx, param, value: str | None):
    """``--shard I/N`` -> Shard, or a usage error (exit 2)."""
    from .training.distributed import Shard

    if value is None:
        return None
    try:
        return Shard.parse(value)
    except SrganError as e:
        raise click.BadParameter(str(e)) from None


def check_suffix_option(ctx, param, value: str | None) -> str | None:
    if value is not None:
        try:
            images.check_suffix(value)
        except SrganError as e:
            raise click.BadParameter(str(e)) from None
    return value


@main.command("upscale")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(),
              help="Output file (one input) or folder (a trailing / always means a folder). "
                   "Default: beside each input, with a suffix.")
@click.option("-m", "--model", default=DEFAULT_MODEL, show_default=True,
              help="Registry name, .safetensors path, or hf://owner/repo/file.safetensors[@rev].")
@click.option("--perception", type=FiniteFloat(0, 1), default=None,
              help="Mix the shipped models' weights: 0 = srresnet-x4 (highest fidelity), "
                   "1 = srgan-x4 (sharpest textures), e.g. 0.5 in between.")
@click.option("--denoise", type=FiniteFloat(0, 1), default=None,
              help="Mix the shipped models' weights: 0 = srresnet-x4 (for clean inputs: keeps "
                   "noise and JPEG blocks), 1 = srgan-real-x4 (removes them), e.g. 0.5 keeps "
                   "some grain.")
@click.option("--suffix", default=None, callback=check_suffix_option,
              help="Added to output file names. Default: '_x4' beside the inputs, none with -o.")
@click.option("--format", "fmt", type=click.Choice(["png", "jpg", "webp", "tif", "bmp"]),
              help="Output format. Default: the -o file's extension, else the input's own format.")
@click.option("--tile", default="auto", show_default=True, callback=lambda c, p, v: tile_option(v),
              help="Tile size in input pixels for bounded memory: auto (from the free memory "
                   "and --max-memory), N (at least the network's overlap, 40 for "
                   "SRResNet), or 0 (whole image at once).")
@click.option("--max-memory", callback=lambda c, p, v: size_option(v),
              help="Cap on what the network may use on the device, e.g. 4GiB or 512MB "
                   "(--tile auto); never more than the device has free. Default: free GPU "
                   "memory; 4 GiB on CPU (at most half the available memory).")
@click.option("--outscale", type=FiniteFloat(), callback=lambda c, p, v: outscale_option(v),
              help="Final scale factor, e.g. 2, 3 or 6.5 (above 0, at most 16): the "
                   "network's x4, then a Lanczos resize to round(input size x factor).")
@click.option("--tta", is_flag=True,
              help="Self-ensemble: average the 8 flips/rotations (8x slower, higher PSNR).")
@click.option("--png-compression", type=click.IntRange(*images.PNG_COMPRESSION_RANGE),
              default=images.DEFAULT_PNG_COMPRESSION, show_default=True,
              help="zlib level of PNG output: 0 fastest/largest .. 9 smallest/slowest.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="auto = fp16 on CUDA, bf16 on CPUs with native bf16 "
              "(AMX, AVX-512-BF16), else fp32.")
@click.option("--optimize/--no-optimize", default=True, show_default=True,
              help="Run the inference-optimized copy of the network (BatchNorm folded, "
                   "channels_last, tail conv before the last shuffle; same output up to "
                   "float rounding).")
@click.option("--skip-existing", is_flag=True, help="Skip inputs whose output already exists.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (never inputs).")
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Look into subfolders of folder inputs.")
@click.option("--max-pixels", default=images.DEFAULT_MAX_PIXELS, show_default=True,
              type=click.IntRange(min=1),
              help="Refuse inputs with more pixels than this (decompression-bomb guard).")
@click.option("--quality", default=95, show_default=True,
              type=click.IntRange(*images.QUALITY_RANGE),
              help="JPEG/WebP output quality, 1-100 (WebP 100 = lossless).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout.")
@click.option("--shard", metavar="I/N", callback=parse_shard,
              help="Do only share I (0-based) of N of the files, for job arrays; e.g. "
                   "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.")
@friendly_errors
def upscale_command(
    inputs: tuple[Path, ...], output: str | None, model: str, perception: float | None,
    denoise: float | None,
    suffix: str | None, fmt: str | None, tile: int | str | None, max_memory: int | None,
    outscale: float | None, tta: bool, png_compression: int, device: str, precision: str,
    optimize: bool, skip_existing: bool, overwrite: bool, recursive: bool, max_pixels: int,
    quality: int, quiet: bool, as_json: bool, shard: Shard | None,
) -> None:
    """Upscale image files and folders of images.

    Under torchrun each process upscales its own share of the files on its own GPU and
    rank 0 prints one combined summary; --shard I/N does the same split without torchrun.
    """
    from .precision import cpu_lacks_fast
    from .training import distributed
    from .upscale import (
        BatchSummary,
        FileResult,
        Upscaler,
        refuse_unstorable,
        upscale_batch,
    )

    sigterm_as_interrupt()  # kill, job schedulers: like Ctrl-C, temporary files cleaned up
    for knob, value in (("perception", perception), ("denoise", denoise)):
        ends = MIXES[knob]
        if value is not None and model not in (DEFAULT_MODEL, *ends):
            raise click.UsageError(f"--{knob} mixes {ends[0]} and {ends[1]}; drop --model")
    if perception is not None and denoise is not None:
        raise click.UsageError("--perception and --denoise each mix two models: choose one")
    if skip_existing and overwrite:
        raise click.UsageError("--skip-existing and --overwrite contradict each other")
    if shard is not None and distributed.under_torchrun():
        raise click.UsageError("--shard splits work without torchrun; under torchrun the "
                               "ranks share the files already")
    output_is_folder = output is not None and output.endswith(("/", os.sep))
    out_path = None if output is None else Path(output)
    stream = STREAM in inputs or output == "-"
    if stream:
        check_stream_usage(inputs, output, output_is_folder, fmt, as_json,
                           shard is not None or distributed.under_torchrun())
    if out_path is not None and output != "-":  # an unwritable folder fails now, not per image
        single_file = len(inputs) == 1 and not inputs[0].is_dir()
        is_file = stream or (single_file and out_path.suffix and not output_is_folder
                             and not out_path.is_dir())
        images.check_writable_folder(out_path.parent if is_file else out_path)
    rank, world, dev = distributed.init(device)
    my_share = distributed.Shard(rank, world) if world > 1 else shard or distributed.Shard()
    main_process = rank == 0
    quiet = quiet or not main_process  # one progress display, on rank 0

    upscaler = Upscaler(model, device=dev, precision=precision, tile=tile, optimize=optimize,
                        perception=perception, denoise=denoise, max_memory=max_memory,
                        outscale=outscale,
                        tta=tta)
    if main_process:
        notes = [*upscaler.notes, upscaler.memory_warning()]
        asked = precision != "auto"  # auto never picks a precision the CPU lacks
        if asked and upscaler.device.type == "cpu" and cpu_lacks_fast(upscaler.dtype):
            notes.append(f"this CPU has no {precision} instructions, so --precision "
                         f"{precision} runs much slower than fp32")
        for note in filter(None, notes):
            err_console.print(f"warning: {note}", highlight=False, soft_wrap=True)
    if stream:
        upscale_stream(upscaler, inputs[0], output, fmt, overwrite, skip_existing, max_pixels,
                       quality, png_compression, quiet)
    jobs, problems, earlier = collect_jobs(inputs, out_path, suffix, fmt, recursive,
                                           upscaler.scale, output_is_folder)
    jobs = my_share.select(jobs)
    # problems found while planning: each reported by the one shard (or rank) that owns it
    failures = [FileResult(p, None, "failed", reason)
                for p, reason in problems if my_share.owns(str(p))]
    failures += [FileResult(p, None, "skipped", reason)
                 for p, reason in earlier if my_share.owns(str(p))]
    if not overwrite and not skip_existing:
        existing = [(s, d) for s, d in jobs if d.exists()]
        failures += [FileResult(s, d, "failed", f"{d} exists (use --overwrite or --skip-existing)")
                     for s, d in existing]
        jobs = [j for j in jobs if j not in existing]
    jobs, unstorable = refuse_unstorable(upscaler, jobs, max_pixels, skip_existing)
    failures += unstorable
    for result in failures:
        report(result, quiet, as_json)

    show_progress = not (quiet or as_json)
    with progress_bar(disable=not show_progress) as progress:
        files_task = progress.add_task("images", total=len(jobs))
        tiles_task = progress.add_task("tiles", total=1, visible=False)

        def on_start(src: Path, n_tiles: int) -> None:
            progress.update(tiles_task, description=src.name, total=n_tiles, completed=0,
                            visible=n_tiles > 1)

        def on_done(result: FileResult) -> None:
            progress.advance(files_task)
            if result.status != "written" or result.warnings:
                progress.console.print(format_result(result), highlight=False, soft_wrap=True)

        mine = upscale_batch(
            upscaler, jobs, skip_existing=skip_existing, max_pixels=max_pixels, quality=quality,
            png_compression=png_compression, on_start=on_start,
            on_tile=lambda: progress.advance(tiles_task),
            on_done=None if as_json else on_done,
        )
    summary = BatchSummary([r for share in distributed.gather(failures + mine.results)
                            for r in share])
    distributed.finish()
    tiles = upscaler.stats.describe()
    if main_process and as_json:
        click.echo(to_json({**summary.to_dict(), "tiles": tiles,
                            "oom_retries": upscaler.stats.oom_retries}))
    elif main_process and not quiet:
        err_console.print(
            f"{summary.count('written')} written, {summary.count('skipped')} skipped, "
            f"{summary.count('failed')} failed" + (f"; {tiles}" if tiles else ""),
            highlight=False)
    sys.exit(1 if summary.failed else 0)


STREAM = Path("-")
"""The input name that means standard input (``-o -``: standard output); ./- is a file."""


def check_stream_usage(
    inputs: tuple[Path, ...], output: str | None, output_is_folder: bool, fmt: str | None,
    as_json: bool, sharded: bool,
) -> None:
    """Usage errors (exit 2) for ``-`` (standard input) and ``-o -`` (standard output):
    both are for exactly one image, and stdout carries nothing but the image."""
    if STREAM in inputs and len(inputs) > 1:
        raise click.UsageError("- (standard input) must be the only input")
    if output == "-" and (len(inputs) != 1 or inputs[0].is_dir()):
        raise click.UsageError("-o - (standard output) takes exactly one input file, "
                               "not folders or several files")
    if STREAM in inputs and output is None:
        raise click.UsageError("- (standard input) needs -o FILE, or -o - for standard output")
    if STREAM in inputs and (output_is_folder or Path(output).is_dir()):
        raise click.UsageError("with - (standard input), -o names a file (or - for "
                               "standard output), not a folder")
    if output == "-" and as_json:
        raise click.UsageError("--json and -o - would both write to standard output")
    if sharded:
        raise click.UsageError("--shard and torchrun split folders of files; - is one image")
    if output != "-":
        check_format_agrees(Path(output), fmt)


def upscale_stream(
    upscaler, src: Path, output: str, fmt: str | None, overwrite: bool, skip_existing: bool,
    max_pixels: int, quality: int, png_compression: int, quiet: bool,
) -> None:
    """``srgan upscale`` of one image from standard input and/or to standard output; exits.

    Standard input is read whole before decoding; standard output gets the encoded image
    at once when it is complete, and nothing else (messages go to stderr). The output
    format: --format, else -o FILE's extension, else the input's own (PNG for GIF).
    """
    from .upscale import FileResult

    source = io.BytesIO(sys.stdin.buffer.read()) if src == STREAM else src
    target = sys.stdout.buffer if output == "-" else Path(output)
    dst = None if output == "-" else target
    if dst is not None and dst.exists() and (skip_existing or not overwrite):
        result = (FileResult(src, dst, "skipped", "output exists") if skip_existing else
                  FileResult(src, dst, "failed", f"{dst} exists (use --overwrite or "
                             "--skip-existing)"))
    else:
        try:
            notes = upscaler.upscale_file(source, target, max_pixels=max_pixels,
                                          quality=quality, overwrite=True,
                                          png_compression=png_compression, format=fmt)
            result = FileResult(src, dst, "written", warnings=notes)
        except SrganError as e:
            result = FileResult(src, dst, "failed", str(e))
    if result.status != "written" or result.warnings:
        report(result, quiet, as_json=False)
    sys.exit(1 if result.status == "failed" else 0)


def tile_option(value: str | int) -> int | str | None:
    """``--tile``: auto, 0 (off) or a positive size; anything else is a usage error (exit 2)."""
    from .upscale import parse_tile

    try:
        return parse_tile(value)
    except SrganError as e:
        raise click.BadParameter(str(e).removeprefix("--tile ")) from None


def size_option(value: str | None) -> int | None:
    """``--max-memory``: a size such as 4GiB or 512MB, in bytes; a usage error if bad."""
    from .memory import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def outscale_option(value: float | None) -> float | None:
    from .outscale import check_outscale

    try:
        return check_outscale(value)
    except SrganError as e:
        raise click.BadParameter(str(e).removeprefix("--outscale ")) from None


def format_result(result) -> str:
    """One line per noteworthy file: ``path: reason``."""
    if result.status == "failed":
        return f"{result.src}: {result.reason}"
    if result.status == "skipped":
        return f"{result.src}: skipped ({result.reason})"
    return "\n".join(f"{result.src}: warning: {w}" for w in result.warnings)


def report(result, quiet: bool, as_json: bool) -> None:
    if not as_json and (not quiet or result.status == "failed"):
        err_console.print(format_result(result), highlight=False, soft_wrap=True)


def parse_sizes(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected sizes like 256,512, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("sizes must be positive")
    return sizes


@main.command("benchmark")
@click.option("-m", "--model", "models", multiple=True,
              help="Model name/path, or 'bicubic' / 'nearest' (repeatable). "
                   "Default: bicubic plus the shipped models that are installed.")
@click.option("--perception", "perceptions", multiple=True, type=FiniteFloat(0, 1),
              help="Also score the srresnet-x4/srgan-x4 mix at this perception (repeatable; "
                   "rows are named perception=P).")
@click.option("--denoise", "denoises", multiple=True, type=FiniteFloat(0, 1),
              help="Also score the srresnet-x4/srgan-real-x4 mix at this denoise (repeatable; "
                   "rows are named denoise=D).")
@click.option("-d", "--data", "datasets", multiple=True, type=click.Path(path_type=Path),
              help="Folder of HR images, e.g. ../shared/datasets/Set5 (repeatable).")
@click.option("--scale", default=4, show_default=True, type=click.IntRange(min=2))
@click.option("--per-image", is_flag=True, help="Also show a row per image.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--save-images", type=click.Path(path_type=Path),
              help="Write SR outputs to DIR/DATASET/MODEL/IMAGE.png.")
@click.option("--compare", "compare_dir", type=click.Path(path_type=Path),
              help="Write side-by-side crops (LR / each model / HR) to DIR/DATASET/IMAGE.png.")
@click.option("--overwrite", is_flag=True,
              help="Replace files of an earlier --save-images / --compare run.")
@click.option("--lpips-weights", envvar="SRGAN_LPIPS_WEIGHTS",
              help="vgg16_lpips.safetensors for LPIPS (or $SRGAN_LPIPS_WEIGHTS); else omitted.")
@click.option("--degradation", "degradation_kind", default="bicubic", show_default=True,
              type=click.Choice(["bicubic", "realistic-eval"]),
              help="LR inputs: bicubic (the paper's protocol), or realistic-eval: also fixed, "
                   "seeded JPEG / noise+JPEG / blur+JPEG inputs, scored against clean HR.")
@click.option("--speed", is_flag=True, help="Measure speed and memory instead of quality.")
@click.option("--size", "sizes", default="256", show_default=True, callback=lambda c, p, v:
              parse_sizes(v), help="--speed: input sizes (square), comma-separated.")
@click.option("--precision", "precisions", multiple=True,
              type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="Precision (repeatable). Quality default fp32; --speed default auto.")
@click.option("--tile", "tiles", multiple=True, type=click.IntRange(min=0),
              help="Tile size (repeatable; 0 = off). Default 512 for quality, 0 for --speed.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="--speed: timed runs per row.")
@click.option("--ablation/--no-ablation", default=True, show_default=True,
              help="--speed: also time each optimization alone (channels_last, BN folding, "
                   "tail before shuffle, reduced-precision autocast) against the baseline.")
@click.option("--end-to-end", "end_to_end", default=4, show_default=True,
              type=click.IntRange(0), help="--speed: also time this many generated PNG files "
              "through srgan upscale's batch loop (pipelined and serial) next to model-only "
              "time; 0 = off.")
@click.option("--tta", is_flag=True, help="Also score each network with the 8-fold "
              "self-ensemble (srgan upscale --tta), as MODEL+tta.")
@click.option("--device", default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@friendly_errors
def benchmark_command(
    models: tuple[str, ...], perceptions: tuple[float, ...], denoises: tuple[float, ...],
    datasets: tuple[Path, ...],
    scale: int, per_image: bool,
    as_json: bool, save_images: Path | None, compare_dir: Path | None, overwrite: bool,
    lpips_weights: str | None, speed: bool, sizes: list[int], precisions: tuple[str, ...],
    tiles: tuple[int, ...], repeats: int, ablation: bool, end_to_end: int, tta: bool,
    device: str, quiet: bool, degradation_kind: str,
) -> None:
    """Score models with the standard SR protocol, or time them with --speed."""
    from rich.table import Table

    from . import benchmark
    from .upscale import pick_device

    out_console = Console(width=None if sys.stdout.isatty() else 160)
    progress = progress_bar(disable=quiet or as_json)
    if speed:
        if len(models) > 1:
            raise click.UsageError("--speed times one --model at a time")
        if models and models[0] in benchmark.PSEUDO_MODELS:
            raise click.UsageError(
                f"--speed times a network; {models[0]!r} is a Pillow resize with no network "
                "to time: give a model name or checkpoint, or no --model for the paper's "
                "architecture with random weights")
        precisions, tiles = precisions or ("auto",), tiles or (0,)
        configs = benchmark.speed_configs(pick_device(device), precisions, tiles, ablation)
        with progress:
            per_size = len(configs) + (3 if end_to_end else 0)
            task = progress.add_task("timing", total=len(sizes) * per_size)
            rows = benchmark.run_speed(
                models[0] if models else None, sizes, device=device, precisions=precisions,
                tiles=tiles, repeats=repeats, ablation=ablation, end_to_end=end_to_end,
                on_row=lambda r: progress.advance(task))
        if as_json:
            click.echo(benchmark.to_json([], rows, None))
            return
        table = Table(title=f"speed: {rows[0].model} on {rows[0].device}")
        for col in ("input", "configuration", "ms / image", "images/s", "output MP/s",
                    "x baseline", f"peak memory ({rows[0].memory_kind})"):
            table.add_column(col, justify="right" if col != "configuration" else "left")
        for row in rows:
            base = next(r for r in rows if r.size == row.size)
            table.add_row(f"{row.size}x{row.size}", row.label, f"{row.ms:.1f}",
                          f"{1000 / row.ms:.3f}", f"{row.mpix_per_s:.2f}",
                          f"{base.ms / row.ms:.2f}x", f"{row.peak_mem_mb:.0f} MB")
        out_console.print(table)
        return

    if not datasets:
        raise click.UsageError("give at least one --data folder of HR images (or use --speed)")
    if not models and not perceptions and not denoises:
        models = ("bicubic", *[n for n, e in REGISTRY.items()
                               if (weights_dir() / e.filename).is_file()])
    models = (*models, *[benchmark.mix_name("perception", p) for p in perceptions],
              *[benchmark.mix_name("denoise", d) for d in denoises])
    n_images = sum(len(images.find_images(d, recursive=True))
                   for d in benchmark.dataset_labels(datasets) if d.is_dir())
    n_cases = len(benchmark.lr_makers("", degradation_kind, scale))  # inputs per image
    skipped: list[tuple[Path, str]] = []

    def on_skip(path: Path, reason: str) -> None:
        skipped.append((path, reason))
        progress.advance(task, len(models) * n_cases)
        if not as_json:
            progress.console.print(f"{path}: skipped ({reason})", highlight=False,
                                   soft_wrap=True)

    with progress:
        n_methods = len(models) + (sum(m not in benchmark.PSEUDO_MODELS for m in models)
                                   if tta else 0)
        task = progress.add_task("scoring", total=n_images * n_methods * n_cases)
        scores, has_lpips = benchmark.run_quality(
            list(models), list(datasets), scale=scale, device=device,
            precision=(precisions or ("fp32",))[0], tile=(tiles or (512,))[0],
            lpips_weights=lpips_weights, save_dir=save_images, compare_dir=compare_dir,
            on_image=lambda s: progress.advance(task), overwrite=overwrite, on_skip=on_skip,
            tta=tta, degradation_kind=degradation_kind)
    results = benchmark.summarize(scores)
    if as_json:
        click.echo(benchmark.to_json(results, [], scores if per_image else None, skipped))
        return
    table = Table(title=f"x{scale} quality (PSNR/SSIM on Y, border {scale})")
    for col in ("dataset", "model", "n", "PSNR-Y", "SSIM-Y", "PSNR-RGB", "LPIPS",
                "LR-PSNR", "paper PSNR-Y/SSIM-Y"):
        table.add_column(col, justify="left" if col in ("dataset", "model") else "right")
    for r in results:
        paper = (f"{r['paper_psnr_y']:.2f}/{r['paper_ssim_y']:.4f}"
                 if r["paper_psnr_y"] is not None else "")
        lp = "" if r["lpips"] is None else f"{r['lpips']:.4f}"
        table.add_row(r["dataset"], r["model"], str(r["n"]), f"{r['psnr_y']:.2f}",
                      f"{r['ssim_y']:.4f}", f"{r['psnr_rgb']:.2f}", lp, f"{r['lr_psnr']:.2f}",
                      paper)
        if per_image:
            for s in scores:
                if (s.model, s.dataset) == (r["model"], r["dataset"]):
                    lp = "" if s.lpips is None else f"{s.lpips:.4f}"
                    table.add_row("", f"  {s.image}", "", f"{s.psnr_y:.2f}", f"{s.ssim_y:.4f}",
                                  f"{s.psnr_rgb:.2f}", lp, f"{s.lr_psnr:.2f}", "")
    out_console.print(table)
    if not has_lpips:
        err_console.print("LPIPS omitted: pass --lpips-weights or set SRGAN_LPIPS_WEIGHTS",
                          highlight=False)


# --------------------------------------------------------------------------- srgan train


@main.command("train")
@click.option("--data", multiple=True, type=click.Path(path_type=Path),
              help="Folder of HR training images (recursive); repeat for several.")
@click.option("--out", "run_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder: config, checkpoints, state, log and curves go here.")
@click.option("--val", multiple=True, type=click.Path(path_type=Path),
              help="Folder of HR validation images (PSNR-Y, SSIM-Y, LPIPS); repeatable.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML or YAML file of options (flags override it).")
@click.option("--phase", type=click.Choice(["pretrain", "gan", "all"]),
              help="pretrain (SRResNet, pixel loss), gan (SRGAN, needs --init) or all. "
                   "[default: all]")
@click.option("--steps", type=click.IntRange(min=1),
              help="Steps of the phase run (each phase for --phase all). "
              "[default: 1000000 pretrain, 200000 gan]")
@click.option("--batch-size", type=int, help="Global batch: under torchrun each process "
              "takes an equal share. [default: 16]")
@click.option("--patch-size", type=int, help="HR patch size in pixels. [default: 96]")
@click.option("--degradation", type=click.Choice(["bicubic", "realistic"]),
              help="How LR patches are made: bicubic (the paper) or realistic (Real-ESRGAN's "
              "blur/resize/noise/JPEG, for real photos; ranges in the config's [realistic] "
              "table). [default: bicubic]")
@click.option("--lr", type=FiniteFloat(), help="Adam learning rate. [default: 1e-4]")
@click.option("--warmup-steps", type=int, help="Raise the learning rate linearly over the "
              "first N steps of each phase, then follow its schedule. [default: 0]")
@click.option("--lr-scaling", type=click.Choice(["none", "sqrt"]),
              help="Scale --lr for the batch size: sqrt = x sqrt(batch size / "
              "lr_reference_batch, 16), the square-root rule for Adam. [default: none]")
@click.option("--init", help="Generator to start from (path, registry name or hf://).")
@click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped.")
@click.option("--overwrite", is_flag=True, help="Start again in a --out that holds a run.")
@click.option("--vgg-weights", help="imagenet (torchvision download) or a local "
              "VGG19 .safetensors file. [default: imagenet]")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]),
              help="auto = bf16 on CUDA and on CPUs with native bf16 (AMX, "
              "AVX-512-BF16), else fp32. [default: auto]")
@click.option("--seed", type=int, help="[default: 0]")
@click.option("--val-every", type=int, help="Validate every N steps. [default: 5000]")
@click.option("--save-every", type=int, help="Checkpoint every N steps. [default: 5000]")
@click.option("--keep", type=int, help="Step checkpoints to keep. [default: 3]")
@click.option("--ema", type=FiniteFloat(), help="EMA decay of the generator weights, 0 = off. "
              "[default: 0]")
@click.option("--pixel-loss", type=click.Choice(["mse", "l1"]), help="[default: mse]")
@click.option("--gan-loss", type=click.Choice(["bce", "lsgan"]), help="[default: bce]")
@click.option("--discriminator", type=click.Choice(["vgg", "unet"]),
              help="The GAN phase's discriminator: vgg (the paper's, one logit per patch) or "
              "unet (Real-ESRGAN's U-Net with spectral norm, one logit per pixel; patch size "
              "a multiple of 8). [default: vgg]")
@click.option("--norm", type=click.Choice(NORMS),
              help="Generator normalisation: batch (the paper's BatchNorm) or none (as "
              "ESRGAN; BatchNorm statistics averaged over degraded batches shift colours). "
              "With --init a batch checkpoint is folded into the none network. "
              "[default: batch]")
@click.option("--compile", "compile_", type=click.Choice(COMPILE_MODES), is_flag=False,
              flag_value="networks", help="torch.compile: off; networks (each network; "
              "--compile alone); step (each phase's whole step as one function, CUDA graphs "
              "on CUDA; meant for --norm none, one process). [default: off]")
@click.option("--no-compile", is_flag=True, help="Same as --compile off.")
@click.option("--sync-bn/--no-sync-bn", "sync_bn", default=None,
              help="Under torchrun: BatchNorm statistics over the whole global batch, as "
              "one process would compute them. [default: off]")
@click.option("--device", help="auto, cpu, cuda, cuda:1, ... [default: auto]")
@click.option("--workers", type=int, help="Data loader processes, -1 = auto. [default: -1]")
@click.option("-q", "--quiet", is_flag=True, help="No live display.")
@friendly_errors
def train_command(run_dir: Path, config_file: Path | None, resume: bool, overwrite: bool,
                  steps: int | None, quiet: bool, compile_: str | None, no_compile: bool,
                  **options) -> None:
    """Train SRResNet (pretrain) and SRGAN (gan) on folders of HR images.

    Precedence: flags > --config file > the paper's defaults. With --resume the run folder's
    config.toml is the base instead (flags still override it).

    Several GPUs or machines: torchrun --nproc-per-node N -m srgan_cli train ... runs
    DistributedDataParallel; rank 0 writes the run folder, and a run can be resumed with
    any number of processes.
    """
    from .training.config import load_config, make_config, with_steps
    from .training.distributed import launched_rank
    from .training.train import CONFIG_FILE, NothingToTrain, train

    sigterm_as_interrupt()  # until the training loop takes over: stop after a step and save
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other")
    if resume and config_file is not None:
        raise click.UsageError("--resume reads the run folder's config.toml; drop --config")
    if no_compile and compile_ not in (None, "off"):
        raise click.UsageError(f"--no-compile and --compile {compile_} contradict each other")
    options["compile"] = "off" if no_compile else compile_
    overrides = {k: v for k, v in options.items() if v is not None and v != ()}
    base = run_dir / CONFIG_FILE if resume else config_file
    if resume and not base.is_file():
        from .errors import TrainingError

        raise TrainingError(f"nothing to resume in {run_dir}: no {CONFIG_FILE}")
    config = load_config(base, overrides) if base is not None else make_config(overrides)
    if steps is not None:
        config = with_steps(config, steps)
    try:
        path = train(config, run_dir, resume=resume, overwrite=overwrite, quiet=quiet,
                     console=err_console)
    except NothingToTrain as e:  # not an error: the run is already where it was asked to be
        if launched_rank() == 0:
            err_console.print(str(e), markup=False, highlight=False, soft_wrap=True)
        return
    if not quiet and launched_rank() == 0:
        err_console.print(f"trained generator: {path} (srgan upscale IMAGE --model {path})",
                          highlight=False, soft_wrap=True)
