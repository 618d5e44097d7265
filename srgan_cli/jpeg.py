"""JPEG compress + decompress of a batch as integer tensor ops, equal to Pillow bit for bit.

Real-ESRGAN's degradation compresses training patches with JPEG in the middle of a chain that
runs on the training device; :func:`jpeg` does that round trip there, batched, without leaving
the device. It reproduces what Pillow's ``img.save(buf, "JPEG", quality=q)`` followed by
``Image.open(buf)`` does with libjpeg-turbo on an RGB image: baseline, 4:2:0 chroma, the
JDCT_ISLOW integer DCT, no smoothing; decoding with JDCT_ISLOW and fancy upsampling. Each
stage below is one function mirroring one libjpeg-turbo routine, with its integer arithmetic
(rounding, biases, reciprocal quantisation, range limiting) copied exactly; entropy coding is
lossless and so skipped.

Samples are int32 tensors (each function states why that is safe). The two 1-D passes of
each DCT are integer-linear until their final rounding shift, so they run as 8x8 matrix
products in float64, which holds every value exactly (integers below 2**45; matrices derived
from the libjpeg butterfly code at import). Otherwise only elementwise, shift, gather and
indexing ops are used (no integer matmul, which CUDA lacks), and nothing reads a value back to
the host, so the batch is one set of ops on its device. On CUDA this needs true IEEE float64
matmuls (cuBLAS's opt-in FP64 emulation must stay off).

Verified against Pillow 13.0.0 / libjpeg-turbo 3.2.0 (tests/test_jpeg.py), including the one
place where libjpeg-turbo's SIMD code (what Pillow runs) and its C code differ: the IDCT's
range limit (see :func:`range_limit`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from srgan_cli.errors import InputError

# jcparam.c: the standard (IJG / JPEG Annex K) tables, natural (row-major) order.
_STD_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_STD_CHROMINANCE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32),
)  # fmt: skip


def _compute_reciprocal(divisor: int) -> tuple[int, int, int]:
    """jcdctmgr.c compute_reciprocal with 16-bit DCTELEM (the SIMD build): (reciprocal,
    correction, total right shift r) so that a quantised |coef| is ((|t| + c) * recip) >> r."""
    b = divisor.bit_length() - 1
    r = 16 + b
    fq, fr = divmod(1 << r, divisor)
    c = divisor // 2
    if fr == 0:  # divisor is a power of two
        fq >>= 1
        r -= 1
    elif fr <= divisor // 2:
        c += 1
    else:
        fq += 1
    return fq, c, r


def quant_tables(quality: torch.Tensor) -> torch.Tensor:
    """jcparam.c jpeg_set_quality(quality, force_baseline=TRUE): per-sample tables.

    quality: (N,) int64 in 1..100. Returns (N, 2, 64) int64 quantvals in 1..255 (luma,
    chroma; natural order), as jpeg_quality_scaling then jpeg_add_quant_table compute them.
    """
    q = quality.clamp(1, 100)
    scale = torch.where(q < 50, 5000 // q, 200 - 2 * q)
    basic = _constants(q.device).basic_tables
    return ((basic * scale[:, None, None] + 50) // 100).clamp(1, 255)


def rgb_to_ycc(rgb: torch.Tensor) -> torch.Tensor:
    """jccolor.c rgb_ycc_convert: (N, 3, H, W) int32 RGB 0..255 -> Y, Cb, Cr int32 0..255.

    The 16-bit fixed-point tables FIX(x) = int(x * 65536 + 0.5); sums stay below 2**25.
    """
    r, g, b = rgb.unbind(1)
    half, offset = 1 << 15, 128 << 16
    y = (19595 * r + 38470 * g + 7471 * b + half) >> 16
    cb = (-11059 * r - 21709 * g + 32768 * b + offset + half - 1) >> 16
    cr = (32768 * r - 27439 * g - 5329 * b + offset + half - 1) >> 16
    return torch.stack([y, cb, cr], 1)


def replicate_edges(planes: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
                    out_h: int, out_w: int) -> torch.Tensor:
    """Edge replication of each sample's valid region (jcprepct.c expand_bottom_edge,
    jcsample.c expand_right_edge): (N, C, H, W) -> (N, C, out_h, out_w) where row i, column j
    is sample n's pixel (min(i, heights[n] - 1), min(j, widths[n] - 1))."""
    n, c, h, w = planes.shape
    rows = torch.minimum(torch.arange(out_h, device=planes.device), heights[:, None] - 1)
    cols = torch.minimum(torch.arange(out_w, device=planes.device), widths[:, None] - 1)
    planes = planes.gather(2, rows[:, None, :, None].expand(n, c, out_h, w))
    return planes.gather(3, cols[:, None, None, :].expand(n, c, out_h, out_w))


def downsample_h2v2(planes: torch.Tensor) -> torch.Tensor:
    """jcsample.c h2v2_downsample: 2x2 means with the alternating bias 1, 2, 1, 2 ... along
    each output row. (N, C, 2h, 2w) int32 -> (N, C, h, w) int32."""
    total = (planes[..., 0::2, 0::2] + planes[..., 0::2, 1::2]
             + planes[..., 1::2, 0::2] + planes[..., 1::2, 1::2])
    bias = torch.arange(total.shape[-1], device=planes.device, dtype=planes.dtype) % 2 + 1
    return (total + bias) >> 2


def to_blocks(planes: torch.Tensor) -> torch.Tensor:
    """(N, C, 8 by, 8 bx) -> (N, C, by, bx, 8, 8) 8x8 blocks, [..., row, column]."""
    n, c, h, w = planes.shape
    return planes.reshape(n, c, h // 8, 8, w // 8, 8).transpose(3, 4)


def from_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_blocks`: (N, C, by, bx, 8, 8) -> (N, C, 8 by, 8 bx)."""
    n, c, by, bx = blocks.shape[:4]
    return blocks.transpose(3, 4).reshape(n, c, by * 8, bx * 8)


# jfdctint.c / jidctint.c constants, FIX(x) with CONST_BITS = 13.
_C0_298, _C0_390, _C0_541, _C0_765 = 2446, 3196, 4433, 6270
_C0_899, _C1_175, _C1_501, _C1_847 = 7373, 9633, 12299, 15137
_C1_961, _C2_053, _C2_562, _C3_072 = 16069, 16819, 20995, 25172
_CONST_BITS, _PASS1_BITS = 13, 2

# A pass's outputs before their final DESCALE, each with its shift (0: no rounding).
_Outputs = list[tuple[torch.Tensor, int]]


def _fdct_butterfly(d: list[torch.Tensor], first_pass: bool) -> _Outputs:
    """One pass of jfdctint.c jpeg_fdct_islow (LL&M butterfly) over 8 tensors d[0..7]."""
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    shift = _CONST_BITS - _PASS1_BITS if first_pass else _CONST_BITS + _PASS1_BITS
    if first_pass:  # LEFT_SHIFT(x, PASS1_BITS): exact
        dc = [((tmp10 + tmp11) << _PASS1_BITS, 0), ((tmp10 - tmp11) << _PASS1_BITS, 0)]
    else:
        dc = [(tmp10 + tmp11, _PASS1_BITS), (tmp10 - tmp11, _PASS1_BITS)]
    z1 = (tmp12 + tmp13) * _C0_541
    out2, out6 = z1 + tmp13 * _C0_765, z1 - tmp12 * _C1_847
    z1, z2, z3, z4 = tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7
    z5 = (z3 + z4) * _C1_175
    tmp4, tmp5, tmp6, tmp7 = tmp4 * _C0_298, tmp5 * _C2_053, tmp6 * _C3_072, tmp7 * _C1_501
    z1, z2 = z1 * -_C0_899, z2 * -_C2_562
    z3, z4 = z3 * -_C1_961 + z5, z4 * -_C0_390 + z5
    odd = [tmp7 + z1 + z4, tmp6 + z2 + z3, tmp5 + z2 + z4, tmp4 + z1 + z3]  # outputs 1, 3, 5, 7
    return [dc[0], (odd[0], shift), (out2, shift), (odd[1], shift),
            dc[1], (odd[2], shift), (out6, shift), (odd[3], shift)]


def _idct_butterfly(d: list[torch.Tensor], first_pass: bool) -> _Outputs:
    """One pass of jidctint.c jpeg_idct_islow over 8 tensors d[0..7] (the second pass's
    shift includes the final division by 8). Its zero-AC shortcuts give the same values."""
    shift = _CONST_BITS - _PASS1_BITS if first_pass else _CONST_BITS + _PASS1_BITS + 3
    z2, z3 = d[2], d[6]
    z1 = (z2 + z3) * _C0_541
    tmp2, tmp3 = z1 - z3 * _C1_847, z1 + z2 * _C0_765
    tmp0, tmp1 = (d[0] + d[4]) << _CONST_BITS, (d[0] - d[4]) << _CONST_BITS
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    tmp0, tmp1, tmp2, tmp3 = d[7], d[5], d[3], d[1]
    z1, z2, z3, z4 = tmp0 + tmp3, tmp1 + tmp2, tmp0 + tmp2, tmp1 + tmp3
    z5 = (z3 + z4) * _C1_175
    tmp0, tmp1, tmp2, tmp3 = tmp0 * _C0_298, tmp1 * _C2_053, tmp2 * _C3_072, tmp3 * _C1_501
    z1, z2 = z1 * -_C0_899, z2 * -_C2_562
    z3, z4 = z3 * -_C1_961 + z5, z4 * -_C0_390 + z5
    tmp0, tmp1, tmp2, tmp3 = tmp0 + z1 + z3, tmp1 + z2 + z4, tmp2 + z2 + z3, tmp3 + z1 + z4
    return [(v, shift) for v in (tmp10 + tmp3, tmp11 + tmp2, tmp12 + tmp1, tmp13 + tmp0,
                                 tmp13 - tmp0, tmp12 - tmp1, tmp11 - tmp2, tmp10 - tmp3)]


def _as_matrix(outputs: _Outputs) -> torch.Tensor:
    """A pass run on the 8 unit vectors -> (3, 8, 8) float64: its integer matrix, and each
    output row's DESCALE rounding 2**(shift - 1) and scale 2**-shift (broadcast along the
    row). Every butterfly step before DESCALE is an integer add, multiply by a constant or left
    shift, so the pass is exactly ``floor((matrix @ d + rounding) * scale)``."""
    matrix = torch.stack([value for value, _ in outputs]).double()
    shifts = torch.tensor([shift for _, shift in outputs], dtype=torch.float64)
    rounding = torch.where(shifts > 0, 2 ** (shifts - 1), 0)
    return torch.stack([matrix, rounding[:, None].expand(8, 8),
                        (2 ** -shifts)[:, None].expand(8, 8)])


def _dct_passes() -> torch.Tensor:
    """(4, 3, 8, 8): the forward DCT's row and column passes, then the inverse DCT's column
    and row passes, as :func:`_as_matrix` gives them."""
    unit = list(torch.eye(8, dtype=torch.int64))
    return torch.stack([_as_matrix(_fdct_butterfly(unit, True)),
                        _as_matrix(_fdct_butterfly(unit, False)),
                        _as_matrix(_idct_butterfly(unit, True)),
                        _as_matrix(_idct_butterfly(unit, False))])


def _apply_pass(x: torch.Tensor, dct_pass: torch.Tensor, dim: int) -> torch.Tensor:
    """One 1-D pass along ``dim`` (-1: within rows, -2: within columns) of (..., 8, 8)
    integer-valued float64 blocks: the integer matrix product, then DESCALE (jdct.h: add half,
    shift right, i.e. floor division by 2**shift). float64 does this exactly: every |value|
    stays below 2**45, far under 2**53, and scaling by a power of two is exact."""
    matrix, rounding, scale = dct_pass.unbind(0)
    if dim == -1:
        return torch.floor((x @ matrix.T + rounding[:, 0]) * scale[:, 0])
    return torch.floor((matrix @ x + rounding[:, :1]) * scale[:, :1])


def fdct_islow(blocks: torch.Tensor) -> torch.Tensor:
    """jfdctint.c jpeg_fdct_islow: (..., 8, 8) int samples - 128 -> int32 coefficients,
    scaled up by 8 as libjpeg leaves them (rows first, then columns)."""
    passes = _constants(blocks.device).dct
    return _apply_pass(_apply_pass(blocks.double(), passes[0], dim=-1), passes[1], dim=-2).int()


def quantize(coefs: torch.Tensor, quantvals: torch.Tensor) -> torch.Tensor:
    """jcdctmgr.c quantize as built with SIMD (16-bit DCTELEM; jsimd_quantize computes the
    same): |q| = ((|t| + corr) * recip) >> r with :func:`_compute_reciprocal`, sign restored.

    coefs: (..., 8, 8) int32 from :func:`fdct_islow`; quantvals: broadcastable (..., 8, 8)
    int64 in 1..255. Returns int32, which is safe: |t| < 2**14 (64 samples of magnitude <= 128
    summed for the DC; less for any AC), corr <= 1021 and recip <= 2**16.
    """
    recip, corr, shift = _constants(coefs.device).reciprocals[quantvals].unbind(-1)
    magnitude = ((coefs.abs() + corr) * recip) >> shift
    return torch.where(coefs < 0, -magnitude, magnitude)


def idct_islow(coefs: torch.Tensor, quantvals: torch.Tensor) -> torch.Tensor:
    """jddctmgr.c dequantisation + jidctint.c jpeg_idct_islow + range limiting.

    coefs: (..., 8, 8) quantised coefficients; quantvals: broadcastable int64 table. Returns
    (..., 8, 8) int32 samples in 0..255 (columns first, then rows, as libjpeg).
    """
    passes = _constants(coefs.device).dct
    columns = _apply_pass(coefs.double() * quantvals, passes[2], dim=-2)
    return range_limit(_apply_pass(columns, passes[3], dim=-1).int())


class _Tables(NamedTuple):
    """The constant tables, on one device."""

    basic_tables: torch.Tensor  # (2, 64) int64: standard luma, chroma tables (jcparam.c)
    reciprocals: torch.Tensor  # (256, 3) int32 compute_reciprocal(quantval << 3) per quantval
    dct: torch.Tensor  # (4, 3, 8, 8) float64 DCT passes, see _dct_passes


@functools.cache
def _constants(device: torch.device) -> _Tables:
    """The tables on ``device``, copied there once (a copy per call could wait on the device)."""
    reciprocals = [(0, 0, 0)] + [_compute_reciprocal(q << 3) for q in range(1, 256)]
    return _Tables(torch.tensor([_STD_LUMINANCE, _STD_CHROMINANCE], device=device),
                   torch.tensor(reciprocals, dtype=torch.int32, device=device),
                   _dct_passes().to(device))


def range_limit(x: torch.Tensor) -> torch.Tensor:
    """The IDCT's output range limit: clamp(x + 128, 0, 255), as libjpeg-turbo's SIMD IDCT
    (jidctint-avx2.asm etc.: saturating packs, then + 128) does, which Pillow runs.

    libjpeg-turbo's C code (jidctint.c with jdmaster.c prepare_range_limit_table, indexed by
    ``x & 1023``) gives the same for x in [-512, 511] but wraps with period 1024 beyond. Such
    x need quantisation errors of over 384 levels; encoded 8-bit images did not reach them in
    our probes (the worst was -385, for 0/255 noise at quality 1), but a file with an altered
    quantisation table does, and there Pillow saturates (tests/test_jpeg.py).
    """
    return (x + 128).clamp(0, 255)


def upsample_h2v2(planes: torch.Tensor, heights: torch.Tensor,
                  widths: torch.Tensor) -> torch.Tensor:
    """jdsample.c h2v2_fancy_upsample with jdmainct.c context rows, or h2v2_upsample.

    planes: (N, C, h, w) int32 decoded chroma; heights, widths: (N,) each sample's downsampled
    size (ceil(H/2), ceil(W/2)). Returns (N, C, 2h, 2w) int32. Fancy (triangle) upsampling:
    each output is (3 * nearer + farther) per axis, column sums rounded by +8 or +7 >> 4. The
    rows above the first and below the last real row are copies of it (jdmainct.c
    make_funny_pointers, set_bottom_pointers), and the first and last columns' special cases
    amount to the same edge replication, so all neighbours are clamped gathers. Where the
    downsampled width is <= 2 libjpeg replicates each sample 2x2 instead (jinit_upsampler);
    that is the same formula with every neighbour taken as the sample itself, since
    (16 c + 8) >> 4 = (16 c + 7) >> 4 = c.
    """
    n, c, h, w = planes.shape
    rows = torch.arange(h, device=planes.device).expand(n, h)
    cols = torch.arange(w, device=planes.device).expand(n, w)
    fancy = (widths > 2)[:, None]
    above = torch.where(fancy, (rows - 1).clamp(min=0), rows)
    below = torch.where(fancy, torch.minimum(rows + 1, heights[:, None] - 1), rows)
    left = torch.where(fancy, (cols - 1).clamp(min=0), cols)
    right = torch.where(fancy, torch.minimum(cols + 1, widths[:, None] - 1), cols)

    def gather_rows(index: torch.Tensor) -> torch.Tensor:
        return planes.gather(2, index[:, None, :, None].expand(n, c, h, w))

    near = 3 * planes
    colsums = torch.stack([near + gather_rows(above), near + gather_rows(below)], 3)
    colsums = colsums.reshape(n, c, 2 * h, w)  # output rows 2i (with above), 2i+1 (below)

    def gather_cols(index: torch.Tensor) -> torch.Tensor:
        return colsums.gather(3, index[:, None, None, :].expand(n, c, 2 * h, w))

    near = 3 * colsums
    return torch.stack([(near + gather_cols(left) + 8) >> 4,
                        (near + gather_cols(right) + 7) >> 4], 4).reshape(n, c, 2 * h, 2 * w)


def ycc_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """jdcolor.c ycc_rgb_convert: (N, 3, H, W) int32 Y, Cb, Cr 0..255 -> RGB 0..255 (the
    build_ycc_rgb_table fixed-point tables, 16 fractional bits; arithmetic right shifts)."""
    y, cb, cr = ycc.unbind(1)
    cb, cr = cb - 128, cr - 128
    half = 1 << 15
    red = y + ((91881 * cr + half) >> 16)
    green = y + ((-22554 * cb + half - 46802 * cr) >> 16)
    blue = y + ((116130 * cb + half) >> 16)
    return torch.stack([red, green, blue], 1).clamp(0, 255)


def _check_sizes(sizes: torch.Tensor | None, n: int, full: int, device: torch.device,
                 name: str) -> torch.Tensor:
    """(N,) int64 valid sizes on ``device`` (default: the whole canvas); values are checked
    only for CPU tensors (elsewhere that would need a host sync) and clamped to 1..full."""
    if sizes is None:
        return torch.full((n,), full, device=device, dtype=torch.int64)
    if (not isinstance(sizes, torch.Tensor) or sizes.shape != (n,) or sizes.is_floating_point()
            or sizes.is_complex() or sizes.dtype == torch.bool):
        raise InputError(f"{name} must be an integer tensor of shape ({n},)")
    if sizes.device.type == "cpu" and bool(((sizes < 1) | (sizes > full)).any()):
        raise InputError(f"{name} must lie in 1..{full} (the canvas size)")
    return sizes.to(device=device, dtype=torch.int64).clamp(1, full)


def _check_quality(quality: torch.Tensor | int, n: int, device: torch.device) -> torch.Tensor:
    """(N,) int64 qualities on ``device``; raises InputError (a ValueError) outside 1..100."""
    if isinstance(quality, bool) or not isinstance(quality, int | torch.Tensor):
        raise InputError(f"JPEG quality must be an int or an integer tensor, not {quality!r}")
    if isinstance(quality, int):
        if not 1 <= quality <= 100:
            raise InputError(f"JPEG quality must lie in 1..100, not {quality}")
        return torch.full((n,), quality, device=device, dtype=torch.int64)
    if quality.is_floating_point() or quality.is_complex() or quality.dtype == torch.bool:
        raise InputError(f"JPEG quality tensor must have an integer dtype, not {quality.dtype}")
    if quality.shape not in ((), (n,)):
        raise InputError(f"JPEG quality tensor must have shape ({n},), not {tuple(quality.shape)}")
    if quality.device.type == "cpu" and bool(((quality < 1) | (quality > 100)).any()):
        raise InputError("JPEG quality must lie in 1..100")
    return quality.to(device=device, dtype=torch.int64).expand(n)


def jpeg(x: torch.Tensor, quality: torch.Tensor | int, heights: torch.Tensor | None = None,
         widths: torch.Tensor | None = None) -> torch.Tensor:
    """JPEG-compress and decode a batch, exactly as Pillow/libjpeg-turbo at ``quality``.

    x: (N, 3, H, W) uint8 RGB, on any device (a "canvas"): sample i's image is
    x[i, :, :heights[i], :widths[i]] (default: the whole canvas). quality: int or (N,) int
    tensor, 1..100. Returns (N, 3, H, W) uint8 on x's device; inside each sample's image
    region it equals Pillow's save(quality=q) + open, bit for bit; outside it is unspecified.

    Raises InputError (a ValueError) for a bad shape, dtype, quality or size. Quality and size
    tensors are range-checked only on the CPU (elsewhere that would need a host sync); on
    other devices out-of-range values are clamped (quality to 1..100, as libjpeg does).
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 \
            or x.shape[1] != 3:
        raise InputError("jpeg expects an (N, 3, H, W) uint8 RGB tensor")
    n, _, h, w = x.shape
    if n == 0 or h == 0 or w == 0:
        return x.clone()
    device = x.device
    tables = quant_tables(_check_quality(quality, n, device)).reshape(n, 2, 1, 1, 8, 8)
    heights = _check_sizes(heights, n, h, device, "heights")
    widths = _check_sizes(widths, n, w, device, "widths")
    # Encoder (jcprepct.c, jcsample.c): pad to whole 16x16 MCUs by edge replication,
    # then the chroma 2x2 means, whose rows are again replicated below ceil(h/2).
    padded_h, padded_w = -(-h // 16) * 16, -(-w // 16) * 16
    rgb = replicate_edges(x.int(), heights, widths, padded_h, padded_w)
    ycc = rgb_to_ycc(rgb)
    chroma_h, chroma_w = (heights + 1) // 2, (widths + 1) // 2
    chroma = downsample_h2v2(ycc[:, 1:])
    chroma = replicate_edges(chroma, chroma_h, torch.full_like(widths, padded_w // 2),
                             padded_h // 2, padded_w // 2)

    def round_trip(planes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Samples (N, C, H, W) int32 -> decoded samples (N, C, H, W) int32."""
        coefs = quantize(fdct_islow(to_blocks(planes) - 128), table)
        return from_blocks(idct_islow(coefs, table))

    luma = round_trip(ycc[:, :1], tables[:, :1])
    chroma = upsample_h2v2(round_trip(chroma, tables[:, 1:]), chroma_h, chroma_w)
    return ycc_to_rgb(torch.cat([luma, chroma], 1))[:, :, :h, :w].to(torch.uint8)
