"""LZ/GLZ and display decoding: correct on valid input, a ProtocolError (never a crash) on hostile input."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice.codecs.lz import MAGIC, RGB32, VERSION, GlzWindow, decode_glz, decode_lz
from spicectl.spice.display import Display


def lz_header(image_type: int, w: int, h: int, stride: int, top_down: int = 1) -> bytes:
    return struct.pack(">7I", MAGIC, VERSION, image_type, w, h, stride, top_down)


def encode_rgb32(pixels: list[tuple[int, int, int]]) -> bytes:
    """A small LZ encoder for tests: literals, and runs as back-references of distance 1."""
    out = bytearray()
    i = 0
    while i < len(pixels):
        run = 1
        while i > 0 and i + run <= len(pixels) and run <= 6 and pixels[i + run - 1] == pixels[i - 1]:
            run += 1
        run -= 1
        if run >= 1:
            out += bytes(((run << 5) | 0, 0))  # length `run`, distance 1
            i += run
            continue
        lit = []
        while i < len(pixels) and len(lit) < 32 and not (lit and pixels[i] == pixels[i - 1]):
            lit.append(pixels[i])
            i += 1
        out.append(len(lit) - 1)
        for b, g, r in lit:
            out += bytes((b, g, r))
    return bytes(out)


colours = st.sampled_from([(0, 0, 0), (255, 255, 255), (10, 20, 30), (200, 100, 50)])


@given(w=st.integers(1, 12), h=st.integers(1, 12), data=st.data())
@settings(max_examples=150, deadline=None)
def test_lz_round_trip(w, h, data):
    pixels = data.draw(st.lists(colours, min_size=w * h, max_size=w * h))
    top_down = data.draw(st.booleans())
    stream = lz_header(RGB32, w, h, w * 4, int(top_down)) + encode_rgb32(pixels)
    decoded = decode_lz(stream)
    got = np.frombuffer(decoded.tight(), np.uint8).reshape(h, w, 4)[:, :, :3]
    want = np.array(pixels, np.uint8).reshape(h, w, 3)
    if not top_down:
        want = want[::-1]
    assert (got == want).all()


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_lz_never_crashes_on_garbage_after_a_valid_header(body):
    try:
        decode_lz(lz_header(RGB32, 7, 5, 28) + body)
    except ProtocolError:
        pass


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_lz_and_glz_never_crash_on_garbage(data):
    for fn in (lambda d: decode_lz(d), lambda d: decode_glz(d, GlzWindow(1 << 20))):
        try:
            fn(data)
        except ProtocolError:
            pass


@given(body=st.binary(max_size=200), image_type=st.integers(0, 15))
@settings(max_examples=300, deadline=None)
def test_glz_never_crashes_after_a_valid_header(body, image_type):
    header = struct.pack(">II", MAGIC, VERSION) + bytes((image_type | 0x10,)) + struct.pack(">3IQI", 6, 4, 24, 5, 3)
    try:
        decode_glz(header + body, GlzWindow(1 << 20))
    except ProtocolError:
        pass


def test_huge_lz_image_is_refused_before_allocating():
    with pytest.raises(ProtocolError, match="out of range|larger than"):
        decode_lz(lz_header(RGB32, 65535, 65535, 65535 * 4) + b"\x00" * 10)


def test_back_reference_before_the_start_is_refused():
    with pytest.raises(ProtocolError, match="outside the image"):
        decode_lz(lz_header(RGB32, 4, 1, 16) + bytes((0, 1, 2, 3, (3 << 5) | 0, 5)))


def test_glz_reference_to_a_missing_image_is_refused():
    header = struct.pack(">II", MAGIC, VERSION) + bytes((RGB32 | 0x10,)) + struct.pack(">3IQI", 2, 1, 8, 9, 1)
    # ctrl: len 1, pixel_flag 0, then pixel offset byte, then image_dist 1
    with pytest.raises(ProtocolError, match="not in the window"):
        decode_glz(header + bytes((0x20, 0x00, 0x01)), GlzWindow(1 << 20))


def surface_create(sid: int, w: int, h: int, primary: bool = True) -> bytes:
    return M.SURFACE_CREATE.pack(surface_id=sid, width=w, height=h, format=32, flags=int(primary))


def test_a_65535_square_surface_is_refused():
    with pytest.raises(ProtocolError, match="out of bounds"):
        Display().handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 65535, 65535))


def test_unknown_display_message_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="unknown message type 999"):
        Display().handle(999, b"")


def test_drawing_on_a_missing_surface_is_a_protocol_error():
    body = struct.pack("<I4iB", 7, 0, 0, 1, 1, 0)
    with pytest.raises(ProtocolError, match="unknown surface 7"):
        Display().handle(M.MSG_DISPLAY_DRAW_FILL, body + bytes(20))


def fill(sid, top, left, bottom, right, color, clips=()):
    base = struct.pack("<I4i", sid, top, left, bottom, right)
    clip = struct.pack("<BI", 1, len(clips)) + b"".join(struct.pack("<4i", *c) for c in clips) if clips else b"\0"
    return base + clip + struct.pack("<BIH", 1, color, 8) + struct.pack("<B2iI", 0, 0, 0, 0)


def test_fill_respects_box_and_clip_rectangles():
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 8, 4))
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 0, 0, 4, 8, 0x00FF0000, clips=[(1, 1, 3, 3)]))
    rgb = d.primary_rgb()
    assert (rgb[1:3, 1:3] == [255, 0, 0]).all()
    assert rgb[0].sum() == 0 and rgb[:, 3:].sum() == 0


def test_fill_outside_the_surface_is_clipped_not_crashing():
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 4, 4))
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, -100, -100, 100000, 100000, 0x0000FF00))
    assert (d.primary_rgb() == [0, 255, 0]).all()


def copy_bitmap(sid, box, w, h, pixels: bytes, top_down=True):
    base = struct.pack("<I4iB", sid, *box, 0)
    head_len = len(base) + 4 + 16 + 2 + 1 + 13
    copy = struct.pack("<I4iHB", head_len, 0, 0, h, w, 8, 0) + struct.pack("<B2iI", 0, 0, 0, 0)
    image = M.IMAGE_DESCRIPTOR.pack(id=1, type=M.IMAGE_BITMAP, flags=0, width=w, height=h)
    bitmap = M.BITMAP.pack(format=M.BITMAP_32BIT, flags=M.BITMAP_TOP_DOWN if top_down else 0, x=w, y=h,
                           stride=w * 4) + struct.pack("<I", 0)
    body = base + copy
    assert len(body) == head_len
    return body + image + bitmap + pixels


def test_draw_copy_of_a_bottom_up_bitmap():
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 2, 2))
    px = bytes((0, 0, 255, 0)) * 2 + bytes((255, 0, 0, 0)) * 2  # first row red (BGRX), second blue
    d.handle(M.MSG_DISPLAY_DRAW_COPY, copy_bitmap(0, (0, 0, 2, 2), 2, 2, px, top_down=False))
    rgb = d.primary_rgb()
    assert (rgb[0] == [0, 0, 255]).all() and (rgb[1] == [255, 0, 0]).all()


@given(msg_type=st.sampled_from([302, 303, 304, 305, 306, 307, 308, 312, 313, 104, 105, 107, 314, 315]),
       body=st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_display_never_crashes_on_garbage(msg_type, body):
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 16, 16))
    try:
        d.handle(msg_type, body)
    except ProtocolError:
        pass


def test_oversize_message_length_is_refused_without_reading_it():
    from spicectl.spice.channel import Channel
    from spicectl.spice.link import LinkReply

    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(M.MINI_HEADER.pack(type=304, size=2 ** 31))

        class W:
            def write(self, data): pass
            def close(self): pass

        ch = Channel(reader, W(), 2, LinkReply(0, b"", {3}, set()))
        with pytest.raises(ProtocolError, match="over the"):
            await ch.read()

    asyncio.run(go())


def test_truncated_stream_is_a_protocol_error():
    from spicectl.spice.channel import Channel
    from spicectl.spice.link import LinkReply

    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(M.MINI_HEADER.pack(type=304, size=100) + b"short")
        reader.feed_eof()
        ch = Channel(reader, None, 2, LinkReply(0, b"", {3}, set()))
        with pytest.raises(ProtocolError, match="closed"):
            await ch.read()

    asyncio.run(go())


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_link_reply_decoding_never_crashes(data):
    from spicectl.spice import link

    try:
        link.decode_link_header(data[:16])
        link.decode_link_reply(data[16:])
    except ProtocolError:
        pass
