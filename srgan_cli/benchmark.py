"""``srgan benchmark``: the field's quality protocol, plus speed and memory.

Quality (Ledig et al. / BasicSR protocol): each HR image is cropped to a multiple of the
scale, its LR input is the Pillow bicubic downscale (``degradation.py``, the same function
training uses), the method upscales it, and the result is scored against HR with PSNR and
SSIM on the Y channel (BT.601) with ``scale`` pixels shaved off each border, RGB PSNR,
LPIPS-VGG when its weights are available, and LR consistency (PSNR of the SR output
downscaled back against the LR input; reference-free, flags colour and brightness drift).

``--degradation realistic-eval`` scores real-photo robustness with no new data: each dataset
is scored once per fixed degradation of ``degradation.REALISTIC_EVAL`` (JPEG, noise + JPEG,
blur + JPEG; seeded, so the inputs are identical across runs) against the clean HR, in rows
labelled ``DATASET+DEGRADATION`` beside the clean ``DATASET`` row.

Methods are model names (anything ``load_model`` accepts) or the built-in pseudo-models
``bicubic`` and ``nearest``, so baselines and networks go through the same code path.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from . import degradation, json_output, metrics
from .checkpoints import MIXES
from .errors import ImageError, SrganError
from .fast import prepare_for_inference
from .images import find_images, read_rgb_uint8
from .models import Generator, GeneratorConfig
from .precision import autocast_dtype
from .upscale import Upscaler, pick_device

PSEUDO_MODELS = {"bicubic": Image.BICUBIC, "nearest": Image.NEAREST}

# The paper's x4 figures (PSNR-Y, SSIM-Y), Ledig et al. 2017, Table 2 / Table 4.
PAPER_RESULTS: dict[tuple[str, str], tuple[float, float | None]] = {
    ("bicubic", "Set5"): (28.43, 0.8211),
    ("bicubic", "Set14"): (25.99, 0.7486),
    ("bicubic", "BSD100"): (25.94, 0.6935),
    ("srresnet", "Set5"): (32.05, 0.9019),
    ("srresnet", "Set14"): (28.49, 0.8184),
    ("srresnet", "BSD100"): (27.58, 0.7620),
    ("srgan", "Set5"): (29.40, 0.8472),
    ("srgan", "Set14"): (26.02, 0.7397),
    ("srgan", "BSD100"): (25.16, 0.6688),
}


def paper_key(model: str) -> str | None:
    """Which paper row a model name corresponds to (``srgan-x4`` -> ``srgan``), if any."""
    name = Path(model).name.lower()
    for key in ("srresnet", "srgan", "bicubic"):
        if name.startswith(key):
            return key
    return None


# --------------------------------------------------------------------------- conversions


def pil_to_float(img: Image.Image) -> torch.Tensor:
    """PIL image -> (3, H, W) float32 RGB in [0, 1], the networks' input convention."""
    return degradation.pil_to_tensor(img).float() / 255


# --------------------------------------------------------------------------- methods


Method = Callable[[Image.Image], torch.Tensor]
"""An upscaler under test: LR RGB PIL image -> SR (3, sH, sW) float32 in [0, 1]."""


def mix_name(knob: str, t: float) -> str:
    """The model name of a two-model mix (``checkpoints.MIXES``): ``denoise=0.5``."""
    return f"{knob}={t:g}"


def parse_mix(name: str) -> tuple[str, float] | None:
    """``(knob, t)`` of a ``mix_name``, else None."""
    knob, sep, value = name.partition("=")
    if not sep or knob not in MIXES:
        return None
    try:
        return knob, float(value)
    except ValueError:
        return None


def model_label(name: str) -> str:
    """A short label for tables, folders and comparison sheets: a file's stem, else the name."""
    path = Path(name)
    return path.stem if path.suffix == ".safetensors" else path.name


def make_method(
    name: str, scale: int, device: str, precision: str, tile: int | None, tta: bool = False
) -> Method:
    """A pseudo-model (Pillow resize), a mix of two shipped models (``perception=P``,
    ``denoise=D``) or a network loaded by name."""
    if name in PSEUDO_MODELS:
        resample = PSEUDO_MODELS[name]
        return lambda lr: pil_to_float(lr.resize((lr.width * scale, lr.height * scale),
                                                  resample))
    mix = parse_mix(name)
    if mix is not None:
        knob, t = mix
        upscaler = Upscaler(device=device, precision=precision, tile=tile, tta=tta,
                            **{knob: t})
    else:
        upscaler = Upscaler(name, device=device, precision=precision, tile=tile, tta=tta)
    if upscaler.scale != scale:
        raise SrganError(f"model {name!r} upscales x{upscaler.scale}, but --scale is {scale}")
    return lambda lr: upscaler.upscale_tensor(pil_to_float(lr))


# --------------------------------------------------------------------------- quality


@dataclass
class ImageScore:
    """Scores of one method on one image (dB for PSNRs; LPIPS lower is better)."""

    model: str
    dataset: str
    image: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    lpips: float | None
    lr_psnr: float
    seconds: float = 0.0  # wall-clock time of the method on this image
    colour_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mean SR - HR per RGB channel


def big_enough_to_score(width: int, height: int, scale: int) -> bool:
    """Whether an HR image can be scored: cropped to a multiple of ``scale`` and shaved by
    ``scale`` on each border, SSIM's 11x11 window must still fit."""
    return all(side - side % scale - 2 * scale >= 11 for side in (width, height))


def load_dataset(
    folder: Path, scale: int = 4
) -> tuple[list[tuple[str, Image.Image]], list[tuple[Path, str]]]:
    """The HR images of a dataset folder as RGB PIL images, sorted by name, and the files
    left out as ``(path, reason)``: unreadable (``images.read_rgb_uint8``, the reader of
    ``srgan upscale``) or too small to score at ``scale``."""
    if not folder.is_dir():
        raise SrganError(f"dataset folder not found: {folder}")
    paths = find_images(folder, recursive=True)
    if not paths:
        raise SrganError(f"no images in dataset folder {folder}")
    names = image_names(folder, paths)
    kept, skipped = [], []
    for path in paths:
        try:
            image = degradation.tensor_to_pil(read_rgb_uint8(path))
        except ImageError as e:
            skipped.append((path, str(e)))
            continue
        if big_enough_to_score(*image.size, scale):
            kept.append((names[path], image))
        else:
            skipped.append((path, f"{image.width}x{image.height} is too small to score at "
                                  f"x{scale}"))
    return kept, skipped


def image_names(folder: Path, paths: Sequence[Path]) -> dict[Path, str]:
    """Each image's name in tables and output files: its path below ``folder`` without the
    suffix (``baby``, ``sub/baby``), with the suffix where two files share a stem
    (``baby.png``, ``baby.jpg``), so no two images write the same output."""
    stems = {p: p.relative_to(folder).with_suffix("").as_posix() for p in paths}
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem] = counts.get(stem, 0) + 1
    return {p: stem if counts[stem] == 1 else p.relative_to(folder).as_posix()
            for p, stem in stems.items()}


def dataset_labels(folders: Sequence[Path]) -> dict[Path, str]:
    """The distinct dataset folders (one given twice counts once, by its real path), each
    with its row label: the folder's name, or as many trailing path parts as it takes to
    tell apart folders of the same name (``x/ds``, ``y/ds``). Labels also name the
    ``--save-images`` / ``--compare`` subfolders, so distinct datasets never share one."""
    unique: dict[Path, Path] = {}  # real path -> the folder as given first
    for folder in folders:
        unique.setdefault(folder.resolve(), folder)
    labels = {}
    for real, given in unique.items():
        depth = 1
        while depth < len(real.parts) and any(
                other != real and other.parts[-depth:] == real.parts[-depth:]
                for other in unique):
            depth += 1
        labels[given] = "/".join(real.parts[-depth:])
    return labels


def check_output_folders(
    outputs: dict[str, Path | None], labels: dict[Path, str],
) -> None:
    """Before any work, one clear error for an output folder (``{"--save-images": DIR}``)
    that cannot be made (a file on its path), or whose files would land inside a data
    folder, where the next benchmark would score them as HR images."""
    for option, out in outputs.items():
        if out is None:
            continue
        for part in (out, *out.parents):
            if part.exists():
                if not part.is_dir():
                    raise SrganError(f"{option} {out}: {part} is a file, not a folder")
                break
        for folder, label in labels.items():
            if (out / label).resolve().is_relative_to(folder.resolve()):
                raise SrganError(
                    f"{option} {out}: its files would be written inside the data folder "
                    f"{folder} and scored as HR images by the next benchmark; choose a "
                    "folder outside it")


MakeLR = Callable[[Image.Image, str], Image.Image]
"""(HR image cropped to a multiple of the scale, image name) -> the LR input to upscale."""

BENCHMARK_DEGRADATIONS = ("bicubic", "realistic-eval")


def lr_makers(dataset: str, kind: str, scale: int) -> list[tuple[str, MakeLR]]:
    """(row label, LR maker) per degradation scored: the bicubic protocol alone, or for
    ``realistic-eval`` every ``degradation.REALISTIC_EVAL`` case (noise seeded per image)."""
    if kind == "bicubic":
        return [(dataset, lambda hr, name: degradation.bicubic_downscale(hr, scale))]
    if kind != "realistic-eval":
        raise SrganError(f"unknown degradation {kind!r}: choose one of "
                         f"{', '.join(BENCHMARK_DEGRADATIONS)}")

    def maker(case: degradation.EvalDegradation) -> MakeLR:
        return lambda hr, name: case.lr_image(hr, scale, degradation.eval_seed(name, case.name))

    return [(dataset if case.name == "clean" else f"{dataset}+{case.name}", maker(case))
            for case in degradation.REALISTIC_EVAL]


def score_dataset(
    model: str,
    method: Method,
    dataset: str,
    hr_images: list[tuple[str, Image.Image]],
    scale: int,
    lpips: metrics.LPIPS | None = None,
    save_dir: Path | None = None,
    make_lr: MakeLR | None = None,
) -> Iterator[tuple[ImageScore, torch.Tensor]]:
    """Score ``method`` on each HR image; yields each score with its SR image. The LR input
    is ``make_lr(hr, name)``, by default the bicubic downscale (the paper's protocol)."""
    for name, hr_img in hr_images:
        hr_img = degradation.crop_to_multiple(hr_img, scale)
        lr_img = (make_lr(hr_img, name) if make_lr is not None
                  else degradation.bicubic_downscale(hr_img, scale))
        hr, lr = pil_to_float(hr_img), pil_to_float(lr_img)
        start = time.perf_counter()
        sr = method(lr_img).cpu()
        seconds = time.perf_counter() - start
        if sr.shape != hr.shape:
            raise SrganError(f"{model} made {tuple(sr.shape)} from {name}, expected {hr.shape}")
        # metrics on the quantised output, as a saved image would score
        sr = metrics.quantize(sr).float() / 255
        score = ImageScore(
            model=model, dataset=dataset, image=name,
            psnr_y=float(metrics.psnr(sr, hr, border=scale)[0]),
            ssim_y=float(metrics.ssim(sr, hr, border=scale)[0]),
            psnr_rgb=float(metrics.psnr(sr, hr, border=scale, y_channel=False)[0]),
            lpips=None if lpips is None else float(lpips(sr[None], hr[None])[0]),
            lr_psnr=float(metrics.lr_consistency(sr, lr, scale)[0]),
            seconds=seconds,
            colour_shift=colour_shift(sr, hr, border=scale),
        )
        if save_dir is not None:
            path = saved_image_path(save_dir, dataset, model, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            degradation.tensor_to_pil(sr).save(path)
        yield score, sr


def colour_shift(sr: torch.Tensor, hr: torch.Tensor, border: int) -> tuple[float, float, float]:
    """Mean of SR - HR per RGB channel, in 8-bit levels, ``border`` pixels shaved: a model
    that tints or darkens shows here even where PSNR hides it. (3, H, W) in [0, 1] each."""
    diff = (sr - hr)[:, border:sr.shape[-2] - border, border:sr.shape[-1] - border]
    r, g, b = (diff.double().mean(dim=(1, 2)) * 255).tolist()
    return r, g, b


def saved_image_path(save_dir: Path, dataset: str, model: str, image: str) -> Path:
    """Where ``--save-images`` puts one SR output: DIR/DATASET/MODEL/IMAGE.png."""
    return save_dir / dataset / model_label(model) / f"{image}.png"


def refuse_earlier_results(
    models: list[str], datasets: list[tuple[str, list[str]]], save_dir: Path | None,
    compare_dir: Path | None,
) -> None:
    """Before any work: refuse to replace files of an earlier ``--save-images`` or
    ``--compare`` run. ``datasets``: (dataset name, its image names)."""
    planned = []
    for dataset, names in datasets:
        for name in names:
            if save_dir is not None:
                planned += [saved_image_path(save_dir, dataset, m, name) for m in models]
            if compare_dir is not None:
                planned.append(compare_dir / dataset / f"{name}.png")
    existing = [path for path in planned if path.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise SrganError(f"{existing[0]} exists{more}: pass --overwrite to replace earlier "
                         "results, or choose another folder")


def summarize(scores: list[ImageScore]) -> list[dict]:
    """Mean scores per (model, dataset), in first-seen order, with the paper's figures."""
    groups: dict[tuple[str, str], list[ImageScore]] = {}
    for s in scores:
        groups.setdefault((s.model, s.dataset), []).append(s)
    rows = []
    for (model, dataset), group in groups.items():
        lp = [s.lpips for s in group if s.lpips is not None]
        key = paper_key(model)
        paper = PAPER_RESULTS.get((key, Path(dataset).name)) if key else None
        rows.append({
            "model": model, "dataset": dataset, "n": len(group),
            "psnr_y": statistics.fmean(s.psnr_y for s in group),
            "ssim_y": statistics.fmean(s.ssim_y for s in group),
            "psnr_rgb": statistics.fmean(s.psnr_rgb for s in group),
            "lpips": statistics.fmean(lp) if lp else None,
            "lr_psnr": statistics.fmean(s.lr_psnr for s in group),
            "colour_shift": [statistics.fmean(s.colour_shift[c] for s in group)
                             for c in range(3)],
            "seconds": sum(s.seconds for s in group),
            "paper_psnr_y": paper[0] if paper else None,
            "paper_ssim_y": paper[1] if paper else None,
        })
    return rows


def compare_crops(
    name: str, hr: Image.Image, lr: Image.Image, srs: dict[str, Image.Image], scale: int,
    out_dir: Path, crop: int = 128,
) -> Path:
    """Write a side-by-side PNG of a central crop: LR nearest | each method | HR, labelled."""
    from PIL import ImageDraw

    left = max((hr.width - crop) // 2 // scale * scale, 0)
    top = max((hr.height - crop) // 2 // scale * scale, 0)
    box = (left, top, min(left + crop, hr.width), min(top + crop, hr.height))
    lr_box = tuple(v // scale for v in box)
    panels = {"LR (nearest)": lr.crop(lr_box).resize((box[2] - box[0], box[3] - box[1]),
                                                      Image.NEAREST)}
    panels.update({m: img.crop(box) for m, img in srs.items()})
    panels["HR"] = hr.crop(box)
    w, h = box[2] - box[0], box[3] - box[1]
    label_h = 14
    sheet = Image.new("RGB", (w * len(panels), h + label_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (label, panel) in enumerate(panels.items()):
        sheet.paste(panel, (i * w, label_h))
        draw.text((i * w + 2, 1), label[: max(w // 6, 4)], fill=(0, 0, 0))
    path = out_dir / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def run_quality(
    models: list[str], datasets: list[Path], scale: int = 4, device: str = "auto",
    precision: str = "fp32", tile: int | None = 512, lpips_weights: str | None = None,
    save_dir: Path | None = None, compare_dir: Path | None = None,
    on_image: Callable[[ImageScore], None] | None = None, overwrite: bool = False,
    on_skip: Callable[[Path, str], None] | None = None, tta: bool = False,
    degradation_kind: str = "bicubic",
) -> tuple[list[ImageScore], bool]:
    """Score every model on every dataset; returns per-image scores and whether LPIPS ran.

    ``tta``: each network is also scored with the 8-fold self-ensemble, as ``MODEL+tta``.
    Files that cannot be scored are left out, each reported as ``on_skip(path, reason)``.
    Earlier ``save_dir``/``compare_dir`` results are replaced only with ``overwrite``.
    Each dataset is scored once per degradation of ``degradation_kind`` (see ``lr_makers``).
    """
    tta_names = [f"{m}+tta" for m in models if m not in PSEUDO_MODELS] if tta else []
    names = dataset_labels(datasets)
    check_output_folders({"--save-images": save_dir, "--compare": compare_dir}, names)
    loaded = {folder: load_dataset(folder, scale) for folder in names}
    if not overwrite:
        refuse_earlier_results(
            [*models, *tta_names],
            [(label, [n for n, _ in hr]) for f, (hr, _) in loaded.items()
             for label, _ in lr_makers(names[f], degradation_kind, scale)], save_dir,
            compare_dir)
    lpips = metrics.load_lpips(lpips_weights)
    methods = {m: make_method(m, scale, device, precision, tile) for m in models}
    if tta:
        methods.update({f"{m}+tta": make_method(m, scale, device, precision, tile, tta=True)
                        for m in models if m not in PSEUDO_MODELS})
    scores: list[ImageScore] = []
    for folder, name in names.items():
        hr_images, skipped = loaded[folder]
        for path, reason in skipped if on_skip else ():
            on_skip(path, reason)
        for label, make_lr in lr_makers(name, degradation_kind, scale):
            outputs: dict[str, dict[str, torch.Tensor]] = {}
            for model, method in methods.items():
                for score, sr in score_dataset(model, method, label, hr_images, scale, lpips,
                                               save_dir, make_lr):
                    scores.append(score)
                    outputs.setdefault(score.image, {})[model_label(model)] = sr
                    if on_image:
                        on_image(score)
            if compare_dir is not None:
                for name, hr_img in hr_images:
                    hr_img = degradation.crop_to_multiple(hr_img, scale)
                    srs = {m: degradation.tensor_to_pil(sr) for m, sr in outputs[name].items()}
                    compare_crops(name, hr_img, make_lr(hr_img, name), srs, scale,
                                  compare_dir / label)
    return scores, lpips is not None


# --------------------------------------------------------------------------- speed


@dataclass
class SpeedRow:
    """One timed configuration: ms per image, output megapixels per second, peak memory."""

    model: str
    size: int
    device: str
    precision: str
    tile: int | str | None
    label: str
    ms: float
    mpix_per_s: float
    peak_mem_mb: float
    memory_kind: str


class PeakRSS:
    """Samples this process's resident memory in a thread; ``.peak`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self) -> PeakRSS:
        self.peak = self.current()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.current())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def speed_generator(model: str | None) -> tuple[str, Generator]:
    """The network to time: a named model, or the paper's SRResNet with random weights."""
    if model is None:
        return "srresnet (paper architecture, random weights)", Generator(GeneratorConfig())
    if model in PSEUDO_MODELS:
        raise SrganError(f"--speed times a network; {model!r} is a Pillow resize with no "
                         "network to time: give a model name or checkpoint, or no --model for "
                         "the paper's architecture")
    from .checkpoints import load_model

    return model, load_model(model)


def time_config(
    upscaler: Upscaler, size: int, repeats: int, warmup: int, label: str, model_name: str,
    precision: str,
) -> SpeedRow:
    """Warm up, then time ``repeats`` forward passes of a (1, 3, size, size) input."""
    device = upscaler.device
    lr = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    if device.type == "cuda":
        lr = lr.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        upscaler.upscale_tensor(lr)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with PeakRSS() as rss:
        for _ in range(repeats):
            start = time.perf_counter()
            upscaler.upscale_tensor(lr)
            sync()
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "gpu allocated"
    else:
        peak, kind = rss.peak, "process RSS"
    ms = statistics.median(times) * 1000
    out_mpix = (size * upscaler.scale) ** 2 / 1e6
    return SpeedRow(model=model_name, size=size, device=str(device), precision=precision,
                    tile=upscaler.tile, label=label, ms=ms, mpix_per_s=out_mpix / (ms / 1000),
                    peak_mem_mb=peak / 2**20, memory_kind=kind)


@dataclass(frozen=True)
class SpeedConfig:
    """One row of ``--speed``: how to run the generator.

    ``prepare`` holds ``fast.prepare_for_inference`` arguments; ``None`` runs the network as
    trained (the baseline), ``{}`` is the full default fast path.
    """

    label: str
    precision: str
    tile: int
    prepare: dict[str, bool] | None


NO_OPTIMIZATIONS = {"fold_bn": False, "shuffled_tail": False, "channels_last": False,
                    "inplace_act": False}


def speed_configs(
    device: torch.device, precisions: tuple[str, ...] = ("auto",), tiles: tuple[int, ...] = (0,),
    ablation: bool = True,
) -> list[SpeedConfig]:
    """The baseline (eager fp32, untiled) first; then, with ``ablation``, each optimization
    alone (untiled); then the default fast path for each precision x tile."""
    configs = [SpeedConfig("baseline: eager fp32, untiled", "fp32", 0, None)]
    if ablation:
        reduced = "fp16" if device.type == "cuda" else "bf16"
        configs += [
            SpeedConfig("only channels_last, fp32", "fp32", 0,
                        {**NO_OPTIMIZATIONS, "channels_last": True}),
            SpeedConfig("only BN folded, fp32", "fp32", 0, {**NO_OPTIMIZATIONS, "fold_bn": True}),
            SpeedConfig("only tail before shuffle, fp32", "fp32", 0,
                        {**NO_OPTIMIZATIONS, "shuffled_tail": True}),
            SpeedConfig(f"only channels_last + {reduced} autocast", reduced, 0,
                        {**NO_OPTIMIZATIONS, "channels_last": True}),
        ]
    for precision in precisions:
        dtype = autocast_dtype(precision, device)
        resolved = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
        for tile in tiles:
            configs.append(SpeedConfig(f"fast path: {resolved}, tile {tile or 'off'}",
                                       precision, tile, {}))
    return configs


def time_end_to_end(
    upscaler: Upscaler, size: int, n_images: int, model_name: str, precision: str,
    pipeline: bool = True,
) -> SpeedRow:
    """A folder of ``n_images`` generated size x size PNGs through ``upscale_batch`` (the code
    of ``srgan upscale``: decode, network, encode, atomic write) to PNG; ms per image."""
    import tempfile

    import numpy as np

    from .upscale import upscale_batch

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="srgan-speed-") as tmp:
        jobs = []
        for i in range(n_images):  # smooth random scenes: noise, bicubic-enlarged 8x
            small = rng.integers(0, 256, (max(size // 8, 1), max(size // 8, 1), 3), np.uint8)
            path = Path(tmp) / f"in{i}.png"
            Image.fromarray(small).resize((size, size), Image.BICUBIC).save(path)
            jobs.append((path, Path(tmp) / "out" / path.name))
        with PeakRSS() as rss:
            start = time.perf_counter()
            summary = upscale_batch(upscaler, jobs, pipeline=pipeline)
            elapsed = time.perf_counter() - start
        if summary.failed:
            raise SrganError(f"end-to-end run failed: {summary.failed[0].reason}")
    ms = elapsed / n_images * 1000
    label = (f"end to end: {n_images} PNG files -> PNG, "
             f"{'pipelined' if pipeline else 'serial'} (srgan upscale)")
    return SpeedRow(model=model_name, size=size, device=str(upscaler.device), precision=precision,
                    tile=upscaler.tile, label=label, ms=ms,
                    mpix_per_s=(size * upscaler.scale) ** 2 / 1e6 / (ms / 1000),
                    peak_mem_mb=rss.peak / 2**20, memory_kind="process RSS")


def run_speed(
    model: str | None, sizes: list[int], device: str = "auto",
    precisions: tuple[str, ...] = ("auto",), tiles: tuple[int, ...] = (0,),
    repeats: int = 3, warmup: int = 1, ablation: bool = True, end_to_end: int = 0,
    on_row: Callable[[SpeedRow], None] | None = None,
) -> list[SpeedRow]:
    """Time every ``speed_configs`` row at each size; ``x baseline`` is the first row's ms.

    With ``end_to_end`` N > 0, three more rows per size with ``srgan upscale``'s defaults
    (fast path, first precision, ``--tile auto``), side by side: model only (the
    network on an in-memory tensor), then N PNG files through the pipelined and the serial
    batch loop.
    """
    name, generator = speed_generator(model)
    dev = pick_device(device)
    generator = generator.to(dev).eval()
    rows = []
    for size in sizes:
        for config in speed_configs(dev, precisions, tiles, ablation):
            net = generator if config.prepare is None else prepare_for_inference(
                generator, **config.prepare)
            upscaler = Upscaler(net, device=dev, precision=config.precision, tile=config.tile,
                                optimize=False)
            row = time_config(upscaler, size, repeats, warmup, config.label, name,
                              config.precision)
            rows.append(row)
            if on_row:
                on_row(row)
        if end_to_end > 0:
            upscaler = Upscaler(generator, device=dev, precision=precisions[0], tile="auto")
            label = "model only: fast path, tile auto (srgan upscale's network time)"
            e2e_rows = [time_config(upscaler, size, repeats, warmup, label, name, precisions[0])]
            for pipeline in (True, False):
                e2e_rows.append(time_end_to_end(upscaler, size, end_to_end, name, precisions[0],
                                                pipeline))
            for row in e2e_rows:
                rows.append(row)
                if on_row:
                    on_row(row)
    return rows


def to_json(results: list[dict], speed: list[SpeedRow], per_image: list[ImageScore] | None,
            skipped: list[tuple[Path, str]] | None = None) -> str:
    """The ``--json`` document: {"results": [...], "speed": [...], "per_image": [...],
    "skipped": [...]}; non-finite scores (PSNR of identical images) are null."""
    doc: dict = {"results": results, "speed": [asdict(r) for r in speed]}
    if per_image is not None:
        doc["per_image"] = [asdict(s) for s in per_image]
    if skipped:
        doc["skipped"] = [{"path": str(path), "reason": reason} for path, reason in skipped]
    return json_output.to_json(doc)
