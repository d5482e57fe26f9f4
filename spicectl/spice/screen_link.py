"""The screen of a session (`client.screen`): the display channel and, when asked, the cursor
channel, drawn into `Display` and `Cursor` (their sans-I/O state), and what callers wait for on them:
a settled frame, a screenshot, a frame that matches, a display that changed, a new monitor layout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from spicectl.errors import InvalidInput, ProtocolError, TimeoutExpired
from spicectl.spice import agent as A
from spicectl.spice import link
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.budget import Budget
from spicectl.spice.channel import Message
from spicectl.spice.cursor import Cursor
from spicectl.spice.display import GLZ_WINDOW_PIXELS, PIXMAP_CACHE_PIXELS, Display, Monitor
from spicectl.spice.transport import Connection

if TYPE_CHECKING:
    from spicectl.spice.agent_link import AgentLink
    from spicectl.spice.channel_io import Session

    class ScreenSession(Session, Protocol):
        agent: AgentLink   # set_monitors asks the guest's agent

# what this client draws: sized streams, monitor configs, LZ4 images, the video codecs it decodes (MJPEG,
# and with PyAV VP8, H.264, VP9, H.265), and Render composites where pixman is installed (a guest's driver
# composites only for clients that say so)
DISPLAY_CAPS = (M.DISPLAY_CAP_SIZED_STREAM, M.DISPLAY_CAP_MONITORS_CONFIG, M.DISPLAY_CAP_LZ4_COMPRESSION,
                M.DISPLAY_CAP_MULTI_CODEC, M.DISPLAY_CAP_PREF_VIDEO_CODEC_TYPE)


def display_caps() -> tuple[int, ...]:
    from spicectl.spice import pixman, video

    codecs = tuple(M.VIDEO_CODECS[code][1] for code in sorted(video.decodable()))
    return DISPLAY_CAPS + codecs + ((M.DISPLAY_CAP_COMPOSITE,) if pixman.available() else ())


class IncompleteScreen(ProtocolError):
    """Part of the screen could not be drawn by this client (and the caller did not allow that)."""


class ScreenLink:
    def __init__(self, session: ScreenSession, budget: Budget, *, allow_partial: bool = False,
                 observer: Callable[[Message], None] | None = None, prefer_video: Sequence[str] = ()) -> None:
        from spicectl.spice import video

        self.session = session
        # the video codecs to ask the server for first, best first: names of codecs this host decodes
        self.prefer_video: list[int] = []
        for name in prefer_video:
            try:
                code = video.codec_number(name)
            except ValueError:
                raise InvalidInput(f"unknown video codec {name!r}", hint="one of: " + ", ".join(
                    n for n, _, _ in M.VIDEO_CODECS.values())) from None
            if code not in video.decodable():
                raise InvalidInput(f"{name} video is not decoded here", hint="PyAV (pip install av) decodes it")
            self.prefer_video.append(code)
        # a frame with parts this client could not draw is an error unless the caller accepts it
        self.allow_partial = allow_partial
        self.display = Display(cache_pixels=PIXMAP_CACHE_PIXELS, glz_window_pixels=GLZ_WINDOW_PIXELS, budget=budget)
        self.cursor: Cursor | None = None          # the pointer's shape and place, with open(cursor=True)
        self.channel: Connection | None = None     # the display channel
        self.cursor_channel: Connection | None = None
        self.observer = observer  # sees every display message (bench/capture_frames.py records)
        self._changed = asyncio.Event()
        self._last_message = 0.0

    async def open(self, *, cursor: bool = False) -> list:
        """Link the display channel (and the cursor channel); return their loops, for the session to run."""
        available = self.session.channels_available
        if (link.DISPLAY, 0) not in available:
            raise ProtocolError("the guest has no display channel")
        self.channel = await self.session.open_channel(link.DISPLAY, 0, display_caps())
        if self.observer is not None:
            self.channel.observers.append(self.observer)
        self.channel.send(M.MSGC_DISPLAY_INIT, W.DISPLAY_INIT.pack(
            pixmap_cache_id=1, pixmap_cache_size=PIXMAP_CACHE_PIXELS,
            glz_dictionary_id=1, glz_dictionary_window_size=GLZ_WINDOW_PIXELS))
        if self.prefer_video and M.DISPLAY_CAP_PREF_VIDEO_CODEC_TYPE in self.channel.channel_caps:
            self.channel.send(M.MSGC_DISPLAY_PREFERRED_VIDEO_CODEC_TYPE,
                              bytes([len(self.prefer_video), *self.prefer_video]))
        await self.channel.flush()
        loops = [self._display_loop()]
        if cursor:
            if (link.CURSOR, 0) not in available:
                raise ProtocolError("the guest has no cursor channel")
            self.cursor = Cursor()
            self.cursor_channel = await self.session.open_channel(link.CURSOR, 0)
            loops.append(self._cursor_loop())
        return loops

    def close(self) -> None:
        for ch in (self.cursor_channel, self.channel):
            if ch is not None:
                ch.close()

    def wake(self) -> None:
        """Wake whoever waits on the screen (the session ended: they raise why)."""
        self._changed.set()

    async def _display_loop(self) -> None:
        assert self.channel is not None
        while True:
            msg_type, body = await self.channel.read()
            self.display.handle(msg_type, body)
            self._last_message = time.monotonic()
            self._changed.set()

    async def _cursor_loop(self) -> None:
        assert self.cursor_channel is not None and self.cursor is not None
        while True:
            msg_type, body = await self.cursor_channel.read()
            self.cursor.handle(msg_type, body)
            self._changed.set()

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
            self.session.raise_if_failed()
            now = time.monotonic()
            # the cursor channel's INIT says what the pointer is; a picture taken before it has none
            cursor_known = self.cursor is None or self.cursor.initialized
            if self.display.primary is not None and self.display.marked and cursor_known:
                first_seen = first_seen or now
                quiet = now - self._last_message >= settle
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

    async def changed(self) -> None:
        """Wait for display messages that arrived since the last call (raises what ended the client)."""
        await self._changed.wait()
        self._changed.clear()
        self.session.raise_if_failed()

    def _check_complete(self) -> None:
        missing = self.display.warnings | (self.cursor.warnings if self.cursor is not None else set())
        if missing and not self.allow_partial:
            raise IncompleteScreen("the screen could not be drawn completely: " + "; ".join(sorted(missing)),
                                   hint="--allow-partial saves what could be drawn")

    async def screenshot(self, *, settle: float = 0.1, timeout: float = 20.0, monitor: int | None = None,
                         cursor: bool = True):
        """A PIL image of the guest's screen (with the pointer drawn in, if connected with cursor=True and
        `cursor`); with `monitor`, just that monitor (0 is the first) of the several the screen may show."""
        from PIL import Image

        frame = await self.frame(settle=settle, timeout=timeout)
        if cursor and self.cursor is not None:
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
        caps = await self.session.agent.start()
        if A.CAP_MONITORS_CONFIG not in caps:
            raise ProtocolError("the guest's agent does not take monitor configurations")
        # spice-server hands the configuration to the QXL device when the guest's driver takes it there
        # (the agent then sees nothing and sends no reply): the display's monitors are the answer
        await self.session.agent.send(A.MONITORS_CONFIG, A.monitors_config(sizes))
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
