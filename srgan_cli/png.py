"""Parallel deflate of PNG image data: one zlib stream made of independently deflated pieces.

A PNG's pixels are one zlib stream (RFC 1950) spread over IDAT chunks, and zlib deflates on
one core: a 4096x4096 RGB output is 48 MiB of scanlines for one thread. As pigz does, the
scanlines are cut into pieces of whole rows (the caller fixes their size in bytes, never from
the number of threads), each piece is filtered and deflated on its own by a worker thread
(numpy and zlib release the GIL), and the pieces are joined into one valid stream:

- each piece is a raw deflate stream that starts with an empty history (no back-reference
  into the piece before it); every piece but the last ends with a sync flush (an empty
  stored block: byte-aligned, the stream goes on), the last with ``Z_FINISH`` (final block);
- the 2-byte zlib header goes in front of the first piece; the Adler-32 of all the raw bytes
  goes at the end, combined from the pieces' own checksums (``adler32_combine``).

Each piece becomes one IDAT chunk, and the checksum a last 4-byte IDAT. The bytes written
depend on the pixels, the zlib settings and the pieces only: 1 thread or 16 give the same
file. An image of one piece gets exactly the zlib stream that one ``compressobj`` would make.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

Buffer = bytes | bytearray | memoryview
"""Raw bytes: anything zlib reads (a numpy array's ``.data`` too)."""

ADLER_BASE = 65521
"""The Adler-32 modulus (the largest prime below 2**16)."""

MEM_LEVEL = 9
"""zlib's memLevel for PNG data (as Pillow and libpng use): more memory, a little faster."""

PARALLEL_MIN_BYTES = 4 << 20
"""Images with fewer raw scanline bytes than this (4 MiB) are deflated in the calling thread:
below that, handing pieces to threads costs more than it saves. Only the threads change;
the pieces, and so the bytes written, are the same."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """Adler-32 of ``A + B`` from ``adler32(A)``, ``adler32(B)`` and ``len(B)``.

    Adler-32 is two sums mod 65521: ``a`` = 1 + the bytes, ``b`` = the running ``a`` after
    each byte. Joined, B's bytes add ``a(B) - 1`` to ``a``, and each of B's running sums is
    larger by ``a(A) - 1``, which adds ``len(B) * (a(A) - 1)`` to ``b`` (zlib's own formula).
    """
    a_first, b_first = first & 0xFFFF, first >> 16
    a_second, b_second = second & 0xFFFF, second >> 16
    a = (a_first + a_second - 1) % ADLER_BASE
    b = (b_first + b_second + second_length * (a_first - 1)) % ADLER_BASE
    return b << 16 | a


def zlib_header(level: int, strategy: int) -> bytes:
    """The 2-byte zlib header zlib itself writes for this level and strategy."""
    return zlib.compressobj(level, zlib.DEFLATED, 15, MEM_LEVEL, strategy).flush()[:2]


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC-32 of type and body."""
    crc = zlib.crc32(body, zlib.crc32(kind))
    return struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", crc)


def deflate_piece(raw: Buffer, level: int, strategy: int, last: bool) -> bytes:
    """``raw`` as a raw deflate stream of its own: sync-flushed, or finished when ``last``."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, MEM_LEVEL, strategy)
    end = zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    return compressor.compress(raw) + compressor.flush(end)


class Deflater:
    """Worker threads that deflate PNG pieces; one may serve several writers at once.

    ``threads`` None: one per available core. The threads start with the first image that
    needs them and end with ``close()`` (or the ``with`` block).
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = max(1, threads or available_cores())
        self._pool: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor | None:
        """The thread pool, made on first use; None with one thread (deflate inline)."""
        if self.threads == 1:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, "srgan-deflate")
        return self._pool

    def close(self) -> None:
        """Let running pieces finish, drop queued ones, end the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Deflater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def idat_chunks(
    scanlines: Callable[[int], Buffer], starts: Sequence[int], total_bytes: int, level: int,
    strategy: int, deflater: Deflater | None = None,
) -> Iterator[bytes]:
    """The IDAT chunks of an image whose filtered scanlines are ``scanlines(start)`` for each
    of ``starts`` (one piece each, in order), ``total_bytes`` in all.

    ``scanlines`` runs on the worker threads (filtering parallelises too); at most two
    pieces per thread are in flight, so memory stays bounded. Chunks come in image order.
    """
    header, last = zlib_header(level, strategy), len(starts) - 1

    def work(index: int) -> tuple[bytes, int, int]:
        raw = scanlines(starts[index])
        body = deflate_piece(raw, level, strategy, index == last)
        if index == 0:
            body = header + body
        return chunk(b"IDAT", body), zlib.adler32(raw), memoryview(raw).nbytes

    pool = None
    if deflater is not None and len(starts) > 1 and total_bytes >= PARALLEL_MIN_BYTES:
        pool = deflater.pool()
    checksum = 1  # the Adler-32 of nothing
    for idat, adler, length in _in_order(work, len(starts), pool, _window(deflater)):
        checksum = adler32_combine(checksum, adler, length)
        yield idat
    yield chunk(b"IDAT", struct.pack(">I", checksum))


def _window(deflater: Deflater | None) -> int:
    """Pieces in flight at once: two per thread, so no thread waits for the next one."""
    return 2 * (deflater.threads if deflater is not None else 1)


def _in_order(
    work: Callable[[int], tuple], count: int, pool: ThreadPoolExecutor | None, window: int
) -> Iterator[tuple]:
    """``work(0)``, ..., ``work(count - 1)`` in order: on ``pool``'s threads, at most
    ``window`` submitted ahead, or here one after another when ``pool`` is None."""
    if pool is None:
        for index in range(count):
            yield work(index)
        return
    pending: deque[Future] = deque()
    submitted = 0
    try:
        while submitted < count or pending:
            while submitted < count and len(pending) < window:
                pending.append(pool.submit(work, submitted))
                submitted += 1
            yield pending.popleft().result()
    finally:  # the consumer failed or stopped: queued pieces are not needed any more
        for future in pending:
            future.cancel()
