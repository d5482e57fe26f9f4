"""ROP3, strokes and text (what old Windows QXL drivers draw) and the brush rules they share with fill
and opaque, against spice-common's software canvas: its ternary operation table, X's zero-width
line algorithm, glyph masks and pixman's OVER rounding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import raster
from spicectl.spice import wire as W
from spicectl.spice.display import ROP_AND, ROP_INVERS_BRUSH, ROP_PUT, ROP_XOR, Display
from tests.display_messages import NO_MASK, base, bgrx, bitmap, pattern_brush, solid, surface_create, text

RED, GREEN, BLUE, WHITE = 0xFF0000, 0x00FF00, 0x0000FF, 0xFFFFFF


def rgb_of(d: Display) -> np.ndarray:
    rgb = d.primary_rgb()
    assert rgb is not None
    return rgb.astype(int) @ np.array([1 << 16, 1 << 8, 1])  # one 0xRRGGBB per pixel


def surface(w: int = 8, h: int = 4, color: int = 0) -> Display:
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, w, h))
    d.surfaces[0][:, :, :3] = [color & 0xFF, color >> 8 & 0xFF, color >> 16 & 0xFF]
    return d


# --- ROP3 -------------------------------------------------------------------------------------------

def test_rop3_follows_the_windows_truth_table_bit_by_bit():
    rng = np.random.default_rng(3)
    p, s, d = (rng.integers(0, 256, 64, dtype=np.uint8) for _ in range(3))
    for code in (0x00, 0xFF, 0xCC, 0xF0, 0xAA, 0x66, 0xB8, 0xE2, 0x5A, 0x33):
        out = raster.rop3(code, p, s, d)
        for k in range(64):
            for bit in range(8):
                index = (p[k] >> bit & 1) << 2 | (s[k] >> bit & 1) << 1 | (d[k] >> bit & 1)
                assert out[k] >> bit & 1 == code >> index & 1


def draw_rop3(d: Display, code: int, box, src: bytes, src_w: int, brush: dict, clips=()) -> None:
    head = base(0, *box, clips=clips)
    fixed = W.ROP3.pack(src_bitmap=0, src_area=dict(top=0, left=0, bottom=0, right=0), brush=brush, rop3=0,
                        scale_mode=0, mask=NO_MASK)
    at = len(head) + len(fixed)
    h = len(src) // 4 // src_w
    body = head + W.ROP3.pack(src_bitmap=at, src_area=dict(top=0, left=0, bottom=h, right=src_w), brush=brush,
                              rop3=code, scale_mode=0, mask=NO_MASK) + bitmap(src_w, h, src, M.BITMAP_32BIT)
    d.handle(M.MSG_DISPLAY_DRAW_ROP3, body)


def test_draw_rop3_combines_brush_source_and_screen_inside_the_clip():
    d = surface(4, 1, GREEN)
    # DSPDxax: D ^ (P & (S ^ D)) -- where the brush is set, the source; elsewhere the screen
    draw_rop3(d, 0xE2, (0, 0, 1, 4), bgrx(RED, RED, BLUE, BLUE), 4, solid(0xFF00FF), clips=[(0, 1, 1, 4)])
    assert list(rgb_of(d)[0]) == [GREEN, 0xFF0000 | GREEN & ~0xFF00FF, BLUE | GREEN & ~0xFF00FF,
                                  BLUE | GREEN & ~0xFF00FF]


def test_a_pattern_brush_is_anchored_on_the_surface_not_on_the_box():
    d = surface(4, 1)
    head = base(0, 0, 1, 1, 4)
    fill = W.FILL.pack(brush=pattern_brush(0), rop_descriptor=ROP_PUT, mask=NO_MASK)
    pat = bitmap(2, 1, bgrx(RED, BLUE), M.BITMAP_32BIT)
    d.handle(M.MSG_DISPLAY_DRAW_FILL, head + W.FILL.pack(brush=pattern_brush(len(head) + len(fill)),
                                                          rop_descriptor=ROP_PUT, mask=NO_MASK) + pat)
    assert list(rgb_of(d)[0]) == [0, BLUE, RED, BLUE]  # x=1 takes the pattern's column 1


def test_a_fill_inverts_its_brush_on_the_brush_bit_not_the_source_bit():
    d = surface(2, 1)
    for bit, want in ((ROP_INVERS_BRUSH, 0xFFFFFF & ~RED), (1, RED)):  # 1 = INVERS_SRC: a fill has no source
        d.handle(M.MSG_DISPLAY_DRAW_FILL, base(0, 0, 0, 1, 2) + W.FILL.pack(
            brush=solid(RED), rop_descriptor=ROP_PUT | bit, mask=NO_MASK))
        assert (rgb_of(d) == want).all()


def test_opaque_applies_its_brush_onto_its_source():
    d = surface(2, 1, GREEN)
    head = base(0, 0, 0, 1, 2)
    fixed = W.OPAQUE.pack(src_bitmap=0, src_area=dict(top=0, left=0, bottom=1, right=2), brush=solid(0xFF00FF),
                          rop_descriptor=ROP_AND, scale_mode=0, mask=NO_MASK)
    body = head + W.OPAQUE.pack(src_bitmap=len(head) + len(fixed), src_area=dict(top=0, left=0, bottom=1, right=2),
                                brush=solid(0xFF00FF), rop_descriptor=ROP_AND, scale_mode=0, mask=NO_MASK)
    d.handle(M.MSG_DISPLAY_DRAW_OPAQUE, body + bitmap(2, 1, bgrx(WHITE, 0x123456), M.BITMAP_32BIT))
    assert list(rgb_of(d)[0]) == [0xFF00FF, 0x123456 & 0xFF00FF]


# --- zero-width lines ---------------------------------------------------------------------------------

def reference_line(x1: int, y1: int, x2: int, y2: int) -> list[tuple[int, int]]:
    """X's miZeroLine step by step (no clipping, end point excluded): the closed form's oracle."""
    adx, ady = abs(x2 - x1), abs(y2 - y1)
    sx, sy = (-1 if x2 < x1 else 1), (-1 if y2 < y1 else 1)
    octant = (4 if x2 < x1 else 0) | (2 if y2 < y1 else 0)
    points = []
    x, y = x1, y1
    if adx > ady:
        e1, e2 = 2 * ady, 2 * ady - 2 * adx
        e = e1 - adx - (raster.ZERO_LINE_BIAS >> octant & 1)
        e3, e = e2 - e1, e - e1
        for _ in range(adx):
            points.append((x, y))
            e += e1
            if e >= 0:
                y += sy
                e += e3
            x += sx
    else:
        e1, e2 = 2 * adx, 2 * adx - 2 * ady
        e = e1 - ady - (raster.ZERO_LINE_BIAS >> (octant | 1) & 1)
        e3, e = e2 - e1, e - e1
        for _ in range(ady):
            points.append((x, y))
            e += e1
            if e >= 0:
                x += sx
                e += e3
            y += sy
    return points


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(-12, 40), min_size=4, max_size=4))
def test_zero_lines_are_x_bresenham_pixels_clipped_to_the_surface(c):
    xs, ys = raster.zero_line(*c, 30, 20)
    want = [(x, y) for x, y in reference_line(*c) if 0 <= x < 30 and 0 <= y < 20]
    assert list(zip(xs.tolist(), ys.tolist(), strict=True)) == want


def test_a_huge_line_costs_only_the_pixels_on_the_surface():
    xs, ys = raster.zero_line(-(1 << 27), 3, 1 << 27, 5, 16, 16)
    assert len(xs) == 16 and set(ys.tolist()) <= {3, 4, 5}


def fix(v: float) -> int:
    return round(v * 16)


def stroke(segments: list[tuple[int, list[tuple[float, float]]]], brush: dict, fore_mode: int = ROP_PUT,
           box=(0, 0, 8, 8), dashes: tuple[float, ...] = (), gap: bool = False) -> bytes:
    head = base(0, *box)
    style_size = W.LINE_STYLE.size if dashes else 0
    tail = W.STROKE_TAIL.pack(brush=brush, fore_mode=fore_mode, back_mode=ROP_PUT)
    path_at = len(head) + W.STROKE_HEAD.size + style_size + len(tail)
    segs = [W.PATH_SEG.pack(flags=f, count=len(pts)) + b"".join(
        W.POINT.pack(x=fix(x), y=fix(y)) for x, y in pts) for f, pts in segments]
    path = W.PATH.pack(num_segments=len(segs)) + b"".join(segs)
    style = b""
    flags = 0
    if dashes:
        flags = W.LINE_FLAGS_STYLED | (W.LINE_FLAGS_START_WITH_GAP if gap else 0)
        style = W.LINE_STYLE.pack(style_nseg=len(dashes), style=path_at + len(path))
    return (head + W.STROKE_HEAD.pack(path=path_at, attr_flags=flags) + style + tail + path
            + b"".join(fix(d).to_bytes(4, "little", signed=True) for d in dashes))


RECTANGLE = [(raster.PATH_BEGIN | raster.PATH_END | raster.PATH_CLOSE, [(1, 1), (5, 1), (5, 3), (1, 3)])]


def test_a_closed_stroke_draws_each_border_pixel_once():
    d = surface(8, 5, GREEN)
    d.handle(M.MSG_DISPLAY_DRAW_STROKE, stroke(RECTANGLE, solid(RED), ROP_XOR))  # twice drawn would cancel
    drawn = rgb_of(d) != GREEN
    border = np.zeros((5, 8), bool)
    border[1, 1:6] = border[3, 1:6] = border[1:4, 1] = border[1:4, 5] = True
    assert (drawn == border).all() and (rgb_of(d)[border] == RED ^ GREEN).all()


def test_an_open_stroke_leaves_out_its_last_point_and_keeps_to_its_box():
    d = surface(8, 3)
    d.handle(M.MSG_DISPLAY_DRAW_STROKE, stroke([(raster.PATH_BEGIN | raster.PATH_END, [(0, 1), (7, 1)])],
                                               solid(WHITE), box=(0, 2, 3, 8)))
    assert list(rgb_of(d)[1]) == [0, 0] + [WHITE] * 5 + [0]


def test_a_pattern_stroke_takes_the_tile_at_each_surface_pixel():
    d = surface(4, 1)
    pat_at = 0  # placeholder: the tile follows the path
    body = stroke([(raster.PATH_BEGIN | raster.PATH_END, [(0, 0), (4, 0)])], pattern_brush(pat_at, x=1))
    body = stroke([(raster.PATH_BEGIN | raster.PATH_END, [(0, 0), (4, 0)])], pattern_brush(len(body), x=1))
    d.handle(M.MSG_DISPLAY_DRAW_STROKE, body + bitmap(2, 1, bgrx(RED, BLUE), M.BITMAP_32BIT))
    assert list(rgb_of(d)[0]) == [BLUE, RED, BLUE, RED]


def test_curves_flatten_to_the_chord_when_straight_and_end_on_their_end_point():
    straight = list(raster.polylines([(raster.PATH_BEGIN | raster.PATH_BEZIER, [(0, 0)] + [
        (fix(x), 0) for x in (2, 4, 6)])]))
    assert straight == [[(0, 0), (6, 0)]]
    curve = list(raster.polylines([(raster.PATH_BEGIN | raster.PATH_BEZIER, [(0, 0)] + [
        (fix(x), fix(y)) for x, y in ((0, 40), (40, 40), (40, 0))])]))[0]
    assert curve[-1] == (40, 0) and len(curve) > 4
    assert all(0 <= x <= 40 and 0 <= y <= 30 for x, y in curve)  # inside the hull, short of the control points


def test_a_dashed_stroke_draws_its_on_dashes_and_leaves_out_its_end():
    d = surface(14, 3)
    d.handle(M.MSG_DISPLAY_DRAW_STROKE, stroke([(raster.PATH_BEGIN | raster.PATH_END, [(0, 1), (12, 1)])],
                                               solid(WHITE), box=(0, 0, 3, 14), dashes=(3, 2)))
    assert "".join("#" if v else "." for v in rgb_of(d)[1]) == "###..###..##.."
    assert not rgb_of(d)[0].any() and not rgb_of(d)[2].any()


def test_a_dashed_stroke_that_starts_with_a_gap_moves_its_first_dash_last():
    d = surface(14, 3)
    d.handle(M.MSG_DISPLAY_DRAW_STROKE, stroke([(raster.PATH_BEGIN | raster.PATH_END, [(0, 1), (12, 1)])],
                                               solid(WHITE), box=(0, 0, 3, 14), dashes=(2, 3), gap=True))
    # dashes (3 on, 2 off), begun 3 pixels in: the gap first
    assert "".join("#" if v else "." for v in rgb_of(d)[1]) == "..###..###...."


def test_a_dash_list_of_zeros_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="no dash lengths"):
        surface().handle(M.MSG_DISPLAY_DRAW_STROKE, stroke(RECTANGLE, solid(RED), dashes=(0, 0)))


# --- text ----------------------------------------------------------------------------------------------


def test_one_bit_glyphs_are_read_bottom_up_most_significant_bit_first():
    d = surface(8, 4)
    ell = bytes([0b11100000, 0b10000000, 0b10000000])  # bottom row first: an "L"
    d.handle(M.MSG_DISPLAY_DRAW_TEXT, text([(2, 1, 3, 3, ell)], W.STRING_RASTER_A1, solid(WHITE)))
    lit = rgb_of(d) == WHITE
    want = np.zeros((4, 8), bool)
    want[1:4, 2] = want[3, 2:5] = True
    assert (lit == want).all()


def test_the_back_area_is_filled_then_glyphs_blend_as_pixman_rounds():
    d = surface(4, 1)
    a4 = bytes([0xF8])  # two pixels: coverage 0xF0 and 0x80
    d.handle(M.MSG_DISPLAY_DRAW_TEXT, text([(1, 0, 2, 1, a4)], W.STRING_RASTER_A4, solid(WHITE), solid(BLUE),
                                           back_area=(0, 0, 1, 3)))
    row = d.primary_rgb()[0].astype(int).tolist()
    # blue*(255-m)/255 + 255*m/255 per channel, each product rounded as pixman rounds
    assert row == [[0, 0, 255], [240, 240, 255], [128, 128, 255], [0, 0, 0]]


def test_eight_bit_glyphs_overlap_by_maximum_and_keep_to_the_clip():
    d = surface(4, 1)
    d.handle(M.MSG_DISPLAY_DRAW_TEXT, text([(0, 0, 2, 1, bytes([10, 200])), (1, 0, 2, 1, bytes([100, 255]))],
                                           W.STRING_RASTER_A8, solid(WHITE), box=(0, 0, 1, 2)))
    assert d.primary_rgb()[0, :, 0].tolist() == [10, 200, 0, 0]


def test_vector_glyph_text_is_reported_not_drawn():
    d = surface()
    d.handle(M.MSG_DISPLAY_DRAW_TEXT, text([(0, 0, 1, 1, b"")], 0, solid(WHITE)))
    assert "text of vector glyphs is not drawn by this client" in d.warnings


# --- hostile messages ----------------------------------------------------------------------------------

@pytest.mark.parametrize("msg_type, body", [
    (M.MSG_DISPLAY_DRAW_STROKE, stroke(RECTANGLE, solid(RED))),
    (M.MSG_DISPLAY_DRAW_STROKE, stroke(RECTANGLE, solid(RED), dashes=(3, 1, 2))),
    (M.MSG_DISPLAY_DRAW_TEXT, text([(2, 1, 3, 3, bytes(3))], W.STRING_RASTER_A1, solid(WHITE))),
    (M.MSG_DISPLAY_DRAW_TEXT, text([(1, 0, 2, 1, bytes(2))], W.STRING_RASTER_A8, solid(WHITE))),
])
def test_garbled_strokes_and_text_are_protocol_errors_or_drawings(msg_type, body):
    rng = np.random.default_rng(11)
    d = surface()
    for n in range(300):
        garbled = bytearray(body[:len(body) - n % 3])
        for i in rng.integers(0, len(garbled), 3):
            garbled[i] = int(rng.integers(0, 256))
        try:
            d.handle(msg_type, bytes(garbled))
        except ProtocolError:
            pass
