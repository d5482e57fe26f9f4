"""Text on screen, read by Tesseract: on frames a real QEMU showed, and through the whole client."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spicectl.errors import EnvironmentProblem, InvalidInput
from spicectl.session import ocr
from spicectl.spice import recording
from tests.conftest import REPO

DATA = REPO / "tests" / "data"
SEABIOS = np.asarray(Image.open(recording.libvirt_frame(DATA / "display-lz.bin")).convert("RGB"))
SCENE = np.asarray(Image.open(DATA / "desktop-scene.png").convert("RGB"))
TEXT = (40, 320, 460, 80)   # the test scene's labels (tests/integration/test_images.py)


def test_the_desktop_scenes_labels_read_exactly():
    assert ocr.read(SCENE, TEXT).text.split("\n") == [
        "spicectl test scene", "QXL + spice-vdagent on Debian", "0123456789 ABCDEFGHIJ abcdefghij", ""]


def test_light_firmware_text_on_black_reads_and_its_words_land_in_screen_pixels():
    reading = ocr.read(SEABIOS)
    assert "SeaBIOS (version 1.16.2" in reading.text and "Press ESC for boot menu." in reading.text
    press = next(w for w in reading.words if w.text == "Press")
    row = SEABIOS[press.y:press.y + press.height, press.x:press.x + press.width]
    assert row.any() and press.height <= 20   # on the glyphs, one 16-pixel text row high
    region = (0, press.y - 2, 360, 20)
    in_region = ocr.read(SEABIOS, region)
    assert in_region.text.strip() == "Press ESC for boot menu."
    assert [(w.x, w.y) for w in in_region.words if w.text == "Press"] == [(press.x, press.y)]


def test_a_region_outside_the_screen_is_refused():
    with pytest.raises(InvalidInput, match="outside the 720x400 screen"):
        ocr.read(SEABIOS, (700, 0, 100, 10))


def test_without_language_data_reading_says_what_to_install(monkeypatch):
    monkeypatch.setattr(ocr, "TESSDATA_DIRS", ())
    monkeypatch.delenv(ocr.TESSDATA_ENV, raising=False)
    assert "tesseract-ocr-eng" in ocr.problem()
    with pytest.raises(EnvironmentProblem, match="apt-get install tesseract-ocr"):
        ocr.read(SEABIOS)


def test_wait_screen_text_and_screenshot_ocr_on_a_recorded_real_session(tmp_path):
    from tests.hostile_server import HostileServer, Script, run_cli

    with HostileServer(Script(display=list(recording.read(DATA / "display-lz.bin")))) as server:
        uri = f"spice://127.0.0.1:{server.port}"
        found = run_cli(["wait-screen", uri, "--plain-port", "--text", r"ESC for boot m\w+", "--timeout", "20"])
        missed = run_cli(["wait-screen", uri, "--plain-port", "--text", "Windows", "--timeout", "3",
                          "--last-frame", str(tmp_path / "last.png")])
        shot = run_cli(["screenshot", uri, "--plain-port", "-o", str(tmp_path / "s.png"), "--ocr"])
        bad = run_cli(["wait-screen", uri, "--plain-port", "--text", "(unclosed", "--timeout", "3"])
    assert found.how == "exit" and found.code == 0, str(found)
    assert "'ESC for boot menu' on the screen" in found.stderr
    assert missed.how == "exit" and missed.code == 9, str(missed)
    assert "no text matching 'Windows' within 3s; the screen read 'SeaBIOS" in missed.stderr
    assert shot.how == "exit" and shot.code == 0, str(shot)
    assert bad.how == "exit" and bad.code != 0 and "is not a regular expression" in bad.stderr
