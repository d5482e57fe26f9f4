"""Video streams in VP8, H.264 and VP9, decoded with PyAV, drawn where the stream says, hostile data refused.

The peer encoders are libvpx and x264 in the same FFmpeg (PyAV's wheels): what they make is what
spice-server's GStreamer encoders (vp8enc, x264enc, vp9enc) make of a changing region.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.display import Display
from tests.display_messages import surface_create

ENCODERS = {M.VIDEO_CODEC_VP8: "libvpx", M.VIDEO_CODEC_H264: "libx264", M.VIDEO_CODEC_VP9: "libvpx-vp9"}


def encoded(codec: int, frames: list[np.ndarray]) -> list[bytes]:
    import av

    enc = av.CodecContext.create(ENCODERS[codec], "w")
    enc.width, enc.height, enc.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.bit_rate = 4_000_000
    if codec == M.VIDEO_CODEC_H264:
        enc.options = {"tune": "zerolatency", "preset": "ultrafast"}  # one packet per frame, as a live stream
    enc.open()
    packets = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in enc.encode(frame)]
    return packets + [bytes(p) for p in enc.encode(None)]


def gradient(shift: int) -> np.ndarray:
    y, x = np.mgrid[0:48, 0:64]
    return np.stack([(x * 4 + shift) % 256, y * 5, 255 - x * 3], axis=2).astype(np.uint8)


@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_a_stream_is_decoded_and_drawn_into_its_box(codec):
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 80, 60))
    box = dict(top=4, left=8, bottom=52, right=72)
    d.handle(M.MSG_DISPLAY_STREAM_CREATE, W.STREAM_CREATE.pack(
        surface_id=0, id=1, flags=1, codec_type=codec, stamp=0, stream_width=64, stream_height=48, src_width=64,
        src_height=48, dest=box, clip={"type": W.CLIP_TYPE_NONE}))
    frames = [gradient(s) for s in (0, 8, 16)]
    for packet in encoded(codec, frames):
        d.handle(M.MSG_DISPLAY_STREAM_DATA, W.STREAM_DATA.pack(base=dict(id=1, multi_media_time=0),
                                                               data_size=len(packet)) + packet)
    rgb = d.primary_rgb()
    assert not d.warnings
    drawn = rgb[4:52, 8:72].astype(int)
    assert np.abs(drawn - frames[-1]).mean() < 6  # lossy, but the last frame, the right way up
    assert rgb[:4].sum() == 0 and rgb[:, :8].sum() == 0


@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_garbage_video_is_a_protocol_error_or_nothing_drawn(codec):
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 32, 32))
    d.handle(M.MSG_DISPLAY_STREAM_CREATE, W.STREAM_CREATE.pack(
        surface_id=0, id=1, flags=1, codec_type=codec, stamp=0, stream_width=32, stream_height=32, src_width=32,
        src_height=32, dest=dict(top=0, left=0, bottom=32, right=32), clip={"type": W.CLIP_TYPE_NONE}))
    rng = np.random.default_rng(codec)
    for _ in range(50):
        data = rng.bytes(int(rng.integers(0, 600)))
        try:
            d.handle(M.MSG_DISPLAY_STREAM_DATA, W.STREAM_DATA.pack(base=dict(id=1, multi_media_time=0),
                                                                   data_size=len(data)) + data)
        except ProtocolError:
            pass
