"""--outscale (the output size as a factor of the input, whatever the network's scale): sizes
with alpha, 16 bits and DPI kept, and the output pixel limit it is held to. CPU only, offline."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import cpu_upscaler, make_generator, png
from PIL import Image

from srgan_cli.cli import main
from srgan_cli.upscale import Upscaler, upscale_batch


def upscale(*args):
    return CliRunner().invoke(main, ["upscale", *map(str, args)])


# ------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("factor", [2, 3, 6.5, 1.3])
def test_outscale_sizes_with_alpha(tmp_path, tiny_checkpoint, factor):
    pixels = np.random.default_rng(0).integers(0, 256, (13, 17, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    result = upscale(tmp_path / "a.png", "-o", tmp_path / "out.png", "--model", tiny_checkpoint,
                     "--outscale", factor)
    assert result.exit_code == 0, result.output
    out = Image.open(tmp_path / "out.png")
    assert out.size == (round(17 * factor), round(13 * factor)) and out.mode == "RGBA"


def test_outscale_keeps_16_bits_and_scales_dpi(tmp_path):
    from srgan_cli.images import Picture, read_image, write_image

    picture = Picture(rgb=torch.rand(3, 10, 9), bit_depth=16, dpi=(100, 100))
    up = Upscaler(make_generator(), device="cpu", precision="fp32", outscale=2.5)
    result = up.upscale_picture(picture)
    assert result.rgb.dtype == torch.uint16 and result.rgb.shape == (3, 25, 22)
    write_image(result, tmp_path / "out.png")
    again = read_image(tmp_path / "out.png")
    assert again.bit_depth == 16 and again.size == (22, 25)
    assert again.dpi == pytest.approx((22 / 9 * 100, 250), abs=0.1)


def test_outscale_4_equals_the_plain_result():
    from srgan_cli.images import Picture

    gen = make_generator()
    picture = Picture(rgb=torch.rand(3, 12, 10))
    plain = Upscaler(gen, device="cpu", precision="fp32").upscale_picture(picture)
    four = Upscaler(gen, device="cpu", precision="fp32", outscale=4).upscale_picture(picture)
    assert torch.equal(plain.rgb, four.rgb)


# -------------------------------------------------------------- the output pixel limit


def test_outputs_above_the_pixel_limit_fail_their_file_before_the_network(tmp_path):
    big, small = png(tmp_path / "big.png", (48, 40)), png(tmp_path / "small.png", (5, 5))
    jobs = [(big, tmp_path / "big_out.png"), (small, tmp_path / "small_out.png")]
    started = []
    summary = upscale_batch(cpu_upscaler(outscale=16), jobs, max_pixels=2000,
                            on_start=lambda src, tiles: started.append(src.name))
    big_result, small_result = summary.results
    # 48x40 is below --max-pixels 2000, but x16 it is 768x640, above 16 x 2000 output pixels
    assert big_result.status == "failed"
    assert big_result.reason == ("output would be 768x640 = 491,520 pixels, above the limit of "
                                 "32,000 (16 x --max-pixels): lower --outscale or raise "
                                 "--max-pixels")
    assert small_result.status == "written"
    assert Image.open(tmp_path / "small_out.png").size == (80, 80)
    assert started == ["small.png"], "the network never ran on the refused file"
    assert not (tmp_path / "big_out.png").exists()


def test_output_pixel_limit_in_the_cli_is_one_line_per_file(tmp_path, tiny_checkpoint):
    png(tmp_path / "big.png", (48, 40))
    result = upscale(tmp_path / "big.png", "--model", tiny_checkpoint, "--max-pixels", 2000,
                     "--outscale", 16)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{tmp_path / 'big.png'}: output would be 768x640" in result.output
    assert "0 written, 0 skipped, 1 failed" in result.output
