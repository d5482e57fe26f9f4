"""LZ/GLZ and display decoding: correct on valid input, a ProtocolError (never a crash) on hostile input."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spicectl.errors import ProtocolError
from spicectl.spice import link
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.channel import Channel
from spicectl.spice.codecs.lz import MAGIC, RGB32, VERSION, GlzWindow, decode_glz, decode_lz
from spicectl.spice.display import ROP_PUT, Display
from spicectl.spice.link import LinkReply
from tests.display_messages import NO_MASK, base, fill, stream_create, surface_create

# every test here runs with the compiled decoder loops and with the pure-Python reference
pytestmark = pytest.mark.usefixtures("decoders")


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


def test_a_65535_square_surface_is_refused():
    with pytest.raises(ProtocolError, match="out of bounds"):
        Display().handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 65535, 65535))


def test_unknown_display_message_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="unknown message type 999"):
        Display().handle(999, b"")


def test_drawing_on_a_missing_surface_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="unknown surface 7"):
        Display().handle(M.MSG_DISPLAY_DRAW_FILL, fill(7, 0, 0, 1, 1, 0))


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
    head = base(sid, *box)
    image_at = len(head) + W.COPY.size
    copy = W.COPY.pack(src_bitmap=image_at, src_area=dict(top=0, left=0, bottom=h, right=w),
                       rop_descriptor=ROP_PUT, scale_mode=0, mask=NO_MASK)
    image = W.IMAGE_DESCRIPTOR.pack(id=1, type=M.IMAGE_BITMAP, flags=0, width=w, height=h)
    bitmap = W.BITMAP.pack(format=M.BITMAP_32BIT, flags=M.BITMAP_TOP_DOWN if top_down else 0, x=w, y=h,
                           stride=w * 4) + W.PALETTE_PTR.pack(palette=0)
    return head + copy + image + bitmap + pixels


def test_draw_copy_of_a_bottom_up_bitmap():
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 2, 2))
    px = bytes((0, 0, 255, 0)) * 2 + bytes((255, 0, 0, 0)) * 2  # first row red (BGRX), second blue
    d.handle(M.MSG_DISPLAY_DRAW_COPY, copy_bitmap(0, (0, 0, 2, 2), 2, 2, px, top_down=False))
    rgb = d.primary_rgb()
    assert (rgb[0] == [0, 0, 255]).all() and (rgb[1] == [255, 0, 0]).all()


@given(msg_type=st.sampled_from([302, 303, 304, 305, 306, 307, 308, 312, 313, 104, 105, 107, 314, 315, 317, 318]),
       body=st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_display_never_crashes_on_garbage(msg_type, body):
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 16, 16))
    try:
        d.handle(msg_type, body)
    except ProtocolError:
        pass


def linked_channel() -> Channel:
    return Channel(2, LinkReply(0, b"", {link.CAP_MINI_HEADER}, set()))


def test_oversize_message_length_is_refused_without_reading_it():
    ch = linked_channel()
    ch.receive_data(W.MINI_HEADER.pack(type=304, size=2 ** 31))
    with pytest.raises(ProtocolError, match="over the"):
        ch.next_message()


def test_truncated_stream_is_a_protocol_error():
    ch = linked_channel()
    ch.receive_data(W.MINI_HEADER.pack(type=304, size=100) + b"short")
    assert ch.next_message() is None
    ch.receive_eof()
    with pytest.raises(ProtocolError, match="closed"):
        ch.next_message()


def test_a_message_split_anywhere_arrives_whole():
    data = W.MINI_HEADER.pack(type=304, size=5) + b"hello" + W.MINI_HEADER.pack(type=302, size=0)
    for cut in range(len(data) + 1):
        ch = linked_channel()
        ch.receive_data(data[:cut])
        got = []
        while (msg := ch.next_message()) is not None:
            got.append(msg)
        ch.receive_data(data[cut:])
        while (msg := ch.next_message()) is not None:
            got.append(msg)
        assert got == [(304, b"hello"), (302, b"")], cut


def test_pings_are_answered_and_acks_sent_without_the_caller_seeing_them():
    ch = linked_channel()
    ping = W.PING.pack(id=7, timestamp=99)
    ch.receive_data(W.MINI_HEADER.pack(type=M.MSG_SET_ACK, size=8) + W.SET_ACK.pack(generation=3, window=2)
                    + W.MINI_HEADER.pack(type=M.MSG_PING, size=len(ping)) + ping
                    + W.MINI_HEADER.pack(type=304, size=0))
    assert ch.next_message() == (304, b"")
    assert ch.data_to_send() == (W.MINI_HEADER.pack(type=M.MSGC_ACK_SYNC, size=4) + W.ACK_SYNC.pack(generation=3)
                                 + W.MINI_HEADER.pack(type=M.MSGC_PONG, size=len(ping)) + ping
                                 + W.MINI_HEADER.pack(type=M.MSGC_ACK, size=0))
    assert ch.data_to_send() == b""


def test_link_handshake_keeps_bytes_after_the_result_for_the_channel():
    hs = link.Handshake(link.MAIN)
    assert hs.start()[:4] == b"REDQ"
    reply_body = W.LINK_REPLY.pack(error=0, pub_key=bytes(162), num_common_caps=0, num_channel_caps=0,
                                   caps_offset=W.LINK_REPLY.size)
    header = W.LINK_HEADER.pack(magic=link.MAGIC, major=2, minor=2, size=len(reply_body))
    with pytest.raises(ProtocolError, match="unreadable ticket public key"):
        hs.receive_data(header + reply_body)


def test_link_handshake_reports_a_refused_ticket_as_an_auth_error():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from spicectl.errors import AuthError

    der = rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs = link.Handshake(link.MAIN, password=b"secret")
    reply_body = W.LINK_REPLY.pack(error=0, pub_key=der.ljust(162, b"\0"), num_common_caps=0, num_channel_caps=0,
                                   caps_offset=W.LINK_REPLY.size)
    out = hs.receive_data(W.LINK_HEADER.pack(magic=link.MAGIC, major=2, minor=2, size=len(reply_body)) + reply_body)
    assert len(out) == 128  # the encrypted ticket, no mechanism word (the reply offered no auth selection)
    assert not hs.done
    with pytest.raises(AuthError, match="ticket is wrong"):
        hs.receive_data(W.LINK_RESULT.pack(error=link.LINK_ERR_PERMISSION_DENIED) + b"more")


def test_link_handshake_hands_leftover_bytes_to_the_channel():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    der = rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs = link.Handshake(link.MAIN)
    reply_body = W.LINK_REPLY.pack(error=0, pub_key=der.ljust(162, b"\0"), num_common_caps=1, num_channel_caps=0,
                                   caps_offset=W.LINK_REPLY.size) + struct.pack("<I", 1 << link.CAP_MINI_HEADER)
    hs.receive_data(W.LINK_HEADER.pack(magic=link.MAGIC, major=2, minor=2, size=len(reply_body)) + reply_body)
    message = W.MINI_HEADER.pack(type=103, size=2) + b"hi"
    hs.receive_data(W.LINK_RESULT.pack(error=0) + message)
    assert hs.done and hs.leftover == message
    ch = Channel(link.MAIN, hs.reply, leftover=hs.leftover)
    assert ch.next_message() == (103, b"hi")


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_link_reply_decoding_never_crashes(data):
    from spicectl.spice import link

    try:
        link.decode_link_header(data[:16])
        link.decode_link_reply(data[16:])
    except ProtocolError:
        pass


def quic_header(kind: int, w: int, h: int) -> bytes:
    from spicectl.spice.codecs import quic

    return struct.pack("<5I", quic.MAGIC, quic.VERSION, kind, w, h)


@given(kind=st.integers(1, 5), w=st.integers(1, 40), h=st.integers(1, 12), body=st.binary(min_size=0, max_size=600))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_quic_decoding_of_garbage_is_an_image_or_a_protocol_error(kind, w, h, body):
    from spicectl.spice.codecs.quic import decode_quic

    try:
        image = decode_quic(quic_header(kind, w, h) + body)
    except ProtocolError:
        return
    assert (image.width, image.height) == (w, h) and len(image.pixels) == w * h * 4


def test_quic_header_faults_are_protocol_errors():
    from spicectl.spice.codecs import quic

    for data, message in ((b"QUI", "truncated"), (quic_header(4, 1, 1).replace(b"QUIC", b"QUIX") + bytes(64), "magic"),
                          (quic_header(9, 1, 1) + bytes(64), "unknown type"),
                          (quic_header(4, 1 << 16, 1 << 16) + bytes(64), "out of bounds"),
                          (quic_header(4, 4096, 4096) + bytes(64), "too little data")):
        with pytest.raises(ProtocolError, match=message):
            quic.decode_quic(data)


def test_a_quic_image_claiming_a_huge_size_is_refused_before_allocating_it():
    import tracemalloc

    from spicectl.spice.codecs.quic import TYPE_RGB32, decode_quic

    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            decode_quic(quic_header(TYPE_RGB32, 8000, 8000) + bytes(4096))
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()


def test_lz4_decoder_reads_what_the_lz4_library_writes_across_dependent_blocks():
    lz4_block_lib = pytest.importorskip("lz4.block")
    from spicectl.spice.codecs.lz4 import FMT_32BIT, decode_lz4

    w, h = 37, 11
    rng = np.random.default_rng(7)
    bgrx = np.zeros((h, w, 4), np.uint8)
    bgrx[:, :, :3] = rng.integers(0, 4, (h, w, 3)) * 60  # few colours: the compressor finds matches
    raw = bgrx.tobytes()
    payload = bytes((1, FMT_32BIT))
    for start in range(0, len(raw), 500):  # several blocks, each compressed on its own
        block = lz4_block_lib.compress(raw[start:start + 500], store_size=False)
        payload += struct.pack(">I", len(block)) + block
    image = decode_lz4(payload, w, h)
    got = np.frombuffer(bytes(image.pixels), np.uint8).reshape(h, w, 4)
    assert (got[:, :, :3] == bgrx[:, :, :3]).all()


@given(data=st.binary(max_size=400), w=st.integers(1, 30), h=st.integers(1, 10))
@settings(max_examples=300, deadline=None)
def test_lz4_decoding_of_garbage_is_an_image_or_a_protocol_error(data, w, h):
    from spicectl.spice.codecs.lz4 import decode_lz4

    try:
        image = decode_lz4(data, w, h)
    except ProtocolError:
        return
    assert len(image.pixels) == w * h * 4


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_an_mjpeg_stream_frame_lands_in_its_box_within_its_clip():
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 32, 16))
    d.handle(M.MSG_DISPLAY_STREAM_CREATE, stream_create(0, 5, (0, 8, 16, 24), clips=[(0, 8, 16, 20)]))
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[:, :] = (200, 40, 40)
    data = jpeg_bytes(frame)
    d.handle(M.MSG_DISPLAY_STREAM_DATA,
             W.STREAM_DATA.pack(base=dict(id=5, multi_media_time=0), data_size=len(data)) + data)
    rgb = d.primary_rgb().astype(int)
    assert (abs(rgb[:, 8:20] - (200, 40, 40)) <= 8).all()  # JPEG is lossy: close, not equal
    assert rgb[:, :8].sum() == 0 and rgb[:, 20:].sum() == 0  # outside the box, and clipped away
    assert not d.warnings
    d.handle(M.MSG_DISPLAY_STREAM_DESTROY, W.STREAM_ID.pack(id=5))
    with pytest.raises(ProtocolError, match="unknown video stream 5"):
        d.handle(M.MSG_DISPLAY_STREAM_DATA,
                 W.STREAM_DATA.pack(base=dict(id=5, multi_media_time=0), data_size=len(data)) + data)


def test_a_bottom_up_stream_frame_is_drawn_the_right_way_up():
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 16, 16))
    d.handle(M.MSG_DISPLAY_STREAM_CREATE, stream_create(0, 1, (0, 0, 16, 16), top_down=False))
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[:8] = 255  # white on top as coded: the guest's bottom half
    data = jpeg_bytes(frame)
    d.handle(M.MSG_DISPLAY_STREAM_DATA,
             W.STREAM_DATA.pack(base=dict(id=1, multi_media_time=0), data_size=len(data)) + data)
    rgb = d.primary_rgb()
    assert rgb[12:].min() > 230 and rgb[:4].max() < 25


def test_agent_messages_cut_into_chunks_come_back_whole_and_in_order():
    from spicectl.spice import agent as A

    big = bytes(range(256)) * 20  # 5,120 bytes: three chunks
    chunks = A.AgentStream.chunks(A.CLIPBOARD, big) + A.AgentStream.chunks(A.REPLY, b"\1\0\0\0\1\0\0\0")
    assert all(len(c) <= A.MAX_CHUNK for c in chunks)
    stream = A.AgentStream()
    got: list = []
    for chunk in chunks:
        for part in (chunk[:7], chunk[7:]):  # the server may cut anywhere
            got.extend(stream.receive_chunk(part))
    assert got == [(A.CLIPBOARD, big), (A.REPLY, b"\1\0\0\0\1\0\0\0")]


def test_an_agent_message_of_another_protocol_or_too_large_is_refused():
    from spicectl.spice import agent as A

    with pytest.raises(ProtocolError, match="protocol 2"):
        list(A.AgentStream().receive_chunk(A.MESSAGE.pack(protocol=2, type=1, opaque=0, size=0)))
    with pytest.raises(ProtocolError, match="over the limit"):
        list(A.AgentStream().receive_chunk(A.MESSAGE.pack(protocol=1, type=1, opaque=0, size=1 << 30)))


def test_a_usbredir_hello_reads_back_and_anything_else_first_is_refused():
    from spicectl.spice import usbredir

    data = usbredir.hello("spicectl test")
    parser = usbredir.Parser()
    for i in range(len(data)):  # a byte at a time: the channel may cut anywhere
        parser.receive_data(data[i:i + 1])
    assert parser.peer is not None and parser.peer.version == "spicectl test"
    assert parser.peer.caps == set(usbredir.OUR_CAPS)
    with pytest.raises(ProtocolError, match="not hello"):
        usbredir.Parser().receive_data(usbredir.HEADER.pack(type=1, length=0, id=0))


def test_lz_rgb16_literals_widen_each_channel_as_spice_common_does():
    from spicectl.spice.codecs.lz import RGB16

    words = [0x7FFF, 0x0000, 0x7C00, 0x03E0, 0x001F, 0x4210]   # white, black, red, green, blue, a grey
    stream = lz_header(RGB16, len(words), 1, len(words) * 2) + bytes([len(words) - 1]) + b"".join(
        w.to_bytes(2, "big") for w in words)
    got = np.frombuffer(decode_lz(stream).tight(), np.uint8).reshape(len(words), 4)[:, :3]
    assert got.tolist() == [[255, 255, 255], [0, 0, 0], [0, 0, 255], [0, 255, 0], [255, 0, 0], [132, 132, 132]]
