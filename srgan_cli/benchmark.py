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

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from . import degradation, metrics
from .errors import SrganError
from .fast import prepare_for_inference
from .images import find_images
from .models import Generator, GeneratorConfig
from .upscale import Upscaler, autocast_dtype, pick_device

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


PERCEPTION_PREFIX = "perception="


def perception_name(perception: float) -> str:
    """The model name of a perception mix in benchmark tables: ``perception=0.25``."""
    return f"{PERCEPTION_PREFIX}{perception:g}"


def model_label(name: str) -> str:
    """A short label for tables, folders and comparison sheets: a file's stem, else the name."""
    path = Path(name)
    return path.stem if path.suffix == ".safetensors" else path.name


def make_method(name: str, scale: int, device: str, precision: str, tile: int | None) -> Method:
    """A pseudo-model (Pillow resize), a perception mix (``perception=P``) or a network
    loaded by name."""
    if name in PSEUDO_MODELS:
        resample = PSEUDO_MODELS[name]
        return lambda lr: pil_to_float(lr.resize((lr.width * scale, lr.height * scale),
                                                  resample))
    if name.startswith(PERCEPTION_PREFIX):
        perception = float(name.removeprefix(PERCEPTION_PREFIX))
        upscaler = Upscaler(device=device, precision=precision, tile=tile, perception=perception)
    else:
        upscaler = Upscaler(name, device=device, precision=precision, tile=tile)
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


def load_dataset(folder: Path) -> list[tuple[str, Image.Image]]:
    """The HR images of a dataset folder as RGB PIL images, sorted by name."""
    if not folder.is_dir():
        raise SrganError(f"dataset folder not found: {folder}")
    paths = find_images(folder, recursive=True)
    if not paths:
        raise SrganError(f"no images in dataset folder {folder}")
    out = []
    for path in paths:
        with Image.open(path) as im:
            out.append((path.stem, im.convert("RGB")))
    return out


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
        sr = method(lr_img).cpu()
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
        )
        if save_dir is not None:
            out = save_dir / dataset / model_label(model)
            out.mkdir(parents=True, exist_ok=True)
            degradation.tensor_to_pil(sr).save(out / f"{name}.png")
        yield score, sr


def summarize(scores: list[ImageScore]) -> list[dict]:
    """Mean scores per (model, dataset), in first-seen order, with the paper's figures."""
    groups: dict[tuple[str, str], list[ImageScore]] = {}
    for s in scores:
        groups.setdefault((s.model, s.dataset), []).append(s)
    rows = []
    for (model, dataset), group in groups.items():
        lp = [s.lpips for s in group if s.lpips is not None]
        key = paper_key(model)
        paper = PAPER_RESULTS.get((key, dataset)) if key else None
        rows.append({
            "model": model, "dataset": dataset, "n": len(group),
            "psnr_y": statistics.fmean(s.psnr_y for s in group),
            "ssim_y": statistics.fmean(s.ssim_y for s in group),
            "psnr_rgb": statistics.fmean(s.psnr_rgb for s in group),
            "lpips": statistics.fmean(lp) if lp else None,
            "lr_psnr": statistics.fmean(s.lr_psnr for s in group),
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
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    sheet.save(path)
    return path


def run_quality(
    models: list[str], datasets: list[Path], scale: int = 4, device: str = "auto",
    precision: str = "fp32", tile: int | None = 512, lpips_weights: str | None = None,
    save_dir: Path | None = None, compare_dir: Path | None = None,
    on_image: Callable[[ImageScore], None] | None = None, degradation_kind: str = "bicubic",
) -> tuple[list[ImageScore], bool]:
    """Score every model on every dataset (once per degradation of ``degradation_kind``,
    see ``lr_makers``); returns per-image scores and whether LPIPS ran."""
    lpips = metrics.load_lpips(lpips_weights)
    methods = {m: make_method(m, scale, device, precision, tile) for m in models}
    scores: list[ImageScore] = []
    for folder in datasets:
        hr_images = load_dataset(folder)
        for label, make_lr in lr_makers(folder.name, degradation_kind, scale):
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
    tile: int | None
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


def run_speed(
    model: str | None, sizes: list[int], device: str = "auto",
    precisions: tuple[str, ...] = ("auto",), tiles: tuple[int, ...] = (0,),
    repeats: int = 3, warmup: int = 1, ablation: bool = True,
    on_row: Callable[[SpeedRow], None] | None = None,
) -> list[SpeedRow]:
    """Time every ``speed_configs`` row at each size; ``x baseline`` is the first row's ms."""
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
    return rows


def to_json(results: list[dict], speed: list[SpeedRow], per_image: list[ImageScore] | None
            ) -> str:
    """The ``--json`` document: {"results": [...], "speed": [...], "per_image": [...]}."""
    doc: dict = {"results": results, "speed": [asdict(r) for r in speed]}
    if per_image is not None:
        doc["per_image"] = [asdict(s) for s in per_image]
    return json.dumps(doc, indent=2)
