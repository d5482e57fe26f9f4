"""The cursor channel: shapes of each kind decoded, cached, placed by their hot spot; hostile data refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.cursor import Cursor


def cursor_set(x: int, y: int, kind: int, w: int, h: int, data: bytes, *, hot=(0, 0), flags=0, unique=1) -> bytes:
    head = W.CURSOR_SET.pack(position=dict(x=x, y=y), visible=1) + W.CURSOR_FLAGS.pack(flags=flags)
    if flags & M.CURSOR_FLAGS_NONE:
        return head
    return head + W.CURSOR_HEADER.pack(unique=unique, type=kind, width=w, height=h, hot_spot_x=hot[0],
                                       hot_spot_y=hot[1]) + data


def test_an_alpha_cursor_is_drawn_at_the_pointer_less_its_hot_spot():
    c = Cursor()
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[:, :] = (0, 0, 255, 255)  # opaque red (premultiplied: alpha 255)
    c.handle(M.MSG_CURSOR_SET, cursor_set(10, 20, M.CURSOR_TYPE_ALPHA, 4, 4, bgra.tobytes(), hot=(1, 2)))
    frame = c.composite(np.zeros((40, 40, 3), np.uint8))
    ys, xs = np.nonzero(frame.any(axis=2))
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (18, 21, 9, 12)
    assert (frame[18, 9] == (255, 0, 0)).all()


def test_a_mono_cursor_is_black_white_transparent_and_inverting():
    c = Cursor()
    # one row of 4 pixels: and bits 0,0,1,1 / xor bits 0,1,0,1
    data = bytes((0b00110000,)) + bytes((0b01010000,))
    c.handle(M.MSG_CURSOR_SET, cursor_set(0, 0, M.CURSOR_TYPE_MONO, 4, 1, data))
    frame = c.composite(np.full((1, 4, 3), 100, np.uint8))
    assert frame[0].tolist() == [[0, 0, 0], [255, 255, 255], [100, 100, 100], [155, 155, 155]]


def palette_bytes(colors: list[int], size: int) -> bytes:
    return np.array(colors + [0] * (size - len(colors)), "<u4").tobytes()


def test_a_color4_cursor_reads_nibbles_through_its_palette_and_its_and_mask():
    c = Cursor()
    # 3 pixels (odd width: the row pads to 2 bytes): indices 1, 2, 3; palette 1 red, 2 white, 3 blue
    pixels = bytes((0x12, 0x30))
    mask = bytes((0b01100000,))  # and bits 0,1,1: opaque, then white over "and" inverts, blue is see-through
    c.handle(M.MSG_CURSOR_SET, cursor_set(0, 0, M.CURSOR_TYPE_COLOR4, 3, 1,
                                          pixels + palette_bytes([0, 0xFF0000, 0xFFFFFF, 0x0000FF], 16) + mask))
    frame = c.composite(np.full((1, 3, 3), 100, np.uint8))
    assert frame[0].tolist() == [[255, 0, 0], [155, 155, 155], [100, 100, 100]]


def test_a_color8_cursor_reads_bytes_through_its_palette():
    c = Cursor()
    pixels = bytes((5, 6))
    c.handle(M.MSG_CURSOR_SET, cursor_set(0, 0, M.CURSOR_TYPE_COLOR8, 2, 1,
                                          pixels + palette_bytes([0] * 5 + [0x00FF00, 0x123456], 256) + b"\0"))
    assert c.composite(np.zeros((1, 2, 3), np.uint8))[0].tolist() == [[0, 255, 0], [0x12, 0x34, 0x56]]
    assert not c.warnings


def test_a_cached_shape_comes_back_and_moves_with_the_pointer():
    c = Cursor()
    data = np.full((2, 2, 4), 255, np.uint8).tobytes()
    c.handle(M.MSG_CURSOR_SET, cursor_set(1, 1, M.CURSOR_TYPE_ALPHA, 2, 2, data, flags=M.CURSOR_FLAGS_CACHE_ME,
                                          unique=77))
    c.handle(M.MSG_CURSOR_SET, cursor_set(0, 0, 0, 0, 0, b"", flags=M.CURSOR_FLAGS_NONE))
    assert c.shape is None
    c.handle(M.MSG_CURSOR_SET, cursor_set(5, 6, M.CURSOR_TYPE_ALPHA, 2, 2, b"", flags=M.CURSOR_FLAGS_FROM_CACHE,
                                          unique=77))
    c.handle(M.MSG_CURSOR_MOVE, W.CURSOR_MOVE.pack(position=dict(x=7, y=3)))
    frame = c.composite(np.zeros((10, 10, 3), np.uint8))
    assert frame[3:5, 7:9].min() == 255 and frame.sum() == 4 * 3 * 255
    c.handle(M.MSG_CURSOR_HIDE, b"")
    assert c.composite(np.zeros((10, 10, 3), np.uint8)).sum() == 0


def test_cursor_faults_are_protocol_errors():
    c = Cursor()
    with pytest.raises(ProtocolError, match="out of bounds"):
        c.handle(M.MSG_CURSOR_SET, cursor_set(0, 0, M.CURSOR_TYPE_ALPHA, 4000, 4000, b""))
    with pytest.raises(ProtocolError, match="needs"):
        c.handle(M.MSG_CURSOR_SET, cursor_set(0, 0, M.CURSOR_TYPE_ALPHA, 8, 8, b"short"))
    with pytest.raises(ProtocolError, match="not cached"):
        c.handle(M.MSG_CURSOR_SET, cursor_set(0, 0, 0, 1, 1, b"", flags=M.CURSOR_FLAGS_FROM_CACHE, unique=5))


@given(msg_type=st.integers(101, 108), body=st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_the_cursor_channel_never_crashes_on_garbage(msg_type, body):
    c = Cursor()
    try:
        c.handle(msg_type, body)
    except ProtocolError:
        pass
    c.composite(np.zeros((16, 16, 3), np.uint8))


def test_composite_says_whether_it_drew_a_pointer():
    c = Cursor()
    c.handle(M.MSG_CURSOR_INIT, W.CURSOR_INIT.pack(position=dict(x=0, y=0), trail_length=0, trail_frequency=0,
                                                   visible=1) + W.CURSOR_FLAGS.pack(flags=M.CURSOR_FLAGS_NONE))
    c.composite(np.zeros((4, 4, 3), np.uint8))
    assert not c.drawn
    c.handle(M.MSG_CURSOR_SET, cursor_set(1, 1, M.CURSOR_TYPE_ALPHA, 1, 1, bytes((9, 9, 9, 255))))
    c.composite(np.zeros((4, 4, 3), np.uint8))
    assert c.drawn
