"""Builders of display-channel messages (and their parts) that several test modules draw with."""

from __future__ import annotations

import numpy as np

from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.display import ROP_PUT


def surface_create(sid: int, w: int, h: int, primary: bool = True) -> bytes:
    return W.SURFACE_CREATE.pack(surface_id=sid, width=w, height=h, format=32, flags=int(primary))

def clip_of(clips) -> dict:
    """A Clip: no clip, or rectangles given as (top, left, bottom, right)."""
    if not clips:
        return {"type": W.CLIP_TYPE_NONE}
    return {"type": W.CLIP_TYPE_RECTS,
            "rects": [dict(zip(("top", "left", "bottom", "right"), c, strict=True)) for c in clips]}

def base(sid, top, left, bottom, right, clips=()) -> bytes:
    return W.DISPLAY_BASE.pack(surface_id=sid, box=dict(top=top, left=left, bottom=bottom, right=right),
                               clip=clip_of(clips))

NO_MASK = dict(flags=0, pos=dict(x=0, y=0), bitmap=0)

def fill(sid, top, left, bottom, right, color, clips=()):
    return base(sid, top, left, bottom, right, clips) + W.FILL.pack(
        brush={"type": W.BRUSH_TYPE_SOLID, "color": color}, rop_descriptor=ROP_PUT, mask=NO_MASK)

def stream_create(sid: int, stream_id: int, box, *, top_down=True, clips=()) -> bytes:
    clip = clip_of(clips)
    top, left, bottom, right = box
    return W.STREAM_CREATE.pack(surface_id=sid, id=stream_id, flags=int(top_down), codec_type=1, stamp=0,
                                stream_width=right - left, stream_height=bottom - top, src_width=right - left,
                                src_height=bottom - top, dest=dict(top=top, left=left, bottom=bottom, right=right),
                                clip=clip)

def bitmap(w: int, h: int, pixels: bytes, fmt: int = M.BITMAP_RGBA) -> bytes:
    return W.IMAGE_DESCRIPTOR.pack(id=0, type=M.IMAGE_BITMAP, flags=0, width=w, height=h) + W.BITMAP.pack(
        format=fmt, flags=M.BITMAP_TOP_DOWN, x=w, y=h, stride=len(pixels) // h) + W.PALETTE_PTR.pack(palette=0) + pixels

def solid(color: int) -> dict:
    return {"type": W.BRUSH_TYPE_SOLID, "color": color}

def pattern_brush(at: int, x: int = 0, y: int = 0) -> dict:
    return {"type": W.BRUSH_TYPE_PATTERN, "pattern": {"pat": at, "pos": {"x": x, "y": y}}}

def bgrx(*colors: int) -> bytes:
    return b"".join(bytes([c & 0xFF, c >> 8 & 0xFF, c >> 16 & 0xFF, 0]) for c in colors)

def text(glyphs: list[tuple[int, int, int, int, bytes]], flags: int, fore: dict, back: dict | None = None,
         back_area=(0, 0, 0, 0), box=(0, 0, 8, 8)) -> bytes:
    """DRAW_TEXT of glyphs (x, y, width, height, bottom-up rows), placed by render_pos alone."""
    head = base(0, *box)
    fields = dict(back_area=dict(zip(("top", "left", "bottom", "right"), back_area, strict=True)), fore_brush=fore,
                  back_brush=back or {"type": W.BRUSH_TYPE_NONE}, fore_mode=ROP_PUT, back_mode=ROP_PUT)
    str_at = len(head) + len(W.TEXT.pack(str=0, **fields))
    data = b"".join(W.RASTER_GLYPH.pack(render_pos=dict(x=x, y=y), glyph_origin=dict(x=0, y=0), width=w,
                                        height=h) + rows for x, y, w, h, rows in glyphs)
    return head + W.TEXT.pack(str=str_at, **fields) + W.STRING.pack(length=len(glyphs), flags=flags) + data

HUGE = 1 << 30

def then(head: bytes, fixed, tail: bytes) -> bytes:
    """head, the fixed part made by `fixed(offset)` pointing at `tail`, tail (fixed parts vary in size)."""
    return head + fixed(len(head) + len(fixed(0))) + tail

def pattern_fill(box, pattern_pixels: bytes, pw: int, brush_pos=(0, 0)) -> bytes:
    return then(base(0, *box), lambda at: W.FILL.pack(brush=pattern_brush(at, *brush_pos), rop_descriptor=ROP_PUT,
                                                      mask=NO_MASK),
                bitmap(pw, len(pattern_pixels) // 4 // pw, pattern_pixels, M.BITMAP_32BIT))

def cached_palette_copy(unique: int, entries: int) -> bytes:
    def fixed(at): return W.COPY.pack(src_bitmap=at, src_area=dict(top=0, left=0, bottom=1, right=1),
                                      rop_descriptor=ROP_PUT, scale_mode=0, mask=NO_MASK)
    head = base(0, 0, 0, 1, 1)
    image_at = len(head) + len(fixed(0))
    image = W.IMAGE_DESCRIPTOR.pack(id=1, type=M.IMAGE_BITMAP, flags=0, width=1, height=1)

    def bitmap_head(palette_at): return W.BITMAP.pack(
        format=M.BITMAP_8BIT, flags=M.BITMAP_TOP_DOWN | M.BITMAP_PAL_CACHE_ME, x=1, y=1,
        stride=4) + W.PALETTE_PTR.pack(palette=palette_at)
    palette_at = image_at + len(image) + len(bitmap_head(0)) + 4  # after the one row of bits
    palette = W.PALETTE_HEAD.pack(unique=unique, num_ents=entries) + np.arange(entries, dtype="<u4").tobytes()
    return head + fixed(image_at) + image + bitmap_head(palette_at) + bytes(4) + palette

def picture_bytes(w: int, h: int, fmt: str) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 40, 40)).save(buf, fmt)
    return buf.getvalue()

def jpeg_copy(w: int, h: int, data: bytes) -> bytes:
    head = base(0, 0, 0, h, w)

    def fixed(at): return W.COPY.pack(src_bitmap=at, src_area=dict(top=0, left=0, bottom=h, right=w),
                                      rop_descriptor=ROP_PUT, scale_mode=0, mask=NO_MASK)
    image = W.IMAGE_DESCRIPTOR.pack(id=1, type=M.IMAGE_JPEG, flags=0, width=w, height=h) + \
        W.IMAGE_DATA.pack(data_size=len(data)) + data
    return then(head, fixed, image)
