"""A minimal headless SPICE client (asyncio): the session (link, the main channel, the channel list,
`open_channel` for any other) with its display and cursor. Each other channel's work lives in a
module of its own beside its sans-I/O state: `inputs_link` (`client.inputs`: keys, pointer),
`agent_link` (`client.agent`: the guest agent over the main channel), and functions that take the
session: `audio_link` (playback, record), `webdav_link` (folder sharing), `port_link`, `usbredir_link`.

    async with Client("127.0.0.1", tls_port=5901, password=b"...", ca_file="ca-cert.pem") as c:
        image = await c.screenshot()
        await c.send_keys("esc")
        await c.type_text("hello\\n")
        await c.wait_for(lambda img: ..., timeout=30)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from spicectl.errors import InvalidInput, ProtocolError, TimeoutExpired
from spicectl.spice import agent as A
from spicectl.spice import link
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.agent_link import AGENT_MESSAGES, AgentLink
from spicectl.spice.channel import Message
from spicectl.spice.cursor import Cursor
from spicectl.spice.display import GLZ_WINDOW_PIXELS, PIXMAP_CACHE_PIXELS, Display, Monitor
from spicectl.spice.inputs_link import INPUTS_CAP_KEY_SCANCODE, InputsLink
from spicectl.spice.transport import Connection, Transport, open_stream
from spicectl.spice.transport import link as link_over
from spicectl.spice.wire import caps_bits

Opener = Callable[[int], Awaitable[Transport]]

if TYPE_CHECKING:
    pass

log = logging.getLogger("spicectl.spice")

# what this client draws: sized streams, monitor configs, LZ4 images, the video codecs it decodes (MJPEG,
# and with PyAV VP8, H.264, VP9, H.265), and Render composites where pixman is installed (a guest's driver
# composites only for clients that say so)
DISPLAY_CAPS = (M.DISPLAY_CAP_SIZED_STREAM, M.DISPLAY_CAP_MONITORS_CONFIG, M.DISPLAY_CAP_LZ4_COMPRESSION,
                M.DISPLAY_CAP_MULTI_CODEC, M.DISPLAY_CAP_PREF_VIDEO_CODEC_TYPE)


def display_caps() -> tuple[int, ...]:
    from spicectl.spice import pixman, video

    codecs = tuple(M.VIDEO_CODECS[code][1] for code in sorted(video.decodable()))
    return DISPLAY_CAPS + codecs + ((M.DISPLAY_CAP_COMPOSITE,) if pixman.available() else ())


CONNECT_TIMEOUT = 15.0


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Trusts only `ca_file` (or the system's CAs) and checks the host name: never unverified."""
    return ssl.create_default_context(cafile=ca_file)


class IncompleteScreen(ProtocolError):
    """The server sent drawing this client cannot do yet: a picture of the screen would be wrong."""


class Client:
    def __init__(self, host: str, *, port: int | None = None, tls_port: int | None = None,
                 password: bytes | None = None, ca_file: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 host_subject: str | None = None, opener: Opener | None = None,
                 allow_partial: bool = False, display_observer: Callable[[Message], None] | None = None,
                 prefer_video: Sequence[str] = ()) -> None:
        if port is None and tls_port is None:
            raise ValueError("give port or tls_port")
        from spicectl.spice import video

        # the video codecs to ask the server for first, best first: names of codecs this host decodes
        self.prefer_video = []
        for name in prefer_video:
            try:
                code = video.codec_number(name)
            except ValueError:
                raise InvalidInput(f"unknown video codec {name!r}", hint="one of: " + ", ".join(
                    n for n, _, _ in M.VIDEO_CODECS.values())) from None
            if code not in video.decodable():
                raise InvalidInput(f"{name} video is not decoded here", hint="PyAV (pip install av) decodes it")
            self.prefer_video.append(code)
        self.host = host
        self.port = port
        self.tls_port = tls_port
        self.password = password
        self.ssl_context = ssl_context or (tls_context(ca_file) if tls_port else None)
        self.server_hostname = server_hostname or host
        self.host_subject = host_subject
        self.opener = opener  # for proxies: async (channel_type) -> Transport
        # a frame with parts this client could not draw is an error unless the caller accepts it
        self.allow_partial = allow_partial
        self.display = Display(cache_pixels=PIXMAP_CACHE_PIXELS, glz_window_pixels=GLZ_WINDOW_PIXELS)
        self.cursor: Cursor | None = None          # the pointer's shape and place, with connect(cursor=True)
        self.cursor_channel: Connection | None = None
        self.display_observer = display_observer  # sees every display message (bench/capture_frames.py records)
        self.session_id = 0
        self.channels_available: set[tuple[int, int]] = set()
        self.main: Connection | None = None
        self.inputs = InputsLink(self)   # keys and the pointer, on the inputs channel
        self.display_channel: Connection | None = None
        self._tasks: list[asyncio.Task] = []
        self._changed = asyncio.Event()
        self._last_display_message = 0.0
        self._error: BaseException | None = None
        self._init = asyncio.Event()
        self._channels_listed = asyncio.Event()
        self._inputs_ready = asyncio.Event()
        self.agent = AgentLink(self)   # the guest agent, over the main channel

    # --- connection -----------------------------------------------------------------
    async def _open_transport(self, channel_type: int) -> Transport:
        if self.opener is not None:
            return await self.opener(channel_type)
        if self.tls_port:
            return await open_stream(self.host, self.tls_port, ssl_context=self.ssl_context,
                                     server_hostname=self.server_hostname)
        assert self.port is not None
        return await open_stream(self.host, self.port)

    async def open_channel(self, channel_type: int, channel_id: int = 0, caps: tuple[int, ...] = ()) -> Connection:
        """Link one more channel of this session (its connection id, the same server and ticket)."""
        try:
            transport = await asyncio.wait_for(self._open_transport(channel_type), CONNECT_TIMEOUT)
        except TimeoutError:
            raise TimeoutExpired(f"connecting to {self.host} timed out") from None
        except ssl.SSLCertVerificationError as exc:
            raise ProtocolError(f"the server's TLS certificate was refused: {exc.verify_message}") from None
        except OSError as exc:
            raise ProtocolError(f"cannot connect to {self.host}:{self.tls_port or self.port}: {exc.strerror or exc}") \
                from None
        der = transport.peer_certificate()
        if self.host_subject and der is not None:
            # (through the WebSocket proxy there is no TLS here: the proxy verifies the guest)
            self._check_subject(der, self.host_subject)
        handshake = link.Handshake(channel_type, channel_id, self.session_id, password=self.password,
                                   channel_caps=caps)
        try:
            conn = await asyncio.wait_for(link_over(transport, handshake), CONNECT_TIMEOUT)
        except TimeoutError:
            transport.close()
            raise TimeoutExpired(f"{handshake.name} channel: link timed out") from None
        except BaseException:
            transport.close()
            raise
        return conn

    @staticmethod
    def _check_subject(der: bytes, expected: str) -> None:
        from spicectl.pki.names import host_subject_of

        subject = host_subject_of(der)
        if subject.replace(" ", "") != expected.replace(" ", ""):
            raise ProtocolError(f"server certificate subject {subject!r} is not {expected!r}")

    async def connect(self, *, display: bool = True, inputs: bool = True, cursor: bool = False) -> Client:
        self.main = await self.open_channel(link.MAIN)
        self._spawn(self._main_loop())
        await self.wait_event(self._init, "the main channel's init message")
        self.main.send(M.MSGC_MAIN_ATTACH_CHANNELS)
        await self.main.flush()
        await self.wait_event(self._channels_listed, "the channel list")
        if display:
            if (link.DISPLAY, 0) not in self.channels_available:
                raise ProtocolError("the guest has no display channel")
            self.display_channel = await self.open_channel(link.DISPLAY, 0, display_caps())
            if self.display_observer is not None:
                self.display_channel.observers.append(self.display_observer)
            self.display_channel.send(M.MSGC_DISPLAY_INIT, W.DISPLAY_INIT.pack(
                pixmap_cache_id=1, pixmap_cache_size=PIXMAP_CACHE_PIXELS,
                glz_dictionary_id=1, glz_dictionary_window_size=GLZ_WINDOW_PIXELS))
            if self.prefer_video and M.DISPLAY_CAP_PREF_VIDEO_CODEC_TYPE in self.display_channel.channel_caps:
                self.display_channel.send(M.MSGC_DISPLAY_PREFERRED_VIDEO_CODEC_TYPE,
                                          bytes([len(self.prefer_video), *self.prefer_video]))
            await self.display_channel.flush()
            self._spawn(self._display_loop())
        if cursor:
            if (link.CURSOR, 0) not in self.channels_available:
                raise ProtocolError("the guest has no cursor channel")
            self.cursor = Cursor()
            self.cursor_channel = await self.open_channel(link.CURSOR, 0)
            self._spawn(self._cursor_loop())
        if inputs and (link.INPUTS, 0) in self.channels_available:
            self.inputs.channel = await self.open_channel(link.INPUTS, 0, (INPUTS_CAP_KEY_SCANCODE,))
            self._spawn(self.inputs.run(self._inputs_ready))
            await self.wait_event(self._inputs_ready, "the inputs channel")
        return self

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for ch in (self.inputs.channel, self.cursor_channel, self.display_channel, self.main):
            if ch is not None:
                ch.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _spawn(self, coro) -> None:
        # a task of its own (not a wrapper coroutine): one cancelled before it ran leaves no coroutine
        # that was never awaited
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._task_ended)
        self._tasks.append(task)

    def _task_ended(self, task: asyncio.Future) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._error = task.exception()  # surfaced to whoever waits next
        self._changed.set()
        for ev in (self._init, self._channels_listed, self._inputs_ready):
            ev.set()
        self.agent.wake()
        self.inputs.wake()

    @property
    def failed(self) -> bool:
        """A channel task of this session ended with an error: the session is no use any more."""
        return self._error is not None

    def raise_if_failed(self) -> None:
        """Raise what ended a channel task of this session, if one ended so."""
        if self._error is not None:
            raise self._error

    async def wait_event(self, event: asyncio.Event, what: str, timeout: float = CONNECT_TIMEOUT) -> None:
        """Wait for `event` (TimeoutExpired naming `what` after `timeout`), then raise what ended the session."""
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            raise TimeoutExpired(f"timed out waiting for {what}") from None
        self.raise_if_failed()

    # --- channel loops ------------------------------------------------------------------
    async def _main_loop(self) -> None:
        assert self.main is not None
        while True:
            msg_type, body = await self.main.read()
            if msg_type == M.MSG_MAIN_INIT:
                init = W.MAIN_INIT.unpack(body)
                self.agent.init(bool(init["agent_connected"]), init["agent_tokens"])
                self.session_id = init["session_id"]
                self.inputs.mouse_mode_is(init["supported_mouse_modes"], init["current_mouse_mode"])
                self._init.set()
            elif msg_type == M.MSG_MAIN_CHANNELS_LIST:
                listed = W.CHANNELS_LIST.unpack(body)["channels"]
                self.channels_available = {(c["type"], c["id"]) for c in listed}
                self._channels_listed.set()
            elif msg_type in AGENT_MESSAGES:
                await self.agent.handle(msg_type, body)
            elif msg_type == M.MSG_MAIN_MOUSE_MODE:
                mode = W.MAIN_MOUSE_MODE.unpack(body)
                self.inputs.mouse_mode_is(mode["supported_modes"], mode["current_mode"])

    async def _display_loop(self) -> None:
        assert self.display_channel is not None
        while True:
            msg_type, body = await self.display_channel.read()
            self.display.handle(msg_type, body)
            self._last_display_message = time.monotonic()
            self._changed.set()

    async def _cursor_loop(self) -> None:
        assert self.cursor_channel is not None and self.cursor is not None
        while True:
            msg_type, body = await self.cursor_channel.read()
            self.cursor.handle(msg_type, body)
            self._changed.set()

    # --- display ------------------------------------------------------------------
    async def frame(self, *, settle: float = 0.1, max_wait: float = 2.0, timeout: float = 20.0):
        """The primary surface as an RGB numpy array.

        On connecting, the server sends the whole surface and then MARK, so
        from MARK on the surface is the guest's screen. Waits for that, then
        until updates pause for `settle` seconds, but no longer than
        `max_wait` (a blinking cursor or a busy screen never pauses).
        """
        deadline = time.monotonic() + timeout
        first_seen = None
        while True:
            self.raise_if_failed()
            now = time.monotonic()
            # the cursor channel's INIT says what the pointer is; a picture taken before it has none
            cursor_known = self.cursor is None or self.cursor.initialized
            if self.display.primary is not None and self.display.marked and cursor_known:
                first_seen = first_seen or now
                quiet = now - self._last_display_message >= settle
                if quiet or now - first_seen >= max_wait:
                    self._check_complete()
                    return self.display.primary_rgb()
            elif now > deadline:
                what = "pointer state" if self.display.marked else "display surface"
                raise TimeoutExpired(f"no {what} from the guest within {timeout:g}s")
            self._changed.clear()
            wait = settle if self.display.primary is not None else deadline - now
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.01, wait))
            except TimeoutError:
                pass

    async def display_changed(self) -> None:
        """Wait for display messages that arrived since the last call (raises what ended the client)."""
        await self._changed.wait()
        self._changed.clear()
        self.raise_if_failed()

    def _check_complete(self) -> None:
        missing = self.display.warnings | (self.cursor.warnings if self.cursor is not None else set())
        if missing and not self.allow_partial:
            raise IncompleteScreen("the screen could not be drawn completely: " + "; ".join(sorted(missing)),
                                   hint="--allow-partial saves what could be drawn")

    async def screenshot(self, *, settle: float = 0.1, timeout: float = 20.0, monitor: int | None = None):
        """A PIL image of the guest's screen (with the pointer drawn in, if connected with cursor=True);
        with `monitor`, just that monitor (0 is the first) of the several the screen may show."""
        from PIL import Image

        frame = await self.frame(settle=settle, timeout=timeout)
        if self.cursor is not None:
            frame = self.cursor.composite(frame)
        if monitor is not None:
            frame = self._monitor_part(frame, monitor)
        return Image.fromarray(frame, "RGB")

    def _monitor_part(self, frame, index: int):
        monitors = self.display.monitors or [Monitor(0, self.display.primary or 0, 0, 0, frame.shape[1],
                                                     frame.shape[0])]
        if not 0 <= index < len(monitors):
            raise InvalidInput(f"the guest shows {len(monitors)} monitor{'s' if len(monitors) != 1 else ''}; "
                               f"there is no monitor {index}", hint="monitors count from 0")
        m = monitors[index]
        if m.surface_id != self.display.primary or m.x + m.width > frame.shape[1] or m.y + m.height > frame.shape[0]:
            raise ProtocolError(f"monitor {index} ({m.width}x{m.height}+{m.x}+{m.y} on surface {m.surface_id}) is not "
                                "on the screen this client draws")
        return frame[m.y:m.y + m.height, m.x:m.x + m.width].copy()

    async def wait_for(self, predicate: Callable, *, timeout: float = 60.0, settle: float = 0.2):
        """Wait until predicate(frame) is true for a settled frame; return that frame (numpy RGB)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout(last, timeout)
            last = await self.frame(settle=settle, timeout=max(remaining, 0.1))
            if predicate(last):
                return last
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.05, min(1.0, deadline - time.monotonic())))
            except TimeoutError:
                pass

    # --- monitors, through the agent -------------------------------------------------------
    async def resize(self, width: int, height: int, *, timeout: float = 60) -> None:
        """Ask the guest agent for a WIDTHxHEIGHT screen; return once the display has that size."""
        await self.set_monitors([(width, height)], timeout=timeout)

    async def set_monitors(self, sizes: Sequence[tuple[int, int]], *, timeout: float = 60) -> list[Monitor]:
        """Ask the guest agent for monitors of these sizes, side by side from the left; return the
        monitors once the display shows them so."""
        caps = await self.agent.start()
        if A.CAP_MONITORS_CONFIG not in caps:
            raise ProtocolError("the guest's agent does not take monitor configurations")
        # spice-server hands the configuration to the QXL device when the guest's driver takes it there
        # (the agent then sees nothing and sends no reply): the display's monitors are the answer
        await self.agent.send(A.MONITORS_CONFIG, A.monitors_config(sizes))
        wanted, x = [], 0
        for width, height in sizes:
            wanted.append((x, 0, width, height))
            x += width
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.frame(timeout=max(1.0, deadline - time.monotonic()))
            shown = [(m.x, m.y, m.width, m.height) for m in self.display.monitors]
            if len(sizes) == 1 and not shown:
                shown = [(0, 0, frame.shape[1], frame.shape[0])]  # a server that names no monitors: the surface
            if shown == wanted and frame.shape[:2] == (max(h for _w, h in sizes), x):
                return list(self.display.monitors)
            if time.monotonic() > deadline:
                said = ", ".join(f"{w}x{h}+{mx}+{my}" for mx, my, w, h in shown) or "none"
                raise TimeoutExpired(f"the guest's screen is {frame.shape[1]}x{frame.shape[0]} with monitors "
                                     f"{said}, not as asked, after {timeout:g}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 1.0)
            except TimeoutError:
                pass

class _Timeout(TimeoutExpired):
    """A wait that ran out; carries the last frame seen (None if none arrived) for the log."""

    def __init__(self, last_frame, timeout: float) -> None:
        super().__init__(f"the screen did not match within {timeout:g}s")
        self.last_frame = last_frame


__all__ = ["Client", "tls_context", "caps_bits"]
