"""The realistic degradation pipeline (Real-ESRGAN's second-order chain), its use in training,
and the fixed ``realistic-eval`` inputs of the benchmark. CPU only, offline, tiny images."""

from __future__ import annotations

import hashlib
import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from test_train import assert_same_states
from torch.utils.data import default_collate

from srgan_cli import benchmark, degradation, kernels
from srgan_cli.cli import main
from srgan_cli.degradation import RealisticDegradation
from srgan_cli.errors import TrainingError
from srgan_cli.training import data
from srgan_cli.training.config import load_config, make_config, save_config
from srgan_cli.training.train import train


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 2, size: int = 24, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) float32 in [0, 1], smooth plus texture (quantised to 8 bits)."""
    gen = seeded(seed)
    ramp = torch.linspace(0, 1, size)
    x = 0.6 * ramp[None, None, :, None] * ramp + 0.4 * torch.rand(n, 3, size, size, generator=gen)
    return x.mul(255).round().div(255)


def random_png(path, size, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture
def train_dir(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    random_png(folder / "a.png", (48, 40), 1)
    random_png(folder / "b.png", (40, 48), 2)
    return folder


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("kind", kernels.KERNEL_TYPES)
def test_every_kernel_family_is_normalised_and_seeded(kind):
    def draw(seed):
        return kernels.random_kernel(seeded(seed), (kind,), (1.0,), 13, (0.2, 3.0), (0.5, 4.0),
                                     (1.0, 2.0))

    k = draw(1)
    assert k.shape == (13, 13) and k.dtype == torch.float32
    assert math.isclose(float(k.sum()), 1.0, abs_tol=1e-5) and float(k.min()) >= 0
    assert torch.equal(k, draw(1)) and not torch.equal(k, draw(2))
    if kind.endswith("_iso"):
        assert torch.allclose(k, k.T, atol=1e-7) and torch.allclose(k, k.flip(0), atol=1e-7)


def test_sinc_kernel_is_a_normalised_low_pass_with_ringing():
    k = kernels.sinc_kernel(21, math.pi / 4)
    assert math.isclose(float(k.sum()), 1.0, abs_tol=1e-5)
    assert float(k[10, 10]) == float(k.max()) and float(k.min()) < 0  # negative side lobes
    assert torch.allclose(kernels.pad_to(kernels.sinc_kernel(7, 2.0), 21)[7:14, 7:14],
                          kernels.sinc_kernel(7, 2.0))


# --------------------------------------------------------------------------- steps


def check_image(out: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert out.shape == shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_blur_equals_conv2d_per_sample_and_keeps_shape():
    x = batch()
    pulse = torch.zeros(5, 5)
    pulse[2, 2] = 1
    assert torch.allclose(degradation.blur(x, pulse), x, atol=1e-6)
    aniso = kernels.shaped_kernel("gaussian", 7, 2.0, 0.5, 0.7)
    per_sample = torch.stack([kernels.sinc_kernel(7, 2.0), aniso])
    out = degradation.blur(x, per_sample)
    assert out.shape == x.shape and out.dtype == torch.float32
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect")
    for i in range(2):  # the FFT result is conv2d's (cross-correlation, reflected edges)
        expected = torch.nn.functional.conv2d(padded[i:i + 1].transpose(0, 1),
                                              per_sample[i][None, None]).transpose(0, 1)
        assert torch.allclose(out[i:i + 1], expected, atol=1e-5)
    assert torch.equal(out, degradation.blur(x, per_sample))
    assert degradation.blur(x[:, :, :3, :3], kernels.sinc_kernel(21, 1.0)).shape == (2, 3, 3, 3)


@pytest.mark.parametrize("mode", degradation.RESIZE_MODES)
def test_resize_modes_reach_the_requested_size(mode):
    out = degradation.resize(batch(), (10, 31), mode)
    assert out.shape == (2, 3, 10, 31)


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("step", ["gaussian", "poisson"])
def test_noise_is_seeded_clamped_and_grey_when_asked(step, gray):
    x = batch()
    amount = torch.tensor([20 / 255 if step == "gaussian" else 0.5] * 2)

    def add(images, seed):
        return degradation.add_noise(images, torch.tensor([step == "gaussian"] * 2),
                                     torch.tensor([gray] * 2), amount,
                                     torch.tensor([seed, seed + 100]))

    out = add(x, 1)
    check_image(out, x.shape)
    assert torch.equal(out, add(x, 1))
    assert not torch.equal(out, add(x, 2))
    mid = x * 0.2 + 0.4  # far enough from 0 and 1 that nothing is clamped
    noise = add(mid, 1) - mid
    assert float(noise.abs().mean()) > 1 / 255
    same_in_channels = torch.allclose(noise[:, 0], noise[:, 1], atol=1e-5) and torch.allclose(
        noise[:, 1], noise[:, 2], atol=1e-5)
    assert same_in_channels == gray


def splitmix64_reference(seed: int, stream: int, count: int) -> list[int]:
    """Plain-Python splitmix64 (unsigned 64-bit) outputs 1..count of the key of ``random_bits``."""
    mask = (1 << 64) - 1

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    key = (mix(seed & mask) + stream) & mask
    key = mix(key)
    return [mix((key + e * 0x9E3779B97F4A7C15) & mask) for e in range(1, count + 1)]


def test_counter_based_bits_are_splitmix64_and_independent_of_the_batch():
    seeds = torch.tensor([0, 12345, 2**62 - 1, 7])
    bits = degradation.random_bits(seeds, (2, 3), stream=4)
    assert bits.shape == (4, 2, 3) and bits.dtype == torch.int64
    for seed, row in zip(seeds.tolist(), bits, strict=True):
        expected = [b - (1 << 64) if b >= 1 << 63 else b
                    for b in splitmix64_reference(seed, 4, 6)]
        assert row.flatten().tolist() == expected
    alone = degradation.random_bits(seeds[1:2], (2, 3), stream=4)
    assert torch.equal(alone[0], bits[1]), "a sample's bits do not depend on its batch"
    assert not torch.equal(degradation.random_bits(seeds, (2, 3), stream=5), bits)
    extremes = degradation.uniform_pair(torch.tensor([0, -1]))  # all bits 0, all bits 1
    assert extremes[0].tolist() == [2.0**-24, 1 - 2.0**-24]  # open interval: log, quantile
    assert extremes[1].tolist() == [0.0, 1 - 2.0**-24]


def test_gaussian_field_is_standard_normal():
    z = degradation.gaussian_field(torch.tensor([3, 4]), (200, 500), stream=0)
    assert z.dtype == torch.float32 and z.shape == (2, 200, 500)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z > 1.96).float().mean()) - 0.025) < 0.002


def test_poisson_quantile_is_the_exact_inverse_cdf():
    """Every rate BasicSR's model can ask for (0 to 256) and uniforms up to the extremes of
    ``uniform_pair`` (2**-24, 1 - 2**-24): the batched guess-and-walk inversion equals a
    plain search of the CDF."""
    rates = torch.cat([torch.tensor([0.0, 1e-6, 1e-3, 0.05]), torch.linspace(0.1, 256, 300)])
    u = torch.cat([torch.tensor([2.0**-24, 2.0**-23, 1e-6, 1e-3]),
                   torch.linspace(0.01, 0.99, 99),
                   torch.tensor([1 - 1e-3, 1 - 1e-6, 1 - 2.0**-23, 1 - 2.0**-24])])
    rate, uniform = torch.meshgrid(rates, u, indexing="ij")
    counts = degradation.poisson_quantile(uniform, rate)
    k = torch.arange(0, 500, dtype=torch.float64)  # reference: the first k with F(k) >= u
    cdf = torch.special.gammaincc(k[None] + 1, rates.double()[:, None])  # (rates, k)
    expected = (cdf[:, None, :] < u.double()[None, :, None]).sum(-1).double()
    assert torch.equal(counts, expected)


@pytest.mark.parametrize("rate", [0.0, 0.3, 2.5, 37.0, 255.0])
def test_poisson_field_has_the_poisson_distribution(rate):
    n = 100_000
    counts = degradation.poisson_field(torch.full((2, n // 2), rate), torch.tensor([1, 2]), 3)
    assert counts.dtype == torch.float32 and torch.equal(counts, counts.round())
    assert float(counts.min()) >= 0
    tolerance = 5 * math.sqrt(max(rate, 1e-3) / n)  # 5 standard errors of the mean
    assert abs(float(counts.mean()) - rate) < tolerance + 1e-9
    if rate > 0:
        assert abs(float(counts.var()) / rate - 1) < 0.04
        for k in range(int(rate), int(rate) + 3):
            p = math.exp(-rate + k * math.log(rate) - math.lgamma(k + 1))
            assert abs(float((counts == k).float().mean()) - p) < 5 * math.sqrt(p / n) + 1e-4


def test_realistic_chain_stays_float32_under_autocast():
    """The chain's matrix products and JPEG must not drop to bf16 when a caller's autocast
    region encloses it: the same float32 result inside and outside."""
    hr = (batch(n=2, size=32, seed=8) * 255).round() / 255
    plans = default_collate([degradation.draw_plan(seeded(s), RealisticDegradation(), (32, 32),
                                                   4) for s in (3, 4)])
    plain = degradation.apply_plans(hr, plans)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = degradation.apply_plans(hr, plans)
    assert inside.dtype == plain.dtype == torch.float32
    assert torch.equal(inside, plain)


def test_noise_of_a_sample_does_not_depend_on_its_batch():
    """Gaussian, shot, colour and grey samples drawn together (each kind batched) equal each
    drawn alone, in canvases whose images have their own sizes."""
    x = 0.3 + 0.4 * batch(n=4, size=20, seed=9)  # mid-range: the noise is not clamped
    gaussian, gray = torch.tensor([True, False, True, False]), torch.tensor([False, True, True,
                                                                            False])
    amount, seeds = torch.tensor([0.05, 1.0, 0.02, 2.0]), torch.tensor([11, 12, 13, 14])
    heights, widths = torch.tensor([20, 9, 14, 20]), torch.tensor([20, 17, 5, 11])
    together = degradation.add_noise(x, gaussian, gray, amount, seeds, heights, widths)
    for i in range(4):
        alone = degradation.add_noise(x[i:i + 1], gaussian[i:i + 1], gray[i:i + 1],
                                      amount[i:i + 1], seeds[i:i + 1], heights[i:i + 1],
                                      widths[i:i + 1])
        assert torch.equal(together[i], alone[0]), i
    noise = together - x
    assert torch.allclose(noise[1, 0], noise[1, 2], atol=1e-6), "grey shot noise"
    assert not torch.allclose(noise[3, 0], noise[3, 1], atol=1e-3), "colour shot noise"


def test_poisson_scale_counts_the_levels_of_the_image_only():
    """BasicSR's v = distinct 8-bit levels rounded up to a power of two, of each sample's
    image, not of what lies beyond it in its canvas."""
    x = torch.zeros(2, 1, 4, 6)
    x[0, 0, :2, :3] = torch.tensor([[0, 1, 2], [3, 4, 4]])  # 5 levels -> 8
    x[0, 0, :, 3:] = 200  # outside sample 0's 2x3 image
    x[1] = torch.arange(24).view(1, 4, 6)  # 24 levels -> 32
    mask = degradation.valid_mask(x, torch.tensor([2, 4]), torch.tensor([3, 6]))
    assert degradation.photon_levels(x, mask).tolist() == [8.0, 32.0]


def test_jpeg_equals_a_pillow_encode_decode_at_that_quality():
    x = batch(n=2, size=32)
    out = degradation.jpeg(x, [30, 90])
    check_image(out, x.shape)
    for image, quality, result in zip(x, (30, 90), out, strict=True):
        buffer = io.BytesIO()
        degradation.tensor_to_pil(image).save(buffer, format="JPEG", quality=quality)
        expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        assert torch.equal(result, torch.from_numpy(expected.copy()).permute(2, 0, 1) / 255)
    assert not torch.equal(out, x), "JPEG artefacts"
    assert float((out[0] - x[0]).abs().mean()) > float((out[1] - x[1]).abs().mean())


def test_jpeg_on_the_device_equals_pillow_in_every_image_of_a_canvas():
    x = batch(n=3, size=40, seed=6)
    quality, heights, widths = torch.tensor([30, 75, 95]), torch.tensor([40, 17, 9]),\
        torch.tensor([33, 40, 5])
    out = degradation.jpeg_canvas(x, quality, heights, widths)
    for i, (q, h, w) in enumerate(zip(quality.tolist(), heights.tolist(), widths.tolist(),
                                      strict=True)):
        expected = degradation.jpeg(x[i:i + 1, :, :h, :w], q)
        assert torch.equal(out[i:i + 1, :, :h, :w], expected), i


# --------------------------------------------------------------------------- the pipeline


def test_realistic_lr_is_a_pure_function_of_the_seed():
    hr = (batch(n=1, size=48)[0] * 255).round().to(torch.uint8)
    params = RealisticDegradation()
    outputs = [degradation.realistic_lr(hr, 4, params, seeded(s)) for s in range(12)]
    for s, lr in enumerate(outputs):
        assert lr.shape == (3, 12, 12) and lr.dtype == torch.uint8
        assert torch.equal(lr, degradation.realistic_lr(hr, 4, params, seeded(s)))
    assert len({lr.numpy().tobytes() for lr in outputs}) == 12
    tiny = hr[:, :8, :8].contiguous()  # 2x2 LR: every resize and padding still works
    for s in range(20):
        assert degradation.realistic_lr(tiny, 4, params, seeded(s)).shape == (3, 2, 2)


def test_realistic_lr_without_random_steps_is_a_fixed_chain():
    """All probabilities at their extremes: the chain is blur, area resize, Gaussian noise and
    JPEG at the qualities given, so a zero-noise, quality-100 run stays close to bicubic."""
    hr = (batch(n=1, size=48)[0] * 255).round().to(torch.uint8)
    params = RealisticDegradation(
        sinc_prob=0, sinc_prob2=0, final_sinc_prob=0, second_blur_prob=0,
        kernel_list=("iso",), kernel_prob=(1.0,), blur_sigma=(0.2, 0.2),
        resize_prob=(0, 0, 1), resize_prob2=(0, 0, 1), resize_modes=("area",),
        gaussian_noise_prob=1, gaussian_noise_prob2=1, noise_range=(0, 0), noise_range2=(0, 0),
        jpeg_range=(100, 100), jpeg_range2=(100, 100))
    lr = degradation.realistic_lr(hr, 4, params, seeded(0)).float()
    reference = degradation.downscale_tensor(hr, 4).float()
    assert float((lr - reference).abs().mean()) < 12


def test_parameters_default_to_real_esrgan_and_reject_bad_values():
    p = RealisticDegradation()
    assert (p.kernel_prob, p.sinc_prob, p.blur_sigma, p.blur_sigma2) == (
        (0.45, 0.25, 0.12, 0.03, 0.12, 0.03), 0.1, (0.2, 3.0), (0.2, 1.5))
    assert (p.resize_prob, p.resize_range, p.resize_prob2, p.resize_range2) == (
        (0.2, 0.7, 0.1), (0.15, 1.5), (0.3, 0.4, 0.3), (0.3, 1.2))
    assert (p.noise_range, p.noise_range2, p.poisson_scale_range, p.poisson_scale_range2) == (
        (1, 30), (1, 25), (0.05, 3), (0.05, 2.5))
    assert (p.jpeg_range, p.jpeg_range2, p.second_blur_prob, p.final_sinc_prob) == (
        (30, 95), (30, 95), 0.8, 0.8)
    for bad in ({"jpeg_range": [50, 120]}, {"noise_range": [5, 1]}, {"sinc_prob": 1.5},
                {"kernel_list": ["iso", "box"], "kernel_prob": [0.5, 0.5]},
                {"resize_prob": [0.5, 0.5]}, {"kernel_sizes": [4]}, {"colour": 1}):
        with pytest.raises(ValueError):
            RealisticDegradation.from_dict(bad)


# --------------------------------------------------------------------------- config and data


def test_config_file_sets_the_realistic_ranges_and_round_trips(tmp_path):
    (tmp_path / "c.toml").write_text(
        'degradation = "realistic"\n\n[realistic]\njpeg_range = [60, 90]\nsinc-prob = 0.2\n')
    config = load_config(tmp_path / "c.toml")
    assert config.degradation == "realistic"
    assert config.realistic == RealisticDegradation(jpeg_range=(60.0, 90.0), sinc_prob=0.2)
    assert load_config(save_config(config, tmp_path / "saved.toml")) == config
    assert "[realistic]" not in (save_config(make_config({}), tmp_path / "b.toml")).read_text()
    (tmp_path / "bad.toml").write_text("[realistic]\njpeg_range = [60, 900]\n")
    with pytest.raises(TrainingError, match=r"\[realistic\] jpeg_range"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(TrainingError, match="choose one of bicubic, realistic"):
        make_config({"degradation": "jpeg"})


def test_bicubic_patches_are_unchanged_bit_for_bit(tmp_path):
    """The paper protocol must not move: these samples hash as they did before the realistic
    pipeline existed (computed with commit bf95c95, at seed 3, which then drew what seed 0
    draws now: the run seed did not reach the generators before 8a41382)."""
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    dataset = data.PatchDataset(data.scan_folders([tmp_path], 16), 16, 4, seed=0, cache=True)
    digest = hashlib.sha256()
    for i in range(8):
        lr, hr = dataset[i]
        digest.update(lr.numpy().tobytes())
        digest.update(hr.numpy().tobytes())
    assert digest.hexdigest() == (
        "6c9ba5f753a6c6d4be12c88c9d86a588e4518c50eca4faaaf8edf38835870ecc")


def same_plans(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_realistic_samples_depend_only_on_seed_and_index(train_dir):
    found = data.scan_folders([train_dir], 16)
    params = RealisticDegradation()
    cached = data.PatchDataset(found, 16, 4, seed=0, cache=True, realistic=params)
    streamed = data.PatchDataset(found, 16, 4, seed=0, cache=False, realistic=params)
    bicubic = data.PatchDataset(found, 16, 4, seed=0, cache=True)
    plan, hr = cached[5]
    assert torch.equal(hr, bicubic[5][1]), "the same crop and augmentation as bicubic"
    assert same_plans(plan, cached[5][0]) and same_plans(plan, streamed[5][0])
    assert not same_plans(plan, cached[6][0])
    in_process = data.batches(cached, 2, start_step=3, workers=0)
    with_workers = data.batches(streamed, 2, start_step=3, workers=1)
    for step in (3, 4):
        a, b = next(in_process), next(with_workers)
        assert same_plans(a[0], b[0]) and torch.equal(a[1], b[1])
        lr_a, hr_a = data.to_training_pair(a, torch.device("cpu"))
        lr_b, hr_b = data.to_training_pair(b, torch.device("cpu"))
        assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
        assert lr_a.shape == (2, 3, 4, 4) and lr_a.dtype == torch.float32
        assert torch.equal(lr_a, (lr_a * 255).round() / 255), "8-bit levels"
        bicubic_lr = torch.stack([bicubic[i][0] for i in (2 * step, 2 * step + 1)]).float() / 255
        assert not torch.equal(lr_a, bicubic_lr)


def test_a_batch_of_plans_gives_each_sample_what_it_gives_alone():
    """Batched on one device, a sample's LR must not depend on the rest of its batch (its
    own random resize sizes, kernels, noise and JPEG qualities)."""
    hr = (batch(n=6, size=32, seed=4) * 255).round() / 255
    plans = [degradation.draw_plan(seeded(s), RealisticDegradation(), (32, 32), 4)
             for s in range(6)]
    together = degradation.apply_plans(hr, default_collate(plans))
    assert together.shape == (6, 3, 8, 8)
    assert len({tuple(p["size"].tolist()) for p in plans}) > 1, "several stage-1 sizes"
    for i in range(6):
        alone = degradation.apply_plans(hr[i:i + 1], default_collate([plans[i]]))
        assert torch.equal(together[i], alone[0]), i


def test_canvas_steps_equal_the_steps_on_each_image():
    """Blur with per-sample reflection, and resize by matrices, on images of several sizes in
    one canvas equal the same steps on each image alone."""
    x = batch(n=3, size=20, seed=5)
    heights, widths = torch.tensor([20, 13, 7]), torch.tensor([20, 9, 16])
    kernel = torch.stack([kernels.shaped_kernel("gaussian", 9, s, s, 0) for s in (1, 2, 3)])
    blurred = degradation.blur(x, kernel, heights, widths)
    for i, (h, w) in enumerate(zip(heights.tolist(), widths.tolist(), strict=True)):
        image = x[i:i + 1, :, :h, :w]
        padded = F.pad(image, (4, 4, 4, 4), mode="reflect")
        expected = F.conv2d(padded, kernel[i].expand(3, 1, 9, 9), groups=3)
        assert torch.allclose(blurred[i:i + 1, :, :h, :w], expected, atol=1e-5), i
    for mode in degradation.RESIZE_MODES:
        rows = torch.stack([degradation.resize_matrix(h, 11, mode, 12, 20)
                            for h in heights.tolist()])
        cols = torch.stack([degradation.resize_matrix(w, 5, mode, 6, 20) for w in widths.tolist()])
        out = degradation.resize_canvas(x, rows, cols)
        assert out.shape == (3, 3, 12, 6) and not out[:, :, 11:].any() and not out[..., 5:].any()
        for i, (h, w) in enumerate(zip(heights.tolist(), widths.tolist(), strict=True)):
            expected = degradation.resize(x[i:i + 1, :, :h, :w], (11, 5), mode)
            assert torch.allclose(out[i:i + 1, :, :11, :5], expected, atol=1e-5), (mode, i)


def test_realistic_training_runs_and_resumes_bit_for_bit(tmp_path, train_dir):
    config = make_config(dict(
        data=[str(train_dir)], patch_size=16, batch_size=2, num_blocks=1, channels=8,
        device="cpu", log_every=1, val_every=1000, save_every=1000, phase="pretrain",
        pretrain_steps=4, degradation="realistic", workers=0))
    train(config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        def stop_at_2(step):
            if step == 2:
                import signal

                signal.raise_signal(signal.SIGINT)
        train(config, tmp_path / "stopped", on_step=stop_at_2)
    train(config, tmp_path / "stopped", resume=True)
    assert_same_states(tmp_path / "straight", tmp_path / "stopped")
    assert 'degradation = "realistic"' in (tmp_path / "straight" / "config.toml").read_text()


def test_realistic_runs_validate_on_the_real_photo_inputs(tmp_path, train_dir, monkeypatch):
    """The best checkpoint of a real-photo model is picked on degraded inputs: validation
    scores every realistic-eval case (bicubic runs: the clean protocol only)."""
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    random_png(val_dir / "v.png", (48, 48), 3)
    seen: list[str] = []
    score = benchmark.score_dataset

    def spy(*args, make_lr=None, **kwargs):
        hr = degradation.crop_to_multiple(args[3][0][1], 4)
        seen.append(hashlib.sha256(make_lr(hr, args[3][0][0]).tobytes()).hexdigest())
        return score(*args, make_lr=make_lr, **kwargs)

    monkeypatch.setattr(benchmark, "score_dataset", spy)
    for kind, cases in (("bicubic", 1), ("realistic", len(degradation.REALISTIC_EVAL))):
        seen.clear()
        config = make_config(dict(
            data=[str(train_dir)], val=[str(val_dir)], patch_size=16, batch_size=2,
            num_blocks=1, channels=8, device="cpu", log_every=1, val_every=1, save_every=1000,
            phase="pretrain", pretrain_steps=1, degradation=kind, workers=0))
        train(config, tmp_path / kind)
        assert len(seen) == len(set(seen)) == cases, kind


def test_cli_train_takes_the_degradation_flag(tmp_path, train_dir):
    result = CliRunner().invoke(main, [
        "train", "--data", str(train_dir), "--out", str(tmp_path / "run"), "--phase",
        "pretrain", "--steps", "2", "--batch-size", "2", "--patch-size", "16", "--device",
        "cpu", "--degradation", "realistic", "-q"])
    assert result.exit_code == 0, result.output
    start = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert start["degradation"] == "realistic"
    bad = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "x"), "--degradation",
                                    "jpeg"])
    assert bad.exit_code == 2


# --------------------------------------------------------------------------- evaluation


def test_eval_inputs_are_identical_across_runs_and_differ_per_image():
    hr = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 48, 3), np.uint8))

    def inputs():
        return {label: make_lr(hr, "img").tobytes()
                for label, make_lr in benchmark.lr_makers("Set", "realistic-eval", 4)}

    first = inputs()
    assert list(first) == ["Set", "Set+jpeg75", "Set+noise10+jpeg85", "Set+blur1.2+jpeg80"]
    assert first == inputs()
    assert first["Set"] == degradation.bicubic_downscale(hr, 4).tobytes()
    assert len(set(first.values())) == 4
    noisy = dict(benchmark.lr_makers("Set", "realistic-eval", 4))["Set+noise10+jpeg85"]
    assert noisy(hr, "other").tobytes() != first["Set+noise10+jpeg85"]
    # pinned: the same bytes in any process, on any run (crc32 seeds, not Python's hash)
    assert hashlib.sha256(first["Set+noise10+jpeg85"]).hexdigest()[:16] == NOISY_DIGEST


NOISY_DIGEST = "7a46717fdf22938f"


def test_benchmark_realistic_eval_rows(tmp_path, tiny_checkpoint):
    folder = tmp_path / "Tiny"
    folder.mkdir()
    random_png(folder / "a.png", (48, 44), 5)
    result = CliRunner().invoke(main, ["benchmark", "--degradation", "realistic-eval", "-m",
                                       "bicubic", "-m", str(tiny_checkpoint), "-d", str(folder),
                                       "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    assert [(r["dataset"], r["model"]) for r in rows[:2]] == [("Tiny", "bicubic"),
                                                               ("Tiny", str(tiny_checkpoint))]
    assert {r["dataset"] for r in rows} == {"Tiny", "Tiny+jpeg75", "Tiny+noise10+jpeg85",
                                           "Tiny+blur1.2+jpeg80"}
    clean = next(r for r in rows if r["dataset"] == "Tiny" and r["model"] == "bicubic")
    jpeg = next(r for r in rows if r["dataset"] == "Tiny+jpeg75" and r["model"] == "bicubic")
    assert jpeg["psnr_y"] < clean["psnr_y"]


def test_the_real_photo_recipe_loads_with_real_esrgan_ranges():
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "real-esrgan-x4.gpu.toml"
    config = load_config(recipe)
    assert (config.degradation, config.phase, config.scale) == ("realistic", "all", 4)
    assert config.realistic == RealisticDegradation(), "the table spells out the defaults"


# --------------------------------------------------------------------------- presets


def test_default_chain_draws_what_it_drew_before_the_step_probabilities():
    """Options left at 1 draw nothing: the default chain's plans are those of 12b8c5f."""
    before = [[43, 66, [63, 63], [16, 16], 465808, 65832, True, False, False],
              [76, 51, [19, 19], [17, 17], 885854, 832848, True, True, True],
              [74, 51, [24, 24], [16, 16], 833204, 433273, True, True, True],
              [65, 39, [67, 67], [12, 12], 282817, 98036, False, True, True],
              [45, 41, [23, 23], [16, 16], 184558, 929342, False, True, True]]
    for s, expected in enumerate(before):
        p = degradation.draw_plan(seeded(s), RealisticDegradation(), (64, 64), 4)
        assert [int(p["quality"]), int(p["quality2"]), p["size"].tolist(), p["size2"].tolist(),
                int(p["noise_seed"]) % 10**6, int(p["noise_seed2"]) % 10**6, bool(p["sinc"]),
                bool(p["jpeg_first"]), bool(p["blur2"])] == expected
        assert all(bool(p[k]) for k in ("blur", "noise", "jpeg", "noise2", "jpeg2"))


def test_photo_preset_is_the_milder_chain_and_options_override_it():
    photo = RealisticDegradation.from_dict({"preset": "photo"})
    assert photo == RealisticDegradation(**degradation.PHOTO_PRESET)
    assert (photo.noise_prob, photo.jpeg_prob, photo.jpeg_range2) == (0, 0, (50, 95))
    assert RealisticDegradation.from_dict({"preset": "real-esrgan"}) == RealisticDegradation()
    tuned = RealisticDegradation.from_dict({"preset": "photo", "jpeg_range2": [70, 90]})
    assert tuned.jpeg_range2 == (70, 90) and tuned.blur_prob == photo.blur_prob
    with pytest.raises(ValueError, match="unknown realistic preset 'web'.*real-esrgan, photo"):
        RealisticDegradation.from_dict({"preset": "web"})


def test_photo_preset_mixes_clean_blurred_noisy_and_jpeg_samples():
    photo = RealisticDegradation.from_dict({"preset": "photo"})
    plans = [degradation.draw_plan(seeded(s), photo, (32, 32), 4) for s in range(600)]
    share = {k: sum(bool(p[k]) for p in plans) / len(plans)
             for k in ("blur", "noise", "jpeg", "blur2", "noise2", "jpeg2", "sinc")}
    assert share["noise"] == share["jpeg"] == share["blur2"] == share["sinc"] == 0
    assert abs(share["blur"] - 0.5) < 0.07 and abs(share["noise2"] - 0.5) < 0.07
    assert abs(share["jpeg2"] - 0.7) < 0.07
    clean = [s for s, p in enumerate(plans)
             if not (p["blur"] or p["noise2"] or p["jpeg2"])]
    assert 0.04 < len(clean) / len(plans) < 0.12  # about 1 in 13
    # a clean sample is Pillow's bicubic downscale, within a level of its 8-bit rounding
    hr = (batch(n=1, size=32)[0] * 255).round().to(torch.uint8)
    lr = degradation.realistic_lr(hr, 4, photo, seeded(clean[0])).int()
    assert (lr - degradation.downscale_tensor(hr, 4).int()).abs().max() <= 1


def test_pillow_resize_mode_is_pillow_bicubic_before_rounding():
    hr = (batch(n=1, size=40)[0] * 255).round()
    out = degradation.resize(hr[None] / 255, (10, 13), "pillow")[0]
    image = Image.fromarray(hr.permute(1, 2, 0).to(torch.uint8).numpy())
    expected = torch.from_numpy(np.array(image.resize((13, 10), Image.BICUBIC))).permute(2, 0, 1)
    assert ((out * 255).round() - expected.float()).abs().max() <= 1
