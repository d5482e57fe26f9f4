"""record-video: a steady frame rate (time in the video is wall time), files that play after a clean
stop and after a kill, and the screen a real QEMU showed, through the whole client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from spicectl.errors import InvalidInput
from spicectl.session.video_record import VideoWriter, plan
from spicectl.spice import recording
from tests.conftest import REPO

DATA = REPO / "tests" / "data"


def decoded(path: Path) -> tuple[list[np.ndarray], float]:
    """The frames (RGB) and the duration the last frame's end gives, in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, end = [], 0.0
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            end = float((frame.pts + (frame.duration or 1)) * frame.time_base)
    return frames, end


def test_the_suffix_picks_the_container_and_the_codec_must_fit_it():
    assert plan(Path("a.webm"), None) == ("webm", "vp9")
    assert plan(Path("a.mp4"), None) == ("mp4", "h264")
    assert plan(Path("a.MKV"), "h264") == ("matroska", "h264")
    with pytest.raises(InvalidInput, match=r"\.webm takes vp9, vp8, not h264"):
        plan(Path("a.webm"), "h264")
    with pytest.raises(InvalidInput, match="record to .webm, .mkv or .mp4"):
        plan(Path("a.avi"), None)


@pytest.mark.parametrize("name, codec", [("v.webm", None), ("v.webm", "vp8"), ("v.mkv", "h264"), ("v.mp4", None)])
def test_frames_at_their_ticks_give_a_video_as_long_as_the_ticks(tmp_path, name, codec):
    rng = np.random.default_rng(2)
    still = np.asarray(Image.fromarray(rng.integers(0, 255, (24, 32, 3), np.uint8)).resize((320, 240)))
    writer = VideoWriter(tmp_path / name, 320, 240, 10, codec)
    for tick in (0, 1, 2, 5, 6, 7, 8, 9, 10, 11):   # ticks 3 and 4 skipped, as a late recorder skips them
        writer.write(still, tick)
    writer.close()
    frames, end = decoded(tmp_path / name)
    assert len(frames) == 10 and abs(end - 1.2) < 0.01
    assert np.abs(frames[-1].astype(int) - still).mean() < 6   # within the codec's error


def test_a_killed_recording_plays_up_to_its_last_second(tmp_path):
    out = tmp_path / "killed.webm"
    code = f"""
import os, numpy as np
from pathlib import Path
from spicectl.session.video_record import VideoWriter
w = VideoWriter(Path({str(out)!r}), 160, 120, 10)
for tick in range(35):
    w.write(np.full((120, 160, 3), tick * 7, np.uint8), tick)
os._exit(0)   # as SIGKILL leaves it: no encoder flush, no index
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    frames, end = decoded(out)
    assert len(frames) >= 20 and end >= 2.0, (len(frames), end)


def test_record_video_of_a_recorded_real_session_is_wall_time_long_and_shows_its_screen(tmp_path):
    from tests.hostile_server import HostileServer, Script, run_cli

    path = DATA / "display-glz.bin"
    shown = np.asarray(Image.open(recording.libvirt_frame(path)).convert("RGB"))
    out = tmp_path / "run.webm"
    with HostileServer(Script(display=list(recording.read(path)))) as server:
        run = run_cli(["record-video", f"spice://127.0.0.1:{server.port}", "--plain-port", "-o", str(out),
                       "--seconds", "3", "--fps", "10"])
    assert run.how == "exit" and run.code == 0, str(run)
    frames, end = decoded(out)
    assert abs(end - 3.0) <= 0.06, end            # within 2% of the wall time it ran
    assert frames[-1].shape == shown.shape
    assert np.abs(frames[-1].astype(int) - shown).mean() < 4, "the last frame is not the screen"
    assert os.path.getsize(out) < 400_000          # a still screen costs little
