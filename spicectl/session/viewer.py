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
LIKELY_FORMAT = (2, 48000)   # channels and rate QEMU's SPICE audio plays at, until the guest's START says


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
    `Client.serve_webdav`) a folder to its spice-webdavd. `on_note` hears why something is missing."""
    if not tk_available():
        raise EnvironmentProblem("the viewer needs Tk (tkinter)", hint="apt-get install python3-tk")
    loop = asyncio.get_running_loop()
    actions: asyncio.Queue[tuple] = asyncio.Queue()
    slot = _FrameSlot()
    to_window: queue.Queue[tuple] = queue.Queue()
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

    def post(action: tuple) -> None:  # from the window's thread
        loop.call_soon_threadsafe(actions.put_nowait, action)

    window = threading.Thread(target=_window, args=(title, post, slot, to_window, stats), daemon=True,
                              name="spicectl-viewer")
    began, cpu = time.monotonic(), time.process_time()
    window.start()
    tasks: list[asyncio.Future] = [asyncio.ensure_future(_frames(client, slot, stats))]
    if client.agent_connected:
        tasks.append(asyncio.ensure_future(_clipboard(client, to_window)))
    if sound:
        tasks.append(asyncio.ensure_future(_sound(client, stats, audio_device, on_note)))
    if share is not None:
        tasks.append(asyncio.ensure_future(_share(client, share, stats, on_note)))
    resizing: asyncio.Task | None = None
    if close_after is not None:
        loop.call_later(close_after, actions.put_nowait, ("closed",))
    try:
        while True:
            getter = asyncio.ensure_future(actions.get())
            done, _ = await asyncio.wait({getter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {getter}:
                tasks.remove(task)
                task.result()  # a client failure ends the session with its error
            if getter not in done:
                getter.cancel()
                continue
            action = getter.result()
            kind = action[0]
            if kind == "closed":
                break
            if kind == "shown" and on_shown is not None:
                on_shown()
            elif kind == "key":
                await _key(client, action[1], action[2])
            elif kind == "move":
                await client.mouse_move(action[1], action[2])
            elif kind == "button":
                await client.mouse_button(action[1], action[2])
            elif kind == "resize" and client.agent_connected:
                if resizing is not None:
                    resizing.cancel()
                resizing = asyncio.ensure_future(_resize(client, action[1], action[2]))
            elif kind == "offer" and client.agent_connected:
                await client.clipboard_offer(action[1])
    finally:
        to_window.put(("close",))
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


async def _sound(client, stats: ViewStats, device: str | None, on_note: Callable[[str], None]) -> None:
    """The guest's playback channel on this host's output, following its mixer, until cancelled."""
    from spicectl.session.sound import Speaker, speaker_problem
    from spicectl.spice import link
    from spicectl.spice.audio import Playback, opus_available

    if (link.PLAYBACK, 0) not in client.channels_available:
        on_note("no sound: the guest has no sound card with SPICE audio")
        return
    problem = speaker_problem()
    if problem is not None:
        on_note(f"no sound: {problem}")
        return
    playback = Playback(opus_ok=opus_available())  # keeps nothing; Opus where the guest compresses playback

    async def open_speaker(channels: int, rate: int) -> Speaker | None:
        try:
            return await asyncio.to_thread(Speaker, channels, rate, device)
        except EnvironmentProblem as exc:
            on_note(f"no sound: {exc.message}")
            return None

    # opened before the guest plays, and kept open between sounds: a sound server can take a second or
    # more to start a new stream, and a desktop starts and stops playback with every sound it makes
    speaker = await open_speaker(*LIKELY_FORMAT)
    if speaker is None:
        return
    try:
        async for msg_type, body in client.playback_messages(playback):
            samples = playback.handle(msg_type, body)
            if msg_type == M.MSG_PLAYBACK_START and (speaker.channels, speaker.rate) != (playback.channels,
                                                                                        playback.rate):
                speaker.close()
                speaker = await open_speaker(playback.channels, playback.rate)
                if speaker is None:
                    return
            if msg_type in (M.MSG_PLAYBACK_START, M.MSG_PLAYBACK_VOLUME, M.MSG_PLAYBACK_MUTE):
                speaker.set_mixer(playback.volume, playback.muted)
            elif samples:
                speaker.write(samples)
                stats.audio_seconds += len(samples) / (2 * playback.channels * playback.rate)
    finally:
        if speaker is not None:
            speaker.close()


async def _share(client, connect, stats: ViewStats, on_note: Callable[[str], None]) -> None:
    def counted(n: int) -> None:
        stats.share_connections = n

    try:
        await client.serve_webdav(connect, on_connection=counted)
    except SpicectlError as exc:  # the window goes on without the folder
        on_note(f"not sharing the folder: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))


async def _key(client, evdev: int, down: bool) -> None:
    from spicectl.spice.keys import scancode_from_evdev

    scancode = scancode_from_evdev(evdev)
    if scancode is not None:
        await (client.key_down(scancode) if down else client.key_up(scancode))


async def _resize(client, width: int, height: int) -> None:
    frame = client.display.primary_rgb()
    if frame is not None and frame.shape[:2] == (height, width):
        return
    try:
        await client.resize(max(320, width), max(200, height), timeout=30)
    except Exception as exc:  # the window keeps its size; the guest keeps its own
        log.info("the guest did not take %dx%d: %s", width, height, exc)


async def _clipboard(client, to_window: queue.Queue) -> None:
    try:
        await client.clipboard_sync(lambda text: to_window.put(("clipboard", text)))
    except Exception as exc:  # the view goes on without a shared clipboard
        log.info("clipboard sharing stopped: %s", exc)


def _window(title: str, post: Callable[[tuple], None], slot: _FrameSlot, inbox: queue.Queue,
            stats: ViewStats) -> None:
    """The Tk side; every Tk call happens in this thread."""
    import tkinter as tk

    from PIL import Image, ImageTk

    root = tk.Tk()
    root.title(title)
    root.configure(background="black")
    screen = tk.Label(root, borderwidth=0, highlightthickness=0, background="black", cursor="crosshair")
    screen.pack(fill="both", expand=True)
    state: dict[str, Any] = {"photo": None, "size": None, "grabbed": False, "clipboard": None,
                             "resize_job": None, "shown": False}

    def set_title() -> None:
        root.title(f"{title} (press {RELEASE_KEYS} to release)" if state["grabbed"] else title)

    def grab(on: bool) -> None:
        if on == state["grabbed"]:
            return
        state["grabbed"] = on
        if on:
            screen.focus_set()
            root.grab_set()
        else:
            root.grab_release()
        set_title()

    def on_key(event, down: bool) -> str:
        if event.keysym == "F12" and event.state & SHIFT_MASK:
            if down:
                grab(False)
            return "break"
        post(("key", event.keycode - 8, down))  # X keycodes are evdev codes + 8
        return "break"

    def on_button(event, down: bool) -> None:
        if down and event.num == 1:
            grab(True)
        if event.num in BUTTONS:
            post(("button", BUTTONS[event.num], down))

    def on_configure(event) -> None:
        if event.widget is not root or state["size"] is None:
            return
        if state["resize_job"] is not None:
            root.after_cancel(state["resize_job"])
        width, height = event.width, event.height
        state["resize_job"] = root.after(RESIZE_DEBOUNCE_MS, lambda: post(("resize", width, height))
                                         if (width, height) != state["size"] else None)

    def on_focus(_event) -> None:
        try:
            text = root.clipboard_get()
        except tk.TclError:
            return
        if text and text != state["clipboard"]:
            state["clipboard"] = text
            post(("offer", text))

    def closed() -> None:
        post(("closed",))
        root.destroy()

    def poll() -> None:
        frame = slot.take()
        if frame is not None:
            height, width = frame.shape[:2]
            image = Image.fromarray(frame, "RGB")
            if state["photo"] is None or state["size"] != (width, height):
                state["photo"] = ImageTk.PhotoImage(image)
                screen.configure(image=state["photo"])
                if state["size"] is None or (root.winfo_width(), root.winfo_height()) == state["size"]:
                    root.geometry(f"{width}x{height}")  # the window follows the guest unless the user resized it
                state["size"] = (width, height)
            else:
                state["photo"].paste(image)
            stats.frames_drawn += 1
            if not state["shown"]:
                state["shown"] = True
                root.update_idletasks()
                post(("shown",))
        while True:
            try:
                message = inbox.get_nowait()
            except queue.Empty:
                break
            if message[0] == "close":
                root.destroy()
                return
            if message[0] == "clipboard":
                state["clipboard"] = message[1]
                root.clipboard_clear()
                root.clipboard_append(message[1])
        root.after(POLL_MS, poll)

    root.bind("<KeyPress>", lambda e: on_key(e, True))
    root.bind("<KeyRelease>", lambda e: on_key(e, False))
    screen.bind("<Motion>", lambda e: post(("move", e.x, e.y)))
    screen.bind("<ButtonPress>", lambda e: on_button(e, True))
    screen.bind("<ButtonRelease>", lambda e: on_button(e, False))
    root.bind("<Configure>", on_configure)
    root.bind("<FocusIn>", on_focus)
    root.protocol("WM_DELETE_WINDOW", closed)
    screen.focus_set()
    root.after(POLL_MS, poll)
    try:
        root.mainloop()
    finally:
        post(("closed",))
        # Tcl's interpreter must be freed in the thread that made it, not at exit in the main thread
        import gc

        state.clear()
        screen = root = None  # type: ignore[assignment]
        gc.collect()
