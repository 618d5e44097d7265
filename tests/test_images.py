"""Tests for srgan_cli.images on tiny images made here (CPU only, offline): reading (EXIF, ICC,
16 bits, malformed metadata), bad input and the pixel limit (Pillow's guard too), writing,
alpha, planning outputs."""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import invoke, png
from PIL import Image, ImageCms, ImageFile, ImageOps

from srgan_cli import images
from srgan_cli.errors import ImageError, SrganError
from srgan_cli.images import (
    IMAGE_EXTENSIONS,
    Picture,
    bleed_colour,
    find_images,
    plan_outputs,
    read_image,
    upscale_alpha,
    write_image,
)

W, H = 12, 8  # non-square on purpose, so rotations show


# ----------------------------------------------------------------------------- makers


def gradient(channels: int = 3, top: int = 255, dtype=np.uint8) -> np.ndarray:
    """(H, W, channels) array with distinct values per pixel and channel."""
    y, x, c = np.mgrid[0:H, 0:W, 0:channels]
    return ((x * 7 + y * 29 + c * 53) % 256 * top / 255).astype(dtype)


def png_filter(rows: np.ndarray, step: int, kind: int) -> np.ndarray:
    """Apply PNG filter `kind` (0 none, 1 Sub, 2 Up, 3 Average, 4 Paeth) to (H, N) uint8 rows."""
    raw = rows.astype(int)
    out = np.zeros_like(raw)
    for y in range(raw.shape[0]):
        for x in range(raw.shape[1]):
            a = raw[y, x - step] if x >= step else 0
            b = raw[y - 1, x] if y else 0
            c = raw[y - 1, x - step] if y and x >= step else 0
            p = a + b - c
            paeth = (
                a
                if abs(p - a) <= min(abs(p - b), abs(p - c))
                else b
                if abs(p - b) <= abs(p - c)
                else c
            )
            out[y, x] = raw[y, x] - [0, a, b, (a + b) // 2, paeth][kind]
    return (out % 256).astype(np.uint8)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png16(pixels: np.ndarray, filter_kind: int = 0) -> bytes:
    """A 16-bit PNG made by hand from (H, W, C) uint16, every row with one filter type."""
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = pixels.astype(">u2").view(np.uint8).reshape(height, -1)
    filtered = png_filter(rows, channels * 2, filter_kind)
    scanlines = np.concatenate([np.full((height, 1), filter_kind, np.uint8), filtered], 1)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(scanlines.tobytes()))
        + png_chunk(b"IEND", b"")
    )


def read_png16_sub(data: bytes) -> np.ndarray:
    """(H, W, C) uint16 from a 16-bit PNG whose rows all use filter 0 or 1 (our encoder's)."""
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour_type]
    chunks = images.png_codec._png_chunks(io.BytesIO(data))
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")  # there may be several
    rows = np.frombuffer(zlib.decompress(idat), np.uint8)
    rows = rows.reshape(height, -1)
    assert depth == 16 and set(rows[:, 0]) <= {0, 1}
    samples = rows[:, 1:].reshape(height, width, channels * 2).astype(np.int64)
    samples[rows[:, 0] == 1] = samples[rows[:, 0] == 1].cumsum(axis=1) % 256
    return samples.astype(np.uint8).view(">u2").reshape(height, width, channels).astype(np.uint16)


def tiff48(pixels: np.ndarray) -> bytes:
    """An uncompressed 48-bit RGB TIFF made by hand from (H, W, 3) uint16 (little-endian)."""
    height, width, _ = pixels.shape
    data = pixels.astype("<u2").tobytes()
    tags = [(256, width), (257, height), (258, None), (259, 1), (262, 2), (273, None),
            (277, 3), (278, height), (279, len(data))]  # fmt: skip
    bits_at = 8 + 2 + 12 * len(tags) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    for tag, value in tags:
        if tag == 258:  # BitsPerSample: three SHORTs stored after the directory
            out += struct.pack("<HHII", tag, 3, 3, bits_at)
        else:  # LONG values; StripOffsets points past the bits
            out += struct.pack("<HHII", tag, 4, 1, bits_at + 6 if tag == 273 else value)
    return out + struct.pack("<I", 0) + struct.pack("<3H", 16, 16, 16) + data


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make: must survive the trip
    return exif.tobytes()


def make_corpus(folder: Path) -> dict[str, dict]:
    """Write one file per supported mode/format; returns name -> expected properties."""
    rgb = Image.fromarray(gradient())
    rgba_pixels = gradient(4)
    rgba_pixels[:, :3, 3] = 0  # a fully transparent strip
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    frames = [Image.new("RGB", (W, H), colour) for colour in ("red", "green", "blue")]
    corpus = {
        "rgb.png": (rgb, {}),
        "rgba.png": (Image.fromarray(rgba_pixels), {}),
        "l.png": (rgb.convert("L"), {}),
        "la.png": (rgb.convert("LA"), {}),
        "p.png": (palette, {}),
        "p_transparent.png": (palette, {"transparency": 0}),
        "cmyk.jpg": (rgb.convert("CMYK"), {"quality": 95}),
        "ycbcr.jpg": (rgb.convert("YCbCr"), {"quality": 95}),
        "grey16.png": (Image.fromarray(gradient(1, 60000, np.uint16)[:, :, 0]), {}),
        "grey16.tif": (Image.fromarray(gradient(1, 60000, np.uint16)[:, :, 0]), {}),
        "rgb.tif": (rgb, {}),
        "rgb.webp": (rgb, {"lossless": True}),
        "rgba.webp": (Image.fromarray(rgba_pixels), {"lossless": True}),
        "rgb.bmp": (rgb, {}),
        "anim.gif": (frames[0], {"save_all": True, "append_images": frames[1:]}),
    }
    expected = {}
    for name, (image, options) in corpus.items():
        image.save(folder / name, **options)
        expected[name] = {"grayscale": name[0] in "lg", "bit_depth": 8, "alpha": False}
    for name in ("rgba.png", "la.png", "p_transparent.png", "rgba.webp"):
        expected[name]["alpha"] = True
    for name in ("grey16.png", "grey16.tif"):
        expected[name]["bit_depth"] = 16
    for channels, name in ((3, "rgb48.png"), (4, "rgba64.png"), (2, "la32.png")):
        (folder / name).write_bytes(png16(gradient(channels, 65535, np.uint16)))
        expected[name] = {"grayscale": channels == 2, "bit_depth": 16, "alpha": channels != 3}
    return expected


@pytest.fixture
def image_corpus(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    folder = tmp_path / "corpus"
    folder.mkdir()
    return folder, make_corpus(folder)


def bicubic_x2(picture: Picture) -> Picture:
    """Stand-in for the network: the upscaler's flow with bicubic instead of SRGAN."""
    rgb = picture.rgb if picture.alpha is None else bleed_colour(picture.rgb, picture.alpha)
    big = F.interpolate(rgb[None], scale_factor=2, mode="bicubic")[0].clamp(0, 1)
    alpha = None if picture.alpha is None else upscale_alpha(picture.alpha, 2)
    return picture.with_pixels(big, alpha)


# ----------------------------------------------------------------------------- reading


def test_corpus_reads_with_the_right_properties(image_corpus):
    folder, expected = image_corpus
    for name, want in expected.items():
        picture = read_image(folder / name)
        assert picture.size == (W, H), name
        assert picture.rgb.shape == (3, H, W) and picture.rgb.dtype == torch.float32, name
        assert picture.rgb.min() >= 0 and picture.rgb.max() <= 1, name
        assert picture.grayscale == want["grayscale"], name
        assert picture.bit_depth == want["bit_depth"], name
        assert (picture.alpha is not None) == want["alpha"], name
        if picture.alpha is not None:
            assert picture.alpha.shape == (1, H, W), name


def test_pixel_values_are_exact_for_lossless_files(image_corpus):
    folder, _ = image_corpus
    want = torch.from_numpy(gradient()).permute(2, 0, 1).float() / 255
    for name in ("rgb.png", "rgb.tif", "rgb.webp", "rgb.bmp"):
        assert torch.allclose(read_image(folder / name).rgb, want, atol=1e-6), name
    want16 = torch.from_numpy(gradient(4, 65535, np.uint16).astype(np.float32)) / 65535
    rgba64 = read_image(folder / "rgba64.png")
    assert torch.allclose(rgba64.rgb, want16.permute(2, 0, 1)[:3], atol=1e-7)
    assert torch.allclose(rgba64.alpha, want16.permute(2, 0, 1)[3:], atol=1e-7)


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("filter_kind", range(5))
def test_16_bit_colour_png_is_read_exactly_whatever_the_filter(tmp_path, channels, filter_kind):
    pixels = np.random.default_rng(filter_kind).integers(0, 65536, (H, W, channels), np.uint16)
    (tmp_path / "x.png").write_bytes(png16(pixels, filter_kind))
    picture = read_image(tmp_path / "x.png")
    colour = picture.rgb[:1] if channels == 2 else picture.rgb
    got = colour if picture.alpha is None else torch.cat([colour, picture.alpha])
    want = torch.from_numpy(pixels.astype(np.float32) / 65535).permute(2, 0, 1)
    assert picture.bit_depth == 16 and torch.equal(got, want)


def test_grayscale_has_three_equal_channels_and_palette_transparency_becomes_alpha(image_corpus):
    folder, _ = image_corpus
    grey = read_image(folder / "la32.png").rgb
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    palette = Image.open(folder / "p_transparent.png")
    hidden = np.asarray(palette) == 0
    alpha = read_image(folder / "p_transparent.png").alpha[0].numpy()
    assert hidden.any() and (alpha[hidden] == 0).all() and (alpha[~hidden] == 1).all()


def test_animated_gif_gives_first_frame_with_a_warning(image_corpus):
    folder, _ = image_corpus
    picture = read_image(folder / "anim.gif")
    assert any("first of 3 frames" in note for note in picture.warnings)
    red = picture.rgb[:, 0, 0]
    assert red[0] > 0.9 and red[1] < 0.1 and red[2] < 0.1


def test_48_bit_tiff_is_read_as_8_bit_with_a_warning(tmp_path):
    (tmp_path / "deep.tif").write_bytes(tiff48(gradient(3, 65535, np.uint16)))
    picture = read_image(tmp_path / "deep.tif")
    want = torch.from_numpy(gradient()).permute(2, 0, 1).float() / 255
    assert picture.bit_depth == 8 and (picture.rgb - want).abs().max() <= 1 / 255 + 1e-6
    assert any("16-bit colour TIFF" in note for note in picture.warnings)


def test_cmyk_jpeg_reads_as_rgb_with_a_note(image_corpus):
    folder, _ = image_corpus
    picture = read_image(folder / "cmyk.jpg")
    want = torch.from_numpy(gradient()).permute(2, 0, 1).float() / 255
    assert (picture.rgb - want).abs().mean() < 0.05
    assert any("CMYK" in note for note in picture.warnings)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow_does(tmp_path, orientation):
    path = tmp_path / "turned.png"
    Image.fromarray(gradient()).save(path, exif=exif_bytes(orientation))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    picture = read_image(path)
    got = (picture.rgb * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(got, upright)
    exif = Image.Exif()
    exif.load(picture.exif)
    assert exif.get(0x0112) == 1 and exif.get(0x010F) == "TestCam"


def test_rotated_phone_jpeg_is_written_upright_with_orientation_reset(tmp_path):
    source, target = tmp_path / "phone.jpg", tmp_path / "out.jpg"
    Image.fromarray(gradient()).save(source, exif=exif_bytes(6), quality=95)
    picture = read_image(source)
    assert picture.size == (H, W)  # orientation 6: turned a quarter
    write_image(bicubic_x2(picture), target)
    written = Image.open(target)
    assert written.size == (2 * H, 2 * W)
    assert written.getexif().get(0x0112) == 1
    assert written.getexif().get(0x010F) == "TestCam"


def test_lab_tiff_is_written_as_rgb_not_rgba(tmp_path, tiny_checkpoint):
    src = tmp_path / "lab.tif"
    Image.new("LAB", (4, 4), (50, 10, 20)).save(src)
    assert read_image(src).alpha is None
    assert invoke("upscale", src, "--model", tiny_checkpoint, "-q").exit_code == 0
    assert Image.open(tmp_path / "lab_x4.tif").mode == "RGB"


def png_with_chunk(path: Path, kind: bytes, body: bytes) -> Path:
    """A 6x5 PNG with one extra chunk right after IHDR (CRC correct)."""
    buffer = io.BytesIO()
    Image.new("RGB", (6, 5), (10, 200, 30)).save(buffer, "PNG")
    data = buffer.getvalue()
    path.write_bytes(data[:33] + png_chunk(kind, body) + data[33:])
    return path


@pytest.mark.parametrize("body", [b"garbage!", b"II*\x00", b"II*\x00\x08\x00"])
def test_malformed_exif_is_dropped_with_a_warning(tmp_path, tiny_checkpoint, body):
    src = png_with_chunk(tmp_path / "bad_exif.png", b"eXIf", body)
    picture = images.read_image(src)
    assert picture.exif is None and picture.warnings == ["malformed EXIF metadata dropped"]
    assert picture.size == (6, 5) and torch.allclose(
        picture.rgb[:, 0, 0], torch.tensor([10, 200, 30]) / 255)
    result = invoke("upscale", src, "-o", tmp_path / "out.jpg", "--model", tiny_checkpoint)
    assert result.exit_code == 0, result.output
    assert "warning: malformed EXIF metadata dropped" in result.output
    assert Image.open(tmp_path / "out.jpg").size == (24, 20)


# ----------------------------------------------------------------------------- bad input


def test_bad_files_each_give_one_line_reason(tmp_path):
    good = io.BytesIO()
    Image.fromarray(gradient()).save(good, "PNG")
    (tmp_path / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture at all\n")
    (tmp_path / "folder.png").mkdir()
    reasons = {
        "truncated.png": "truncated or corrupt",
        "corrupt.jpg": "",  # any one-line reason: random data is "not an image" or "corrupt"
        "empty.png": "file is empty",
        "notes.jpg": "not an image file",
        "folder.png": "is a directory",
        "missing.png": "no such file",
    }
    for name, reason in reasons.items():
        with pytest.raises(ImageError) as caught:
            read_image(tmp_path / name)
        message = str(caught.value)
        assert reason in message and message and "\n" not in message, name


def test_floating_point_image_is_refused_as_unsupported(tmp_path):
    Image.new("F", (4, 4), 0.5).save(tmp_path / "float.tif")
    with pytest.raises(ImageError, match="unsupported pixel format"):
        read_image(tmp_path / "float.tif")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_is_reported(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        read_image(path)


def test_permission_error_is_reported_for_root_too(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ImageError, match="permission denied"):
        read_image(tmp_path / "x.png")


def test_batch_goes_on_after_bad_files(image_corpus):
    folder, expected = image_corpus
    (folder / "empty.png").write_bytes(b"")
    (folder / "dir.jpg").mkdir()
    done, errors = [], []
    for path in find_images(folder):
        try:
            done.append(read_image(path))
        except ImageError as error:
            errors.append(f"{path}: {error}")
    assert len(done) == len(expected) and len(errors) == 2


def huge_png_header(tmp_path: Path) -> Path:
    """A small PNG whose IHDR claims 100000 x 100000 pixels (CRC fixed up)."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match=r"100000x100000 = 10000.0 MP, above the 179.0 MP"):
        read_image(huge_png_header(tmp_path))


def test_pixel_limit_is_ours_not_pillows(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.new("RGB", (20, 10)).save(path)
    with pytest.raises(ImageError, match="--max-pixels"):
        read_image(path, max_pixels=199)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow's global must not interfere
    assert read_image(path, max_pixels=200).size == (20, 10)
    assert Image.MAX_IMAGE_PIXELS == 10


def test_concurrent_reads_never_switch_pillows_guard_off(tmp_path, monkeypatch):
    """Two reader threads, each held inside the decoder in turn: Pillow's limit as seen
    from a third thread stays what it was (234db95 left it None after this order)."""
    path = png(tmp_path / "a.png")
    limit = Image.MAX_IMAGE_PIXELS
    inside = [threading.Event(), threading.Event()]
    go_on = [threading.Event(), threading.Event()]
    decode = images.reading._decode

    def held_decode(image, file):
        me = int(threading.current_thread().name)
        inside[me].set()
        assert go_on[me].wait(30)
        return decode(image, file)

    monkeypatch.setattr(images.reading, "_decode", held_decode)
    readers = [threading.Thread(target=images.read_image, args=(path,), name=str(i))
               for i in range(2)]
    seen = []
    for reader, entered in zip(readers, inside, strict=True):
        reader.start()
        assert entered.wait(30)
        seen.append(Image.MAX_IMAGE_PIXELS)
    for reader, release in zip(readers, go_on, strict=True):
        release.set()
        reader.join(30)
        seen.append(Image.MAX_IMAGE_PIXELS)
    assert seen == [limit] * 4


def test_a_limit_above_pillows_raises_its_guard_for_that_read_only(tmp_path, monkeypatch):
    path = png(tmp_path / "a.png", size=(20, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow refuses above 20 pixels
    during = []
    decode = images.reading._decode

    def watched_decode(image, file):
        during.append(Image.MAX_IMAGE_PIXELS)
        return decode(image, file)

    monkeypatch.setattr(images.reading, "_decode", watched_decode)
    assert images.read_image(path, max_pixels=500).size == (20, 10)
    assert during == [500] and Image.MAX_IMAGE_PIXELS == 10


def test_an_image_above_pillows_limit_is_one_line_with_its_size(tmp_path, monkeypatch):
    path = png(tmp_path / "a.png", size=(30, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow itself refuses 300 pixels
    with pytest.raises(ImageError, match=r"^image is 30x10 = 0.0 MP, above the 0.0 MP limit"):
        images.read_image(path, max_pixels=20)
    assert Image.MAX_IMAGE_PIXELS == 10


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    "name",
    ["rgb.png", "rgba.png", "l.png", "la.png", "p_transparent.png", "grey16.png", "rgb48.png",
     "rgba64.png", "la32.png", "grey16.tif", "rgb.tif", "rgba.webp", "rgb.bmp", "ycbcr.jpg"],
)  # fmt: skip
def test_round_trip_keeps_mode_depth_alpha_and_pixels(image_corpus, tmp_path, name):
    folder, want = image_corpus
    picture = read_image(folder / name)
    suffix = ".png" if name.startswith("p_") else Path(name).suffix
    target = tmp_path / f"out{suffix}"
    assert write_image(picture, target, quality=100) == []  # WebP at 100: lossless
    again = read_image(target)
    assert (again.grayscale, again.bit_depth) == (picture.grayscale, picture.bit_depth)
    assert (again.alpha is None) == (picture.alpha is None)
    tolerance = 0.06 if name.endswith(".jpg") else 0.5 / 65535 if picture.bit_depth == 16 else 0
    visible = slice(None) if picture.alpha is None else picture.alpha[0] > 0
    assert (again.rgb - picture.rgb)[:, visible].abs().max() <= tolerance + 1e-6
    if picture.alpha is not None:
        assert (again.alpha - picture.alpha).abs().max() <= 1e-6
    if picture.grayscale and name.endswith((".png", ".tif")) and not name.startswith("la32"):
        assert Image.open(target).mode == {8: "L", 16: "I;16"}[picture.bit_depth] + (
            "A" if picture.alpha is not None else ""
        )


def test_dark_16_bit_image_stays_16_bit_and_dark(tmp_path):
    dark = (gradient(3, 255, np.uint16) * 4).clip(0, 1000)  # max 1000 of 65535
    source, target = tmp_path / "dark.png", tmp_path / "dark_out.png"
    source.write_bytes(png16(dark))
    picture = read_image(source)
    assert picture.bit_depth == 16 and picture.rgb.max() < 1001 / 65535
    write_image(picture, target)
    written = read_png16_sub(target.read_bytes())  # a decoder independent of srgan_cli.images
    difference = written.astype(int) - dark.astype(int)
    assert np.abs(difference).max() <= 1


def test_upscaled_output_keeps_metadata_and_scales_dpi(tmp_path):
    source = tmp_path / "meta.png"
    icc = srgb_profile()
    Image.fromarray(gradient()).save(source, icc_profile=icc, dpi=(72, 72), exif=exif_bytes(1))
    big = bicubic_x2(read_image(source))
    assert big.size == (2 * W, 2 * H) and big.dpi == pytest.approx((144, 144), abs=0.1)
    for suffix in (".png", ".jpg", ".webp", ".tif"):
        target = tmp_path / f"big{suffix}"
        write_image(big, target)
        written = Image.open(target)
        assert written.size == (2 * W, 2 * H)
        assert written.info.get("icc_profile") == icc, suffix
        if suffix != ".webp":
            assert tuple(round(d) for d in written.info["dpi"]) == (144, 144), suffix
        if suffix in (".png", ".jpg", ".webp"):
            assert written.getexif().get(0x010F) == "TestCam", suffix


def test_16_bit_png_carries_metadata_from_our_encoder(tmp_path):
    icc = srgb_profile()
    picture = Picture(
        rgb=torch.rand(3, H, W), bit_depth=16, icc_profile=icc, exif=exif_bytes(1), dpi=(300, 300)
    )
    write_image(picture, tmp_path / "meta16.png")
    again = read_image(tmp_path / "meta16.png")
    assert again.bit_depth == 16 and again.icc_profile == icc
    assert again.dpi == pytest.approx((300, 300), abs=0.1)
    assert b"TestCam" in again.exif


def test_16_bit_colour_to_8_bit_format_warns(tmp_path):
    picture = Picture(rgb=torch.rand(3, H, W), bit_depth=16)
    notes = write_image(picture, tmp_path / "out.jpg")
    assert notes and "8 bits" in notes[0]


def test_grayscale_to_webp_becomes_rgb_and_16_bit_grey_alpha_to_tiff_warns(image_corpus, tmp_path):
    folder, _ = image_corpus
    grey = read_image(folder / "l.png")
    write_image(grey, tmp_path / "grey.webp", quality=100)
    assert Image.open(tmp_path / "grey.webp").mode == "RGB"
    assert torch.equal(read_image(tmp_path / "grey.webp").rgb, grey.rgb)
    notes = write_image(read_image(folder / "la32.png"), tmp_path / "la.tif")
    assert notes and Image.open(tmp_path / "la.tif").mode == "LA"


def test_8_bit_output_rounds_not_truncates(tmp_path):
    picture = Picture(rgb=torch.full((3, 2, 2), 100.6 / 255))
    write_image(picture, tmp_path / "round.png")
    assert np.asarray(Image.open(tmp_path / "round.png"))[0, 0, 0] == 101


def test_jpeg_refuses_real_transparency_but_drops_opaque_alpha(tmp_path):
    see_through = Picture(rgb=torch.rand(3, 4, 4), alpha=torch.rand(1, 4, 4) * 0.5)
    with pytest.raises(ImageError, match="png"):
        write_image(see_through, tmp_path / "x.jpg")
    assert list(tmp_path.iterdir()) == []
    opaque = Picture(rgb=torch.rand(3, 4, 4), alpha=torch.ones(1, 4, 4))
    write_image(opaque, tmp_path / "x.jpg")
    assert Image.open(tmp_path / "x.jpg").mode == "RGB"


def test_unwritable_format_is_refused(tmp_path):
    with pytest.raises(ImageError, match="choose png"):
        write_image(Picture(rgb=torch.rand(3, 4, 4)), tmp_path / "x.gif")


@pytest.mark.parametrize("interruption", [OSError("disk full"), KeyboardInterrupt()])
def test_write_is_atomic(tmp_path, monkeypatch, interruption):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")

    def fail_after_the_header(*args, **kwargs):  # the PNG header is in the file by now
        raise interruption

    monkeypatch.setattr(images.png_codec, "_filter_rows", fail_after_the_header)
    with pytest.raises(ImageError if isinstance(interruption, OSError) else KeyboardInterrupt):
        write_image(Picture(rgb=torch.rand(3, 4, 4)), target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert target.read_bytes() == b"previous result"


def test_16_bit_write_is_atomic_too(tmp_path, monkeypatch):
    def failing_replace(source, destination):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        write_image(Picture(rgb=torch.rand(3, 4, 4), bit_depth=16), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_written_file_gets_ordinary_permissions(tmp_path):
    write_image(Picture(rgb=torch.rand(3, 4, 4)), tmp_path / "x.png")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------------------- alpha


def test_transparent_garbage_colour_does_not_bleed_into_edges():
    green, magenta = torch.tensor([0.2, 0.6, 0.3]), torch.tensor([1.0, 0.0, 1.0])
    rgb = green.view(3, 1, 1).repeat(1, 16, 16)
    rgb[:, :, 8:] = magenta.view(3, 1, 1)
    alpha = torch.ones(1, 16, 16)
    alpha[:, :, 8:] = 0
    visible = upscale_alpha(alpha, 2)[0] > 0.01

    def worst_tint(colour: torch.Tensor) -> float:
        big = F.interpolate(colour[None], scale_factor=2, mode="bicubic")[0]
        return (big - green.view(3, 1, 1)).abs().amax(0)[visible].max().item()

    assert worst_tint(rgb) > 0.1  # the stand-in network does smear magenta without help
    bled = bleed_colour(rgb, alpha)
    assert worst_tint(bled) < 1e-4
    assert torch.equal(bled[:, :, :8], rgb[:, :, :8])  # visible colour untouched


def test_bleed_keeps_semi_transparent_colour_and_handles_edge_cases():
    rgb, alpha = torch.rand(3, 5, 7), torch.rand(1, 5, 7)
    alpha[0, 0, 0] = 0
    bled = bleed_colour(rgb, alpha)
    assert torch.allclose(bled[:, alpha[0] > 0], rgb[:, alpha[0] > 0], atol=1e-6)
    assert bleed_colour(rgb, torch.zeros(1, 5, 7)) is rgb  # nothing visible: nothing to do
    assert bleed_colour(rgb, torch.ones(1, 5, 7)) is rgb


def test_upscale_alpha_shape_and_range():
    alpha = (torch.rand(1, 5, 7) > 0.5).float()
    big = upscale_alpha(alpha, 4)
    assert big.shape == (1, 20, 28) and big.min() >= 0 and big.max() <= 1
    assert torch.equal(upscale_alpha(torch.ones(1, 3, 3), 2), torch.ones(1, 6, 6))


# ----------------------------------------------------------------------------- planning


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_find_images_is_sorted_recursive_and_lists_broken_entries(tmp_path):
    for name in ("b.png", "A.JPG", "sub/c.webp", "notes.txt", ".x.png.abc.part"):
        touch(tmp_path / name)
    (tmp_path / "dir.png").mkdir()
    names = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert names == ["A.JPG", "b.png", "dir.png", "sub/c.webp"]
    assert [p.name for p in find_images(tmp_path, recursive=False)] == ["A.JPG", "b.png", "dir.png"]
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"} <= IMAGE_EXTENSIONS


def test_plan_keeps_subfolders_and_applies_suffix_and_extension(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    inputs = [touch(root / "sub/a.png"), touch(root / "b.jpg"), touch(root / "c.gif")]
    plan = plan_outputs(inputs, input_root=root, out_dir=out, suffix="_x4")
    assert plan.errors == []
    assert [target for _, target in plan.jobs] == [
        out / "sub/a_x4.png", out / "b_x4.jpg", out / "c_x4.png"
    ]  # fmt: skip
    plan = plan_outputs(inputs[:1], input_root=root, out_dir=out, ext="webp")
    assert plan.jobs == [(inputs[0], out / "sub/a.webp")]


def test_plan_never_overwrites_inputs(tmp_path):
    a_png, a_jpg = touch(tmp_path / "a.png"), touch(tmp_path / "a.jpg")
    for out_dir in (None, tmp_path):
        plan = plan_outputs([a_jpg, a_png], input_root=tmp_path, out_dir=out_dir, ext="png")
        assert plan.jobs == [] and len(plan.errors) == 2
        assert all("would overwrite an input file" in error for error in plan.errors)
    plan = plan_outputs([a_png], out_file=a_png)
    assert plan.jobs == [] and "overwrite an input" in plan.errors[0]


def test_plan_reports_clashes_including_letter_case(tmp_path, monkeypatch):
    monkeypatch.setattr(images.files, "ignores_case", lambda folder: True)  # as on macOS, Windows
    root, out = tmp_path / "in", tmp_path / "out"
    inputs = [touch(root / "A.png"), touch(root / "a.jpg"), touch(root / "a.png")]
    plan = plan_outputs(inputs, input_root=root, out_dir=out, ext="png")
    assert plan.jobs == [(inputs[0], out / "A.png")]
    assert len(plan.errors) == 2 and all("also the output of" in e for e in plan.errors)
    assert plan.errors[0].startswith(f"{inputs[1]}: ")


def test_plan_keeps_outputs_inside_the_output_folder(tmp_path):
    root, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    inside, outside = touch(root / "sub/a.png"), touch(tmp_path / "stray.png")
    elsewhere.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    plan = plan_outputs([inside, outside], input_root=root, out_dir=out, suffix="_x4")
    assert plan.jobs == []
    assert "outside the output folder" in plan.errors[0]
    assert "not inside the input folder" in plan.errors[1]


def test_plan_refuses_bad_names_up_front(tmp_path):
    a = touch(tmp_path / "a.png")
    for bad in ({"suffix": "/../../evil"}, {"ext": "gif"}, {"out_file": tmp_path / "x.gif"}):
        with pytest.raises(ImageError):
            plan_outputs([a], out_dir=tmp_path / "out", **bad)


def test_plan_single_output_file(tmp_path):
    a, b = touch(tmp_path / "a.png"), touch(tmp_path / "b.png")
    assert plan_outputs([a], out_file=tmp_path / "x.jpg").jobs == [(a, tmp_path / "x.jpg")]
    with pytest.raises(ImageError, match="exactly one input"):
        plan_outputs([a, b], out_file=tmp_path / "x.jpg")


def test_image_error_is_a_srgan_error():
    assert issubclass(ImageError, SrganError) and issubclass(SrganError, Exception)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("bits", [8, 16])
def test_streamed_png_decodes_to_the_same_pixels_as_pillows_writer(tmp_path, channels, bits):
    top, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    pixels = np.random.default_rng(channels).integers(0, top + 1, (9, 13, channels), dtype)
    pixels[3:6] = pixels[2]  # flat runs too, so every filter type gets a chance
    data = images.png_codec._encode_png(pixels)
    if bits == 8:  # the old writer was Pillow's; both must decode to the same pixels
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        old = io.BytesIO()
        Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode).save(old, "PNG")
        decoded = np.asarray(Image.open(io.BytesIO(data)))
        assert np.array_equal(decoded, np.asarray(Image.open(old)))
        assert np.array_equal(decoded.reshape(pixels.shape), pixels)
    else:
        assert np.array_equal(read_png16_sub(data), pixels)


def test_png_written_in_many_blocks_decodes_exactly(tmp_path, monkeypatch):
    # 100 bytes: 2 rows of 16 RGB pixels
    monkeypatch.setattr(images.png_codec, "_PNG_BLOCK_BYTES", 100)
    blocks = []
    filter_rows = images.png_codec._filter_rows
    monkeypatch.setattr(images.png_codec, "_filter_rows", lambda rows, *args, **kwargs: (
        blocks.append(len(rows)) or filter_rows(rows, *args, **kwargs)))
    rgb = torch.rand(3, 21, 16)
    write_image(Picture(rgb=rgb, dpi=(72.0, 72.0)), tmp_path / "x.png")
    assert blocks == [2] * 10 + [1]
    with Image.open(tmp_path / "x.png") as out:
        assert out.mode == "RGB" and out.info["dpi"] == pytest.approx((72, 72), abs=0.01)
        expected = images.quantise(rgb, 8).permute(1, 2, 0).numpy()
        assert np.array_equal(np.asarray(out), expected)


def test_uint8_rgb_output_is_written_without_a_whole_image_copy(tmp_path, monkeypatch):
    hwc = torch.randint(0, 256, (6, 5, 3), dtype=torch.uint8)  # the upscaler's output buffer
    seen = []
    monkeypatch.setattr(images.writing, "_write_png",
                        lambda file, pixels, **kw: seen.append(pixels))
    write_image(Picture(rgb=hwc.permute(2, 0, 1)), tmp_path / "x.png")
    assert np.shares_memory(seen[0], hwc.numpy())


@pytest.mark.parametrize("dtype, top", [(torch.uint8, 255), (torch.uint16, 65535)])
def test_grey_of_integer_pixels_is_made_in_blocks_with_the_same_rounding(dtype, top):
    rgb = torch.randint(0, top + 1, (3, 7, 5), dtype=torch.int32).to(dtype)
    whole = images.writing._luma(rgb.float() / top)  # the old way: one float copy of everything
    expected = (whole.clamp(0, 1) * top).round().to(dtype)
    grey = images.writing._luma(rgb, block_rows=3)
    assert grey.dtype == dtype and torch.equal(grey, expected)


def test_rgb_is_read_as_contiguous_float_without_converting_the_image(tmp_path, monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 6, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    monkeypatch.setattr(Image.Image, "convert", lambda *args, **kwargs: pytest.fail("copied"))
    rgb = read_image(tmp_path / "x.png").rgb
    assert rgb.is_contiguous() and rgb.dtype == torch.float32
    assert torch.equal(rgb, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
