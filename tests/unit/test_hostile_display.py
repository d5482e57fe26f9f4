"""Hostile twins of the display tests: what one small message from a hostile server can make the
client allocate. Each runs in a child under an address-space limit (tests/bounded.py), so a
regression fails the test instead of taking the machine down."""

from __future__ import annotations

import numpy as np
import pytest

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.budget import Budget, OverBudget
from spicectl.spice.display import ROP_PUT, Display
from tests.bounded import bounded
from tests.display_messages import (
    HUGE,
    NO_MASK,
    base,
    bgrx,
    bitmap,
    cached_palette_copy,
    jpeg_copy,
    pattern_fill,
    picture_bytes,
    solid,
    stream_create,
    surface_create,
    then,
)

# every test here runs with the compiled decoder loops and with the pure-Python reference
pytestmark = pytest.mark.usefixtures("decoders")


def on_surface(w: int = 64, h: int = 48) -> Display:
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, w, h))
    return d


CHECKER = bgrx(0xFF0000, 0x00FF00, 0x0000FF, 0xFFFFFF, 0x123456, 0xABCDEF)


def _fill_with_pattern(box) -> np.ndarray:
    d = on_surface()
    d.handle(M.MSG_DISPLAY_DRAW_FILL, pattern_fill(box, CHECKER, 3, (1, 2)))
    return d.surfaces[0].copy()


def _op(msg_type: int, box, tail: bytes) -> None:
    d = on_surface()
    d.handle(msg_type, base(0, *box) + tail)


def test_a_pattern_fill_over_a_box_of_2_30_squared_costs_what_the_surface_shows():
    outcome = bounded(lambda: _fill_with_pattern((0, 0, HUGE, HUGE)), extra=512 << 20)
    assert outcome.how == "ok", str(outcome)


def test_a_clipped_pattern_fill_draws_what_the_whole_box_would():
    assert (_fill_with_pattern((-HUGE, -HUGE, HUGE, HUGE)) == _fill_with_pattern((0, 0, 48, 64))).all()


@pytest.mark.parametrize("msg_type", [M.MSG_DISPLAY_DRAW_BLACKNESS, M.MSG_DISPLAY_DRAW_WHITENESS,
                                      M.MSG_DISPLAY_DRAW_INVERS])
def test_a_solid_op_over_a_huge_box_is_clipped_first(msg_type):
    outcome = bounded(lambda: _op(msg_type, (-HUGE, -HUGE, HUGE, HUGE), W.MASK_ONLY.pack(mask=NO_MASK)),
                      extra=512 << 20)
    assert outcome.how == "ok", str(outcome)


def test_a_fill_without_a_brush_over_a_huge_box_is_clipped_first():
    tail = W.FILL.pack(brush={"type": W.BRUSH_TYPE_NONE}, rop_descriptor=ROP_PUT, mask=NO_MASK)
    outcome = bounded(lambda: _op(M.MSG_DISPLAY_DRAW_FILL, (0, 0, HUGE, HUGE), tail), extra=512 << 20)
    assert outcome.how == "ok", str(outcome)


def _scaled(msg_type: int) -> None:
    """A 2x2 source scaled onto a box of 2^30 squared."""
    d = on_surface()
    head = base(0, 0, 0, HUGE, HUGE)
    area = dict(top=0, left=0, bottom=2, right=2)
    src = bitmap(2, 2, bgrx(0xFF0000, 0x00FF00, 0x0000FF, 0xFFFFFF), M.BITMAP_32BIT)
    if msg_type == M.MSG_DISPLAY_DRAW_COPY:
        def fixed(at): return W.COPY.pack(src_bitmap=at, src_area=area, rop_descriptor=ROP_PUT, scale_mode=0,
                                          mask=NO_MASK)
    elif msg_type == M.MSG_DISPLAY_DRAW_OPAQUE:
        def fixed(at): return W.OPAQUE.pack(src_bitmap=at, src_area=area, brush=solid(0x00FF00),
                                            rop_descriptor=ROP_PUT, scale_mode=0, mask=NO_MASK)
    elif msg_type == M.MSG_DISPLAY_DRAW_ROP3:
        def fixed(at): return W.ROP3.pack(src_bitmap=at, src_area=area, brush=solid(0x00FF00), rop3=0xE2,
                                          scale_mode=0, mask=NO_MASK)
    elif msg_type == M.MSG_DISPLAY_DRAW_TRANSPARENT:
        def fixed(at): return W.TRANSPARENT.pack(src_bitmap=at, src_area=area, src_color=0, true_color=0)
    else:
        def fixed(at): return W.ALPHA_BLEND.pack(alpha_flags=0, alpha=128, src_bitmap=at, src_area=area)
    d.handle(msg_type, then(head, fixed, src))
    # the top-left quarter of the scaled picture covers the whole 64x48 surface: its first pixel's colour
    assert (d.surfaces[0][:, :, :3] == d.surfaces[0][0, 0, :3]).all()


@pytest.mark.parametrize("msg_type", [M.MSG_DISPLAY_DRAW_COPY, M.MSG_DISPLAY_DRAW_OPAQUE, M.MSG_DISPLAY_DRAW_ROP3,
                                      M.MSG_DISPLAY_DRAW_TRANSPARENT, M.MSG_DISPLAY_DRAW_ALPHA_BLEND])
def test_a_source_scaled_to_a_huge_box_is_scaled_for_the_visible_part_only(msg_type):
    outcome = bounded(lambda: _scaled(msg_type), extra=512 << 20)
    assert outcome.how == "ok", str(outcome)


def _spread_text() -> None:
    d = on_surface()
    head = base(0, 0, 0, 48, 64)
    glyph_bits = bytes([0xFF])  # one 8x1 A1 glyph
    glyphs = b""
    for x, y in ((-(1 << 31) + 1, -(1 << 31) + 1), (3, 5), ((1 << 31) - 16, (1 << 31) - 16)):
        glyphs += W.RASTER_GLYPH.pack(render_pos=dict(x=x, y=y), glyph_origin=dict(x=0, y=0), width=8,
                                      height=1) + glyph_bits
    string = W.STRING.pack(length=3, flags=W.STRING_RASTER_A1) + glyphs
    d.handle(M.MSG_DISPLAY_DRAW_TEXT, then(head, lambda at: W.TEXT.pack(
        str=at, back_area=dict(top=0, left=0, bottom=0, right=0), fore_brush=solid(0xFF0000), back_brush=solid(0),
        fore_mode=ROP_PUT, back_mode=ROP_PUT), string))
    drawn = np.argwhere(d.surfaces[0][:, :, 2] == 0xFF)
    assert drawn.tolist() == [[5, x] for x in range(3, 11)]


def test_glyphs_spread_over_32_bit_space_allocate_only_what_shows():
    outcome = bounded(_spread_text, extra=512 << 20)
    assert outcome.how == "ok", str(outcome)


def test_surfaces_share_one_budget():
    d = Display(budget=Budget(1 << 30))
    with pytest.raises(OverBudget, match="8192x8192 surface.*memory budget of 1024.0 MiB"):
        for sid in range(6):
            d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(sid, 8192, 8192, primary=sid == 0))
    assert len(d.surfaces) == 4 and d.budget.used == 4 * 8192 * 8192 * 4


def test_a_destroyed_surface_gives_its_memory_back():
    d = Display(budget=Budget(300 << 20))
    for _ in range(5):
        d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(1, 8192, 8192, primary=False))
        d.handle(M.MSG_DISPLAY_SURFACE_DESTROY, W.SURFACE_DESTROY.pack(surface_id=1))
    assert d.budget.used == 0


def test_cached_palettes_are_compact_and_counted():
    d = on_surface()
    for unique in range(300):
        d.handle(M.MSG_DISPLAY_DRAW_COPY, cached_palette_copy(unique, 65535))
    assert len(d.images.palettes) == 300
    assert d.budget.parts["palettes"] == 300 * 65535 * 4  # 75 MiB; as lists of numpy scalars it was 600 MB


def test_palettes_past_the_budget_are_a_protocol_error():
    d = Display(budget=Budget(32 << 20))
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 64, 48))
    with pytest.raises(ProtocolError, match="cached palettes"):
        for unique in range(300):
            d.handle(M.MSG_DISPLAY_DRAW_COPY, cached_palette_copy(unique, 65535))


# --- JPEG: only JPEG, and no larger than announced, checked before decoding ---------------------------


def test_a_jpeg_image_as_announced_is_drawn():
    d = on_surface()
    d.handle(M.MSG_DISPLAY_DRAW_COPY, jpeg_copy(16, 8, picture_bytes(16, 8, "JPEG")))
    assert (abs(d.primary_rgb()[:8, :16].astype(int) - (200, 40, 40)) <= 8).all()


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "TIFF", "BMP"])
def test_other_formats_sent_as_jpeg_are_refused(fmt):
    with pytest.raises(ProtocolError, match="bad JPEG image"):
        on_surface().handle(M.MSG_DISPLAY_DRAW_COPY, jpeg_copy(16, 8, picture_bytes(16, 8, fmt)))


def test_a_large_jpeg_in_a_64x64_descriptor_is_refused_before_it_is_decoded():
    message = jpeg_copy(64, 64, picture_bytes(8000, 8000, "JPEG"))  # 256 MiB as BGRX
    outcome = bounded(lambda: on_surface().handle(M.MSG_DISPLAY_DRAW_COPY, message), extra=128 << 20)
    assert outcome.how == "raised" and outcome.error == "ProtocolError", str(outcome)
    assert "8000x8000 where 64x64 was announced" in outcome.message


def test_a_jpeg_header_claiming_65535_squared_is_a_protocol_error():
    data = bytearray(picture_bytes(16, 16, "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = b"\xff\xff\xff\xff"  # height, width
    with pytest.raises(ProtocolError, match="bad JPEG image"):
        on_surface().handle(M.MSG_DISPLAY_DRAW_COPY, jpeg_copy(16, 16, bytes(data)))


def test_an_mjpeg_frame_larger_than_its_stream_is_refused():


    d = on_surface()
    d.handle(M.MSG_DISPLAY_STREAM_CREATE, stream_create(0, 5, (0, 0, 16, 16)))
    data = picture_bytes(1200, 1200, "JPEG")
    with pytest.raises(ProtocolError, match="1200x1200 where 16x16"):
        d.handle(M.MSG_DISPLAY_STREAM_DATA,
                 W.STREAM_DATA.pack(base=dict(id=5, multi_media_time=0), data_size=len(data)) + data)


def test_a_stream_announced_past_the_surface_limits_is_refused():


    with pytest.raises(ProtocolError, match="out of bounds"):
        on_surface().handle(M.MSG_DISPLAY_STREAM_CREATE, stream_create(0, 5, (0, 0, 60000, 60000)))


# --- decoding within the command's time ------------------------------------------------------------

def test_a_large_quic_image_stops_decoding_at_the_commands_deadline(decoders):
    import time

    from spicectl.errors import TimeoutExpired
    from spicectl.spice.codecs import quic
    from tests.unit.test_codecs import quic_header

    # 4096x4096 of random bits: seconds of pure-Python decoding (45 s for a 60 MB image before); the
    # compiled loops finish it in a fraction of a second, so they get a deadline that has passed
    data = quic_header(quic.TYPE_RGB32, 4096, 4096) + np.random.default_rng(1).bytes(12 << 20)
    started = time.monotonic()
    deadline = started + 0.3 if decoders == "python" else started
    with pytest.raises(TimeoutExpired, match="QUIC image: still decoding at row"):
        quic.decode_quic(data, deadline=deadline)
