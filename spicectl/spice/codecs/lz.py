"""SPICE's LZ and GLZ image codecs, decoding to 32-bit BGRX pixels.

Format facts from spice-common `common/lz.c`, `common/lz_decompress_tmpl.c`
and spice-gtk's GLZ decoder: a big-endian header, then a byte stream of
control codes. A control below 32 copies ctrl+1 literal units; otherwise it is
a back-reference (length in the top 3 bits, extended by 255-continuation
bytes; distance in the low bits plus following bytes). GLZ back-references
may point into earlier images kept in a shared window.

Every read and every copy is bounds-checked: a hostile stream raises
ProtocolError, never IndexError or an oversized allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from spicectl.errors import ProtocolError
from spicectl.spice.codecs import accel
from spicectl.spice.pixels import rgb555_bgr

if TYPE_CHECKING:
    from typing import TypeAlias

    Palette: TypeAlias = Sequence[int] | np.ndarray  # u32 BGR0 entries, from a message or the palette cache

MAGIC = int.from_bytes(b"  ZL", "big")  # "LZ  " read as a little-endian u32, written big-endian
VERSION = 0x00010001
MAX_COPY = 32
MAX_DISTANCE = 8191
MAX_PIXELS = 64 * 1024 * 1024  # 256 MiB of BGRX: more than any sane display

# LZ image types (lz_common.h)
PLT1_LE, PLT1_BE, PLT4_LE, PLT4_BE, PLT8, RGB16, RGB24, RGB32, RGBA, XXXA, A8 = range(1, 12)
PLT_PIXELS_PER_BYTE = {PLT1_LE: 8, PLT1_BE: 8, PLT4_LE: 2, PLT4_BE: 2, PLT8: 1}
RGB_BYTES_PER_PIXEL = {RGB16: 2, RGB24: 3, RGB32: 4, RGBA: 4, XXXA: 4, A8: 1}


@dataclass
class Decoded:
    width: int
    height: int
    pixels: bytearray        # BGRX (or BGRA), 4 bytes a pixel, rows of `row_pixels`, top row first
    row_pixels: int          # pixels a row holds (palette images may carry padding pixels)
    has_alpha: bool = False

    def tight(self) -> bytes:
        """Pixels cropped to `width` per row."""
        if self.row_pixels == self.width:
            return bytes(self.pixels)
        w4, r4 = self.width * 4, self.row_pixels * 4
        return b"".join(self.pixels[y * r4: y * r4 + w4] for y in range(self.height))


class _Reader:
    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes | memoryview, pos: int, what: str) -> None:
        self.data = data
        self.pos = pos
        self.what = what

    def byte(self) -> int:
        try:
            b = self.data[self.pos]
        except IndexError:
            raise ProtocolError(f"{self.what}: compressed data ends early at byte {self.pos}") from None
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ProtocolError(f"{self.what}: compressed data ends early at byte {self.pos}")
        chunk = bytes(self.data[self.pos:end])
        self.pos = end
        return chunk

    def run_on(self, length: int) -> int:
        """A long match length: add following bytes while each is 255 (LZ and GLZ alike)."""
        while True:
            code = self.byte()
            length += code
            if code != 255:
                return length

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")


def _palette_pixels(palette: Palette | None, what: str) -> list[bytes]:
    if palette is None or not len(palette):
        raise ProtocolError(f"{what}: palette image without a palette")
    return [bytes((e & 0xFF, (e >> 8) & 0xFF, (e >> 16) & 0xFF, 0)) for e in palette]


class _Units:
    """How literal units become output pixels, per LZ image type."""

    def __init__(self, image_type: int, palette: Palette | None, what: str) -> None:
        self.type = image_type
        self.what = what
        self.scale = PLT_PIXELS_PER_BYTE.get(image_type, 1)  # pixels per unit (CAST_PLT_DISTANCE)
        self.pal_bytes: bytes | None = None
        if image_type in PLT_PIXELS_PER_BYTE:
            self.pal = _palette_pixels(palette, what)
            self.pal_bytes = b"".join(self.pal)

    def literal(self, r: _Reader, count: int, out: bytearray, op: int) -> int:
        """Write `count` literal units at pixel `op`; return pixels written."""
        t = self.type
        d = op * 4
        if t in (RGB32, RGB24, RGBA):
            chunk = r.take(3 * count)
            out[d:d + 4 * count:4] = chunk[0::3]
            out[d + 1:d + 4 * count:4] = chunk[1::3]
            out[d + 2:d + 4 * count:4] = chunk[2::3]
            return count
        if t in (XXXA, A8):  # alpha only (the pad byte)
            out[d + 3:d + 4 * count:4] = r.take(count)
            return count
        if t == RGB16:
            bgrx = np.zeros((count, 4), np.uint8)
            bgrx[:, :3] = rgb555_bgr(np.frombuffer(bytes(r.take(2 * count)), ">u2"))   # big-endian words
            out[d:d + 4 * count] = bgrx.tobytes()
            return count
        chunk = r.take(count)
        pal = self.pal
        n = len(pal)
        pieces: list[bytes] = []
        try:
            if t == PLT8:
                pieces = [pal[b] for b in chunk]
            elif t == PLT4_LE:
                for b in chunk:
                    pieces += (pal[(b & 15) % n], pal[((b >> 4) & 15) % n])
            elif t == PLT4_BE:
                for b in chunk:
                    pieces += (pal[((b >> 4) & 15) % n], pal[(b & 15) % n])
            else:
                fore, back = pal[1 % n], pal[0]
                bits = range(8) if t == PLT1_LE else range(7, -1, -1)
                for b in chunk:
                    pieces += [fore if (b >> i) & 1 else back for i in bits]
        except IndexError:
            raise ProtocolError(f"{self.what}: palette index out of range") from None
        data = b"".join(pieces)
        out[d:d + len(data)] = data
        return len(data) // 4


def _copy_ref(out: bytearray, src_buf: bytearray, src: int, op: int, length: int, alpha_only: bool) -> None:
    """Copy `length` pixels from pixel `src` of `src_buf` to pixel `op` of `out` (overlap = repeat)."""
    d, s, n = op * 4, src * 4, length * 4
    if alpha_only:
        if src_buf is out and s + n > d:  # overlapping run: byte by byte, as the C code does
            for i in range(3, n, 4):
                out[d + i] = out[s + i]
        else:
            out[d + 3:d + n:4] = src_buf[s + 3:s + n:4]
        return
    if src_buf is out and s + n > d:
        pattern = bytes(out[s:d])
        reps = n // len(pattern) + 1
        out[d:d + n] = (pattern * reps)[:n]
    else:
        out[d:d + n] = src_buf[s:s + n]


def _literals(r: _Reader, units: _Units, out: bytearray, op: int, count: int, n_pixels: int,
              alpha_only: bool) -> int:
    """Copy `count` literal units (LZ and GLZ encode them alike); return the new output position."""
    if op + count * units.scale > n_pixels:
        raise ProtocolError(f"{units.what}: literal run past the end of the image")
    if alpha_only:
        d = op * 4
        out[d + 3:d + 4 * count:4] = r.take(count)
        return op + count
    return op + units.literal(r, count, out, op)


def _lz_pass(r: _Reader, units: _Units, out: bytearray, n_pixels: int, alpha_only: bool) -> None:
    if accel.native is not None:
        try:
            r.pos = accel.native.lz_pass(r.data, r.pos, out, n_pixels, units.type, units.pal_bytes, alpha_only)
        except accel.FAILURES as e:
            raise accel.failure(e) from None
        return
    bias = 3 if units.type in PLT_PIXELS_PER_BYTE or units.type in (XXXA, A8) or alpha_only else \
        2 if units.type == RGB16 else 1
    scale = units.scale
    op = 0
    ctrl = r.byte()
    while True:
        if ctrl >= MAX_COPY:
            length = (ctrl >> 5) - 1
            ofs = (ctrl & 31) << 8
            if length == 6:
                length = r.run_on(length)
            code = r.byte()
            ofs += code
            if code == 255 and ofs - code == 31 << 8:
                ofs = (r.byte() << 8) + r.byte() + MAX_DISTANCE
            length = (length + bias) * scale
            ofs = (ofs + 1) * scale
            src = op - ofs
            if src < 0 or op + length > n_pixels:
                raise ProtocolError(f"{units.what}: back-reference outside the image")
            _copy_ref(out, out, src, op, length, alpha_only)
            op += length
        else:
            op = _literals(r, units, out, op, ctrl + 1, n_pixels, alpha_only)
        if op >= n_pixels:
            return
        ctrl = r.byte()


def _check_size(width: int, height: int, stride: int, image_type: int, what: str) -> int:
    """Validate dimensions; return the number of (gross) pixels."""
    if not 0 < width <= 65535 or not 0 < height <= 65535:
        raise ProtocolError(f"{what}: image size {width}x{height} is out of range")
    if image_type in PLT_PIXELS_PER_BYTE:
        ppb = PLT_PIXELS_PER_BYTE[image_type]
        if stride * ppb < width or stride > width // ppb + 1:
            raise ProtocolError(f"{what}: stride {stride} does not fit width {width}")
        n = stride * ppb * height
    elif image_type in RGB_BYTES_PER_PIXEL:
        n = width * height
    else:
        raise ProtocolError(f"{what}: unknown image type {image_type}")
    if n > MAX_PIXELS:
        raise ProtocolError(f"{what}: image of {width}x{height} is larger than {MAX_PIXELS} pixels")
    return n


def _flip(pixels: bytearray, row_pixels: int, height: int) -> bytearray:
    r4 = row_pixels * 4
    return bytearray(b"".join(pixels[(height - 1 - y) * r4:(height - y) * r4] for y in range(height)))


def decode_lz(data: bytes | memoryview, palette: Palette | None = None) -> Decoded:
    """Decode one LZ image (SPICE_IMAGE_TYPE_LZ_RGB or LZ_PLT payload)."""
    r = _Reader(data, 0, "LZ")
    if r.u32() != MAGIC:
        raise ProtocolError("LZ: bad magic")
    if r.u32() != VERSION:
        raise ProtocolError("LZ: unsupported version")
    image_type, width, height, stride, top_down = r.u32(), r.u32(), r.u32(), r.u32(), r.u32()
    n = _check_size(width, height, stride, image_type, "LZ")
    if image_type not in PLT_PIXELS_PER_BYTE and stride != width * RGB_BYTES_PER_PIXEL[image_type]:
        raise ProtocolError(f"LZ: stride {stride} != width {width} x bytes per pixel")
    out = bytearray(n * 4)
    units = _Units(image_type, palette, "LZ")
    if image_type == XXXA:
        _lz_pass(r, units, out, n, alpha_only=True)
    elif image_type == A8:
        _lz_pass(r, units, out, n, alpha_only=True)
    else:
        _lz_pass(r, units, out, n, alpha_only=False)
        if image_type == RGBA:
            _lz_pass(r, units, out, n, alpha_only=True)
    row = n // height
    if not top_down:
        out = _flip(out, row, height)
    return Decoded(width, height, out, row, has_alpha=image_type in (RGBA, XXXA, A8))


# --- GLZ ---------------------------------------------------------------------------


@dataclass
class GlzWindow:
    """The images GLZ may refer back to (id -> pixels in decode order), bounded by the window size we
    told the server. Honest servers number images upwards, so the oldest is first in the dict."""

    max_pixels: int
    images: dict[int, bytearray] = field(default_factory=dict)
    nbytes: int = 0

    def add(self, image_id: int, pixels: bytearray, win_head_dist: int) -> None:
        images = self.images
        replaced = images.pop(image_id, None)
        if replaced is not None:
            self.nbytes -= len(replaced)
        images[image_id] = pixels
        self.nbytes += len(pixels)
        oldest = image_id - win_head_dist
        # a server can never need more than the window it was given; drop the oldest beyond it
        limit = self.max_pixels * 8
        while len(images) > 1:
            first = next(iter(images))
            if first >= oldest and self.nbytes <= limit:
                break
            self.nbytes -= len(images.pop(first))

    def get(self, image_id: int) -> bytearray:
        try:
            return self.images[image_id]
        except KeyError:
            raise ProtocolError(f"GLZ: reference to image {image_id}, which is not in the window") from None

    def clear(self) -> None:
        self.images.clear()
        self.nbytes = 0


def _glz_pass(r: _Reader, units: _Units, out: bytearray, n_pixels: int, image_id: int,
              window: GlzWindow, alpha_only: bool) -> None:
    bias = 2 if units.type in PLT_PIXELS_PER_BYTE or alpha_only else 1 if units.type == RGB16 else 0
    scale = units.scale
    op = 0
    ctrl = r.byte()
    while True:
        if ctrl >= MAX_COPY:
            length = ctrl >> 5
            pixel_flag = (ctrl >> 4) & 1
            pixel_ofs = ctrl & 0x0F
            if length == 7:
                length = r.run_on(length)
            pixel_ofs += r.byte() << 4
            code = r.byte()
            image_flag = (code >> 6) & 3
            if not pixel_flag:
                image_dist = code & 0x3F
                for i in range(image_flag):
                    image_dist += r.byte() << (6 + 8 * i)
            else:
                pixel_flag = (code >> 5) & 1
                pixel_ofs += (code & 0x1F) << 12
                image_dist = 0
                for i in range(image_flag):
                    image_dist += r.byte() << (8 * i)
                if pixel_flag:
                    pixel_ofs += r.byte() << 17
            length += bias
            if not image_dist:
                pixel_ofs += 1
            pixel_ofs *= scale
            length *= scale
            if op + length > n_pixels:
                raise ProtocolError("GLZ: back-reference runs past the end of the image")
            if not image_dist:
                src = op - pixel_ofs
                if src < 0:
                    raise ProtocolError("GLZ: back-reference before the start of the image")
                _copy_ref(out, out, src, op, length, alpha_only)
            else:
                ref = window.get(image_id - image_dist)
                if (pixel_ofs + length) * 4 > len(ref):
                    raise ProtocolError("GLZ: back-reference outside the referenced image")
                _copy_ref(out, ref, pixel_ofs, op, length, alpha_only)
            op += length
        else:
            op = _literals(r, units, out, op, ctrl + 1, n_pixels, alpha_only)
        if op >= n_pixels:
            return
        ctrl = r.byte()


def decode_glz(data: bytes | memoryview, window: GlzWindow, palette: Palette | None = None) -> Decoded:
    """Decode one GLZ image, adding it to `window` for later images to refer to."""
    native = accel.native
    if native is not None:
        pal = None
        if palette is not None and len(palette) and len(data) > 8 and data[8] & 0x0F in PLT_PIXELS_PER_BYTE:
            pal = b"".join(_palette_pixels(palette, "GLZ"))
        try:
            width, height, row, alpha, image_id, head_dist, out, shown = native.glz(data, window.images, pal,
                                                                                    MAX_PIXELS)
        except accel.FAILURES as e:
            raise accel.failure(e) from None
        window.add(image_id, out, head_dist)
        return Decoded(width, height, shown, row, alpha)
    r = _Reader(data, 0, "GLZ")
    if r.u32() != MAGIC:
        raise ProtocolError("GLZ: bad magic")
    if r.u32() != VERSION:
        raise ProtocolError("GLZ: unsupported version")
    tmp = r.byte()
    image_type, top_down = tmp & 0x0F, bool(tmp >> 4)
    width, height, stride = r.u32(), r.u32(), r.u32()
    if image_type in (XXXA, A8):
        raise ProtocolError(f"GLZ: image type {image_type} is not used with GLZ")
    n = _check_size(width, height, stride, image_type, "GLZ")
    image_id, win_head_dist = r.u64(), r.u32()
    out = bytearray(n * 4)
    units = _Units(RGB32 if image_type in (RGB24, RGBA) else image_type, palette, "GLZ")
    _glz_pass(r, units, out, n, image_id, window, alpha_only=False)
    if image_type == RGBA:
        _glz_pass(r, units, out, n, image_id, window, alpha_only=True)
    window.add(image_id, out, win_head_dist)
    row = n // height
    pixels = out if top_down else _flip(out, row, height)
    return Decoded(width, height, pixels, row, has_alpha=image_type == RGBA)
