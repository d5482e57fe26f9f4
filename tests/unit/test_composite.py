"""DRAW_COMPOSITE: Render operations drawn with pixman, as spice-server's canvas draws them."""

from __future__ import annotations

import numpy as np
import pytest

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.display import Display
from tests.display_messages import base, bitmap, fill, surface_create

OVER, SRC = 3, 1
REPEAT_NORMAL = 1


def surface_image(sid: int, w: int, h: int) -> bytes:
    return W.IMAGE_DESCRIPTOR.pack(id=0, type=M.IMAGE_SURFACE, flags=0, width=w, height=h) + W.SURFACE_IMAGE.pack(
        surface_id=sid)


def composite(box, flags: int, src: bytes, mask: bytes | None = None, clips=(), origins=(0, 0, 0, 0), sid=0) -> bytes:
    head = base(sid, *box, clips=clips)
    fixed = W.COMPOSITE_HEAD.size + (W.IMAGE_OFFSET.size if mask is not None else 0) + W.COMPOSITE_ORIGINS.size
    src_at = len(head) + fixed
    body = W.COMPOSITE_HEAD.pack(flags=flags | (W.COMPOSITE_HAS_MASK if mask is not None else 0), src_bitmap=src_at)
    if mask is not None:
        body += W.IMAGE_OFFSET.pack(offset=src_at + len(src))
    body += W.COMPOSITE_ORIGINS.pack(src_x=origins[0], src_y=origins[1], mask_x=origins[2], mask_y=origins[3])
    return head + body + src + (mask or b"")


def blue_surface() -> Display:
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 4, 4))
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 0, 0, 4, 4, 0x0000FF))
    return d


def test_over_blends_a_premultiplied_source_into_the_box_as_pixman_rounds():
    d = blue_surface()
    half_red = bytes((0, 0, 128, 128)) * 4  # BGRA, premultiplied: red at alpha 128
    d.handle(M.MSG_DISPLAY_DRAW_COMPOSITE, composite((1, 1, 3, 3), OVER, bitmap(2, 2, half_red)))
    rgb = d.primary_rgb()
    # red 128 + 0; blue 255 * (255 - 128) / 255 = 127 in pixman's rounding
    assert (rgb[1:3, 1:3] == [128, 0, 127]).all()
    assert (rgb[0] == [0, 0, 255]).all() and (rgb[:, 0] == [0, 0, 255]).all()


def test_the_clip_limits_what_changes():
    d = blue_surface()
    red = bytes((0, 0, 255, 255)) * 16
    d.handle(M.MSG_DISPLAY_DRAW_COMPOSITE, composite((0, 0, 4, 4), SRC, bitmap(4, 4, red), clips=[(0, 0, 1, 4)]))
    rgb = d.primary_rgb()
    assert (rgb[0] == [255, 0, 0]).all() and (rgb[1:] == [0, 0, 255]).all()


def test_a_repeated_source_through_an_alpha_mask():
    d = blue_surface()
    white = bytes((255, 255, 255, 255))  # 1x1, repeated over the box
    mask = bitmap(2, 1, bytes((0, 255)) + b"\0\0", fmt=M.BITMAP_8BIT_A)  # stride 4: transparent, opaque
    flags = OVER | REPEAT_NORMAL << W.COMPOSITE_SRC_REPEAT_SHIFT
    d.handle(M.MSG_DISPLAY_DRAW_COMPOSITE, composite((0, 0, 1, 2), flags, bitmap(1, 1, white), mask))
    rgb = d.primary_rgb()
    assert (rgb[0, 0] == [0, 0, 255]).all() and (rgb[0, 1] == [255, 255, 255]).all()


def test_source_opaque_reads_a_surface_as_if_it_had_no_alpha():
    d = blue_surface()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, W.SURFACE_CREATE.pack(surface_id=1, width=2, height=2,
                                                                 format=M.SURFACE_FMT_32_ARGB, flags=0))
    d.surfaces[1][:] = (0, 255, 0, 0)  # green at alpha 0 (not premultiplied: OVER adds it)
    src = surface_image(1, 2, 2)
    d.handle(M.MSG_DISPLAY_DRAW_COMPOSITE, composite((0, 0, 2, 2), OVER, src))
    assert (d.primary_rgb()[:2, :2] == [0, 255, 255]).all()
    d.handle(M.MSG_DISPLAY_DRAW_COMPOSITE, composite((0, 0, 2, 2), OVER | W.COMPOSITE_SOURCE_OPAQUE, src))
    assert (d.primary_rgb()[:2, :2] == [0, 255, 0]).all()


@pytest.mark.parametrize("flags, needle", [(0x0E, "operator 0xe"),
                                           (OVER | 5 << W.COMPOSITE_SRC_FILTER_SHIFT, "filter 5")])
def test_what_pixman_does_not_define_is_a_protocol_error(flags, needle):
    d = blue_surface()
    with pytest.raises(ProtocolError, match=needle):
        d.handle(M.MSG_DISPLAY_DRAW_COMPOSITE, composite((0, 0, 1, 1), flags, bitmap(1, 1, bytes(4))))


def test_a_box_outside_the_surface_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="outside a 4x4 surface"):
        blue_surface().handle(M.MSG_DISPLAY_DRAW_COMPOSITE, composite((0, 0, 5, 5), OVER, bitmap(1, 1, bytes(4))))


def test_garbage_composites_never_crash():
    rng = np.random.default_rng(7)
    d = blue_surface()
    for _ in range(300):
        body = bytearray(composite((0, 0, 2, 2), OVER, bitmap(1, 1, bytes(4))))
        for i in rng.integers(0, len(body), 3):
            body[i] = int(rng.integers(0, 256))
        try:
            d.handle(M.MSG_DISPLAY_DRAW_COMPOSITE, bytes(body))
        except ProtocolError:
            pass
