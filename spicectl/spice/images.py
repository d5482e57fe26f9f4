"""Images in display messages: the descriptor read, the picture decoded (bitmaps with their
palettes, LZ, GLZ with its window, zlib-GLZ, QUIC, LZ4, JPEG and JPEG with alpha), and the caches
the server fills (pixmaps, palettes), all counted against the session's budget. Message bodies
address embedded structures by u32 offsets from the start of the body; `BodyParser` follows them
with bounds checks."""

from __future__ import annotations

import io
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.budget import Budget
from spicectl.spice.codecs.lz import MAX_PIXELS, GlzWindow, decode_glz, decode_lz
from spicectl.spice.codecs.lz4 import decode_lz4
from spicectl.spice.codecs.quic import decode_quic
from spicectl.spice.pixels import rgb555_bgr

MAX_SURFACE_SIDE = 16384


class UnsupportedImage(ProtocolError):
    """An image in a format this client does not decode yet (QUIC, LZ4)."""


class BodyParser:
    def __init__(self, body: bytes, what: str) -> None:
        self.body = body
        self.pos = 0
        self.what = what

    def take(self, part: W.Layout | W.Struct) -> dict:
        try:
            values, self.pos = part.read(self.body, self.pos)
        except ProtocolError as exc:
            raise ProtocolError(f"{self.what}: {exc.message}") from None
        return values

    def at(self, offset: int) -> BodyParser:
        if not 0 < offset < len(self.body):
            raise ProtocolError(f"{self.what}: pointer {offset} outside the {len(self.body)}-byte message")
        sub = BodyParser(self.body, self.what)
        sub.pos = offset
        return sub


@dataclass
class Image:
    pixels: np.ndarray      # (h, w, 4) uint8, BGRX/BGRA
    has_alpha: bool = False
    surface: bool = False   # a surface's pixels, not an image the server sent


def take_bytes(p: BodyParser, size: int) -> bytes:
    """The next `size` bytes at `p` (image data, a glyph), checked against the message's end."""
    if p.pos + size > len(p.body):
        raise ProtocolError(f"{p.what}: image data of {size} bytes runs past the message")
    data = p.body[p.pos:p.pos + size]
    p.pos += size
    return data



def from_decoded(decoded) -> Image:
    arr = np.frombuffer(decoded.pixels, np.uint8).reshape(decoded.height, decoded.row_pixels, 4)
    return Image(arr[:, :decoded.width].copy(), decoded.has_alpha)


def from_jpeg(data: bytes, size: tuple[int, int], exact: bool = True) -> Image:
    """A JPEG that is `size` (width, height), or at most that for a stream frame, as its header says,
    checked before anything is decoded: PNG, GIF or TIFF sent as JPEG, and pictures larger than the
    descriptor or the stream says, are refused."""
    import warnings

    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            picture: PILImage.Image = PILImage.open(io.BytesIO(data), formats=("JPEG",))  # reads the header only
            w, h = picture.size
            if (w, h) != size if exact else w > size[0] or h > size[1]:
                raise ProtocolError(f"display channel: a JPEG of {picture.size[0]}x{picture.size[1]} where "
                                    f"{size[0]}x{size[1]} was announced")
            if picture.mode != "RGB":
                picture = picture.convert("RGB")
            # Pillow packs BGRX straight from the decoded rows (one pass; the viewer decodes every video frame)
            bgrx = bytearray(picture.tobytes("raw", "BGRX"))
    except (UnidentifiedImageError, OSError, PILImage.DecompressionBombError,
            PILImage.DecompressionBombWarning) as exc:
        raise ProtocolError(f"display channel: bad JPEG image ({exc})") from None
    out = np.frombuffer(bgrx, np.uint8).reshape(h, w, 4)
    return Image(out)


class Images:
    """The pixmap cache, the palette cache and the GLZ window of one display channel."""

    def __init__(self, budget: Budget, cache_pixels: int, glz_window_pixels: int) -> None:
        self.budget = budget
        self.pixmaps: OrderedDict[int, Image] = OrderedDict()
        self.palettes: dict[int, np.ndarray] = {}
        self.cache_pixels = cache_pixels
        self.glz = GlzWindow(glz_window_pixels)

    def count_palettes(self) -> None:
        self.budget.set("palettes", sum(a.nbytes for a in self.palettes.values()), "cached palettes")

    def palette(self, p: BodyParser, flags: int) -> np.ndarray | None:
        if flags & M.BITMAP_PAL_FROM_CACHE:
            pid = p.take(W.PALETTE_ID)["palette_id"]
            if pid not in self.palettes:
                raise ProtocolError(f"display channel: palette {pid} is not cached")
            return self.palettes[pid]
        offset = p.take(W.PALETTE_PTR)["palette"]
        if not offset:
            return None
        sub = p.at(offset)
        head = sub.take(W.PALETTE_HEAD)
        n = head["num_ents"]
        if sub.pos + 4 * n > len(sub.body):
            raise ProtocolError("display channel: palette runs past the message")
        ents = np.frombuffer(sub.body, "<u4", n, sub.pos).copy()  # not a view that keeps the message alive
        if flags & M.BITMAP_PAL_CACHE_ME:
            if len(self.palettes) > 4096:
                self.palettes.clear()
            self.palettes[head["unique"]] = ents
            self.count_palettes()
        return ents

    def decode(self, p: BodyParser, surface_of: Callable[[int], tuple[np.ndarray, bool]],
               deadline: float | None) -> Image:
        """The image the descriptor at `p` describes; `surface_of(id)` is a surface's pixels and whether
        they carry alpha, `deadline` when a long decode must stop."""
        d = p.take(W.IMAGE_DESCRIPTOR)
        kind, flags, w, h = d["type"], d["flags"], d["width"], d["height"]
        if kind in (M.IMAGE_FROM_CACHE, M.IMAGE_FROM_CACHE_LOSSLESS):
            try:
                img = self.pixmaps[d["id"]]
            except KeyError:
                raise ProtocolError(f"display channel: image {d['id']} is not cached") from None
            self.pixmaps.move_to_end(d["id"])
            return img
        if kind == M.IMAGE_SURFACE:
            sid = p.take(W.SURFACE_IMAGE)["surface_id"]
            source, argb = surface_of(sid)
            self.budget.need(source.nbytes, f"a copy of surface {sid}")
            return Image(source.copy(), argb, True)
        if not (0 < w <= MAX_SURFACE_SIDE and 0 < h <= MAX_SURFACE_SIDE) or w * h > MAX_PIXELS:
            raise ProtocolError(f"display channel: image of {w}x{h} is out of bounds")
        # a decode holds its output and about one working copy
        self.budget.need(2 * w * h * 4, f"a {w}x{h} image")
        if kind == M.IMAGE_BITMAP:
            img = self.bitmap(p)
        elif kind in (M.IMAGE_LZ_RGB, M.IMAGE_GLZ_RGB, M.IMAGE_JPEG):
            data = take_bytes(p, p.take(W.IMAGE_DATA)["data_size"])
            if kind == M.IMAGE_LZ_RGB:
                img = from_decoded(decode_lz(data))
            elif kind == M.IMAGE_GLZ_RGB:
                img = from_decoded(decode_glz(data, self.glz))
                self.count_glz()
            else:
                img = from_jpeg(data, (w, h))
        elif kind == M.IMAGE_LZ_PLT:
            head = p.take(W.LZ_PLT_DATA)
            palette = self.palette(p, head["flags"])
            img = from_decoded(decode_lz(take_bytes(p, head["data_size"]), palette))
        elif kind == M.IMAGE_ZLIB_GLZ_RGB:
            head = p.take(W.ZLIB_GLZ_DATA)
            glz_size, size = head["glz_data_size"], head["data_size"]
            if glz_size > MAX_PIXELS * 4 + 1024:
                raise ProtocolError("display channel: zlib-GLZ image claims an oversize payload")
            try:
                inflater = zlib.decompressobj()
                glz = inflater.decompress(take_bytes(p, size), glz_size)
            except zlib.error as exc:
                raise ProtocolError(f"display channel: bad zlib data ({exc})") from None
            img = from_decoded(decode_glz(glz, self.glz))
            self.count_glz()
        elif kind == M.IMAGE_QUIC:
            img = from_decoded(decode_quic(take_bytes(p, p.take(W.IMAGE_DATA)["data_size"]), deadline))
        elif kind == M.IMAGE_LZ4:
            img = from_decoded(decode_lz4(take_bytes(p, p.take(W.IMAGE_DATA)["data_size"]), w, h))
        elif kind == M.IMAGE_JPEG_ALPHA:
            head = p.take(W.JPEG_ALPHA_DATA)
            if head["jpeg_size"] > head["data_size"]:
                raise ProtocolError("display channel: JPEG-alpha image's JPEG is larger than its data")
            data = take_bytes(p, head["data_size"])
            img = from_jpeg(data[:head["jpeg_size"]], (w, h))
            alpha = decode_lz(data[head["jpeg_size"]:])
            if (alpha.width, alpha.height) != (img.pixels.shape[1], img.pixels.shape[0]) or not alpha.has_alpha:
                raise ProtocolError("display channel: JPEG-alpha image's alpha plane does not fit its picture")
            img.pixels[:, :, 3] = from_decoded(alpha).pixels[:, :, 3]
            img.has_alpha = True
        else:
            raise ProtocolError(f"display channel: unknown image type {kind}")
        if img.pixels.shape[0] != h or img.pixels.shape[1] != w:
            raise ProtocolError(f"display channel: image says {w}x{h} but decodes to "
                                f"{img.pixels.shape[1]}x{img.pixels.shape[0]}")
        if flags & (M.IMAGE_CACHE_ME | M.IMAGE_CACHE_REPLACE_ME):
            self.pixmaps[d["id"]] = img
            self.trim()
        return img

    def trim(self) -> None:
        total = sum(i.pixels.shape[0] * i.pixels.shape[1] for i in self.pixmaps.values())
        while total > self.cache_pixels * 2 and len(self.pixmaps) > 1:
            _, old = self.pixmaps.popitem(last=False)
            total -= old.pixels.shape[0] * old.pixels.shape[1]
        self.count_cache()

    def count_cache(self) -> None:
        self.budget.set("image cache", sum(i.pixels.nbytes for i in self.pixmaps.values()), "cached images")

    def count_glz(self) -> None:
        self.budget.set("GLZ window", self.glz.nbytes, "the GLZ window")

    def bitmap(self, p: BodyParser) -> Image:
        b = p.take(W.BITMAP)
        fmt, flags, w, h, stride = b["format"], b["flags"], b["x"], b["y"], b["stride"]
        if not (0 < w <= MAX_SURFACE_SIDE and 0 < h <= MAX_SURFACE_SIDE):
            raise ProtocolError(f"display channel: bitmap of {w}x{h} is out of bounds")
        palette = self.palette(p, flags) if fmt in (M.BITMAP_1BIT_LE, M.BITMAP_1BIT_BE, M.BITMAP_4BIT_LE,
                                                     M.BITMAP_4BIT_BE, M.BITMAP_8BIT) else None
        if fmt not in (M.BITMAP_1BIT_LE, M.BITMAP_1BIT_BE, M.BITMAP_4BIT_LE, M.BITMAP_4BIT_BE, M.BITMAP_8BIT):
            p.take(W.PALETTE_PTR)  # unused for direct-colour formats
        bits = {M.BITMAP_1BIT_LE: 1, M.BITMAP_1BIT_BE: 1, M.BITMAP_4BIT_LE: 4, M.BITMAP_4BIT_BE: 4,
                M.BITMAP_8BIT: 8, M.BITMAP_16BIT: 16, M.BITMAP_24BIT: 24, M.BITMAP_32BIT: 32, M.BITMAP_RGBA: 32,
                M.BITMAP_8BIT_A: 8}.get(fmt)
        if bits is None:
            raise ProtocolError(f"display channel: unknown bitmap format {fmt}")
        if stride < (w * bits + 7) // 8:
            raise ProtocolError(f"display channel: bitmap stride {stride} too small for {w} pixels")
        raw = np.frombuffer(take_bytes(p, stride * h), np.uint8).reshape(h, stride)
        out = np.zeros((h, w, 4), np.uint8)
        if fmt in (M.BITMAP_32BIT, M.BITMAP_RGBA):
            out[:] = raw[:, :w * 4].reshape(h, w, 4)
            if fmt == M.BITMAP_32BIT:
                out[:, :, 3] = 0
        elif fmt == M.BITMAP_24BIT:
            out[:, :, :3] = raw[:, :w * 3].reshape(h, w, 3)
        elif fmt == M.BITMAP_16BIT:
            out[:, :, :3] = rgb555_bgr(raw[:, :w * 2].copy().view("<u2").reshape(h, w))
        elif fmt == M.BITMAP_8BIT_A:
            out[:, :, 3] = raw[:, :w]
        else:
            if (palette is None or not len(palette)) and bits == 1:
                palette = np.array([0, 0xFFFFFF], np.uint32)  # a 1-bit mask carries no palette
            if palette is None or not len(palette):
                raise ProtocolError("display channel: palette bitmap without a palette")
            table = (palette.astype("<u4") & 0xFFFFFF).view(np.uint8).reshape(-1, 4)  # BGRX, X zero
            if bits == 8:
                idx = raw[:, :w]
            elif bits == 4:
                hi, lo = raw >> 4, raw & 15
                pair = (lo, hi) if fmt == M.BITMAP_4BIT_LE else (hi, lo)
                idx = np.stack(pair, axis=2).reshape(h, -1)[:, :w]
            else:
                idx = np.unpackbits(raw, axis=1, bitorder="little" if fmt == M.BITMAP_1BIT_LE else "big")[:, :w]
            if idx.max(initial=0) >= len(table):
                if bits == 8:
                    raise ProtocolError("display channel: palette index out of range")
                idx = idx % len(table)
            out[:] = table[idx]
        if not flags & M.BITMAP_TOP_DOWN:
            out = out[::-1].copy()
        return Image(out, has_alpha=fmt in (M.BITMAP_RGBA, M.BITMAP_8BIT_A))
