"""`spicectl view`: a minimal viewer window (Tk) over spicectl's SPICE client.

Tk runs in a thread of its own and the client stays on the caller's asyncio loop, where a
per-session proxy may run beside it. The window hands what the user does to the loop with
call_soon_threadsafe; the loop hands frames to the window through a one-frame slot (a newer
frame replaces one not drawn yet, so a slow window skips frames instead of falling behind)
and everything else through a queue the window polls.

Tk comes with Python (Debian: python3-tk) and draws through Pillow's ImageTk: no toolkit to
install beyond what the client needs. The guest's sound plays through `sound.Speaker` (PortAudio)
when the host has it; without it the window opens all the same, and says why there is no sound.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from spicectl.errors import EnvironmentProblem, SpicectlError
from spicectl.spice import messages as M

log = logging.getLogger("spicectl.viewer")

RELEASE_KEYS = "Shift+F12"   # remote-viewer's default release-cursor combination
FRAME_INTERVAL = 1 / 60      # frames handed to the window at most this often
RESIZE_DEBOUNCE_MS = 400     # a window being dragged asks the guest once it rests
POLL_MS = 8
BUTTONS = {1: "left", 2: "middle", 3: "right", 4: "up", 5: "down"}
SHIFT_MASK = 0x1


# what the window tells the loop (from its thread), and what the loop tells the window
@dataclass(frozen=True)
class Key:
    evdev: int
    down: bool


@dataclass(frozen=True)
class Move:
    x: int
    y: int


@dataclass(frozen=True)
class Button:
    name: str    # BUTTONS' values
    down: bool


@dataclass(frozen=True)
class Resize:
    width: int
    height: int


@dataclass(frozen=True)
class Offer:
    """Text on this host's clipboard, for the guest to paste."""

    text: str


@dataclass(frozen=True)
class Shown:
    """The first frame is on the screen."""


@dataclass(frozen=True)
class Closed:
    pass


Event = Key | Move | Button | Resize | Offer | Shown | Closed


@dataclass(frozen=True)
class GuestText:
    """Text copied in the guest, for this host's clipboard."""

    text: str


@dataclass(frozen=True)
class Close:
    pass


@dataclass
class ViewStats:
    """What a viewing session did: frames handed to the window and drawn, display messages received."""

    frames_offered: int = 0
    frames_drawn: int = 0
    display_messages: int = 0
    stream_frames: int = 0       # video frames the server sent (stream data messages)
    seconds: float = 0.0
    cpu_seconds: float = 0.0     # this process's, window and client together
    audio_seconds: float = 0.0   # of the guest's sound handed to the host's output
    share_connections: int = 0   # guest connections to the shared folder


class _FrameSlot:
    """The newest frame not yet drawn (the loop puts, the window takes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Any = None

    def put(self, frame: Any) -> None:
        with self._lock:
            self._frame = frame

    def take(self) -> Any:
        with self._lock:
            frame, self._frame = self._frame, None
        return frame


def tk_available() -> bool:
    try:
        import tkinter  # noqa: F401

        from PIL import ImageTk  # noqa: F401
    except ImportError:
        return False
    return True


async def view(client, title: str, *, on_shown: Callable[[], None] | None = None,
               close_after: float | None = None, sound: bool = True, audio_device: str | None = None,
               share: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] | None = None,
               on_note: Callable[[str], None] = log.warning) -> ViewStats:
    """Show `client`'s display in a window until the user closes it (or `close_after` seconds pass);
    keyboard, mouse, resize and clipboard go to the guest (the last two through its agent, when one runs),
    with `sound` its playback to this host's output, and with `share` (a WebDAV server's connector, see
    `webdav_link.serve_webdav`) a folder to its spice-webdavd. `on_note` hears why something is missing."""
    if not tk_available():
        raise EnvironmentProblem("the viewer needs Tk (tkinter)", hint="apt-get install python3-tk")
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()
    slot = _FrameSlot()
    to_window: queue.Queue[GuestText | Close] = queue.Queue()
    stats = ViewStats()
    counted = client.display_observer

    def count(msg) -> None:
        stats.display_messages += 1
        if msg[0] in (M.MSG_DISPLAY_STREAM_DATA, M.MSG_DISPLAY_STREAM_DATA_SIZED):
            stats.stream_frames += 1
        if counted is not None:
            counted(msg)
    if client.display_channel is not None:
        client.display_channel.observers.append(count)

    def post(event: Event) -> None:  # from the window's thread
        loop.call_soon_threadsafe(events.put_nowait, event)

    window = threading.Thread(target=_Window.run, args=(title, post, slot, to_window, stats), daemon=True,
                              name="spicectl-viewer")
    began, cpu = time.monotonic(), time.process_time()
    window.start()
    tasks: list[asyncio.Future] = [asyncio.ensure_future(_frames(client, slot, stats))]
    if client.agent.connected:
        tasks.append(asyncio.ensure_future(_clipboard(client, to_window)))
    if sound:
        from spicectl.session.sound import play_guest_sound

        def heard(seconds: float) -> None:
            stats.audio_seconds += seconds

        tasks.append(asyncio.ensure_future(play_guest_sound(client, audio_device, on_note, heard)))
    if share is not None:
        tasks.append(asyncio.ensure_future(_share(client, share, stats, on_note)))
    resizing: asyncio.Task | None = None
    if close_after is not None:
        loop.call_later(close_after, events.put_nowait, Closed())
    try:
        while True:
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({getter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {getter}:
                tasks.remove(task)
                task.result()  # a client failure ends the session with its error
            if getter not in done:
                getter.cancel()
                continue
            match getter.result():
                case Closed():
                    break
                case Shown():
                    if on_shown is not None:
                        on_shown()
                case Key(evdev, down):
                    await _key(client, evdev, down)
                case Move(x, y):
                    await client.inputs.mouse_move(x, y)
                case Button(name, down):
                    await client.inputs.mouse_button(name, down)
                case Resize(width, height) if client.agent.connected:
                    if resizing is not None:
                        resizing.cancel()
                    resizing = asyncio.ensure_future(_resize(client, width, height))
                case Offer(text) if client.agent.connected:
                    await client.agent.clipboard_offer(text)
    finally:
        to_window.put(Close())
        for task in [*tasks, *([resizing] if resizing else [])]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(window.join, 5)
        stats.seconds = time.monotonic() - began
        stats.cpu_seconds = time.process_time() - cpu
    return stats


async def _frames(client, slot: _FrameSlot, stats: ViewStats) -> None:
    """Hand the window the guest's screen whenever it changed, at most every FRAME_INTERVAL."""
    while True:
        await client.display_changed()
        frame = client.display.primary_rgb()
        if frame is not None:
            slot.put(frame)
            stats.frames_offered += 1
        await asyncio.sleep(FRAME_INTERVAL)


async def _share(client, connect, stats: ViewStats, on_note: Callable[[str], None]) -> None:
    def counted(n: int) -> None:
        stats.share_connections = n

    try:
        from spicectl.spice.webdav_link import serve_webdav

        await serve_webdav(client, connect, on_connection=counted)
    except SpicectlError as exc:  # the window goes on without the folder
        on_note(f"not sharing the folder: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))


async def _key(client, evdev: int, down: bool) -> None:
    from spicectl.spice.keys import scancode_from_evdev

    scancode = scancode_from_evdev(evdev)
    if scancode is not None:
        await (client.inputs.key_down(scancode) if down else client.inputs.key_up(scancode))


async def _resize(client, width: int, height: int) -> None:
    frame = client.display.primary_rgb()
    if frame is not None and frame.shape[:2] == (height, width):
        return
    try:
        await client.resize(max(320, width), max(200, height), timeout=30)
    except Exception as exc:  # the window keeps its size; the guest keeps its own
        log.info("the guest did not take %dx%d: %s", width, height, exc)


async def _clipboard(client, to_window: queue.Queue[GuestText | Close]) -> None:
    try:
        await client.agent.clipboard_sync(lambda text: to_window.put(GuestText(text)))
    except Exception as exc:  # the view goes on without a shared clipboard
        log.info("clipboard sharing stopped: %s", exc)


class _Window:
    """The Tk side; every Tk call happens in the thread that runs `run`."""

    def __init__(self, title: str, post: Callable[[Event], None], slot: _FrameSlot,
                 inbox: queue.Queue[GuestText | Close], stats: ViewStats) -> None:
        import tkinter as tk

        self.title, self.post, self.slot, self.inbox, self.stats = title, post, slot, inbox, stats
        self.tk = tk
        self.root = tk.Tk()
        self.root.title(title)
        self.root.configure(background="black")
        self.screen = tk.Label(self.root, borderwidth=0, highlightthickness=0, background="black",
                               cursor="crosshair")
        self.screen.pack(fill="both", expand=True)
        self.photo: Any = None
        self.size: tuple[int, int] | None = None   # the guest's screen, as last drawn
        self.grabbed = False
        self.clipboard: str | None = None          # what both sides hold: not offered back
        self.resize_job: str | None = None
        self.shown = False

    @classmethod
    def run(cls, title: str, post: Callable[[Event], None], slot: _FrameSlot,
            inbox: queue.Queue[GuestText | Close], stats: ViewStats) -> None:
        window = cls(title, post, slot, inbox, stats)
        try:
            window.loop()
        finally:
            post(Closed())
            # Tcl's interpreter must be freed in the thread that made it, not at exit in the main thread
            import gc

            window.__dict__.clear()
            del window
            gc.collect()

    def loop(self) -> None:
        root, screen = self.root, self.screen
        root.bind("<KeyPress>", lambda e: self.on_key(e, True))
        root.bind("<KeyRelease>", lambda e: self.on_key(e, False))
        screen.bind("<Motion>", lambda e: self.post(Move(e.x, e.y)))
        screen.bind("<ButtonPress>", lambda e: self.on_button(e, True))
        screen.bind("<ButtonRelease>", lambda e: self.on_button(e, False))
        root.bind("<Configure>", self.on_configure)
        root.bind("<FocusIn>", self.on_focus)
        root.protocol("WM_DELETE_WINDOW", self.closed)
        screen.focus_set()
        root.after(POLL_MS, self.poll)
        root.mainloop()

    def set_title(self) -> None:
        self.root.title(f"{self.title} (press {RELEASE_KEYS} to release)" if self.grabbed else self.title)

    def grab(self, on: bool) -> None:
        if on == self.grabbed:
            return
        self.grabbed = on
        if on:
            self.screen.focus_set()
            self.root.grab_set()
        else:
            self.root.grab_release()
        self.set_title()

    def on_key(self, event, down: bool) -> str:
        if event.keysym == "F12" and event.state & SHIFT_MASK:
            if down:
                self.grab(False)
            return "break"
        self.post(Key(event.keycode - 8, down))  # X keycodes are evdev codes + 8
        return "break"

    def on_button(self, event, down: bool) -> None:
        if down and event.num == 1:
            self.grab(True)
        if event.num in BUTTONS:
            self.post(Button(BUTTONS[event.num], down))

    def on_configure(self, event) -> None:
        if event.widget is not self.root or self.size is None:
            return
        if self.resize_job is not None:
            self.root.after_cancel(self.resize_job)
        width, height = event.width, event.height
        self.resize_job = self.root.after(RESIZE_DEBOUNCE_MS, lambda: self.post(Resize(width, height))
                                          if (width, height) != self.size else None)

    def on_focus(self, _event) -> None:
        try:
            text = self.root.clipboard_get()
        except self.tk.TclError:
            return
        if text and text != self.clipboard:
            self.clipboard = text
            self.post(Offer(text))

    def closed(self) -> None:
        self.post(Closed())
        self.root.destroy()

    def poll(self) -> None:
        from PIL import Image, ImageTk

        root = self.root
        frame = self.slot.take()
        if frame is not None:
            height, width = frame.shape[:2]
            image = Image.fromarray(frame, "RGB")
            if self.photo is None or self.size != (width, height):
                self.photo = ImageTk.PhotoImage(image)
                self.screen.configure(image=self.photo)
                if self.size is None or (root.winfo_width(), root.winfo_height()) == self.size:
                    root.geometry(f"{width}x{height}")  # the window follows the guest unless the user resized it
                self.size = (width, height)
            else:
                self.photo.paste(image)
            self.stats.frames_drawn += 1
            if not self.shown:
                self.shown = True
                root.update_idletasks()
                self.post(Shown())
        while True:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                break
            match message:
                case Close():
                    root.destroy()
                    return
                case GuestText(text):
                    self.clipboard = text
                    root.clipboard_clear()
                    root.clipboard_append(text)
        root.after(POLL_MS, self.poll)
