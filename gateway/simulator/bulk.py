"""Answers far larger than any upstream should send (the ``gzip_bomb`` and ``answer_bytes`` knobs):
cheap to send, so that a test sees what the gateway does with them, not what the simulator costs.
"""

from __future__ import annotations

import functools
import struct
import zlib

from .stream import Headers, Send

MIB = 1 << 20
_SPACES = b" " * MIB
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no time, unknown OS


@functools.cache
def _padding(mib: int) -> tuple[bytes, int]:
    """Deflate blocks for ``mib`` MiB of spaces, and their CRC-32. Each MiB is flushed whole
    (Z_FULL_FLUSH: no reference to what came before), so one block repeated is the whole padding:
    a 1 GiB bomb costs one MiB's compression and a CRC pass (~0.2 s), once per size."""
    if not mib:
        return b"", 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(_SPACES) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(_SPACES) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(_SPACES, crc)
    return head + block * (mib - 1), crc


def gzipped(body: bytes, mib: int) -> bytes:
    """A gzip member that inflates to ``mib`` MiB of spaces, a newline, then ``body`` (still valid
    JSON, and valid SSE: the spaces are one line of a field nobody knows); ``mib`` 0: ``body``."""
    padding, crc = _padding(mib)
    rest = b"\n" + body if mib else body
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = compressor.compress(rest) + compressor.flush()
    size = mib * MIB + len(rest)
    return _GZIP_HEADER + padding + tail + struct.pack("<II", zlib.crc32(rest, crc), size & 0xFFFFFFFF)


async def send_gzipped(send: Send, status: int, body: bytes, headers: Headers, mib: int) -> None:
    data = gzipped(body, mib)
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-encoding", b"gzip"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def send_padded(send: Send, status: int, body: bytes, headers: Headers, size: int) -> None:
    """``body`` and then spaces (trailing whitespace: still the same JSON) to ``size`` bytes in
    all, in writes of a MiB at most, chunked: no Content-Length says beforehand how much will come."""
    pad = max(0, size - len(body))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": pad > 0})
    while pad > 0:
        piece = min(pad, MIB)
        pad -= piece
        await send({"type": "http.response.body", "body": _SPACES[:piece], "more_body": pad > 0})
