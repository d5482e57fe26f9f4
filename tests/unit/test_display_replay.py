"""Display messages recorded from a real QEMU (tests/data) replay to the exact screen libvirt showed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spicectl.spice import messages as M
from spicectl.spice import recording
from spicectl.spice.display import Display, copy_source
from tests.conftest import REPO

DATA = REPO / "tests" / "data"

# every test here runs with the compiled decoder loops and with the pure-Python reference
pytestmark = pytest.mark.usefixtures("decoders")


RECORDINGS = {
    "display-lz": (400, 720), "display-glz": (400, 720), "display-auto_glz": (400, 720), "display-quic": (400, 720),
    "scene-quic": (768, 1024),  # the desktop image's test scene: photographic content, one QUIC image
}


@pytest.mark.parametrize("name", RECORDINGS)
def test_recorded_session_replays_to_the_screen_libvirt_showed(name):
    path = DATA / f"{name}.bin"
    display = Display()
    for msg in recording.read(path):
        display.handle(*msg)
    # libvirt's own screenshot, taken right after the recording (bench/capture_frames.py keeps a
    # recording only when it equals what the client drew then)
    expected = np.asarray(Image.open(recording.libvirt_frame(path)).convert("RGB"))
    frame = display.primary_rgb()
    assert frame.shape == expected.shape == (*RECORDINGS[name], 3)
    assert (frame == expected).all()
    assert frame.any(), "the screen is not blank"
    assert not display.warnings


def test_glz_recording_really_uses_glz_across_images():
    kinds = [copy_source(msg.body)[0]["type"] for msg in recording.read(DATA / "display-glz.bin")
             if msg.type == M.MSG_DISPLAY_DRAW_COPY]
    assert kinds.count(M.IMAGE_GLZ_RGB) >= 5
    assert M.IMAGE_LZ_RGB in kinds


def test_quic_recording_really_uses_quic():
    for name in ("display-quic", "scene-quic"):
        kinds = [copy_source(msg.body)[0]["type"] for msg in recording.read(DATA / f"{name}.bin")
                 if msg.type == M.MSG_DISPLAY_DRAW_COPY]
        assert M.IMAGE_QUIC in kinds
