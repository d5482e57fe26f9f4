"""The cursor channel's state: the pointer's shape, hot spot, position and visibility.

Facts from spice-common's `spice.proto` (CursorChannel) and spice-gtk's cursor
handling: shapes are ARGB (ALPHA, premultiplied), MONO (an AND mask then an
XOR mask, 1 bit a pixel) or colour bitmaps with an AND mask; a shape may be
cached by its unique id and reused. `composite()` draws the cursor onto a
frame as a viewer would show it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.pixels import rgb555_bgr

log = logging.getLogger("spicectl.spice.cursor")

MAX_SIDE = 512
MAX_CACHED = 256


@dataclass
class Shape:
    rgba: np.ndarray       # (h, w, 4) straight (not premultiplied) RGBA
    invert: np.ndarray     # (h, w) bool: pixels that invert what is under them (MONO and colour masks)
    hot_x: int
    hot_y: int


class Cursor:
    def __init__(self) -> None:
        self.shape: Shape | None = None
        self.x = 0
        self.y = 0
        self.visible = False
        self.cache: OrderedDict[int, Shape] = OrderedDict()
        self.warnings: set[str] = set()
        self.drawn = False  # whether the last composite() drew a pointer
        self.initialized = False  # the server's INIT (the pointer as it is now) has arrived

    def handle(self, msg_type: int, body: bytes) -> None:
        if msg_type == M.MSG_CURSOR_INIT:
            head = W.CURSOR_INIT.unpack(body)
            self._position(head["position"])
            self.visible = bool(head["visible"])
            self._cursor(body, W.CURSOR_INIT.size)
            self.initialized = True
        elif msg_type == M.MSG_CURSOR_SET:
            head = W.CURSOR_SET.unpack(body)
            self._position(head["position"])
            self.visible = bool(head["visible"])
            self._cursor(body, W.CURSOR_SET.size)
        elif msg_type == M.MSG_CURSOR_MOVE:
            self._position(W.CURSOR_MOVE.unpack(body)["position"])
        elif msg_type == M.MSG_CURSOR_HIDE:
            self.visible = False
        elif msg_type == M.MSG_CURSOR_RESET:
            self.shape, self.visible = None, False
            self.cache.clear()
        elif msg_type == M.MSG_CURSOR_INVAL_ONE:
            self.cache.pop(W.INVAL_ONE.unpack(body)["id"], None)
        elif msg_type == M.MSG_CURSOR_INVAL_ALL:
            self.cache.clear()
        elif msg_type == M.MSG_CURSOR_TRAIL:
            pass
        else:
            raise ProtocolError(f"cursor channel: unknown message type {msg_type}")

    def _position(self, point: dict) -> None:
        self.x, self.y = point["x"], point["y"]

    def _cursor(self, body: bytes, offset: int) -> None:
        flags = W.CURSOR_FLAGS.unpack(body, offset)["flags"]
        offset += W.CURSOR_FLAGS.size
        if flags & M.CURSOR_FLAGS_NONE:
            self.shape = None
            return
        head = W.CURSOR_HEADER.unpack(body, offset)
        offset += W.CURSOR_HEADER.size
        if flags & M.CURSOR_FLAGS_FROM_CACHE:
            try:
                self.shape = self.cache[head["unique"]]
            except KeyError:
                raise ProtocolError(f"cursor channel: cursor {head['unique']} is not cached") from None
            return
        shape = self._decode(head, body[offset:])
        if shape is not None and flags & M.CURSOR_FLAGS_CACHE_ME:
            self.cache[head["unique"]] = shape
            while len(self.cache) > MAX_CACHED:
                self.cache.popitem(last=False)
        self.shape = shape

    def _decode(self, head: dict, data: bytes) -> Shape | None:
        w, h, kind = head["width"], head["height"], head["type"]
        if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            raise ProtocolError(f"cursor channel: a {w}x{h} cursor is out of bounds")
        mask_stride = (w + 7) // 8

        def need(size: int) -> None:
            if len(data) < size:
                raise ProtocolError(f"cursor channel: {len(data)} bytes of cursor data, a {w}x{h} cursor needs {size}")

        def bits(start: int) -> np.ndarray:
            raw = np.frombuffer(data, np.uint8, mask_stride * h, start).reshape(h, mask_stride)
            return np.unpackbits(raw, axis=1)[:, :w].astype(bool)

        rgba = np.zeros((h, w, 4), np.uint8)
        invert = np.zeros((h, w), bool)
        if kind == M.CURSOR_TYPE_ALPHA:
            need(w * h * 4)
            bgra = np.frombuffer(data, np.uint8, w * h * 4).reshape(h, w, 4).astype(np.uint16)
            alpha = bgra[:, :, 3]
            # premultiplied on the wire: undo it, so composite() can blend the usual way
            safe = np.maximum(alpha, 1)
            for dst, src in ((0, 2), (1, 1), (2, 0)):
                rgba[:, :, dst] = np.minimum(bgra[:, :, src] * 255 // safe, 255).astype(np.uint8)
            rgba[:, :, 3] = alpha.astype(np.uint8)
        elif kind == M.CURSOR_TYPE_MONO:
            need(2 * mask_stride * h)
            and_mask, xor_mask = bits(0), bits(mask_stride * h)
            # and 0: opaque (xor 0 black, xor 1 white); and 1: transparent (xor 0) or invert (xor 1)
            opaque = ~and_mask
            rgba[opaque & xor_mask] = (255, 255, 255, 255)
            rgba[opaque & ~xor_mask] = (0, 0, 0, 255)
            invert = and_mask & xor_mask
        elif kind in (M.CURSOR_TYPE_COLOR32, M.CURSOR_TYPE_COLOR24, M.CURSOR_TYPE_COLOR16):
            bpp = {M.CURSOR_TYPE_COLOR32: 4, M.CURSOR_TYPE_COLOR24: 3, M.CURSOR_TYPE_COLOR16: 2}[kind]
            need(w * h * bpp + mask_stride * h)
            raw = np.frombuffer(data, np.uint8, w * h * bpp).reshape(h, w, bpp)
            if bpp == 2:
                rgba[:, :, :3] = rgb555_bgr(raw.view("<u2").reshape(h, w))[:, :, ::-1]
            else:
                rgba[:, :, 0], rgba[:, :, 1], rgba[:, :, 2] = raw[:, :, 2], raw[:, :, 1], raw[:, :, 0]
            invert = _masked(rgba, bits(w * h * bpp))
        elif kind in (M.CURSOR_TYPE_COLOR4, M.CURSOR_TYPE_COLOR8):
            # palette indices (4 bits, high nibble first, rows padded to a byte; or 8 bits), the palette
            # (0x00RRGGBB words), then the AND mask
            colors = 16 if kind == M.CURSOR_TYPE_COLOR4 else 256
            stride = (w + 1) // 2 if colors == 16 else w
            need(stride * h + 4 * colors + mask_stride * h)
            rows = np.frombuffer(data, np.uint8, stride * h).reshape(h, stride)
            index = np.stack([rows >> 4, rows & 15], axis=2).reshape(h, 2 * stride)[:, :w] if colors == 16 else rows
            palette = np.frombuffer(data, "<u4", colors, stride * h)
            rgb = palette[index]
            for dst, shift in ((0, 16), (1, 8), (2, 0)):
                rgba[:, :, dst] = (rgb >> shift) & 255
            invert = _masked(rgba, bits(stride * h + 4 * colors))
        else:
            text = f"cursor type {kind} is not drawn by this client yet"
            if text not in self.warnings:
                self.warnings.add(text)
                log.warning(text)
            return None
        return Shape(rgba, invert, head["hot_spot_x"], head["hot_spot_y"])

    def composite(self, frame: np.ndarray) -> np.ndarray:
        """`frame` (h, w, 3 RGB) with the cursor drawn where the pointer is, if it is shown."""
        self.drawn = False
        if not self.visible or self.shape is None:
            return frame
        out = frame.copy()
        s = self.shape
        h, w = s.rgba.shape[:2]
        top, left = self.y - s.hot_y, self.x - s.hot_x
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + h, out.shape[0]), min(left + w, out.shape[1])
        if y0 >= y1 or x0 >= x1:
            return out
        self.drawn = True
        src = s.rgba[y0 - top:y1 - top, x0 - left:x1 - left].astype(np.uint16)
        dst = out[y0:y1, x0:x1].astype(np.uint16)
        a = src[:, :, 3:4]
        blended = (src[:, :, :3] * a + dst * (255 - a)) // 255
        inv = s.invert[y0 - top:y1 - top, x0 - left:x1 - left]
        blended[inv] = 255 - dst[inv]
        out[y0:y1, x0:x1] = blended.astype(np.uint8)
        return out


def _masked(rgba: np.ndarray, and_mask: np.ndarray) -> np.ndarray:
    """Apply a colour cursor's AND mask: 0 is opaque, 1 transparent, and 1 over white inverts the screen
    (as Windows draws it, and spice-gtk); the pixels to invert."""
    white = (rgba[:, :, :3] == 255).all(axis=2)
    rgba[:, :, 3] = np.where(and_mask, 0, 255)
    invert = and_mask & white
    rgba[invert] = 0
    return invert
