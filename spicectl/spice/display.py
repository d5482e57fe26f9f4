"""The display channel's state: surfaces, video streams, and the drawing commands that change them.

Surfaces are numpy arrays of shape (height, width, 4) holding BGRX (or BGRA)
bytes, as SPICE's 32-bit surfaces are laid out in memory. The images drawn
(and their caches) come from `images.py`; each message's handler is in
`HANDLERS`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import pixman, raster, video
from spicectl.spice import wire as W
from spicectl.spice.budget import Budget
from spicectl.spice.codecs.lz import MAX_PIXELS
from spicectl.spice.images import (
    MAX_SURFACE_SIDE,
    BodyParser,
    Image,
    Images,
    UnsupportedImage,
    from_jpeg,
    take_bytes,
)

log = logging.getLogger("spicectl.spice.display")

MAX_SURFACES = 1024
MAX_STREAMS = 64
PIXMAP_CACHE_PIXELS = 16 * 1024 * 1024
GLZ_WINDOW_PIXELS = 8 * 1024 * 1024

# rop descriptor bits
ROP_INVERS_SRC, ROP_INVERS_BRUSH, ROP_INVERS_DEST = 1, 2, 4
ROP_PUT, ROP_OR, ROP_AND, ROP_XOR, ROP_BLACKNESS, ROP_WHITENESS, ROP_INVERS = 8, 16, 32, 64, 128, 256, 512
ROP_INVERS_RES = 1024

# known messages that change nothing a screenshot shows
NOT_DRAWING = {M.MSG_DISPLAY_MODE, M.MSG_DISPLAY_RESET, M.MSG_DISPLAY_STREAM_ACTIVATE_REPORT}
STREAM_FLAGS_TOP_DOWN = 1


@dataclass
class Rect:
    top: int
    left: int
    bottom: int
    right: int

    @classmethod
    def of(cls, r: dict) -> Rect:
        return cls(r["top"], r["left"], r["bottom"], r["right"])

    def union(self, other: Rect | None) -> Rect:
        if other is None or other.empty:
            return self
        if self.empty:
            return other
        return Rect(min(self.top, other.top), min(self.left, other.left),
                    max(self.bottom, other.bottom), max(self.right, other.right))

    def intersect(self, other: Rect) -> Rect:
        return Rect(max(self.top, other.top), max(self.left, other.left),
                    min(self.bottom, other.bottom), min(self.right, other.right))

    @property
    def empty(self) -> bool:
        return self.bottom <= self.top or self.right <= self.left

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True)
class Monitor:
    """One of the guest's monitors: a rectangle of a surface (several may share the primary)."""

    monitor_id: int
    surface_id: int
    x: int
    y: int
    width: int
    height: int

    def as_dict(self) -> dict:
        return {"monitor": self.monitor_id, "x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass
class Stream:
    """A video stream: where its frames land on which surface, clipped how."""

    surface_id: int
    codec: int
    top_down: bool
    dest: Rect
    clips: list[Rect]
    size: tuple[int, int]                       # a frame's width and height, unless a sized frame says
    decoder: video.VideoDecoder | None = None   # the stream's own (not MJPEG's): frames depend on earlier ones


class Display:
    def __init__(self, *, cache_pixels: int = PIXMAP_CACHE_PIXELS, glz_window_pixels: int = GLZ_WINDOW_PIXELS,
                 budget: Budget | None = None) -> None:
        self.budget = budget or Budget()
        self.deadline: float | None = None  # time.monotonic() past which a long decode stops (the command's)
        self.surfaces: dict[int, np.ndarray] = {}
        self.surface_formats: dict[int, int] = {}
        self.primary: int | None = None
        self.images = Images(self.budget, cache_pixels, glz_window_pixels)   # caches, palettes, GLZ window
        self.marked = False          # the server has sent MARK: the primary surface is complete
        self.warnings: set[str] = set()
        self.streams: dict[int, Stream] = {}
        self.monitors: list[Monitor] = []  # as the server last said; empty until it says
        self.dirty: Rect | None = None     # what may have changed on the primary surface since take_dirty

    # --- dispatch ------------------------------------------------------------
    def handle(self, msg_type: int, body: bytes) -> None:
        handler = HANDLERS.get(msg_type)
        if handler is not None:
            handler(self, BodyParser(body, f"display message {msg_type}"))
        elif msg_type not in NOT_DRAWING:
            raise ProtocolError(f"display channel: unknown message type {msg_type} ({len(body)} bytes)")

    # --- the messages that change no pixel ------------------------------------------------
    def _surface_destroy(self, p: BodyParser) -> None:
        sid = p.take(W.SURFACE_DESTROY)["surface_id"]
        self.surfaces.pop(sid, None)
        self.surface_formats.pop(sid, None)
        self._count_surfaces()
        if sid == self.primary:
            self.primary = None
            self.marked = False

    def _mark(self, _p: BodyParser) -> None:
        self.marked = True

    def _inval_list(self, p: BodyParser) -> None:
        for resource in p.take(W.INVAL_LIST)["resources"]:
            self.images.pixmaps.pop(resource["id"], None)
        self.images.count_cache()

    def _inval_all_pixmaps(self, _p: BodyParser) -> None:
        self.images.pixmaps.clear()
        self.images.count_cache()

    def _inval_palette(self, p: BodyParser) -> None:
        self.images.palettes.pop(p.take(W.INVAL_ONE)["id"], None)
        self.images.count_palettes()

    def _inval_all_palettes(self, _p: BodyParser) -> None:
        self.images.palettes.clear()
        self.images.count_palettes()

    def _stream_data(self, p: BodyParser) -> None:
        head = p.take(W.STREAM_DATA)
        self._stream_frame(head["base"]["id"], take_bytes(p, head["data_size"]), None, None)

    def _stream_data_sized(self, p: BodyParser) -> None:
        head = p.take(W.STREAM_DATA_SIZED)
        self._stream_frame(head["base"]["id"], take_bytes(p, head["data_size"]), (head["width"], head["height"]),
                           Rect.of(head["dest"]))

    def _stream_clip(self, p: BodyParser) -> None:
        clip = p.take(W.STREAM_CLIP)
        self._stream(clip["id"]).clips = [Rect.of(r) for r in clip["clip"].get("rects", ())]

    def _stream_destroy(self, p: BodyParser) -> None:
        self.streams.pop(p.take(W.STREAM_ID)["id"], None)

    def _stream_destroy_all(self, _p: BodyParser) -> None:
        self.streams.clear()

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.add(text)
            log.warning(text)

    def _monitors_config(self, body: bytes) -> None:
        head = W.MONITORS_CONFIG.unpack(body)
        if head["count"] > W.MAX_HEADS:
            raise ProtocolError(f"display channel: {head['count']} monitors is over the limit of {W.MAX_HEADS}")
        monitors = []
        for i in range(head["count"]):
            h = W.HEAD.unpack(body, W.MONITORS_CONFIG.size + i * W.HEAD.size)
            if h["width"] and h["height"]:  # a monitor the guest turned off keeps its slot, at 0x0
                monitors.append(Monitor(h["monitor_id"], h["surface_id"], h["x"], h["y"], h["width"], h["height"]))
        self.monitors = monitors

    # --- video streams -------------------------------------------------------------------
    def _stream_create(self, p: BodyParser) -> None:
        c = p.take(W.STREAM_CREATE)
        self.surface(c["surface_id"])
        if len(self.streams) >= MAX_STREAMS and c["id"] not in self.streams:
            raise ProtocolError(f"display channel: more than {MAX_STREAMS} video streams")
        size = (c["stream_width"], c["stream_height"])
        _check_frame_size(size)
        self.streams[c["id"]] = Stream(c["surface_id"], c["codec_type"], bool(c["flags"] & STREAM_FLAGS_TOP_DOWN),
                                       Rect.of(c["dest"]), [Rect.of(r) for r in c["clip"].get("rects", ())], size)

    def _stream(self, stream_id: int) -> Stream:
        try:
            return self.streams[stream_id]
        except KeyError:
            raise ProtocolError(f"display channel: unknown video stream {stream_id}") from None

    def _stream_frame(self, stream_id: int, data: bytes, size: tuple[int, int] | None, dest: Rect | None) -> None:
        stream = self._stream(stream_id)
        if dest is not None:
            stream.dest = dest
        if size is not None:
            _check_frame_size(size)
        expected = size or stream.size
        self.budget.need(2 * expected[0] * expected[1] * 4, f"a {expected[0]}x{expected[1]} video frame")
        if stream.codec == M.VIDEO_CODEC_MJPEG:
            frame = from_jpeg(data, expected, exact=False).pixels
        elif stream.codec in video.decodable():
            if stream.decoder is None:
                stream.decoder = video.VideoDecoder(stream.codec)
            decoded = stream.decoder.decode(data, expected)
            if decoded is None:
                return  # the decoder holds it back for a later frame
            frame = decoded
        else:
            name = M.VIDEO_CODECS.get(stream.codec, (str(stream.codec),))[0].upper()
            self._warn(f"{name} video is not decoded by this client")
            return
        if size is not None and (frame.shape[1], frame.shape[0]) != size:
            raise ProtocolError(f"display channel: a video frame says {size[0]}x{size[1]} but decodes to "
                                f"{frame.shape[1]}x{frame.shape[0]}")
        if not stream.top_down:
            frame = frame[::-1]
        box = stream.dest
        if box.empty:
            return
        surface = self.surface(stream.surface_id)
        self._touch(stream.surface_id, box)
        vis = self._visible(surface, box, stream.clips)
        full = Rect(0, 0, frame.shape[0], frame.shape[1])
        region = self._src_region(Image(frame), full, box, vis)
        self._draw_image(surface, box, stream.clips, region, ROP_PUT, at=vis)

    # --- surfaces --------------------------------------------------------------
    def _surface_create(self, p: BodyParser) -> None:
        s = p.take(W.SURFACE_CREATE)
        w, h = s["width"], s["height"]
        if not (0 < w <= MAX_SURFACE_SIDE and 0 < h <= MAX_SURFACE_SIDE) or w * h > MAX_PIXELS:
            raise ProtocolError(f"display channel: surface of {w}x{h} is out of bounds")
        if s["surface_id"] not in self.surfaces and len(self.surfaces) >= MAX_SURFACES:
            raise ProtocolError(f"display channel: more than {MAX_SURFACES} surfaces")
        old = self.surfaces.get(s["surface_id"])
        self.budget.set("surfaces", self._surface_bytes() - (old.nbytes if old is not None else 0) + w * h * 4,
                        f"a {w}x{h} surface")
        self.surfaces[s["surface_id"]] = np.zeros((h, w, 4), dtype=np.uint8)
        self.surface_formats[s["surface_id"]] = s["format"]
        if s["flags"] & M.SURFACE_FLAG_PRIMARY:
            self.primary = s["surface_id"]
            self.marked = False
        self._touch(s["surface_id"], Rect(0, 0, h, w))

    def _surface_bytes(self) -> int:
        return sum(a.nbytes for a in self.surfaces.values())

    def _count_surfaces(self) -> None:
        self.budget.set("surfaces", self._surface_bytes(), "surfaces")

    def surface(self, sid: int) -> np.ndarray:
        try:
            return self.surfaces[sid]
        except KeyError:
            raise ProtocolError(f"display channel: drawing on unknown surface {sid}") from None

    def _touch(self, sid: int, box: Rect) -> None:
        if sid == self.primary:
            self.dirty = box.union(self.dirty)

    def primary_size(self) -> tuple[int, int] | None:
        """The primary surface's width and height, or None before the server created it."""
        if self.primary is None or self.primary not in self.surfaces:
            return None
        h, w = self.surfaces[self.primary].shape[:2]
        return w, h

    def take_dirty(self) -> Rect | None:
        """What of the primary surface may have changed since the last call (within the surface), or None."""
        dirty, self.dirty = self.dirty, None
        size = self.primary_size()
        if dirty is None or size is None:
            return None
        dirty = dirty.intersect(Rect(0, 0, size[1], size[0]))
        return None if dirty.empty else dirty

    def primary_bgrx(self, area: Rect) -> np.ndarray | None:
        """A copy of `area` of the primary surface, as the surface holds it (h, w, 4), or None before
        the server created it."""
        if self.primary is None or self.primary not in self.surfaces:
            return None
        return self.surfaces[self.primary][area.top:area.bottom, area.left:area.right].copy()

    def primary_rgb(self, area: Rect | None = None) -> np.ndarray | None:
        """The primary surface (or `area` of it) as (h, w, 3) RGB, or None before the server created it."""
        if self.primary is None or self.primary not in self.surfaces:
            return None
        bgrx = self.surfaces[self.primary]
        if area is not None:
            bgrx = bgrx[area.top:area.bottom, area.left:area.right]
        # a channel at a time: one copy through a reversed channel slice took 5x as long (the
        # viewer's largest cost per frame in bench/view.py's profile)
        rgb = np.empty(bgrx.shape[:2] + (3,), np.uint8)
        for i in range(3):
            rgb[:, :, i] = bgrx[:, :, 2 - i]
        return rgb

    # --- structures ---------------------------------------------------------------
    def _base(self, p: BodyParser) -> tuple[np.ndarray, Rect, list[Rect]]:
        base = p.take(W.DISPLAY_BASE)
        rects = [Rect.of(r) for r in base["clip"].get("rects", ())]
        box = Rect.of(base["box"])
        self._touch(base["surface_id"], box)
        return self.surface(base["surface_id"]), box, rects

    def _areas(self, surface: np.ndarray, box: Rect, clips: list[Rect]) -> list[Rect]:
        h, w = surface.shape[:2]
        bounded = box.intersect(Rect(0, 0, h, w))
        if bounded.empty:
            return []
        if not clips:
            return [bounded]
        return [a for a in (bounded.intersect(c) for c in clips) if not a.empty]

    def _visible(self, surface: np.ndarray, box: Rect, clips: list[Rect]) -> Rect:
        """The part of `box` a draw can change (inside the surface and the clip; empty if none): what a
        draw computes is computed for this part only, so a box of 2^31 pixels costs what it shows."""
        areas = self._areas(surface, box, clips)
        if not areas:
            return Rect(box.top, box.left, box.top, box.left)
        return Rect(min(a.top for a in areas), min(a.left for a in areas),
                    max(a.bottom for a in areas), max(a.right for a in areas))

    def _qmask(self, p: BodyParser, qmask: dict) -> tuple[tuple[int, int], np.ndarray | None]:
        """The mask's offset and bits (inverted already when its flags say so), or no mask."""
        if not qmask["bitmap"]:
            return (0, 0), None
        mask = self._mask_bits(p.at(qmask["bitmap"]))
        if qmask["flags"] & W.MASK_INVERS:
            mask = ~mask
        return (qmask["pos"]["x"], qmask["pos"]["y"]), mask

    def _brush_region(self, p: BodyParser, brush: dict, h: int, w: int, top: int = 0, left: int = 0) -> np.ndarray:
        """What a brush paints over an h×w box at (top, left): a pattern's origin is at its position on
        the surface, as the canvas tiles it (text passes the box's own corner as 0, 0, as the canvas does)."""
        if brush["type"] == W.BRUSH_TYPE_SOLID:
            color = brush["color"]
            bgrx = np.array([color & 0xFF, (color >> 8) & 0xFF, (color >> 16) & 0xFF, 0xFF], np.uint8)
            return np.broadcast_to(bgrx, (h, w, 4))
        if brush["type"] == W.BRUSH_TYPE_PATTERN:
            pattern = brush["pattern"]
            pixels = self.image(p.at(pattern["pat"])).pixels
            return _tile(pixels, top - pattern["pos"]["y"], left - pattern["pos"]["x"], h, w)
        return np.zeros((h, w, 4), np.uint8)  # no brush: the canvas still applies the operation, with black

    # --- images -----------------------------------------------------------------
    def image(self, p: BodyParser) -> Image:
        """The image the descriptor at `p` describes: decoded (within the budget and the command's
        deadline), from the cache, or a copy of a surface."""
        return self.images.decode(p, self._surface_source, self.deadline)

    def _surface_source(self, sid: int) -> tuple[np.ndarray, bool]:
        return self.surface(sid), self.surface_formats.get(sid) == M.SURFACE_FMT_32_ARGB

    def _mask_bits(self, p: BodyParser) -> np.ndarray:
        img = self.image(p)
        # 1-bit masks decode through a palette-less path: any non-black pixel is "set"
        return np.asarray(img.pixels[:, :, :3].any(axis=2))

    # --- drawing ----------------------------------------------------------------
    def _src_region(self, img: Image, src: Rect, box: Rect, part: Rect) -> np.ndarray:
        """The source area, scaled to the box as the canvas scales it (nearest), for `part` of the box."""
        h, w = img.pixels.shape[:2]
        if src.empty or src.left < 0 or src.top < 0 or src.right > w or src.bottom > h:
            raise ProtocolError(f"display channel: source area {src} outside a {w}x{h} image")
        if box.empty:
            raise ProtocolError("display channel: bad scale target")
        if (src.width, src.height) == (box.width, box.height):
            return img.pixels[src.top + part.top - box.top:src.top + part.bottom - box.top,
                              src.left + part.left - box.left:src.left + part.right - box.left]
        ys = src.top + np.arange(part.top - box.top, part.bottom - box.top, dtype=np.int64) * src.height // box.height
        xs = src.left + np.arange(part.left - box.left, part.right - box.left, dtype=np.int64) * src.width // box.width
        return img.pixels[ys][:, xs]

    @staticmethod
    def _apply(dst: np.ndarray, src: np.ndarray, rop: int, mask: np.ndarray | None,
               src_invers: int = ROP_INVERS_SRC, dest_invers: int = ROP_INVERS_DEST) -> None:
        """dst = src ROP dst where mask allows. Which descriptor bits invert the two inputs depends on
        the draw (a fill's source is its brush; opaque's brush lands on its source), as in the canvas."""
        s = ~src if rop & src_invers else src
        d = ~dst if rop & dest_invers else dst
        if rop & ROP_PUT:
            res = s
        elif rop & ROP_OR:
            res = s | d
        elif rop & ROP_AND:
            res = s & d
        elif rop & ROP_XOR:
            res = s ^ d
        elif rop & (ROP_BLACKNESS | ROP_WHITENESS | ROP_INVERS):  # these ignore every inversion bit
            res = np.zeros_like(dst) if rop & ROP_BLACKNESS else np.full_like(dst, 0xFF) \
                if rop & ROP_WHITENESS else ~dst
            rop &= ~ROP_INVERS_RES
        else:
            res = s
        if rop & ROP_INVERS_RES:
            res = ~res
        if mask is None:
            dst[...] = res
        else:
            dst[mask] = res[mask]

    def _draw_image(self, surface: np.ndarray, box: Rect, clips: list[Rect], region: np.ndarray, rop: int,
                    mask: np.ndarray | None = None, mask_pos: tuple[int, int] = (0, 0),
                    src_invers: int = ROP_INVERS_SRC, dest_invers: int = ROP_INVERS_DEST,
                    at: Rect | None = None) -> None:
        """`region` holds what lands on `at` (the box, or the visible part of it); a mask is anchored
        on the box."""
        at = at or box
        for a in self._areas(surface, box, clips):
            src = region[a.top - at.top:a.bottom - at.top, a.left - at.left:a.right - at.left]
            m = None
            if mask is not None:
                m = _tile(mask, a.top - box.top + mask_pos[1], a.left - box.left + mask_pos[0], a.height, a.width)
            self._apply(surface[a.top:a.bottom, a.left:a.right], src, rop, m, src_invers, dest_invers)

    def _source(self, p: BodyParser, offset: int) -> Image | None:
        """The source image of a draw, or None (with one warning) if its format is not decoded yet."""
        try:
            return self.image(p.at(offset))
        except UnsupportedImage as exc:
            self._warn(exc.message)
            return None

    def _draw_copy(self, p: BodyParser, blend: bool = False) -> None:
        surface, box, clips = self._base(p)
        copy = p.take(W.COPY)
        mpos, mask = self._qmask(p, copy["mask"])
        img = self._source(p, copy["src_bitmap"])
        if img is None:
            return
        vis = self._visible(surface, box, clips)
        region = self._src_region(img, Rect.of(copy["src_area"]), box, vis)
        self._draw_image(surface, box, clips, region, copy["rop_descriptor"] or ROP_PUT, mask, mpos, at=vis)

    def _draw_opaque(self, p: BodyParser) -> None:
        """The source copied in, then the brush applied onto it by the operation, as the canvas draws it."""
        surface, box, clips = self._base(p)
        opaque = p.take(W.OPAQUE)
        mpos, mask = self._qmask(p, opaque["mask"])
        img = self._source(p, opaque["src_bitmap"])
        vis = self._visible(surface, box, clips)
        if img is None or vis.empty:
            return
        self._draw_image(surface, box, clips, self._src_region(img, Rect.of(opaque["src_area"]), box, vis), ROP_PUT,
                         mask, mpos, at=vis)
        brush = self._brush_region(p, opaque["brush"], vis.height, vis.width, vis.top, vis.left)
        self._draw_image(surface, box, clips, brush, opaque["rop_descriptor"] or ROP_PUT, mask, mpos,
                         src_invers=ROP_INVERS_BRUSH, dest_invers=ROP_INVERS_SRC, at=vis)

    def _draw_fill(self, p: BodyParser) -> None:
        surface, box, clips = self._base(p)
        fill = p.take(W.FILL)
        mpos, mask = self._qmask(p, fill["mask"])
        vis = self._visible(surface, box, clips)
        if vis.empty:
            return
        region = self._brush_region(p, fill["brush"], vis.height, vis.width, vis.top, vis.left)
        self._draw_image(surface, box, clips, region, fill["rop_descriptor"] or ROP_PUT, mask, mpos,
                         src_invers=ROP_INVERS_BRUSH, at=vis)

    def _draw_solid_op(self, p: BodyParser, msg_type: int) -> None:
        surface, box, clips = self._base(p)
        mpos, mask = self._qmask(p, p.take(W.MASK_ONLY)["mask"])
        vis = self._visible(surface, box, clips)
        if vis.empty:
            return
        rop = {M.MSG_DISPLAY_DRAW_BLACKNESS: ROP_BLACKNESS, M.MSG_DISPLAY_DRAW_WHITENESS: ROP_WHITENESS,
               M.MSG_DISPLAY_DRAW_INVERS: ROP_INVERS}[msg_type]
        region = np.zeros((vis.height, vis.width, 4), np.uint8)
        self._draw_image(surface, box, clips, region, rop, mask, mpos, at=vis)

    def _draw_transparent(self, p: BodyParser) -> None:
        surface, box, clips = self._base(p)
        transparent = p.take(W.TRANSPARENT)
        img = self.image(p.at(transparent["src_bitmap"]))
        vis = self._visible(surface, box, clips)
        region = self._src_region(img, Rect.of(transparent["src_area"]), box, vis)
        src_color = transparent["src_color"]
        key = np.array([src_color & 0xFF, (src_color >> 8) & 0xFF, (src_color >> 16) & 0xFF], np.uint8)
        for a in self._areas(surface, box, clips):
            src = region[a.top - vis.top:a.bottom - vis.top, a.left - vis.left:a.right - vis.left]
            keep = (src[:, :, :3] != key).any(axis=2)
            surface[a.top:a.bottom, a.left:a.right][keep] = src[keep]

    def _draw_alpha_blend(self, p: BodyParser) -> None:
        surface, box, clips = self._base(p)
        blend = p.take(W.ALPHA_BLEND)
        alpha_flags, alpha = blend["alpha_flags"], blend["alpha"]
        img = self.image(p.at(blend["src_bitmap"]))
        vis = self._visible(surface, box, clips)
        region = self._src_region(img, Rect.of(blend["src_area"]), box, vis).astype(np.uint16)
        for a in self._areas(surface, box, clips):
            src = region[a.top - vis.top:a.bottom - vis.top, a.left - vis.left:a.right - vis.left]
            dst = surface[a.top:a.bottom, a.left:a.right]
            if alpha_flags & W.ALPHA_FLAGS_SRC_SURFACE_HAS_ALPHA:  # premultiplied per-pixel alpha
                sa = (src[:, :, 3:4] * alpha) // 255
                out = (src[:, :, :3] * alpha // 255) + dst[:, :, :3].astype(np.uint16) * (255 - sa) // 255
            else:
                out = (src[:, :, :3] * alpha + dst[:, :, :3].astype(np.uint16) * (255 - alpha)) // 255
            dst[:, :, :3] = np.clip(out, 0, 255).astype(np.uint8)

    def _copy_bits(self, p: BodyParser) -> None:
        surface, box, clips = self._base(p)
        src = p.take(W.COPY_BITS)["src_pos"]
        h, w = surface.shape[:2]
        source = Rect(src["y"], src["x"], src["y"] + box.height, src["x"] + box.width)
        if source.empty or source.left < 0 or source.top < 0 or source.right > w or source.bottom > h:
            raise ProtocolError("display channel: copy-bits source outside the surface")
        snapshot = surface[source.top:source.bottom, source.left:source.right].copy()
        for a in self._areas(surface, box, clips):
            surface[a.top:a.bottom, a.left:a.right] = snapshot[a.top - box.top:a.bottom - box.top,
                                                               a.left - box.left:a.right - box.left]

    def _draw_rop3(self, p: BodyParser) -> None:
        """Pattern, source and destination combined by the ternary operation over the whole box, then
        put back where clip and mask allow (the canvas computes the box, then blits through its region)."""
        surface, box, clips = self._base(p)
        op = p.take(W.ROP3)
        mpos, mask = self._qmask(p, op["mask"])
        img = self._source(p, op["src_bitmap"])
        vis = self._visible(surface, box, clips)
        if img is None or vis.empty:
            return
        src = self._src_region(img, Rect.of(op["src_area"]), box, vis)
        dest = surface[vis.top:vis.bottom, vis.left:vis.right].copy()
        brush = self._brush_region(p, op["brush"], vis.height, vis.width, vis.top, vis.left)
        self._draw_image(surface, box, clips, raster.rop3(op["rop3"], brush, src, dest), ROP_PUT, mask, mpos,
                         at=vis)

    def _region_mask(self, surface: np.ndarray, box: Rect, clips: list[Rect]) -> np.ndarray:
        """Which of the surface's pixels a draw with this box and clip may change."""
        allowed = np.zeros(surface.shape[:2], bool)
        for a in self._areas(surface, box, clips):
            allowed[a.top:a.bottom, a.left:a.right] = True
        return allowed

    def _draw_stroke(self, p: BodyParser) -> None:
        """A path of one-pixel lines in the brush, by the fore mode: zero-width lines (X's miZeroLine), or
        dashed ones as X draws them (miWideDash, one pixel wide), as the canvas does."""
        surface, box, clips = self._base(p)
        head = p.take(W.STROKE_HEAD)
        dash: list[int] = []
        dash_offset = 0
        if head["attr_flags"] & W.LINE_FLAGS_STYLED:
            attr = p.take(W.LINE_STYLE)
            nseg = attr["style_nseg"]
            at = p.at(attr["style"]) if nseg else p
            if at.pos + 4 * nseg > len(p.body):
                raise ProtocolError("display channel: a stroke's dash style runs past the message")
            style = [raster.fix_to_int(int(v)) & 0xFF for v in np.frombuffer(p.body, "<i4", nseg, at.pos)]
            if head["attr_flags"] & W.LINE_FLAGS_START_WITH_GAP and style:
                style = style[1:] + style[:1]
                dash_offset = style[0]
            dash = style
            if not dash:
                raise ProtocolError("display channel: a dashed stroke with no dash lengths")
        tail = p.take(W.STROKE_TAIL)
        path = p.at(head["path"])
        segments = []
        for _ in range(path.take(W.PATH)["num_segments"]):  # inline, one after another
            s = path.take(W.PATH_SEG)
            if path.pos + 8 * s["count"] > len(path.body):
                raise ProtocolError("display channel: a stroke's path segment runs past the message")
            xy = np.frombuffer(path.body, "<i4", 2 * s["count"], path.pos).reshape(-1, 2)
            path.pos += 8 * s["count"]
            segments.append((s["flags"], [(int(x), int(y)) for x, y in xy]))
        allowed = self._region_mask(surface, box, clips)
        h, w = surface.shape[:2]
        brush = tail["brush"]
        mode = tail["fore_mode"] or ROP_PUT
        patterned = brush["type"] == W.BRUSH_TYPE_PATTERN
        tile = self.image(p.at(brush["pattern"]["pat"])).pixels if patterned else self._brush_region(p, brush, 1, 1)
        careful = raster.careful_rop(_gx_code(mode))

        def paint(xs: np.ndarray, ys: np.ndarray) -> None:
            keep = allowed[ys, xs]
            xs, ys = xs[keep], ys[keep]
            if not len(xs):
                return
            if patterned:
                pos = brush["pattern"]["pos"]
                src = tile[(ys - pos["y"]) % tile.shape[0], (xs - pos["x"]) % tile.shape[1]]
            else:
                src = np.broadcast_to(tile[0, 0], (len(xs), 4))
            pixels = surface[ys, xs]
            self._apply(pixels, src, mode, None, src_invers=ROP_INVERS_BRUSH)
            surface[ys, xs] = pixels

        for line in raster.polylines(segments):
            if not dash:
                for (x1, y1), (x2, y2) in itertools.pairwise(line):
                    paint(*raster.zero_line(x1, y1, x2, y2, w, h))
                continue
            spans = [(y, x, n) for y, x, n in raster.dashed_spans(line, dash, dash_offset, careful and len(line) >= 3)
                     if 0 <= y < h and x < w and x + n > 0]
            if not spans:
                continue
            rows = np.array(spans, np.int64)
            starts = np.maximum(rows[:, 1], 0)
            widths = np.minimum(rows[:, 1] + rows[:, 2], w) - starts
            ys = np.repeat(rows[:, 0], widths)
            xs = np.repeat(starts - np.cumsum(widths) + widths, widths) + np.arange(widths.sum())
            flat = np.unique(ys * w + xs)  # one span group: each pixel once
            paint(flat % w, flat // w)

    def _draw_text(self, p: BodyParser) -> None:
        """The back area filled with the back brush, then the fore brush composited through the glyphs."""
        surface, box, clips = self._base(p)
        text = p.take(W.TEXT)
        string = p.at(text["str"])
        head = string.take(W.STRING)
        flags = head["flags"]
        bpp = 1 if flags & W.STRING_RASTER_A1 else 4 if flags & W.STRING_RASTER_A4 else \
            8 if flags & W.STRING_RASTER_A8 else 0
        glyphs = []
        for _ in range(head["length"]):  # inline, each with its bits
            glyph = string.take(W.RASTER_GLYPH)
            size = ((glyph["width"] * bpp + 7) // 8) * glyph["height"]
            left = glyph["render_pos"]["x"] + glyph["glyph_origin"]["x"]
            top = glyph["render_pos"]["y"] + glyph["glyph_origin"]["y"]
            glyphs.append((left, top, glyph["width"], glyph["height"], take_bytes(string, size)))
        back = Rect.of(text["back_area"])
        if not back.empty and text["fore_mode"] != ROP_PUT:
            self._warn("text with a back area and a fore mode other than put is not drawn by this client")
            return
        if not bpp:
            self._warn("text of vector glyphs is not drawn by this client")
            return
        areas = self._areas(surface, box, clips)  # the region the canvas draws text in
        if not back.empty:
            for a in (a.intersect(back) for a in areas):
                if not a.empty:
                    region = self._brush_region(p, text["back_brush"], a.height, a.width, a.top, a.left)
                    surface[a.top:a.bottom, a.left:a.right] = region
        if text["fore_brush"]["type"] == W.BRUSH_TYPE_NONE or not glyphs:
            return
        vis = self._visible(surface, box, clips)
        if vis.empty:
            return
        # only the part of the string's mask that can show; the brush stays anchored at the whole mask's corner
        left, top, origin, coverage = raster.glyph_mask(glyphs, bpp, (vis.top, vis.left, vis.bottom, vis.right))
        mh, mw = coverage.shape
        brush = self._brush_region(p, text["fore_brush"], mh, mw, top - origin[0], left - origin[1])
        for a in (a.intersect(Rect(top, left, top + mh, left + mw)) for a in areas):
            if not a.empty:
                part = (slice(a.top - top, a.bottom - top), slice(a.left - left, a.right - left))
                raster.over_through_mask(surface[a.top:a.bottom, a.left:a.right], brush[part], coverage[part])

    def _draw_composite(self, p: BodyParser) -> None:
        """As spice-server's canvas does it: the box's pixels composited by pixman, kept where the clip allows."""
        base = p.take(W.DISPLAY_BASE)
        sid = base["surface_id"]
        surface, box = self.surface(sid), Rect.of(base["box"])
        self._touch(sid, box)
        clips = [Rect.of(r) for r in base["clip"].get("rects", ())]
        head = p.take(W.COMPOSITE_HEAD)
        flags = head["flags"]
        mask_at = p.take(W.IMAGE_OFFSET)["offset"] if flags & W.COMPOSITE_HAS_MASK else 0
        src_transform = p.take(W.TRANSFORM) if flags & W.COMPOSITE_HAS_SRC_TRANSFORM else None
        mask_transform = p.take(W.TRANSFORM) if flags & W.COMPOSITE_HAS_MASK_TRANSFORM else None
        origins = p.take(W.COMPOSITE_ORIGINS)
        if box.empty:
            return
        h, w = surface.shape[:2]
        if box.left < 0 or box.top < 0 or box.right > w or box.bottom > h:
            raise ProtocolError(f"display channel: composite box {box} outside a {w}x{h} surface")
        formats = {M.SURFACE_FMT_32_XRGB: pixman.X8R8G8B8, M.SURFACE_FMT_32_ARGB: pixman.A8R8G8B8}
        target = self.surface_formats.get(sid)
        if target not in formats:
            self._warn(f"composite onto a surface of format {target} is not drawn by this client")
            return

        def layer(img: Image, origin: tuple[int, int], transform: dict | None, shift_filter: int, shift_repeat: int,
                  opaque: bool) -> pixman.Layer:
            alpha = img.has_alpha and not opaque
            return pixman.Layer(img.pixels, pixman.A8R8G8B8 if alpha else pixman.X8R8G8B8, origin,
                                tuple(transform.values()) if transform else None,
                                (flags >> shift_filter) & 7, (flags >> shift_repeat) & 3)

        src_img = self.image(p.at(head["src_bitmap"]))
        # spice-server honours SOURCE_OPAQUE for surfaces only, and MASK_OPAQUE and DEST_OPAQUE not at all
        src = layer(src_img, (origins["src_x"], origins["src_y"]), src_transform, W.COMPOSITE_SRC_FILTER_SHIFT,
                    W.COMPOSITE_SRC_REPEAT_SHIFT, src_img.surface and bool(flags & W.COMPOSITE_SOURCE_OPAQUE))
        mask = None
        if flags & W.COMPOSITE_HAS_MASK:
            mask = layer(self.image(p.at(mask_at)), (origins["mask_x"], origins["mask_y"]), mask_transform,
                         W.COMPOSITE_MASK_FILTER_SHIFT, W.COMPOSITE_MASK_REPEAT_SHIFT, False)
            mask.component_alpha = bool(flags & W.COMPOSITE_COMPONENT_ALPHA)
        dest = surface[box.top:box.bottom, box.left:box.right].copy()  # the clip decides what goes back
        pixman.composite(flags & W.COMPOSITE_OP_MASK, dest, formats[target], src, mask)
        for a in self._areas(surface, box, clips):
            surface[a.top:a.bottom, a.left:a.right] = dest[a.top - box.top:a.bottom - box.top,
                                                           a.left - box.left:a.right - box.left]


def _gx_code(rop: int, src_invers: int = ROP_INVERS_BRUSH) -> int:
    """A rop descriptor as the X/pixman operation code it amounts to (bit 2*(1-src) + (1-dest) of the
    code is the result for those inputs), by running it on the four input pairs."""
    code = 0
    for s in (0, 1):
        for d in (0, 1):
            dst = np.full((1, 4), 0xFF * d, np.uint8)
            Display._apply(dst, np.full((1, 4), 0xFF * s, np.uint8), rop, None, src_invers=src_invers)
            code |= (int(dst[0, 0]) & 1) << (2 * (1 - s) + (1 - d))
    return code


def _tile(pattern: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    ph, pw = pattern.shape[:2]
    ys = (np.arange(h) + y0) % ph
    xs = (np.arange(w) + x0) % pw
    return pattern[ys][:, xs]


def _check_frame_size(size: tuple[int, int]) -> None:
    w, h = size
    if not (0 < w <= MAX_SURFACE_SIDE and 0 < h <= MAX_SURFACE_SIDE) or w * h > MAX_PIXELS:
        raise ProtocolError(f"display channel: a video stream of {w}x{h} is out of bounds")


def copy_source(body: bytes) -> tuple[dict, bytes]:
    """The image descriptor and compressed payload of a DRAW_COPY message (for tests and benchmarks)."""
    p = BodyParser(body, "draw copy")
    p.take(W.DISPLAY_BASE)
    q = p.at(p.take(W.COPY)["src_bitmap"])
    descriptor = q.take(W.IMAGE_DESCRIPTOR)
    size = q.take(W.IMAGE_DATA)["data_size"] if descriptor["type"] != M.IMAGE_BITMAP else 0
    return descriptor, body[q.pos:q.pos + size]


def _solid_op(op: int) -> Callable[[Display, BodyParser], None]:
    return lambda d, p: d._draw_solid_op(p, op)


# each display message's handler: a new message is one method and one line here
HANDLERS: dict[int, Callable[[Display, BodyParser], None]] = {
    M.MSG_DISPLAY_SURFACE_CREATE: Display._surface_create,
    M.MSG_DISPLAY_SURFACE_DESTROY: Display._surface_destroy,
    M.MSG_DISPLAY_MARK: Display._mark,
    M.MSG_DISPLAY_DRAW_COPY: lambda d, p: d._draw_copy(p, blend=False),
    M.MSG_DISPLAY_DRAW_BLEND: lambda d, p: d._draw_copy(p, blend=True),
    M.MSG_DISPLAY_DRAW_OPAQUE: Display._draw_opaque,
    M.MSG_DISPLAY_DRAW_FILL: Display._draw_fill,
    **{op: _solid_op(op) for op in (M.MSG_DISPLAY_DRAW_BLACKNESS, M.MSG_DISPLAY_DRAW_WHITENESS,
                                    M.MSG_DISPLAY_DRAW_INVERS)},
    M.MSG_DISPLAY_DRAW_TRANSPARENT: Display._draw_transparent,
    M.MSG_DISPLAY_DRAW_ALPHA_BLEND: Display._draw_alpha_blend,
    M.MSG_DISPLAY_COPY_BITS: Display._copy_bits,
    M.MSG_DISPLAY_DRAW_COMPOSITE: Display._draw_composite,
    M.MSG_DISPLAY_DRAW_ROP3: Display._draw_rop3,
    M.MSG_DISPLAY_DRAW_STROKE: Display._draw_stroke,
    M.MSG_DISPLAY_DRAW_TEXT: Display._draw_text,
    M.MSG_DISPLAY_INVAL_LIST: Display._inval_list,
    M.MSG_DISPLAY_INVAL_ALL_PIXMAPS: Display._inval_all_pixmaps,
    M.MSG_DISPLAY_INVAL_PALETTE: Display._inval_palette,
    M.MSG_DISPLAY_INVAL_ALL_PALETTES: Display._inval_all_palettes,
    M.MSG_DISPLAY_STREAM_CREATE: Display._stream_create,
    M.MSG_DISPLAY_STREAM_DATA: Display._stream_data,
    M.MSG_DISPLAY_STREAM_DATA_SIZED: Display._stream_data_sized,
    M.MSG_DISPLAY_STREAM_CLIP: Display._stream_clip,
    M.MSG_DISPLAY_STREAM_DESTROY: Display._stream_destroy,
    M.MSG_DISPLAY_STREAM_DESTROY_ALL: Display._stream_destroy_all,
    M.MSG_DISPLAY_MONITORS_CONFIG: lambda d, p: d._monitors_config(p.body),
}
