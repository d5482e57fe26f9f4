"""Display messages recorded from a real QEMU (tests/data) replay to the exact screen libvirt showed."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from spicectl.spice.display import Display
from tests.conftest import REPO

DATA = REPO / "tests" / "data"


def records(path):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        msg_type, size = struct.unpack_from("<HI", data, pos)
        yield msg_type, data[pos + 6:pos + 6 + size]
        pos += 6 + size


@pytest.mark.parametrize("codec", ["lz", "glz", "auto_glz"])
def test_recorded_session_replays_to_the_screen_libvirt_showed(codec):
    display = Display()
    for msg_type, body in records(DATA / f"display-{codec}.bin"):
        display.handle(msg_type, body)
    expected = np.asarray(Image.open(DATA / f"display-{codec}.bin.png").convert("RGB"))
    frame = display.primary_rgb()
    assert frame.shape == expected.shape == (400, 720, 3)
    assert (frame == expected).all()
    assert frame.any(), "the screen is not blank"


def test_glz_recording_really_uses_glz_across_images():
    from spicectl.spice import messages as M
    from spicectl.spice.display import BodyParser

    kinds = []
    for msg_type, body in records(DATA / "display-glz.bin"):
        if msg_type == M.MSG_DISPLAY_DRAW_COPY:
            p = BodyParser(body, "copy")
            p.fmt("I"), p.rect()
            if p.fmt("B") == 1:
                [p.rect() for _ in range(p.fmt("I"))]
            kinds.append(p.at(p.fmt("I")).take(M.IMAGE_DESCRIPTOR)["type"])
    assert kinds.count(M.IMAGE_GLZ_RGB) >= 5
    assert M.IMAGE_LZ_RGB in kinds
