"""srgan_cli.jpeg: the batched tensor JPEG round trip equals Pillow's, bit for bit."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from srgan_cli import jpeg as jpeg_module
from srgan_cli.jpeg import jpeg, quant_tables, range_limit

QUALITIES = (1, 10, 30, 50, 75, 90, 95, 100)
SIZES = ((1, 1), (1, 2), (2, 1), (3, 5), (4, 4), (2, 6), (7, 9), (8, 8), (15, 17), (16, 16),
         (17, 3), (33, 47), (64, 48), (40, 71))


def pillow_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, H, W) uint8 -> Pillow save(JPEG, quality) + open, as (3, H, W) uint8."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
    return pillow_decode(buffer.getvalue())


def pillow_decode(data: bytes) -> torch.Tensor:
    """A JPEG file's bytes -> Pillow's decode as (3, H, W) uint8."""
    with Image.open(io.BytesIO(data)) as decoded:
        return torch.from_numpy(np.asarray(decoded.convert("RGB")).copy()).permute(2, 0, 1)


def noise(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(3, h, w) uint8 uniform noise: every coefficient busy, many clamped pixels."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)


def smooth(h: int, w: int, phase: float = 0.0) -> torch.Tensor:
    """(3, h, w) uint8 smooth colour waves: the usual, mostly low-frequency content."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    channels = [127 + 120 * torch.sin(xx / 5 + c + phase) * torch.cos(yy / 7 - c)
                for c in range(3)]
    return torch.stack(channels).round().to(torch.uint8)


def saturated(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(3, h, w) uint8 with every sample 0 or 255: the largest coefficients and overshoot."""
    return noise(h, w, seed) // 128 * 255


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_equals_pillow_for_sizes_and_qualities(h: int, w: int) -> None:
    images = torch.stack([noise(h, w), smooth(h, w), saturated(h, w, seed=1)])
    for quality in QUALITIES:
        out = jpeg(images, quality)
        for image, decoded in zip(images, out, strict=True):
            assert torch.equal(decoded, pillow_round_trip(image, quality)), (h, w, quality)


def test_batch_with_per_sample_quality_and_size_equals_each_pillow_result() -> None:
    gen = torch.Generator().manual_seed(3)
    n, h, w = 12, 37, 50
    canvas = torch.randint(0, 256, (n, 3, h, w), generator=gen, dtype=torch.uint8)
    heights = torch.randint(1, h + 1, (n,), generator=gen)
    widths = torch.randint(1, w + 1, (n,), generator=gen)
    heights[:2], widths[:2] = torch.tensor([h, 1]), torch.tensor([w, 1])  # full and 1x1
    qualities = torch.randint(1, 101, (n,), generator=gen)
    for i in range(n):
        hi, wi = int(heights[i]), int(widths[i])
        if i % 2:
            canvas[i, :, :hi, :wi] = smooth(hi, wi, phase=i)
    out = jpeg(canvas, qualities, heights, widths)
    for i in range(n):
        hi, wi = int(heights[i]), int(widths[i])
        expected = pillow_round_trip(canvas[i, :, :hi, :wi].contiguous(), int(qualities[i]))
        assert torch.equal(out[i, :, :hi, :wi], expected), (hi, wi, int(qualities[i]))


def test_quality_tensor_of_one_value_and_int_agree() -> None:
    images = torch.stack([noise(20, 20), smooth(20, 20)])
    assert torch.equal(jpeg(images, torch.tensor([40, 40])), jpeg(images, 40))


def test_keeps_shape_dtype_and_device_and_does_not_modify_the_input() -> None:
    images = noise(19, 23).unsqueeze(0).repeat(2, 1, 1, 1)
    before = images.clone()
    out = jpeg(images[:, :, :, :], 75)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert out.device == images.device
    assert torch.equal(images, before)


def test_non_contiguous_input_gives_the_same_result() -> None:
    images = noise(24, 30).unsqueeze(0)
    channels_last = images.contiguous(memory_format=torch.channels_last)
    assert torch.equal(jpeg(channels_last, 60), jpeg(images, 60))


def test_quant_tables_equal_pillows_at_every_quality() -> None:
    tables = quant_tables(torch.arange(1, 101))
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            expected = [list(decoded.quantization[0]), list(decoded.quantization[1])]
        assert tables[quality - 1].tolist() == expected, quality


@pytest.mark.parametrize(("name", "index", "limit"), [
    ("_fdct_butterfly", 0, 128), ("_fdct_butterfly", 1, 2**15),
    ("_idct_butterfly", 2, 2**16), ("_idct_butterfly", 3, 2**20)])
def test_dct_pass_matrices_equal_the_integer_butterfly(name: str, index: int, limit: int) -> None:
    """The float64 matrix form of each islow pass equals the butterfly run in int64 with
    DESCALE as shifts, on random blocks up to ``limit`` (beyond anything a JPEG holds)."""
    gen = torch.Generator().manual_seed(index)
    blocks = torch.randint(-limit, limit, (500, 8, 8), generator=gen)
    blocks[:4] = torch.tensor([-limit, limit - 1])[torch.randint(2, (4, 8, 8), generator=gen)]
    first, dim = index in (0, 2), -1 if index in (0, 3) else -2
    outputs = getattr(jpeg_module, name)(list(blocks.unbind(dim)), first)
    expected = torch.stack([(v + ((1 << n) >> 1)) >> n for v, n in outputs], dim)
    dct_pass = jpeg_module._constants(blocks.device).dct[index]
    assert torch.equal(jpeg_module._apply_pass(blocks.double(), dct_pass, dim).long(), expected)


def test_range_limit_saturates() -> None:
    x = torch.tensor([-1000, -513, -129, -128, 0, 127, 128, 511, 512, 1000])
    assert range_limit(x).tolist() == [0, 0, 0, 0, 128, 255, 255, 255, 255, 255]


def test_pillow_saturates_idct_overflow_as_range_limit_assumes() -> None:
    """A tripwire for the one place libjpeg-turbo's SIMD and C paths differ: a bright image
    saved at quality 100 whose DC quantval is then patched from 1 to 5 decodes to IDCT outputs
    near 5 * 120 = 600. The SIMD IDCT saturates them to 255; the C code (JSIMD_FORCENONE=1, or
    a build without SIMD) would wrap them to about 0, and range_limit would be wrong there."""
    image = torch.full((3, 16, 16), 248, dtype=torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=100)
    data = bytearray(buffer.getvalue())
    dqt = data.find(b"\xff\xdb")
    end, table = dqt + 2 + (data[dqt + 2] << 8 | data[dqt + 3]), dqt + 4
    while table < end:  # each table: a precision/id byte, then 64 quantvals (DC first)
        data[table + 1] = 5
        table += 65
    decoded = pillow_decode(bytes(data))
    assert int(decoded.min()) >= 250


@pytest.mark.parametrize("quality", [0, 101, -5, 1.5, True, "75", None])
def test_bad_int_quality_is_a_value_error(quality: object) -> None:
    with pytest.raises(ValueError, match="quality"):
        jpeg(noise(8, 8).unsqueeze(0), quality)  # type: ignore[arg-type]


def test_bad_quality_tensor_is_a_value_error() -> None:
    images = noise(8, 8).unsqueeze(0).repeat(2, 1, 1, 1)
    for quality in (torch.tensor([50, 0]), torch.tensor([101, 50]),
                    torch.tensor([50.0, 60.0]), torch.tensor([50, 60, 70])):
        with pytest.raises(ValueError, match="quality"):
            jpeg(images, quality)


def test_bad_image_or_sizes_are_value_errors() -> None:
    with pytest.raises(ValueError, match="uint8"):
        jpeg(noise(8, 8).unsqueeze(0).float(), 50)
    with pytest.raises(ValueError, match="uint8"):
        jpeg(noise(8, 8), 50)
    images = noise(8, 8).unsqueeze(0)
    with pytest.raises(ValueError, match="heights"):
        jpeg(images, 50, heights=torch.tensor([9]))
    with pytest.raises(ValueError, match="widths"):
        jpeg(images, 50, widths=torch.tensor([0]))
    with pytest.raises(ValueError, match="widths"):
        jpeg(images, 50, widths=torch.tensor([4, 4]))


def test_empty_batch_returns_empty() -> None:
    out = jpeg(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), 50)
    assert out.shape == (0, 3, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu() -> None:
    gen = torch.Generator().manual_seed(5)
    canvas = torch.randint(0, 256, (6, 3, 45, 38), generator=gen, dtype=torch.uint8)
    qualities = torch.tensor([1, 10, 50, 75, 95, 100])
    heights, widths = torch.tensor([45, 1, 20, 33, 2, 45]), torch.tensor([38, 1, 3, 38, 17, 5])
    expected = jpeg(canvas, qualities, heights, widths)
    out = jpeg(canvas.cuda(), qualities.cuda(), heights.cuda(), widths.cuda())
    assert out.device.type == "cuda"
    for i in range(6):
        h, w = int(heights[i]), int(widths[i])
        assert torch.equal(out[i, :, :h, :w].cpu(), expected[i, :, :h, :w])
