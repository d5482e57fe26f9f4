"""A frame with parts the client could not draw is an error, never a plausible-looking picture."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spicectl.errors import InvalidInput, ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.client import Client
from spicectl.spice.screen_link import IncompleteScreen, ScreenLink
from tests.display_messages import solid, text

VECTOR_TEXT = text([(0, 0, 1, 1, b"")], 0, solid(0xFFFFFF))  # no raster flag: vector glyphs


def client_with_screen(**kwargs) -> ScreenLink:
    """The screen of a client that is not connected, with an 8x8 primary surface drawn."""
    screen = Client("127.0.0.1", port=5900, **kwargs).screen
    screen.display.surfaces[0] = np.zeros((8, 8, 4), np.uint8)
    screen.display.primary = 0
    screen.display.marked = True
    return screen


def test_a_complete_screen_is_returned():
    frame = asyncio.run(client_with_screen().frame(settle=0))
    assert frame.shape == (8, 8, 3)


def test_undrawn_vector_glyph_text_makes_the_frame_an_error_naming_it():
    client = client_with_screen()
    client.display.handle(M.MSG_DISPLAY_DRAW_TEXT, VECTOR_TEXT)
    with pytest.raises(IncompleteScreen, match="could not be drawn completely: text of vector glyphs is not drawn"):
        asyncio.run(client.frame(settle=0))


def unknown_codec_stream(client: Client) -> None:
    box = dict(top=0, left=0, bottom=8, right=8)
    client.display.handle(M.MSG_DISPLAY_STREAM_CREATE, W.STREAM_CREATE.pack(
        surface_id=0, id=3, flags=1, codec_type=9, stamp=0, stream_width=8, stream_height=8, src_width=8,
        src_height=8, dest=box, clip={"type": W.CLIP_TYPE_NONE}))
    client.display.handle(M.MSG_DISPLAY_STREAM_DATA, W.STREAM_DATA.pack(
        base=dict(id=3, multi_media_time=0), data_size=4) + b"av1?")


def test_a_video_codec_the_client_lacks_makes_the_frame_an_error():
    client = client_with_screen()
    unknown_codec_stream(client)
    with pytest.raises(IncompleteScreen, match="9 video is not decoded"):
        asyncio.run(client.frame(settle=0))


def test_allow_partial_returns_what_was_drawn():
    client = client_with_screen(allow_partial=True)
    unknown_codec_stream(client)
    assert asyncio.run(client.frame(settle=0)).shape == (8, 8, 3)


def monitors(*heads: tuple[int, int, int, int]) -> bytes:
    """MONITORS_CONFIG with heads (x, y, width, height) on surface 0; a 0x0 head is one turned off."""
    return W.MONITORS_CONFIG.pack(count=len(heads), max_allowed=4) + b"".join(
        W.HEAD.pack(monitor_id=i, surface_id=0, x=x, y=y, width=w, height=h, flags=0)
        for i, (x, y, w, h) in enumerate(heads))


def test_layout_messages_that_draw_nothing_are_not_missing_parts():
    client = client_with_screen()
    client.display.handle(M.MSG_DISPLAY_MONITORS_CONFIG, monitors((0, 0, 8, 8)))
    client.display.handle(M.MSG_DISPLAY_MODE, b"")
    assert asyncio.run(client.frame(settle=0)).shape == (8, 8, 3)


def test_a_screenshot_of_one_monitor_is_its_part_of_the_shared_surface():
    client = client_with_screen()
    client.display.surfaces[0][:, 5:, 2] = 200  # red on the second monitor (BGRX)
    client.display.handle(M.MSG_DISPLAY_MONITORS_CONFIG, monitors((0, 0, 5, 8), (5, 0, 3, 6), (0, 0, 0, 0)))
    assert [m.width for m in client.display.monitors] == [5, 3]  # the one turned off is not a monitor
    second = np.asarray(asyncio.run(client.screenshot(settle=0, monitor=1)))
    assert second.shape == (6, 3, 3) and (second[..., 0] == 200).all() and (second[..., 1:] == 0).all()
    assert asyncio.run(client.screenshot(settle=0, monitor=0)).size == (5, 8)
    with pytest.raises(InvalidInput, match="shows 2 monitors; there is no monitor 2"):
        asyncio.run(client.screenshot(settle=0, monitor=2))


def test_a_monitor_outside_the_surface_is_a_protocol_error():
    client = client_with_screen()
    client.display.handle(M.MSG_DISPLAY_MONITORS_CONFIG, monitors((4, 0, 8, 8)))
    with pytest.raises(ProtocolError, match="not on the screen"):
        asyncio.run(client.screenshot(settle=0, monitor=0))
    with pytest.raises(ProtocolError, match="over the limit"):
        client.display.handle(M.MSG_DISPLAY_MONITORS_CONFIG, W.MONITORS_CONFIG.pack(count=1000, max_allowed=4))


class StandInServer:
    """A SPICE server that sends a screen with text on it, which this client does not draw yet.

    QEMU sends nothing this client cannot draw any more (QUIC, LZ, GLZ, JPEG, MJPEG are decoded), so the
    command-line path of an incomplete screen is driven by this stand-in: link, ticket, main and display
    channels as the protocol has them.
    """

    def __init__(self) -> None:
        import threading

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(65537, 1024)
        self.pub = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._channel, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _channel(self, reader, writer) -> None:
        import struct

        from spicectl.spice import link

        try:
            head = W.LINK_HEADER.unpack(await reader.readexactly(W.LINK_HEADER.size))
            mess = W.LINK_MESS.unpack(await reader.readexactly(head["size"]))
            caps = struct.pack("<I", (1 << link.CAP_AUTH_SPICE) | (1 << link.CAP_MINI_HEADER))
            reply = W.LINK_REPLY.pack(error=0, pub_key=self.pub, num_common_caps=1, num_channel_caps=0,
                                      caps_offset=W.LINK_REPLY.size) + caps
            writer.write(W.LINK_HEADER.pack(magic=link.MAGIC, major=2, minor=2, size=len(reply)) + reply)
            await reader.readexactly(128)  # the ticket: any will do here
            writer.write(W.LINK_RESULT.pack(error=0))
            send = lambda t, body=b"": writer.write(W.MINI_HEADER.pack(type=t, size=len(body)) + body)  # noqa: E731
            if mess["channel_type"] == link.MAIN:
                send(M.MSG_MAIN_INIT, W.MAIN_INIT.pack(
                    session_id=1, display_channels_hint=1, supported_mouse_modes=1, current_mouse_mode=1,
                    agent_connected=0, agent_tokens=0, multi_media_time=0, ram_hint=0))
                await reader.read(64)  # attach-channels
                send(M.MSG_MAIN_CHANNELS_LIST, W.CHANNELS_LIST.pack(channels=[{"type": link.DISPLAY, "id": 0}]))
            elif mess["channel_type"] == link.DISPLAY:
                send(M.MSG_DISPLAY_SURFACE_CREATE, W.SURFACE_CREATE.pack(surface_id=0, width=64, height=48,
                                                                         format=32, flags=1))
                send(M.MSG_DISPLAY_DRAW_TEXT, VECTOR_TEXT)
                send(M.MSG_DISPLAY_MARK)
            await writer.drain()
            await reader.read()  # until the client goes
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def stand_in():
    server = StandInServer()
    yield server
    server.close()


def test_a_screenshot_the_client_cannot_draw_completely_exits_7_and_writes_nothing(run, stand_in, tmp_path):
    out = tmp_path / "shot.png"
    uri = f"spice://127.0.0.1:{stand_in.port}"
    r = run("screenshot", uri, "-o", str(out))
    assert r.exit_code == 7
    assert "could not be drawn completely: text of vector glyphs" in r.stderr and "--allow-partial" in r.stderr
    assert not out.exists()
    r = run("screenshot", uri, "-o", str(out), "--allow-partial")
    assert r.exit_code == 0 and out.exists()
