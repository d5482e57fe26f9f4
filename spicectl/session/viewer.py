"""`spicectl view`: a minimal viewer window (Tk) over spicectl's SPICE client.

Tk runs in a thread of its own and the client stays on the caller's asyncio loop, where a
per-session proxy may run beside it. The window hands what the user does to the loop with
call_soon_threadsafe; the loop hands the window what changed on the guest's screen through a
one-patch slot (the area drawn since the window last took one: a slow window skips frames
instead of falling behind) and everything else through a queue; either wakes the window through
a pipe Tk watches, so an idle window costs nothing. Only the changed area is converted and
drawn, on a Tk canvas that redraws just that area: a video in a corner of the screen costs
the corner.

Tk comes with Python (Debian: python3-tk) and draws through Pillow's ImageTk: no toolkit to
install beyond what the client needs. The guest's sound plays through `sound.Speaker` (PortAudio)
when the host has it; without it the window opens all the same, and says why there is no sound.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from spicectl.errors import EnvironmentProblem, SpicectlError
from spicectl.spice import messages as M
from spicectl.spice.display import Display, Rect

log = logging.getLogger("spicectl.viewer")

RELEASE_KEYS = "Shift+F12"   # remote-viewer's default release-cursor combination
FRAME_INTERVAL = 1 / 60      # frames handed to the window at most this often
RESIZE_DEBOUNCE_MS = 400     # a window being dragged asks the guest once it rests
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


@dataclass(frozen=True)
class _Patch:
    """A changed area of the guest's screen, and the size of the whole screen."""

    size: tuple[int, int]
    area: Rect
    bgrx: Any    # numpy (h, w, 4) uint8, the surface's own pixels (Pillow reads them as RGB in one pass)

    @property
    def whole(self) -> bool:
        return (self.area.width, self.area.height) == self.size


class _ToWindow:
    """What the loop hands the window: the part of the guest's screen not drawn yet (one patch, the
    area changed since the window last took one) and messages. Each wakes the window's thread through
    a pipe that Tk watches: the window does not poll."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._patch: _Patch | None = None
        self._size: tuple[int, int] | None = None   # of the last patch offered
        self.messages: queue.Queue[GuestText | Close] = queue.Queue()
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_w, False)

    def offer(self, display: Display) -> bool:
        """Hand over what the display drew since the last offer, with what the window has not taken yet."""
        dirty = display.take_dirty()
        size = display.primary_size()
        if dirty is None or size is None:
            return False
        with self._lock:
            if size != self._size:   # a new screen: the window draws it whole
                area = Rect(0, 0, size[1], size[0])
            else:
                area = dirty.union(self._patch.area if self._patch is not None else None)
            self._patch = _Patch(size, area, display.primary_bgrx(area))
            self._size = size
        self._wake()
        return True

    def send(self, message: GuestText | Close) -> None:
        self.messages.put(message)
        self._wake()

    def take(self) -> _Patch | None:
        """The patch to draw, if any (the window's thread, once woken)."""
        try:
            os.read(self.wake_fd, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            patch, self._patch = self._patch, None
        return patch

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:   # the pipe is full: the window has wakes enough pending
            pass

    def close(self) -> None:
        os.close(self.wake_fd)
        os.close(self._wake_w)


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
               on_sharing: Callable[[], None] = lambda: None,
               on_note: Callable[[str], None] = log.warning, usb_devices: list | None = None,
               on_usb: Callable[[int, int, object], None] = lambda _i, _c, _e: None) -> ViewStats:
    """Show `client`'s display in a window until the user closes it (or `close_after` seconds pass);
    keyboard, mouse, resize and clipboard go to the guest (the last two through its agent, when one runs),
    with `sound` its playback to this host's output, and with `share` (a WebDAV server's connector, see
    `webdav_link.serve_webdav`) a folder to its spice-webdavd, `on_sharing` called once the guest can
    reach it. `usb_devices` (usb_storage.MassStorage) are plugged into the guest's usbredir channels
    while the window is open, `on_usb` hearing their events (usbredir_link.share_devices); they are
    unplugged when it closes. `on_note` hears why something is missing."""
    if not tk_available():
        raise EnvironmentProblem("the viewer needs Tk (tkinter)", hint="apt-get install python3-tk")
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()
    to_window = _ToWindow()
    stats = ViewStats()
    counted = client.screen.observer

    def count(msg) -> None:
        stats.display_messages += 1
        if msg[0] in (M.MSG_DISPLAY_STREAM_DATA, M.MSG_DISPLAY_STREAM_DATA_SIZED):
            stats.stream_frames += 1
        if counted is not None:
            counted(msg)
    if client.screen.channel is not None:
        client.screen.channel.observers.append(count)

    def post(event: Event) -> None:  # from the window's thread
        loop.call_soon_threadsafe(events.put_nowait, event)

    window = threading.Thread(target=_Window.run, args=(title, post, to_window, stats), daemon=True,
                              name="spicectl-viewer")
    began, cpu = time.monotonic(), time.process_time()
    window.start()
    tasks: list[asyncio.Future] = [asyncio.ensure_future(_frames(client, to_window, stats))]
    if client.agent.connected:
        tasks.append(asyncio.ensure_future(_clipboard(client, to_window)))
    if sound:
        from spicectl.session.sound import play_guest_sound

        def heard(seconds: float) -> None:
            stats.audio_seconds += seconds

        tasks.append(asyncio.ensure_future(play_guest_sound(client, audio_device, on_note, heard)))
    if share is not None:
        tasks.append(asyncio.ensure_future(_share(client, share, stats, on_sharing, on_note)))
    unplug = asyncio.Event()
    usb: asyncio.Future | None = None
    if usb_devices:
        usb = asyncio.ensure_future(_usb(client, usb_devices, unplug, on_usb, on_note))
        tasks.append(usb)
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
        to_window.send(Close())
        if usb is not None and not usb.done():   # unplugged as `usb share` does, before the session goes
            from spicectl.spice.usbredir_link import RELEASE_SECONDS

            unplug.set()
            await asyncio.wait({usb}, timeout=RELEASE_SECONDS + 1)
        for task in [*tasks, *([resizing] if resizing else [])]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(window.join, 5)
        if not window.is_alive():
            to_window.close()
        stats.seconds = time.monotonic() - began
        stats.cpu_seconds = time.process_time() - cpu
    return stats


async def _frames(client, to_window: _ToWindow, stats: ViewStats) -> None:
    """Hand the window what changed on the guest's screen, at most every FRAME_INTERVAL (a video
    below that rate is handed on as each frame comes, with no timer in between)."""
    loop = asyncio.get_running_loop()
    last = 0.0
    while True:
        await client.screen.changed()
        wait = last + FRAME_INTERVAL - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if to_window.offer(client.screen.display):
            stats.frames_offered += 1
            last = loop.time()


async def _share(client, connect, stats: ViewStats, on_sharing: Callable[[], None],
                 on_note: Callable[[str], None]) -> None:
    def counted(n: int) -> None:
        stats.share_connections = n

    try:
        from spicectl.spice.webdav_link import serve_webdav

        await serve_webdav(client, connect, on_connection=counted, on_ready=on_sharing)
    except SpicectlError as exc:  # the window goes on without the folder
        on_note(f"not sharing the folder: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))


async def _usb(client, devices: list, unplug: asyncio.Event, on_usb: Callable[[int, int, object], None],
               on_note: Callable[[str], None]) -> None:
    from spicectl.spice.usbredir_link import share_devices

    try:
        await share_devices(client, devices, stop=unplug, on_event=on_usb)
    except SpicectlError as exc:  # the window goes on without the devices
        on_note(f"USB devices unplugged: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
    await unplug.wait()   # the devices are gone (ejected, refused): the window stays


async def _key(client, evdev: int, down: bool) -> None:
    from spicectl.spice.keys import scancode_from_evdev

    scancode = scancode_from_evdev(evdev)
    if scancode is not None:
        await (client.inputs.key_down(scancode) if down else client.inputs.key_up(scancode))


async def _resize(client, width: int, height: int) -> None:
    if client.screen.display.primary_size() == (width, height):
        return
    try:
        await client.screen.resize(max(320, width), max(200, height), timeout=30)
    except Exception as exc:  # the window keeps its size; the guest keeps its own
        log.info("the guest did not take %dx%d: %s", width, height, exc)


async def _clipboard(client, to_window: _ToWindow) -> None:
    try:
        await client.agent.clipboard_sync(lambda text: to_window.send(GuestText(text)))
    except Exception as exc:  # the view goes on without a shared clipboard
        log.info("clipboard sharing stopped: %s", exc)


class _Window:
    """The Tk side; every Tk call happens in the thread that runs `run`."""

    def __init__(self, title: str, post: Callable[[Event], None], inbox: _ToWindow, stats: ViewStats) -> None:
        import tkinter as tk

        self.title, self.post, self.inbox, self.stats = title, post, inbox, stats
        self.tk = tk
        self.root = tk.Tk()
        self.root.title(title)
        self.root.configure(background="black")
        # a canvas, not a label: a label redraws all of its image when any of it changes
        self.screen = tk.Canvas(self.root, borderwidth=0, highlightthickness=0, background="black",
                                cursor="crosshair")
        self.screen.pack(fill="both", expand=True)
        self.item = self.screen.create_image(0, 0, anchor="nw")
        self.photo: Any = None
        self.scratch: Any = None                   # a changed area on its way into the photo
        # an area updated again and again (a video) gets an image of its own above the screen's: Tk
        # scans all of a photo's pixels on every change to it, 0.3 ms for 1024x768
        self.overlay: tuple[Rect, Any, Any] | None = None   # area, its photo, its canvas item
        self.last_area: Rect | None = None
        self.size: tuple[int, int] | None = None   # the guest's screen, as last drawn
        self.grabbed = False
        self.clipboard: str | None = None          # what both sides hold: not offered back
        self.resize_job: str | None = None
        self.shown = False

    @classmethod
    def run(cls, title: str, post: Callable[[Event], None], inbox: _ToWindow, stats: ViewStats) -> None:
        window = cls(title, post, inbox, stats)
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
        # woken by the loop when there is something to draw or to do: no polling
        root.tk.createfilehandler(self.inbox.wake_fd, self.tk.READABLE, lambda _fd, _mask: self.on_wake())
        self.on_wake()   # anything offered before the handler was there
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
        self.destroy()

    def destroy(self) -> None:
        self.root.tk.deletefilehandler(self.inbox.wake_fd)
        self.root.destroy()

    def draw(self, area: Rect, image: Any, *, whole: bool) -> None:
        from PIL import ImageTk

        if self.overlay is not None and self.overlay[0] == area:
            self.overlay[1].paste(image)
            return
        self.drop_overlay()
        if area == self.last_area and not whole:
            photo = ImageTk.PhotoImage(image)
            self.overlay = (area, photo, self.screen.create_image(area.left, area.top, anchor="nw", image=photo))
        elif whole:
            self.photo.paste(image)
        else:
            if self.scratch is None or (self.scratch.width(), self.scratch.height()) != image.size:
                self.scratch = ImageTk.PhotoImage(image)
            else:
                self.scratch.paste(image)
            # Tk copies the block and redraws only that area of the canvas
            self.root.tk.call(str(self.photo), "copy", str(self.scratch), "-to", area.left, area.top)

    def drop_overlay(self) -> None:
        """Put the overlay's pixels into the screen's photo and remove it."""
        if self.overlay is None:
            return
        area, photo, item = self.overlay
        self.overlay = None
        if self.photo is not None:
            self.root.tk.call(str(self.photo), "copy", str(photo), "-to", area.left, area.top)
        self.screen.delete(item)

    def on_wake(self) -> None:
        from PIL import Image, ImageTk

        root = self.root
        patch = self.inbox.take()
        if patch is not None:
            width, height = patch.size
            image = Image.frombuffer("RGB", (patch.area.width, patch.area.height), patch.bgrx, "raw", "BGRX", 0, 1)
            if self.photo is None or self.size != patch.size:
                self.drop_overlay()
                self.photo = ImageTk.PhotoImage(image)
                self.screen.itemconfigure(self.item, image=self.photo)
                self.screen.configure(width=width, height=height)
                if self.size is None or (root.winfo_width(), root.winfo_height()) == self.size:
                    root.geometry(f"{width}x{height}")  # the window follows the guest unless the user resized it
                self.size = patch.size
            else:
                self.draw(patch.area, image, whole=patch.whole)
            self.last_area = patch.area
            self.stats.frames_drawn += 1
            if not self.shown:
                self.shown = True
                root.update_idletasks()
                self.post(Shown())
        while True:
            try:
                message = self.inbox.messages.get_nowait()
            except queue.Empty:
                break
            match message:
                case Close():
                    self.destroy()
                    return
                case GuestText(text):
                    self.clipboard = text
                    root.clipboard_clear()
                    root.clipboard_append(text)
