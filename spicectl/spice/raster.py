"""Pixel rules of the draw operations old Windows (XPDM) QXL drivers send: ROP3, strokes and text.

Each follows what spice-common's software canvas (spice-gtk's, so remote-viewer's) does,
because a screenshot is only right if it is the picture a SPICE viewer shows:

- ROP3 is a Windows ternary raster operation: for each bit of pattern P, source S and
  destination D the result is bit (P<<2 | S<<1 | D) of the operation's code.
- Strokes are X11's zero-width lines (the canvas carries X's `miZeroLine`): Bresenham with X's
  octant bias, each segment without its last point (Windows cosmetic lines end-exclusive).
  Curves are flattened as the canvas flattens them, in 28.4 fixed point.
- Text is a mask of raster glyphs (1, 4 or 8 bits deep, rows bottom-up) that the fore brush
  is composited OVER through, with pixman's rounding.

Pure functions over numpy arrays: no I/O, no protocol parsing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from spicectl.errors import ProtocolError

# Windows' default tie-break, which X uses too: which octants step the minor axis a pixel late
_XDECREASING, _YDECREASING, _YMAJOR = 4, 2, 1
ZERO_LINE_BIAS = sum(1 << o for o in (_YDECREASING | _YMAJOR, _XDECREASING | _YDECREASING | _YMAJOR,
                                       _XDECREASING | _YDECREASING, _XDECREASING))
MAX_PATH_POINTS = 1 << 20   # after flattening: more is a hostile path, not a drawing
PATH_BEGIN, PATH_END, PATH_CLOSE, PATH_BEZIER = 1, 2, 8, 16


def rop3(code: int, pattern: np.ndarray, src: np.ndarray, dest: np.ndarray) -> np.ndarray:
    """The ternary raster operation `code` applied bitwise to three equal-shaped uint8 arrays."""
    out = np.zeros_like(dest)
    for index in range(8):
        if code >> index & 1:
            term = (pattern if index & 4 else ~pattern) & (src if index & 2 else ~src) & (dest if index & 1 else ~dest)
            out |= term
    return out


def fix_to_int(value: int) -> int:
    """28.4 fixed point to the pixel the canvas uses: a fraction over one half rounds up, a half down."""
    return (value >> 4) + (1 if value & 0x0F > 8 else 0)


def zero_line(x1: int, y1: int, x2: int, y2: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels (xs, ys) of X's zero-width line from (x1, y1) towards (x2, y2), the end point excluded,
    limited to a width×height surface: computed in closed form, so a hostile length costs nothing."""
    adx, ady = abs(x2 - x1), abs(y2 - y1)
    sx, sy = (-1 if x2 < x1 else 1), (-1 if y2 < y1 else 1)
    octant = (_XDECREASING if x2 < x1 else 0) | (_YDECREASING if y2 < y1 else 0)
    if adx > ady:
        major0, minor0, smajor, sminor, dmajor, dminor, extent = x1, y1, sx, sy, adx, ady, width
    else:
        major0, minor0, smajor, sminor, dmajor, dminor, extent = y1, x1, sy, sx, ady, adx, height
        octant |= _YMAJOR
    empty = np.zeros(0, np.int64)
    if dmajor == 0:
        return empty, empty
    bias = ZERO_LINE_BIAS >> octant & 1
    # steps i in [0, dmajor) whose major coordinate major0 + smajor*i lies in [0, extent)
    if smajor > 0:
        lo, hi = max(0, -major0), min(dmajor, extent - major0)
    else:
        lo, hi = max(0, major0 - extent + 1), min(dmajor, major0 + 1)
    if hi <= lo:
        return empty, empty
    i = np.arange(lo, hi, dtype=np.int64)
    # Bresenham's minor steps after i major ones, from X's error terms (e starts at -dmajor - bias)
    minor = minor0 + sminor * ((2 * dminor * i + dmajor - bias) // (2 * dmajor))
    major = major0 + smajor * i
    xs, ys = (major, minor) if not octant & _YMAJOR else (minor, major)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return xs[inside], ys[inside]


def _half(v: int) -> int:
    """C's v / 2 (truncating towards zero), as the canvas halves fixed-point coordinates."""
    return -(-v // 2) if v < 0 else v // 2


def _flatten_bezier(points: list[tuple[int, int]], p0: tuple[int, int], p1: tuple[int, int], p2: tuple[int, int],
                    p3: tuple[int, int]) -> None:
    """Cubic Bézier p0..p3 (28.4 fixed) split until each piece deviates less than half a pixel from its
    chord; appends each piece's end as a pixel. Iterative, so a hostile curve cannot exhaust the stack."""
    stack = [(p0, p1, p2, p3)]
    while stack:
        a, b, c, d = stack.pop()

        def dot(ux: int, uy: int, vx: int, vy: int) -> int:
            return (ux * vx + uy * vy) >> 4

        a2 = dot(b[0] - a[0], b[1] - a[1], b[0] - a[0], b[1] - a[1])
        b2 = dot(d[0] - a[0], d[1] - a[1], d[0] - a[0], d[1] - a[1])
        c2 = dot(c[0] - d[0], c[1] - d[1], c[0] - d[0], c[1] - d[1])
        ab = dot(b[0] - a[0], b[1] - a[1], d[0] - a[0], d[1] - a[1])
        cb = dot(c[0] - d[0], c[1] - d[1], a[0] - d[0], a[1] - d[1])
        if (a2 * b2 - ab * ab) >> 3 < b2 and (c2 * b2 - cb * cb) >> 3 < b2:
            points.append((fix_to_int(d[0]), fix_to_int(d[1])))
            if len(points) > MAX_PATH_POINTS:
                raise ProtocolError(f"display channel: a stroke's path flattens to over {MAX_PATH_POINTS} points")
            continue

        def mid(u: tuple[int, int], v: tuple[int, int]) -> tuple[int, int]:
            return _half(u[0] + v[0]), _half(u[1] + v[1])

        ab_, bc, cd = mid(a, b), mid(b, c), mid(c, d)
        abc, bcd = mid(ab_, bc), mid(bc, cd)
        abcd = mid(abc, bcd)
        stack.append((abcd, bcd, cd, d))   # popped second: the first half's points come first
        stack.append((a, ab_, abc, abcd))


def polylines(segments: list[tuple[int, list[tuple[int, int]]]]) -> Iterator[list[tuple[int, int]]]:
    """The pixel polylines a stroke's path segments (flags, 28.4 points) draw, as the canvas groups them:
    BEGIN starts a new polyline, END (with CLOSE back to its start) finishes one, BEZIER points come in threes."""
    line: list[tuple[int, int]] = []
    total = 0
    for flags, points in segments:
        rest = points
        if flags & PATH_BEGIN:
            if line:
                yield line
            line = [(fix_to_int(points[0][0]), fix_to_int(points[0][1]))] if points else []
            rest = points[1:]
        if flags & PATH_BEZIER:
            if len(rest) % 3:
                raise ProtocolError("display channel: a stroke's Bézier segment does not come in threes")
            for k in range(0, len(rest), 3):
                if not line:
                    raise ProtocolError("display channel: a stroke's curve has no start point")
                start = (line[-1][0] << 4, line[-1][1] << 4)
                _flatten_bezier(line, start, rest[k], rest[k + 1], rest[k + 2])
        else:
            line.extend((fix_to_int(x), fix_to_int(y)) for x, y in rest)
        total += len(line)
        if total > MAX_PATH_POINTS:
            raise ProtocolError(f"display channel: a stroke's path has over {MAX_PATH_POINTS} points")
        if flags & PATH_END:
            if flags & PATH_CLOSE and line:
                line.append(line[0])
            if line:
                yield line
            line = []
    if line:
        yield line


def glyph_mask(glyphs: list[tuple[int, int, int, int, bytes]], bpp: int,
               within: tuple[int, int, int, int]) -> tuple[int, int, tuple[int, int], np.ndarray]:
    """The string mask of raster glyphs (left, top, width, height, data) inside `within` (top, left,
    bottom, right): its left, top, the whole string's (top, left) corner and its (h, w) uint8 coverage.
    Rows bottom-up; 1-bit glyphs most significant bit first and OR-ed (0 or 255), 4- and 8-bit ones
    combined by maximum (a 4-bit value v covers v<<4, as the canvas reads it). Only the part inside
    `within` is allocated: glyphs may be placed anywhere in 32-bit space."""
    full_top = min(g[1] for g in glyphs)
    full_left = min(g[0] for g in glyphs)
    top = max(full_top, within[0])
    left = max(full_left, within[1])
    bottom = max(top, min(max(g[1] + g[3] for g in glyphs), within[2]))
    right = max(left, min(max(g[0] + g[2] for g in glyphs), within[3]))
    mask = np.zeros((bottom - top, right - left), np.uint8)
    for gx, gy, w, h, data in glyphs:
        # the glyph's rows and columns that land inside the mask
        y0, y1 = max(gy, top), min(gy + h, bottom)
        x0, x1 = max(gx, left), min(gx + w, right)
        if y0 >= y1 or x0 >= x1:
            continue
        stride = (w * bpp + 7) // 8
        rows = np.frombuffer(data, np.uint8, stride * h).reshape(h, stride)[::-1][y0 - gy:y1 - gy]
        if bpp == 1:
            cover = np.unpackbits(rows, axis=1, bitorder="big")[:, :w] * np.uint8(255)
        elif bpp == 4:
            cover = np.stack((rows & 0xF0, (rows & 0x0F) << 4), axis=2).reshape(len(rows), -1)[:, :w]
        else:
            cover = rows[:, :w]
        cover = cover[:, x0 - gx:x1 - gx]
        region = mask[y0 - top:y1 - top, x0 - left:x1 - left]
        if bpp == 1:
            region |= cover
        else:
            np.maximum(region, cover, out=region)
    return left, top, (full_top, full_left), mask


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """pixman's a*b/255, rounded as it rounds (uint16 arithmetic)."""
    t = a.astype(np.uint16) * b + 128
    return ((t + (t >> 8)) >> 8).astype(np.uint8)


def over_through_mask(dest: np.ndarray, brush: np.ndarray, coverage: np.ndarray) -> None:
    """dest = opaque brush OVER dest through an 8-bit coverage mask, in place, as pixman composites it."""
    m = coverage[:, :, None].astype(np.uint16)
    s = _mul(brush[:, :, :3], m)
    d = _mul(dest[:, :, :3], 255 - m)
    dest[:, :, :3] = np.minimum(s.astype(np.uint16) + d, 255).astype(np.uint8)


# --- dashed strokes: X's one-pixel-wide dashed lines (miWideDash with CapNotLast, JoinMiter) ------------------
MAX_DASHES = 1 << 14        # dash polygons in one stroke: more is a hostile path, not a drawing
_SQSECANT = 108.856472512142   # X's miter limit (1/sin^2(11/2))
_TOP, _RIGHT, _BOTTOM, _LEFT = 0, 1, 2, 3


def careful_rop(alu: int) -> bool:
    """X's rule: rops that must touch each pixel once (XOR-like), for which X gathers spans first."""
    return (alu & 0xC) == 0x8 or (alu & 0x3) == 0x2


def _iceil(x: float) -> int:
    t = int(x)
    return t if x == t or x < 0 else t + 1


def _build_edge(y0: float, k: float, dx: int, dy: int, xi: int, yi: int, left: int) -> tuple[int, list[int]]:
    if dy < 0:
        dy, dx, k = -dy, -dx, -k
    y = _iceil(y0)
    xady = _iceil(k) + y * dx
    x = -((-xady) // dy) - 1 if xady <= 0 else (xady - 1) // dy
    e = xady - x * dy
    if dx >= 0:
        signdx, stepx, edx = 1, dx // dy, dx % dy
    else:
        signdx, stepx, edx = -1, -((-dx) // dy), (-dx) % dy
        e = dy - e + 1
    # [height, x, stepx, signdx, e, dy, dx]
    return y + yi, [0, x + left + xi, stepx, signdx, e - dy, dy, edx]


def _step_around(v: int, incr: int, top: int) -> int:
    return top - 1 if v + incr < 0 else 0 if v + incr == top else v + incr


def _build_poly(vertices: list[list[float]], slopes: list[list], xi: int, yi: int):
    count = len(slopes)
    miny = maxy = vertices[0][1]
    top = bottom = 0
    for i in range(1, count):
        if vertices[i][1] < miny:
            top, miny = i, vertices[i][1]
        if vertices[i][1] >= maxy:
            bottom, maxy = i, vertices[i][1]
    clockwise, slopeoff = 1, 0
    j = _step_around(top, -1, count)
    if slopes[j][1] * slopes[top][0] > slopes[top][1] * slopes[j][0]:
        clockwise, slopeoff = -1, -1
    bottomy = _iceil(maxy) + yi
    sides = []
    topy = lasty = 0
    for side, (direction, off) in enumerate(((clockwise, slopeoff), (-clockwise, -1 if slopeoff == 0 else 0))):
        edges: list[list[int]] = []
        s = _step_around(top, off, count)
        i = top
        while i != bottom:
            if slopes[s][1] != 0:
                y, edge = _build_edge(vertices[i][1], slopes[s][2], slopes[s][0], slopes[s][1], xi, yi, side)
                if edges:
                    edges[-1][0] = y - lasty
                elif side == 0:
                    topy = y
                edges.append(edge)
                lasty = y
            i = _step_around(i, direction, count)
            s = _step_around(s, direction, count)
        if edges:
            edges[-1][0] = bottomy - lasty
        sides.append(edges)
    return topy, sides[1], sides[0]   # y, left edges, right edges


def _fill_poly(spans: list[tuple[int, int, int]], y: int, left: list[list[int]], right: list[list[int]]) -> None:
    li = ri = 0
    lh = rh = 0
    lx = le = lstep = lsign = ldy = ldx = 0
    rx = re_ = rstep = rsign = rdy = rdx = 0
    while (li < len(left) or lh) and (ri < len(right) or rh):
        if not lh and li < len(left):
            lh, lx, lstep, lsign, le, ldy, ldx = left[li]
            li += 1
        if not rh and ri < len(right):
            rh, rx, rstep, rsign, re_, rdy, rdx = right[ri]
            ri += 1
        height = min(lh, rh)
        lh -= height
        rh -= height
        if len(spans) + max(height, 0) > MAX_DASHES * 4:
            raise ProtocolError("display channel: a dashed stroke covers too many lines")
        for _ in range(height):
            if rx >= lx:
                spans.append((y, lx, rx - lx + 1))
            y += 1
            lx += lstep
            le += ldx
            if le > 0:
                lx += lsign
                le -= ldy
            rx += rstep
            re_ += rdx
            if re_ > 0:
                rx += rsign
                re_ -= rdy


def _line_join(spans, careful: bool, pleft: dict, pright: dict) -> None:
    if not careful:  # X's shortcut for one-pixel lines drawn straight (no span groups)
        if pleft["dx"] > 0 or (pleft["dx"] == 0 and pleft["dy"] > 0):
            return
        if pright["dx"] > 0 or (pright["dx"] == 0 and pright["dy"] > 0):
            return
    denom = -pleft["dx"] * float(pright["dy"]) + pright["dx"] * float(pleft["dy"])
    if denom == 0:
        return
    swap = denom <= 0
    face = pright if swap else pleft
    for key in ("xa", "ya", "dx", "dy"):
        face[key] = -face[key]
    vertices = [[pright["xa"], pright["ya"]], [0.0, 0.0], [pleft["xa"], pleft["ya"]]]
    slopes: list[list] = [[-pright["dy"], pright["dx"], 0.0], [pleft["dy"], -pleft["dx"], 0.0]]
    my = (pleft["dy"] * (pright["xa"] * pright["dy"] - pright["ya"] * pright["dx"])
          - pright["dy"] * (pleft["xa"] * pleft["dy"] - pleft["ya"] * pleft["dx"])) / denom
    if pleft["dy"] != 0:
        mx = pleft["xa"] + (my - pleft["ya"]) * float(pleft["dx"]) / float(pleft["dy"])
    else:
        mx = pright["xa"] + (my - pright["ya"]) * float(pright["dx"]) / float(pright["dy"])
    sign = -1 if swap else 1
    if (mx * mx + my * my) * 4 <= _SQSECANT:
        slopes.append([sign * pleft["dx"], sign * pleft["dy"], sign * pleft["k"]])
        vertices.append([mx, my])
        slopes.append([sign * pright["dx"], sign * pright["dy"], sign * pright["k"]])
    else:  # past the miter limit: a bevel
        dx, dy = pright["xa"] - pleft["xa"], pright["ya"] - pleft["ya"]
        scale = max(abs(dx), abs(dy))
        if scale == 0:
            return
        sdx, sdy = int((dx * 65536) / scale), int((dy * 65536) / scale)
        slopes.append([sdx, sdy, ((pleft["xa"] + pright["xa"]) * sdy - (pleft["ya"] + pright["ya"]) * sdx) / 2.0])
    y, left, right = _build_poly(vertices, slopes, pleft["x"], pleft["y"])
    _fill_poly(spans, y, left, right)


def _dash_segment(spans, state: dict, x1: int, y1: int, x2: int, y2: int) -> tuple[dict, dict]:
    dash = state["dash"]
    dx, dy = x2 - x1, y2 - y1
    index = state["index"]
    remain = dash[index] - state["offset"]
    half = 0.5
    if dx == 0:
        length, rdx, rdy = float(abs(dy)), 0.0, (half if dy >= 0 else -half)
    elif dy == 0:
        length, rdx, rdy = float(abs(dx)), (half if dx >= 0 else -half), 0.0
    else:
        length = math.hypot(dx, dy)
        rdx, rdy = half / length * dx, half / length * dy
    k = half * length
    left_remain = length
    slopes: list[list] = [[dx, dy, k], [-dy, dx, 0.0], [-dx, -dy, k], [dy, -dx, 0.0]]
    v = [[rdy, -rdx], [rdy, -rdx], [-rdy, rdx], [-rdy, rdx]]
    while left_remain > remain:
        state["polygons"] += 1
        if state["polygons"] > MAX_DASHES:
            raise ProtocolError(f"display channel: a dashed stroke of over {MAX_DASHES} dashes")
        ddx, ddy = (remain * dx) / length, (remain * dy) / length
        v[_RIGHT] = [v[_RIGHT][0] + ddx, v[_RIGHT][1] + ddy]
        v[_BOTTOM] = [v[_BOTTOM][0] + ddx, v[_BOTTOM][1] + ddy]
        slopes[_RIGHT][2] = v[_RIGHT][0] * dx + v[_RIGHT][1] * dy
        if not index & 1:
            y, left, right = _build_poly(v, slopes, x1, y1)
            _fill_poly(spans, y, left, right)
        left_remain -= remain
        index = (index + 1) % len(dash)
        remain = dash[index]
        v[_TOP] = list(v[_RIGHT])
        v[_LEFT] = list(v[_BOTTOM])
        slopes[_LEFT][2] = -slopes[_RIGHT][2]
    if not index & 1:
        v[_TOP] = [v[_TOP][0] - dx, v[_TOP][1] - dy]
        v[_LEFT] = [v[_LEFT][0] - dx, v[_LEFT][1] - dy]
        v[_RIGHT] = [rdy, -rdx]
        v[_BOTTOM] = [-rdy, rdx]
        slopes[_RIGHT][2] = 0.0
        slopes[_LEFT][2] += dx * dx + dy * dy
        y, left, right = _build_poly(v, slopes, x2, y2)
        _fill_poly(spans, y, left, right)
    remain = int(remain - left_remain)
    if remain == 0:
        index = (index + 1) % len(dash)
        remain = dash[index]
    state["index"], state["offset"] = index, dash[index] - remain
    return ({"x": x1, "y": y1, "dx": dx, "dy": dy, "xa": rdy, "ya": -rdx, "k": k},
            {"x": x2, "y": y2, "dx": -dx, "dy": -dy, "xa": -rdy, "ya": rdx, "k": k})


def dashed_spans(line: list[tuple[int, int]], dash: list[int], dash_offset: int,
                 careful: bool) -> list[tuple[int, int, int]]:
    """The spans (y, x, width) X's one-pixel-wide on-off dashed polyline covers (CapNotLast, JoinMiter);
    `dash` is the list of on and off lengths (1..255), `careful` whether the rop must touch pixels once."""
    if not dash or not any(dash):
        raise ProtocolError("display channel: a dashed stroke with no dash lengths")
    state: dict[str, Any] = {"dash": dash, "index": 0, "offset": 0, "polygons": 0}
    # miStepDash: start dash_offset pixels into the pattern
    dist = dash_offset
    if dist < dash[0]:
        state["offset"] = dist
    else:
        dist -= dash[0]
        index = 1 % len(dash)
        dist %= sum(dash)
        while dist >= dash[index]:
            dist -= dash[index]
            index = (index + 1) % len(dash)
        state["index"], state["offset"] = index, dist
    spans: list[tuple[int, int, int]] = []
    self_join = line[0] == line[-1]
    first, prev_fg, first_fg = True, False, False
    first_face: dict | None = None
    prev_right: dict | None = None   # set once a segment was drawn (X's somethingDrawn)
    end_fg = False
    for n, ((x1, y1), (x2, y2)) in enumerate(itertools.pairwise(line)):
        last = n == len(line) - 2
        if (x1, y1) != (x2, y2):
            prev_index = state["index"]
            left_face, right_face = _dash_segment(spans, state, x1, y1, x2, y2)
            start_fg = not prev_index & 1
            end_fg = bool((state["index"] & 1) ^ (state["offset"] != 0))
            if start_fg:
                if first or not prev_fg:
                    if first and self_join:
                        first_face, first_fg = dict(left_face), start_fg
                elif prev_right is not None:
                    _line_join(spans, careful, left_face, dict(prev_right))
            prev_right, prev_fg, first = right_face, end_fg, False
        if last and end_fg and self_join and first_fg and first_face is not None and prev_right is not None:
            _line_join(spans, careful, first_face, dict(prev_right))
    return spans
