"""PNG files byte by byte: 16-bit colour reading and the streaming PNG writer.

Pillow keeps only 8 of the 16 bits of colour PNGs, and cannot write them; these fill the gap.
All PNG output, 8-bit too, goes through _write_png, which streams (bounded extra memory):
rows are filtered here and deflated in independent pieces by ``srgan_cli/png.py``.
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from .. import png
from ..errors import ImageError
from .formats import DEFAULT_PNG_COMPRESSION

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_CHUNKS = (b"gAMA", b"cHRM", b"sRGB")  # how to interpret the stored values


_png_chunk = png.chunk  # one PNG chunk as bytes: length, type, body, CRC


def _png_chunks(file: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each chunk of a PNG file, from the first (IHDR) to IEND."""
    file.seek(len(_PNG_SIGNATURE))
    while len(head := file.read(8)) == 8:
        length, kind = struct.unpack(">I4s", head)
        yield kind, file.read(length)
        file.read(4)  # CRC: Pillow has checked the file already
        if kind == b"IEND":
            return


def _png16_colour(file: BinaryIO, notes: list[str]) -> torch.Tensor | None:
    """A 16-bit grey+alpha, RGB or RGBA PNG as (C, H, W) float32 [0, 1]; None for other PNGs.
    An RGB PNG with a tRNS colour key gets a fourth (alpha) channel: 0 where the key matches.

    Pillow reads these with 8 bits per channel. Trick: PNG filters work byte by byte, each byte
    predicted from the bytes one pixel to the left and one row up, so the bytes of one channel
    alone form a valid filtered 16-bit grey image, which Pillow decodes exactly (as I;16).
    """
    chunks = list(_png_chunks(file))
    width, height, depth, colour_type, _, _, interlaced = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 16 or colour_type == 0:  # Pillow reads 16-bit grey by itself
        return None
    if interlaced:
        notes.append("interlaced 16-bit PNG read with 8 bits per channel (Pillow limitation)")
        return None
    channels = {4: 2, 2: 3, 6: 4}[colour_type]
    expected = height * (1 + width * channels * 2)  # a filter-type byte, then the samples
    compressed = b"".join(body for kind, body in chunks if kind == b"IDAT")
    data = zlib.decompressobj().decompress(compressed, expected)
    if len(data) != expected:
        raise ImageError("truncated or corrupt image data")
    rows = np.frombuffer(data, np.uint8).reshape(height, -1)
    filters, samples = rows[:, :1], rows[:, 1:].reshape(height, width, channels, 2)
    grey_header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
    planes = []
    for channel in range(channels):
        scanlines = np.concatenate([filters, samples[:, :, channel].reshape(height, -1)], 1)
        idat = _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 0))
        grey = _PNG_SIGNATURE + grey_header + idat + _png_chunk(b"IEND", b"")
        with Image.open(io.BytesIO(grey)) as plane:
            planes.append(np.array(plane, dtype=np.uint16))
    key = next((body for kind, body in chunks if kind == b"tRNS"), None)
    if colour_type == 2 and key is not None and len(key) == 6:  # one RGB colour is transparent
        red, green, blue = struct.unpack(">HHH", key)
        hidden = (planes[0] == red) & (planes[1] == green) & (planes[2] == blue)
        planes.append(np.where(hidden, 0, 65535).astype(np.uint16))
    return torch.from_numpy(np.stack(planes).astype(np.float32) / 65535)


def _png_colour_chunks(file: BinaryIO) -> tuple[tuple[bytes, bytes], ...]:
    """The gAMA, cHRM and sRGB chunks of a PNG (type, body), to write back unchanged."""
    return tuple((kind, body) for kind, body in _png_chunks(file) if kind in _PNG_COLOUR_CHUNKS)



def _png_strategy(level: int) -> int:
    """zlib strategy for an 8-bit PNG level: Z_RLE at level 1, the default otherwise.

    Not for 16-bit PNGs: their noisy low bytes defeat run-length matching (measured 1.4x
    larger files than the default strategy at level 1).
    """
    return zlib.Z_RLE if level == 1 else zlib.Z_DEFAULT_STRATEGY


def _encode_png(pixels: np.ndarray, **options) -> bytes:
    """A whole PNG file as bytes (for small images and tests); see _write_png."""
    buffer = io.BytesIO()
    _write_png(buffer, pixels, **options)
    return buffer.getvalue()


_PNG_BLOCK_BYTES = 1 << 20
"""Raw pixel bytes filtered and compressed at a time by _write_png (about 1 MiB): big enough
for numpy and zlib to run at full speed, small next to any image worth streaming."""


_PNG_FILTER_BYTES = 96 << 10
"""Rows filtered at a time inside a block (about 96 KiB): _filter_rows makes temporaries
several times the size of its rows, which at this size stay in the CPU cache (measured on
the development machine: 31 ms per MiB of RGB rows against 46 ms for whole 1 MiB blocks)."""


def _write_png(
    file: BinaryIO, pixels: np.ndarray, icc_profile: bytes | None = None,
    exif: bytes | None = None, dpi: tuple[float, float] | None = None,
    colour_chunks: tuple[tuple[bytes, bytes], ...] = (),
    level: int = DEFAULT_PNG_COMPRESSION, deflater: png.Deflater | None = None,
) -> None:
    """Write a PNG file from (H, W, C) uint8 or uint16 pixels, C = 1..4 (L, LA, RGB, RGBA).

    Streaming: rows are filtered and compressed a block (about _PNG_BLOCK_BYTES) at a time
    straight into ``file``, so no whole-image copy of the pixels (filtered or compressed) is
    ever held; Pillow's writer would first copy the image into its own 4-bytes-per-pixel
    buffer. Each block is one independently deflated piece (``png.py``), filtered and
    deflated on ``deflater``'s threads (None: a deflater for this file alone, one thread per
    core); the file does not depend on the number of threads. 8-bit rows use the filter
    Pillow picks (see _filter_rows) and zlib strategy _png_strategy(level); 16-bit rows use
    "Sub" and the default strategy (Pillow cannot write 16-bit colour at all).
    Metadata: colour_chunks (gAMA, cHRM, sRGB, unchanged), ICC profile, DPI and EXIF.
    """
    height, width, channels = pixels.shape
    sixteen = pixels.dtype == np.uint16
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16 if sixteen else 8, colour_type, 0, 0, 0)
    file.write(_PNG_SIGNATURE)
    _write_chunk(file, b"IHDR", header)
    for kind, body in colour_chunks:
        _write_chunk(file, kind, body)
    if icc_profile:
        _write_chunk(file, b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
    if dpi:
        per_metre = (round(dpi[0] / 0.0254), round(dpi[1] / 0.0254))
        _write_chunk(file, b"pHYs", struct.pack(">IIB", *per_metre, 1))
    if exif:
        _write_chunk(file, b"eXIf", exif.removeprefix(b"Exif\x00\x00"))

    pixel_bytes = channels * pixels.itemsize
    row_bytes = width * pixel_bytes
    block_rows = max(1, _PNG_BLOCK_BYTES // max(1, row_bytes))

    def row_bytes_of(rows: np.ndarray) -> np.ndarray:
        """(R, W, C) pixels -> (R, row_bytes) uint8 as stored: 16-bit samples big-endian."""
        stored = np.ascontiguousarray(rows, ">u2" if sixteen else np.uint8)
        return stored.view(np.uint8).reshape(len(rows), row_bytes)

    def scanlines(top: int) -> memoryview:
        """The filtered scanlines of the block of rows starting at ``top``, filtered
        _PNG_FILTER_BYTES at a time (the filter's temporaries then stay in the cache)."""
        above = row_bytes_of(pixels[top - 1 : top])[0] if top else np.zeros(row_bytes, np.uint8)
        rows = row_bytes_of(pixels[top : top + block_rows])
        step = max(1, _PNG_FILTER_BYTES // row_bytes)
        parts = [_filter_rows(rows[at : at + step], rows[at - 1] if at else above, pixel_bytes,
                              adaptive=not sixteen) for at in range(0, len(rows), step)]
        return np.concatenate(parts).reshape(-1).data

    strategy = zlib.Z_DEFAULT_STRATEGY if sixteen else _png_strategy(level)
    total = height * (1 + row_bytes)
    with contextlib.ExitStack() as own:
        if deflater is None:
            deflater = own.enter_context(png.Deflater())
        for idat in png.idat_chunks(scanlines, range(0, height, block_rows), total, level,
                                    strategy, deflater):
            file.write(idat)
    _write_chunk(file, b"IEND", b"")


def _write_chunk(file: BinaryIO, kind: bytes, body: bytes) -> None:
    """Write one PNG chunk (length, type, body, CRC)."""
    file.write(png.chunk(kind, body))


def _filter_rows(
    rows: np.ndarray, previous: np.ndarray, pixel_bytes: int, adaptive: bool
) -> np.ndarray:
    """PNG scanlines (filter-type byte + filtered row) for (R, B) uint8 ``rows``.

    ``previous``: the (B,) row above the first. Not adaptive: "Sub" for every row. Adaptive:
    per row, the one of None, Sub, Up and Paeth whose bytes, read as signed, have the least
    absolute sum - libpng's heuristic, which Pillow uses too (on upscaled photos it never
    picked "Average", measured). PNG filters are byte-wise and wrap modulo 256.
    """
    x = rows.astype(np.int16)
    left = np.zeros_like(x)
    left[:, pixel_bytes:] = x[:, :-pixel_bytes]
    sub = (x - left).astype(np.uint8)
    if not adaptive:
        return np.concatenate([np.ones((len(rows), 1), np.uint8), sub], axis=1)
    up_row = np.concatenate([previous[None], rows[:-1]]).astype(np.int16)
    up_left = np.zeros_like(up_row)
    up_left[:, pixel_bytes:] = up_row[:, :-pixel_bytes]
    guess = left + up_row - up_left  # Paeth: whichever neighbour is closest to this guess
    to_left, to_up, to_corner = abs(guess - left), abs(guess - up_row), abs(guess - up_left)
    paeth = np.where((to_left <= to_up) & (to_left <= to_corner), left,
                     np.where(to_up <= to_corner, up_row, up_left))
    candidates = np.stack([rows, sub, (x - up_row).astype(np.uint8),
                           (x - paeth).astype(np.uint8)])  # (4, R, B), filter types 0, 1, 2, 4
    cost = np.abs(candidates.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)
    best = cost.argmin(axis=0)  # the first of equal costs, as in Pillow
    chosen = candidates[best, np.arange(len(rows))]
    types = np.array([0, 1, 2, 4], np.uint8)[best]
    return np.concatenate([types[:, None], chosen], axis=1)
