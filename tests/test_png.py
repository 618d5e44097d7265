"""PNG files: image data deflated in independent pieces on several threads (png.py, issue 21),
and the transparency and colour chunks (tRNS, gAMA, sRGB) read and kept.

Every file is checked as pngcheck would: chunk by chunk with each CRC, the IDAT data as one
zlib stream (zlib verifies the Adler-32), and the pixels decoded back.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import invoke
from PIL import Image, PngImagePlugin

from srgan_cli import images, png
from srgan_cli.errors import ImageError
from srgan_cli.images import Picture, read_image, write_image

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def chunks_checked(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk, after checking the signature, each CRC and the order."""
    assert data[:8] == images.png_codec._PNG_SIGNATURE
    found, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind}"
        found.append((kind, body))
        at += 12 + length
    kinds = [kind for kind, _ in found]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and at == len(data)
    first, last = kinds.index(b"IDAT"), len(kinds) - 1 - kinds[::-1].index(b"IDAT")
    assert set(kinds[first : last + 1]) == {b"IDAT"}, "IDAT chunks must be consecutive"
    return found


def image_data(data: bytes) -> bytes:
    """The IDAT chunks joined: one zlib stream."""
    return b"".join(body for kind, body in chunks_checked(data) if kind == b"IDAT")


def encode(pixels: np.ndarray, threads: int, **options) -> bytes:
    with png.Deflater(threads) as deflater:
        return images.png_codec._encode_png(pixels, deflater=deflater, **options)


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 1 KiB and threads from the first byte, so small images run in parallel."""
    monkeypatch.setattr(images.png_codec, "_PNG_BLOCK_BYTES", 1024)
    monkeypatch.setattr(png, "PARALLEL_MIN_BYTES", 0)


def photo_like(height: int, width: int, channels: int, dtype=np.uint8) -> np.ndarray:
    """Smooth gradients plus noise: every filter type and real matches for zlib."""
    rng = np.random.default_rng(channels)
    top = np.iinfo(dtype).max
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 3 + y * 2)[:, :, None] * (top // 400) + np.arange(channels) * (top // 7)
    noise = rng.integers(0, top // 50 + 2, (height, width, channels))
    return ((base + noise) % (top + 1)).astype(dtype)


def test_adler32_combine_equals_adler32_of_the_joined_bytes():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 300_000, np.uint8).tobytes()
    for cut in (0, 1, 5552, 65521, 65522, 200_000, len(data)):  # around zlib's NMAX and BASE
        first, second = data[:cut], data[cut:]
        combined = png.adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
        assert combined == zlib.adler32(data), cut
    assert png.adler32_combine(1, zlib.adler32(data), len(data)) == zlib.adler32(data)
    ones = b"\xff" * 1_000_000  # sums far past the modulus
    assert png.adler32_combine(zlib.adler32(ones), zlib.adler32(ones), len(ones)) == (
        zlib.adler32(ones + ones))


@pytest.mark.parametrize("level, strategy", [(0, zlib.Z_DEFAULT_STRATEGY), (1, zlib.Z_RLE),
                                             (6, zlib.Z_DEFAULT_STRATEGY), (9, zlib.Z_FILTERED)])
def test_the_zlib_header_is_zlibs_own(level, strategy):
    plain = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    assert png.zlib_header(level, strategy) == (plain.compress(b"abc") + plain.flush())[:2]


def test_one_piece_is_exactly_the_stream_one_compressobj_makes():
    pixels = photo_like(20, 30, 3)
    data = encode(pixels, threads=4)
    stream = image_data(data)
    raw = zlib.decompress(stream)
    plain = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    assert stream == plain.compress(raw) + plain.flush()


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("bits", [8, 16])
def test_parallel_pieces_make_the_same_valid_file_whatever_the_threads(
        small_pieces, tmp_path, channels, bits):
    dtype = np.uint8 if bits == 8 else np.uint16
    pixels = photo_like(37, 45, channels, dtype)
    files = {threads: encode(pixels, threads) for threads in (1, 2, 4)}
    assert files[1] == files[2] == files[4], "the bytes must not depend on the thread count"
    data = files[4]
    found = chunks_checked(data)
    row_bytes = 45 * channels * bits // 8
    pieces = -(-37 // (1024 // row_bytes))
    assert [kind for kind, _ in found].count(b"IDAT") == pieces + 1  # + the checksum's
    raw = zlib.decompress(image_data(data))  # one zlib stream; zlib checks the Adler-32
    assert len(raw) == 37 * (1 + row_bytes)
    if bits == 8:
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.mode == MODES[channels]
            assert np.array_equal(np.asarray(decoded).reshape(pixels.shape), pixels)
    else:
        (tmp_path / "x.png").write_bytes(data)
        stored = read_image(tmp_path / "x.png")
        colour = stored.rgb[:1] if channels in (1, 2) else stored.rgb
        planes = [colour] + ([stored.alpha] if stored.alpha is not None else [])
        decoded = torch.cat(planes).mul(65535).round().to(torch.int64).permute(1, 2, 0)
        assert np.array_equal(decoded.numpy(), pixels.astype(np.int64))


@pytest.mark.parametrize("level", [0, 1, 9])
def test_every_level_gives_valid_pieces(small_pieces, level):
    pixels = photo_like(30, 40, 3)
    data = encode(pixels, threads=2, level=level)
    zlib.decompress(image_data(data))
    with Image.open(io.BytesIO(data)) as decoded:
        assert np.array_equal(np.asarray(decoded), pixels)


def test_metadata_chunks_are_kept_beside_parallel_pieces(small_pieces, tmp_path):
    profile = b"\x00" * 16 + b"RGB " + b"\x00" * 108  # only the colour space is read back
    picture = Picture(rgb=torch.rand(3, 40, 50), dpi=(300.0, 150.0), exif=b"Exif\x00\x00MM",
                      icc_profile=profile, png_colour=((b"gAMA", struct.pack(">I", 45455)),))
    write_image(picture, tmp_path / "x.png")
    kinds = [kind for kind, _ in chunks_checked((tmp_path / "x.png").read_bytes())]
    assert kinds[:5] == [b"IHDR", b"gAMA", b"iCCP", b"pHYs", b"eXIf"]
    with Image.open(tmp_path / "x.png") as out:
        assert out.info["dpi"] == pytest.approx((300, 150), abs=0.05)  # stored per metre
        assert out.info["gamma"] == pytest.approx(0.45455)
        expected = images.quantise(picture.rgb, 8).permute(1, 2, 0).numpy()
        assert np.array_equal(np.asarray(out), expected)


def test_a_failing_piece_fails_the_write_and_leaves_nothing(small_pieces, tmp_path,
                                                            monkeypatch):
    filter_rows = images.png_codec._filter_rows
    calls = []

    def fail_on_the_third(rows, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return filter_rows(rows, *args, **kwargs)

    monkeypatch.setattr(images.png_codec, "_filter_rows", fail_on_the_third)
    with png.Deflater(2) as deflater, pytest.raises(ImageError, match="disk full"):
        write_image(Picture(rgb=torch.rand(3, 40, 50)), tmp_path / "x.png", deflater=deflater)
    assert list(tmp_path.iterdir()) == []


def test_a_deflater_ends_its_threads_when_closed(small_pieces):
    import threading

    with png.Deflater(3) as deflater:
        images.png_codec._encode_png(photo_like(30, 40, 3), deflater=deflater)
        assert any(t.name.startswith("srgan-deflate") for t in threading.enumerate())
    assert not any(t.name.startswith("srgan-deflate") for t in threading.enumerate())
    assert png.Deflater(1).pool() is None  # one thread: inline, no pool


# ---------------------------------------------- chunks read and kept: tRNS, gAMA, sRGB


def test_grey_png_with_a_transparent_level_keeps_its_transparency(tmp_path, tiny_checkpoint):
    src = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 255], [128, 0]], np.uint8), "L").save(src, transparency=0)
    picture = read_image(src)
    assert picture.grayscale and picture.alpha is not None
    assert picture.alpha[0].tolist() == [[0, 1], [1, 0]]
    assert invoke("upscale", src, "--model", tiny_checkpoint, "-q").exit_code == 0
    assert Image.open(tmp_path / "grey_x4.png").mode == "LA"


def test_16bit_rgb_png_with_a_transparent_colour_keeps_its_transparency(tmp_path):
    pixels = np.array([[[1000, 2000, 3000], [7, 8, 9]]], np.uint16)  # (1, 2, 3)
    data = images.png_codec._encode_png(pixels)
    head = len(images.png_codec._PNG_SIGNATURE) + 25  # signature + IHDR chunk
    trns = images.png_codec._png_chunk(b"tRNS", struct.pack(">HHH", 1000, 2000, 3000))
    src = tmp_path / "rgb16.png"
    src.write_bytes(data[:head] + trns + data[head:])
    picture = read_image(src)
    assert picture.bit_depth == 16 and picture.alpha is not None
    assert picture.alpha[0].tolist() == [[0.0, 1.0]]
    assert picture.rgb[:, 0, 1].mul(65535).round().tolist() == [7, 8, 9]


@pytest.mark.parametrize("bits", [8, 16])
def test_png_gamma_and_srgb_chunks_are_kept(tmp_path, tiny_checkpoint, bits):
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", 45455))
    info.add(b"sRGB", b"\x00")
    src = tmp_path / "g.png"
    if bits == 8:
        Image.new("RGB", (4, 4), (10, 200, 30)).save(src, pnginfo=info)
    else:
        data = images.png_codec._encode_png(np.full((4, 4, 3), 999, np.uint16))
        head = len(images.png_codec._PNG_SIGNATURE) + 25
        chunk = images.png_codec._png_chunk
        chunks = chunk(b"gAMA", struct.pack(">I", 45455)) + chunk(b"sRGB", b"\x00")
        src.write_bytes(data[:head] + chunks + data[head:])
    assert invoke("upscale", src, "--model", tiny_checkpoint, "-q").exit_code == 0
    out = Image.open(tmp_path / "g_x4.png")
    assert out.info.get("gamma") == 0.45455 and out.info.get("srgb") == 0
    assert read_image(tmp_path / "g_x4.png").bit_depth == bits
