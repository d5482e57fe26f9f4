"""SPICE's LZ4 images: a top-down flag, a bitmap format, then LZ4 blocks decoded as one stream.

Facts from spice-common's `canvas_get_lz4`: after the two bytes come blocks,
each a big-endian u32 compressed size and an LZ4 block (the LZ4 block
format: sequences of literals and back-references); a block may refer to
bytes earlier blocks produced (LZ4_decompress_safe_continue), so all blocks
decode into one buffer: the bitmap's rows, `width * bytes per pixel` each.
"""

from __future__ import annotations

import struct

import numpy as np

from spicectl.errors import ProtocolError
from spicectl.spice.codecs.lz import MAX_PIXELS, Decoded
from spicectl.spice.pixels import rgb555_bgr

# SpiceBitmapFmt values LZ4 images use, and their bytes per pixel
FMT_16BIT, FMT_24BIT, FMT_32BIT, FMT_RGBA = 6, 7, 8, 9
BYTES_PER_PIXEL = {FMT_16BIT: 2, FMT_24BIT: 3, FMT_32BIT: 4, FMT_RGBA: 4}
MIN_MATCH = 4


def _length(src: bytes | memoryview, i: int, base: int, what: str) -> tuple[int, int]:
    """A 4-bit length from a token; 15 continues in bytes of 255 and a final one below 255."""
    if base != 15:
        return base, i
    while True:
        if i >= len(src):
            raise ProtocolError(f"LZ4: {what} length runs past the block")
        extra = src[i]
        i += 1
        base += extra
        if extra != 255:
            return base, i


def lz4_block(src: bytes | memoryview, out: bytearray, limit: int) -> None:
    """Append one LZ4 block's output to `out` (which holds the earlier blocks'), never past `limit`."""
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        literals, i = _length(src, i + 1, token >> 4, "literal")
        if i + literals > n or len(out) + literals > limit:
            raise ProtocolError("LZ4: literals run past the block or the image")
        out += src[i:i + literals]
        i += literals
        if i == n:  # the last sequence has literals only
            return
        if i + 2 > n:
            raise ProtocolError("LZ4: truncated match offset")
        offset = src[i] | (src[i + 1] << 8)
        length, i = _length(src, i + 2, token & 15, "match")
        length += MIN_MATCH
        start = len(out) - offset
        if offset == 0 or start < 0:
            raise ProtocolError(f"LZ4: match offset {offset} points before the data")
        if len(out) + length > limit:
            raise ProtocolError("LZ4: a match runs past the image")
        if offset >= length:
            out += out[start:start + length]
        else:  # overlapping: the pattern of `offset` bytes repeats
            pattern = bytes(out[start:])
            out += (pattern * (length // offset + 1))[:length]


def decode_lz4(data: bytes | memoryview, width: int, height: int) -> Decoded:
    """The image an LZ4 payload holds (its size comes from the image descriptor)."""
    if len(data) < 2:
        raise ProtocolError("LZ4 image: truncated header")
    top_down, fmt = data[0], data[1]
    if fmt not in BYTES_PER_PIXEL:
        raise ProtocolError(f"LZ4 image: unsupported bitmap format {fmt}")
    if not (0 < width and 0 < height and width * height <= MAX_PIXELS):
        raise ProtocolError(f"LZ4 image of {width}x{height} is out of bounds")
    bpp = BYTES_PER_PIXEL[fmt]
    want = width * height * bpp
    out = bytearray()
    pos = 2
    while pos < len(data):
        if pos + 4 > len(data):
            raise ProtocolError("LZ4 image: truncated block size")
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + size > len(data):
            raise ProtocolError("LZ4 image: a block runs past the data")
        lz4_block(memoryview(data)[pos:pos + size], out, want)
        pos += size
    if len(out) != want:
        raise ProtocolError(f"LZ4 image: {len(out)} bytes decoded, {width}x{height} needs {want}")
    raw = np.frombuffer(bytes(out), np.uint8).reshape(height, width, bpp)
    pixels = np.zeros((height, width, 4), np.uint8)
    if fmt == FMT_16BIT:
        pixels[:, :, :3] = rgb555_bgr(raw.view("<u2").reshape(height, width))
    else:
        pixels[:, :, :bpp] = raw
        if fmt == FMT_32BIT:
            pixels[:, :, 3] = 0
    if not top_down:
        pixels = pixels[::-1]
    return Decoded(width, height, bytearray(pixels.tobytes()), width, has_alpha=fmt == FMT_RGBA)
