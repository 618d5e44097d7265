"""Tests for srgan_cli.metrics and srgan_cli.degradation (the evaluation protocol)."""

import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter
from safetensors.torch import save_file

from srgan_cli.degradation import bicubic_downscale, bicubic_upscale, crop_to_multiple
from srgan_cli.errors import SrganError
from srgan_cli.metrics import LPIPS, load_lpips, lr_consistency, psnr, rgb_to_y, ssim


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None].float() / 255


def random_levels(*shape: int, low: int = 0, high: int = 256, seed: int = 0) -> torch.Tensor:
    """Random image on exact uint8 levels, as float in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=g).float() / 255


def smooth_image(width: int = 64, height: int = 48) -> Image.Image:
    """A deterministic smooth colour image (gradients + a soft blob)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255 * xx / (width - 1)
    g = 255 * yy / (height - 1)
    b = 255 * np.exp(-((xx - width / 2) ** 2 + (yy - height / 2) ** 2) / (2 * 10.0**2))
    return Image.fromarray(np.stack([r, g, b], axis=-1).round().astype(np.uint8))


# --- colour conversion and PSNR --------------------------------------------------------------


def test_rgb_to_y_studio_range():
    x = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0]]).T.reshape(1, 3, 1, 4)
    y = rgb_to_y(x)
    assert y.shape == (1, 1, 1, 4)
    expected = torch.tensor([16, 235, 16 + 65.481, 16 + 128.553]) / 255
    assert torch.allclose(y.flatten(), expected)


def test_psnr_of_a_constant_offset_has_the_closed_form():
    hr = random_levels(2, 3, 20, 24, low=10, high=240)
    sr = hr + 5 / 255
    # RGB: every pixel differs by 5 levels.
    rgb = psnr(sr, hr, border=0, y_channel=False)
    assert rgb.shape == (2,) and rgb.dtype == torch.float64
    assert rgb.tolist() == pytest.approx([10 * math.log10(255**2 / 25)] * 2)
    # Y: the luma weights sum to 219, so Y differs by 5 * 219 / 255 levels.
    y_diff = 5 * (65.481 + 128.553 + 24.966) / 255
    assert psnr(sr, hr, border=4).tolist() == pytest.approx([20 * math.log10(255 / y_diff)] * 2)


def test_psnr_quantises_shaves_border_and_accepts_single_images():
    hr = random_levels(3, 16, 16)
    assert psnr(hr + 0.4 / 255, hr, border=0).isinf().all()  # same uint8 levels
    sr = hr.clone()
    sr[:, :2, :] = 1 - sr[:, :2, :]  # damage only the top 2 rows
    assert psnr(sr, hr, border=2).isinf().all()
    assert psnr(sr, hr, border=1).isfinite().all()
    assert psnr(sr, hr, border=0).shape == (1,)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(sr, hr[:, :8], border=0)


# --- SSIM ------------------------------------------------------------------------------------


def numpy_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Straightforward SSIM of two 2-D float64 images on [0, 255]: explicit 11x11 windows."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    pa, pb = sliding_window_view(a, (11, 11)), sliding_window_view(b, (11, 11))
    mu_a, mu_b = (pa * w).sum((-2, -1)), (pb * w).sum((-2, -1))
    var_a = ((pa - mu_a[..., None, None]) ** 2 * w).sum((-2, -1))
    var_b = ((pb - mu_b[..., None, None]) ** 2 * w).sum((-2, -1))
    cov = ((pa - mu_a[..., None, None]) * (pb - mu_b[..., None, None]) * w).sum((-2, -1))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim_map = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    ssim_map /= (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(ssim_map.mean())


def test_ssim_matches_a_plain_numpy_reference():
    hr = to_tensor(smooth_image(40, 32))
    sr = (hr + 0.08 * random_levels(1, 3, 32, 40, seed=1) - 0.04).clamp(0, 1)
    # The protocol by hand: uint8 levels, MATLAB rgb2ycbcr luma, 3 px border.
    sr_255, hr_255 = (np.round(t[0].double().numpy() * 255) for t in (sr, hr))
    luma = np.array([65.481, 128.553, 24.966]).reshape(3, 1, 1) / 255
    y_sr, y_hr = (16 + (t * luma).sum(0) for t in (sr_255, hr_255))
    expected_y = numpy_ssim(y_sr[3:-3, 3:-3], y_hr[3:-3, 3:-3])
    assert 0 < expected_y < 1
    assert ssim(sr, hr, border=3).item() == pytest.approx(expected_y, abs=1e-10)

    expected_rgb = np.mean([numpy_ssim(sr_255[c], hr_255[c]) for c in range(3)])
    assert ssim(sr, hr, border=0, y_channel=False).item() == pytest.approx(expected_rgb, abs=1e-10)


def test_ssim_properties():
    x = random_levels(2, 3, 24, 24)
    noisy = (x + 0.1 * random_levels(2, 3, 24, 24, seed=3)).clamp(0, 1)
    assert torch.allclose(ssim(x, x, border=4), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ssim(x, noisy, border=0), ssim(noisy, x, border=0))  # symmetric
    assert (ssim(x, noisy, border=0) < 1).all()
    with pytest.raises(ValueError, match="11x11"):
        ssim(x, x, border=7)
    stronger = (x + 0.3 * random_levels(2, 3, 24, 24, seed=3)).clamp(0, 1)
    assert (ssim(x, stronger, border=0) < ssim(x, noisy, border=0)).all()


# --- degradation -----------------------------------------------------------------------------


def test_crop_and_bicubic_resize_sizes():
    img = smooth_image(66, 51)
    assert crop_to_multiple(img, 4).size == (64, 48)
    assert np.array_equal(np.array(crop_to_multiple(img, 4)), np.array(img)[:48, :64])
    lr = bicubic_downscale(img, 4)
    assert lr.size == (16, 12)
    assert np.array_equal(np.array(lr), np.array(img.crop((0, 0, 64, 48)).resize((16, 12), 3)))
    assert bicubic_upscale(lr, 4).size == (64, 48)
    flat = Image.new("RGB", (32, 32), (10, 120, 200))
    assert np.array(bicubic_downscale(flat, 4)).reshape(-1, 3).tolist() == [[10, 120, 200]] * 64


# --- LR consistency --------------------------------------------------------------------------


def test_lr_consistency_is_exact_for_the_source_hr_and_drops_with_colour_drift():
    hr = smooth_image(64, 48)
    lr = to_tensor(bicubic_downscale(hr, 4))
    hr_t = to_tensor(hr)
    assert lr_consistency(hr_t, lr, scale=4).isinf().all()

    shifted = (hr_t + torch.tensor([0.06, 0.0, -0.06]).view(1, 3, 1, 1)).clamp(0, 1)
    bicubic = to_tensor(bicubic_upscale(bicubic_downscale(hr, 4), 4))
    drift, good = lr_consistency(torch.cat([shifted, bicubic]), lr.expand(2, -1, -1, -1), scale=4)
    assert drift < 30 < good
    with pytest.raises(ValueError, match="does not match"):
        lr_consistency(hr_t, lr, scale=2)


# --- LPIPS -----------------------------------------------------------------------------------


def test_lpips_random_backbone_is_a_nonnegative_symmetric_distance():
    torch.manual_seed(0)
    model = LPIPS(weights=None)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    d = model(x, y)
    assert d.shape == (2,)
    assert torch.equal(model(x, x), torch.zeros(2))
    assert (d > 0).all() and torch.allclose(d, model(y, x))
    x.requires_grad_(True)
    model(x, y).sum().backward()  # usable as a loss: gradients reach the input
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lpips_from_file_reads_backbone_and_linear_layers(tmp_path, monkeypatch):
    torch.manual_seed(0)
    backbone = LPIPS(weights=None).backbone.features  # torchvision features[:30] layout
    lins = {
        f"lin{i}.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 128, 256, 512, 512])
    }
    tensors = {f"features.{k}": v.half() for k, v in backbone.state_dict().items()}
    path = tmp_path / "lpips.safetensors"
    save_file({**tensors, **lins}, str(path), metadata={"mean": "[0.5, 0.5, 0.5]"})

    model = LPIPS.from_file(path)
    for i, lin in enumerate(model.lins):
        assert torch.equal(lin.weight, lins[f"lin{i}.weight"])
    assert not any(p.requires_grad for p in model.parameters())

    monkeypatch.delenv("SRGAN_LPIPS_WEIGHTS", raising=False)
    assert load_lpips() is None
    monkeypatch.setenv("SRGAN_LPIPS_WEIGHTS", str(path))
    assert isinstance(load_lpips(), LPIPS)
    assert isinstance(load_lpips(path), LPIPS)

    no_lins = tmp_path / "no_lins.safetensors"
    save_file(tensors, str(no_lins), metadata={"mean": "[0.5, 0.5, 0.5]"})
    with pytest.raises(ValueError, match="lin0.weight"):
        LPIPS.from_file(no_lins)
    with pytest.raises(SrganError, match="not found"):  # one error line, not a traceback
        load_lpips(tmp_path / "missing.safetensors")


# --- checks against the shared data and weights (skipped without ../shared) -------------------


def test_lpips_shared_weights_match_the_reference_implementation(shared_dir):
    model = LPIPS.from_file(shared_dir / "pretrained/vgg16_lpips.safetensors")
    img = Image.open(shared_dir / "datasets/Set5/baby.png").convert("RGB").crop((0, 0, 256, 256))
    x = to_tensor(img).expand(3, -1, -1, -1)
    blurred = torch.cat([to_tensor(img.filter(ImageFilter.GaussianBlur(r))) for r in (1, 2, 4)])
    with torch.no_grad():
        assert torch.equal(model(x[:1], x[:1]), torch.zeros(1))
        d = model(x, blurred)
    assert 0 < d[0] < d[1] < d[2]
    # lpips==0.1.4 (LPIPS(net="vgg"), normalize=True) with this file's backbone loaded.
    assert d.tolist() == pytest.approx([0.154038, 0.292851, 0.439551], abs=1e-4)


@pytest.mark.parametrize("name, expected", [("Set5", 28.43), ("Set14", 26.09)])
def test_bicubic_baseline_psnr_matches_the_published_protocol(shared_dir, name, expected):
    scores = []
    for path in sorted((shared_dir / "datasets" / name).glob("*.png")):
        hr = Image.open(path).convert("RGB")  # Set14 bridge.png is single-channel
        sr = bicubic_upscale(bicubic_downscale(hr, 4), 4)
        scores.append(psnr(to_tensor(sr), to_tensor(crop_to_multiple(hr, 4)), border=4).item())
    assert len(scores) == {"Set5": 5, "Set14": 14}[name]
    assert round(float(np.mean(scores)), 2) == expected
