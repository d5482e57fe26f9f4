"""Video stream decoders: MJPEG with Pillow (in display.py); VP8, H.264, VP9 and H.265 with PyAV.

spice-server turns a region that keeps changing into a video stream in the first codec of its
list (MJPEG unless the client says what it prefers) that the client announced and its GStreamer
can encode. A stream's DATA messages carry one encoded frame each (H.264 as an Annex B byte
stream); FFmpeg's decoder, through PyAV (a well-kept binding), keeps the stream's state between
them. Only what decodes here is announced.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M


@cache
def decodable() -> frozenset[int]:
    """The video codecs (SPICE numbers) this host decodes: MJPEG always, the rest where PyAV has FFmpeg's."""
    try:
        import av
    except ImportError:
        return frozenset({M.VIDEO_CODEC_MJPEG})
    return frozenset(code for code, (_, _, ffmpeg) in M.VIDEO_CODECS.items()
                     if code == M.VIDEO_CODEC_MJPEG or ffmpeg in av.codecs_available)


def codec_number(name: str) -> int:
    for code, (known, _, _) in M.VIDEO_CODECS.items():
        if known == name.lower():
            return code
    raise ValueError(name)


class VideoDecoder:
    """One stream's decoder (not MJPEG): packets in, BGRX frames out."""

    def __init__(self, codec: int) -> None:
        import av

        self._av = av
        self.name = M.VIDEO_CODECS[codec][0]
        self._ctx: Any = av.CodecContext.create(M.VIDEO_CODECS[codec][2], "r")  # a video context: decode()

    def decode(self, packet: bytes, size: tuple[int, int]) -> np.ndarray | None:
        """The newest frame this packet completed, as (h, w, 4) BGRX; None if it completed none yet. A
        frame larger than the stream's `size` (width, height) is refused before it is converted."""
        try:
            frames = self._ctx.decode(self._av.Packet(packet))
        except self._av.error.FFmpegError as exc:
            raise ProtocolError(f"display channel: a bad {self.name} video frame ({exc})") from None
        if not frames:
            return None
        frame = frames[-1]
        if frame.width > size[0] or frame.height > size[1]:
            raise ProtocolError(f"display channel: a {self.name} frame of {frame.width}x{frame.height} in a "
                                f"{size[0]}x{size[1]} stream")
        return frame.to_ndarray(format="bgra")
