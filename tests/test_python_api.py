"""The Python API (``Upscaler``): its arguments checked when it is made or called, tensors,
files, and Pillow images and numpy arrays in and out as the file path writes them. CPU only,
offline, a tiny generator made here."""

import numpy as np
import pytest
import torch
from conftest import cpu_upscaler, make_generator, png
from PIL import Image, ImageCms
from test_images import exif_bytes

from srgan_cli import InputError, Upscaler, images
from srgan_cli import upscale as upscale_module
from srgan_cli.errors import ImageError
from srgan_cli.upscale import upscale_batch


@pytest.fixture
def upscaler() -> Upscaler:
    """The tiny generator on the CPU, at the API's default precision."""
    return Upscaler(make_generator(), device="cpu")


def noise(height: int, width: int, channels: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """(height, width, channels) random pixels over the whole range of ``dtype``."""
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, (height, width, channels), dtype)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("options, message", [
    ({"max_memory": 1.5}, "--max-memory: expected a number of bytes"),
    ({"max_memory": "1e400"}, "too large"),
    ({"outscale": "2"}, "--outscale must be a number above 0 and at most 16, got str '2'"),
    ({"outscale": 1e9}, "--outscale must be a number above 0 and at most 16, got 1e"),
    ({"outscale": float("nan")}, "--outscale must be a number"),
    ({"tile": 2.5}, "--tile must be auto, 0 .off. or a whole number of pixels, got 2.5"),
    ({"tile": -5}, "--tile must be"),
    ({"tile": True}, "--tile must be"),
    ({"tile_batch": 0}, "tile_batch must be a whole number at least 1, got 0"),
])
def test_bad_upscaler_arguments_are_refused_at_construction(options, message):
    with pytest.raises(InputError, match=message):
        Upscaler(make_generator(), device="cpu", **options)


@pytest.mark.parametrize("perception", [2, -0.5, "0.5", float("nan"), True])
def test_bad_perception_is_refused_before_any_model_is_loaded(monkeypatch, perception):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(upscale_module, "load_mixed_model", no_loading)
    with pytest.raises(InputError, match="--perception must be a number from 0 to 1"):
        Upscaler(perception=perception, device="cpu")


@pytest.mark.parametrize("options, message", [
    ({"quality": 500}, "--quality must be a whole number from 1 to 100, got 500"),
    ({"quality": 0}, "--quality must be a whole number from 1 to 100, got 0"),
    ({"png_compression": 42}, "--png-compression must be a whole number from 0 to 9"),
    ({"max_pixels": 0}, "--max-pixels must be a whole number at least 1"),
])
def test_bad_write_options_are_refused_before_the_image_is_computed(
    tmp_path, monkeypatch, options, message
):
    up = cpu_upscaler(tile=0)

    def no_compute(*args, **kwargs):
        raise AssertionError("the image was computed")

    monkeypatch.setattr(Upscaler, "upscale_picture", no_compute)
    src = png(tmp_path / "a.png")
    with pytest.raises(InputError, match=message):
        up.upscale_file(src, tmp_path / "a.jpg", **options)
    with pytest.raises(InputError, match=message):
        upscale_batch(up, [(src, tmp_path / "b.jpg")], **options)
    assert not (tmp_path / "a.jpg").exists() and not (tmp_path / "b.jpg").exists()


# --------------------------------------------------- upscale_tensor and upscale_pixels


@pytest.mark.parametrize("bad, message", [
    (torch.full((3, 4, 4), 128, dtype=torch.uint8), "dtype uint8"),
    (torch.full((3, 4, 4), 128.0), "divide 0-255 images by 255"),
    (torch.rand(1, 4, 4), "1 channels"),
    (torch.rand(4, 4, 4), "4 channels"),
    (torch.rand(4, 4, 3), "channels last"),
    (torch.rand(4, 4), "2-D tensor"),
    (torch.rand(1, 1, 3, 4, 4), "5-D tensor"),
    (np.zeros((4, 4, 3), np.uint8), "torch.from_numpy"),
    (torch.full((3, 4, 4), float("nan")), "NaN"),
])
def test_api_refuses_wrong_tensors_with_what_is_expected(bad, message):
    up = Upscaler(make_generator(), device="cpu")
    with pytest.raises(InputError, match="expected a float torch.Tensor") as info:
        up.upscale_tensor(bad)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("rgb, bit_depth, message", [
    (torch.full((3, 8, 8), 200, dtype=torch.uint8), 8, "dtype uint8"),
    (torch.full((3, 8, 8), 200.0), 8, "divide 0-255 images by 255"),
    (torch.rand(1, 3, 8, 8), 8, r"\(3, H, W\), RGB in \[0, 1\], got a 4-D tensor"),
    (torch.rand(3, 8, 8), 12, "bit_depth must be 8 or 16, got 12"),
])
def test_upscale_pixels_checks_its_input_like_upscale_tensor(rgb, bit_depth, message):
    with pytest.raises(InputError, match=message):
        cpu_upscaler(tile=0).upscale_pixels(rgb, bit_depth)


def test_tiny_inputs_are_padded_not_darkened():
    up = Upscaler(make_generator(), device="cpu", precision="fp32")
    flat = up.upscale_tensor(torch.full((3, 16, 16), 0.5))
    for side in (1, 2, 3):
        small = up.upscale_tensor(torch.full((3, side, side), 0.5))
        assert small.shape == (3, 4 * side, 4 * side)
        top = (16 - side) // 2 * 4
        torch.testing.assert_close(small, flat[:, top:top + 4 * side, top:top + 4 * side])


# ------------------------------------------------------------------------ upscale_file


def test_api_upscale_file_never_overwrites_unless_asked(tmp_path):
    up = Upscaler(make_generator(), device="cpu")
    src, dst = png(tmp_path / "a.png"), png(tmp_path / "b.png", size=(2, 2))
    with pytest.raises(ImageError, match="overwrite the input"):
        up.upscale_file(src, src, overwrite=True)
    with pytest.raises(ImageError, match="exists"):
        up.upscale_file(src, dst)
    assert Image.open(src).size == (5, 5) and Image.open(dst).size == (2, 2)
    up.upscale_file(src, dst, overwrite=True)
    assert Image.open(dst).size == (20, 20)


def test_api_refuses_an_unstorable_output_before_computing(tmp_path, upscaler, monkeypatch):
    wide = png(tmp_path / "wide.png", size=(4096, 1))
    monkeypatch.setattr(Upscaler, "upscale_picture", lambda *a: pytest.fail("computed"))
    with pytest.raises(ImageError, match="too large for WEBP"):
        upscaler.upscale_file(wide, tmp_path / "wide.webp")


# --------------------------------------- upscale_image: Pillow images and numpy arrays


def test_pillow_image_gives_what_the_file_path_writes(tmp_path, upscaler):
    pixels = noise(5, 7, 3)
    src = tmp_path / "a.png"
    Image.fromarray(pixels).save(src)
    upscaler.upscale_file(src, tmp_path / "a_x4.png")
    out = upscaler.upscale_image(Image.fromarray(pixels))
    assert out.mode == "RGB" and out.size == (28, 20)
    assert np.array_equal(np.asarray(out), np.asarray(Image.open(tmp_path / "a_x4.png")))
    as_array = upscaler.upscale_image(pixels)
    assert as_array.dtype == np.uint8 and np.array_equal(as_array, np.asarray(out))


@pytest.mark.parametrize("mode, out_mode", [("RGBA", "RGBA"), ("L", "L"), ("LA", "LA"),
                                            ("I;16", "I;16"), ("P", "RGB"), ("1", "L"),
                                            ("CMYK", "RGB")])
def test_pillow_modes_come_back_as_the_file_path_writes_them(upscaler, mode, out_mode):
    image = Image.fromarray(noise(5, 6, 4)[:, :, :4], "RGBA").convert(mode)
    if mode == "I;16":
        image = Image.fromarray(noise(5, 6, 1, np.uint16)[:, :, 0])
    if mode == "CMYK":  # what the user should know comes as a Python warning
        with pytest.warns(UserWarning, match="CMYK converted to RGB"):
            out = upscaler.upscale_image(image)
    else:
        out = upscaler.upscale_image(image)
    assert (out.mode, out.size) == (out_mode, (24, 20))


def test_pillow_alpha_and_transparency_are_kept(upscaler):
    rgba = noise(6, 6, 4)
    rgba[:, :3, 3] = 0  # left half transparent
    rgba[:, 3:, 3] = 255
    out = np.asarray(upscaler.upscale_image(Image.fromarray(rgba, "RGBA")))
    assert out[:, :8, 3].max() < 30 and out[:, 16:, 3].min() > 225
    palette = Image.new("P", (6, 6))
    palette.info["transparency"] = 0
    assert upscaler.upscale_image(palette).mode == "RGBA"


def test_pillow_metadata_is_kept_and_orientation_applied(upscaler):
    image = Image.fromarray(noise(4, 6, 3))  # 6 wide, 4 high, stored on its side
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image.info.update(exif=exif_bytes(6), icc_profile=icc, dpi=(72.0, 96.0))
    out = upscaler.upscale_image(image)
    assert out.size == (16, 24), "orientation 6: turned upright, as srgan upscale does"
    assert out.getexif()[0x0112] == 1 and out.getexif()[0x010F] == "TestCam"
    assert out.info["icc_profile"] == icc
    assert out.info["dpi"] == pytest.approx((288.0, 384.0))


def test_16_bit_arrays_stay_16_bit_like_a_16_bit_png(tmp_path, upscaler):
    pixels = noise(5, 6, 3, np.uint16)
    (tmp_path / "a.png").write_bytes(images.png_codec._encode_png(pixels))
    upscaler.upscale_file(tmp_path / "a.png", tmp_path / "a_x4.png")
    from_file = images.read_image(tmp_path / "a_x4.png")
    out = upscaler.upscale_image(pixels)
    assert out.dtype == np.uint16 and out.shape == (20, 24, 3)
    assert torch.equal(torch.from_numpy(out.astype(np.int32)).permute(2, 0, 1),
                       images.quantise(from_file.rgb, 16).to(torch.int32))


@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 1), (5, 6, 2), (5, 6, 4)])
def test_array_layouts_are_kept_and_match_pillow_images(upscaler, shape):
    pixels = noise(5, 6, 4)[..., :shape[-1] if len(shape) == 3 else 1].reshape(shape)
    out = upscaler.upscale_image(pixels)
    assert out.shape == (20, 24, *shape[2:]) and out.dtype == np.uint8
    as_pillow = upscaler.upscale_image(Image.fromarray(pixels.squeeze(-1) if shape[-1] == 1
                                                       else pixels))
    assert np.array_equal(out.reshape(20, 24, -1), np.asarray(as_pillow).reshape(20, 24, -1))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5, 6, 3), np.float32), "use upscale_tensor"),
    (np.zeros((3, 5, 6), np.uint8), "channels first"),
    (np.zeros((5, 6, 3), np.int64), "got dtype int64"),
    (np.zeros((0, 6, 3), np.uint8), "empty"),
    (torch.zeros(3, 5, 6), "use upscale_tensor for tensors"),
    ([[0, 1]], "got builtins.list"),
])
def test_upscale_image_refuses_other_inputs_with_what_is_expected(upscaler, bad, message):
    with pytest.raises(InputError, match=message):
        upscaler.upscale_image(bad)
