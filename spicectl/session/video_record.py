"""`record-video`: the guest's screen as a video file, at a steady frame rate.

Each tick of the clock encodes the screen as it is then (repeated while nothing changes), stamped
with the tick's own time, so time in the video is wall time. Frames are encoded by PyAV (FFmpeg in
its wheel): VP9 or VP8 in WebM or Matroska, H.264 in Matroska or MP4, all tuned for low CPU
(libvpx's realtime deadline, x264's ultrafast preset). Packets are written through as they come
(WebM/Matroska clusters of at most a second; MP4 fragmented), so a recording killed with SIGKILL
still plays up to its last second; a clean stop (Ctrl-C, SIGTERM, --seconds) also writes the index.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spicectl.errors import EnvironmentProblem, InvalidInput

if TYPE_CHECKING:
    import numpy as np

    from spicectl.spice.client import Client

# container by the file's suffix: (FFmpeg's format, the codecs it takes, the default first)
CONTAINERS = {".webm": ("webm", ("vp9", "vp8")), ".mkv": ("matroska", ("vp9", "h264", "vp8")),
              ".mp4": ("mp4", ("h264",))}
ENCODERS = {"vp9": "libvpx-vp9", "vp8": "libvpx", "h264": "libx264"}
# low CPU: a screen is mostly still, and the recording must not starve the guest it records
ENCODER_OPTIONS = {
    "vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "lag-in-frames": "0", "crf": "34", "b": "0"},
    "vp8": {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0", "crf": "10", "b": "2M"},
    "h264": {"preset": "ultrafast", "tune": "zerolatency", "crf": "26"},
}
# written through as it comes: a killed recording keeps all but its last second
FORMAT_OPTIONS = {"webm": {"flush_packets": "1", "cluster_time_limit": "1000"},
                  "matroska": {"flush_packets": "1", "cluster_time_limit": "1000"},
                  "mp4": {"flush_packets": "1", "movflags": "frag_keyframe+empty_moov+default_base_moof"}}
MAX_FPS = 60


def plan(path: Path, codec: str | None) -> tuple[str, str]:
    """(FFmpeg's container format, our codec name) for an output file, or InvalidInput."""
    try:
        fmt, codecs = CONTAINERS[path.suffix.lower()]
    except KeyError:
        raise InvalidInput(f"{path}: record to .webm, .mkv or .mp4 (the suffix picks the container)") from None
    chosen = codec or codecs[0]
    if chosen not in codecs:
        raise InvalidInput(f"{path.suffix} takes {', '.join(codecs)}, not {chosen}")
    return fmt, chosen


def available() -> str | None:
    """Why video cannot be recorded here, or None."""
    try:
        import av  # noqa: F401
    except ImportError:
        return "PyAV is not installed (pip install 'spicectl[viewer]')"
    return None


class VideoWriter:
    """Frames in, a video file out; `close` finishes it (the encoder's last frames and the index)."""

    def __init__(self, path: Path, width: int, height: int, fps: int, codec: str | None = None) -> None:
        import av

        fmt, self.codec = plan(path, codec)
        # 4:2:0 needs even sides
        self.width, self.height = width + width % 2, height + height % 2
        self.container: Any = av.open(str(path), "w", format=fmt, options=FORMAT_OPTIONS[fmt])
        try:
            stream: Any = self.container.add_stream(ENCODERS[self.codec], rate=fps,
                                                    options=ENCODER_OPTIONS[self.codec])
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            stream.time_base = Fraction(1, fps)
        except Exception:
            self.container.close()
            raise
        self.stream = stream
        self.frames = 0

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """One frame at `pts` ticks; a screen of another size is scaled to the video's."""
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        frame.pts = pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()


@dataclass
class Recording:
    frames: int = 0       # encoded (a still screen's repeats included)
    seconds: float = 0.0
    width: int = 0
    height: int = 0
    codec: str = ""


async def record(client: Client, path: Path, *, fps: int, seconds: float | None, stop: asyncio.Event,
                 cursor: bool, codec: str | None = None, on_started=lambda r: None) -> Recording:
    """Record `client`'s screen into `path` until `seconds` pass or `stop` is set."""
    why = available()
    if why is not None:
        raise EnvironmentProblem(f"cannot record video: {why}")
    if not 1 <= fps <= MAX_FPS:
        raise InvalidInput(f"--fps {fps} is out of range (1-{MAX_FPS})")
    screen = client.screen
    first = await screen.frame(settle=0, max_wait=0.5)
    height, width = first.shape[:2]
    writer = VideoWriter(path, width, height, fps, codec)
    result = Recording(width=writer.width, height=writer.height, codec=writer.codec)
    loop = asyncio.get_running_loop()
    start = loop.time()
    on_started(result)
    try:
        tick = 0
        while not stop.is_set():
            now = loop.time()
            if seconds is not None and now - start >= seconds:
                break
            due = int((now - start) * fps)   # a late tick is not caught up: its time is skipped
            tick = max(tick, due)
            frame = screen.display.primary_rgb()
            if frame is not None:
                if cursor and screen.cursor is not None:
                    frame = screen.cursor.composite(frame)
                await asyncio.to_thread(writer.write, frame, tick)   # FFmpeg lets go of the GIL
            tick += 1
            screen.session.raise_if_failed()
            wait = start + tick / fps - loop.time()
            if seconds is not None:
                wait = min(wait, start + seconds - loop.time())
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except TimeoutError:
                    pass
        result.seconds = tick / fps   # the video's length
    finally:
        await asyncio.to_thread(writer.close)
        result.frames = writer.frames
    return result
