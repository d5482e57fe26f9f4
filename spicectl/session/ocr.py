"""Text on a guest's screen, read by Tesseract (Debian's tesseract-ocr language data, through the
tesserocr binding: the library in-process, no program started per check).

A screen is not a scanned page: its text is small, sharp and often light on dark. Before Tesseract
sees a region it is turned grey, inverted when it is mostly dark (firmware consoles, terminals),
and scaled up so that an 8x16 VGA glyph is as tall as the text Tesseract is trained on. Word boxes
come back in screen coordinates.

What it reads reliably (tests/integration): SeaBIOS's and a Linux console's text, the desktop's
terminal and the test scene's labels. Small antialiased UI text (under ~10 px high) is hit and miss.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spicectl.errors import EnvironmentProblem, InvalidInput

TESSDATA_ENV = "TESSDATA_PREFIX"
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata")
LANGUAGE = "eng"
SCALE = 2                 # a screen's 16 px glyphs to the ~32 px Tesseract reads well (3 reads no better, slower)
MAX_PIXELS = 4096 * 4096  # of a region before scaling: a larger screen is read in one go only up to this

Region = tuple[int, int, int, int]   # x, y, width, height


@dataclass(frozen=True)
class Word:
    text: str
    x: int
    y: int
    width: int
    height: int
    confidence: float    # 0..100, Tesseract's

    def as_dict(self) -> dict:
        return {"text": self.text, "x": self.x, "y": self.y, "width": self.width, "height": self.height,
                "confidence": round(self.confidence, 1)}


@dataclass(frozen=True)
class Reading:
    text: str                          # lines as Tesseract found them
    words: list[Word] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"text": self.text, "words": [w.as_dict() for w in self.words]}


def tessdata() -> Path | None:
    """Where the language data is (TESSDATA_PREFIX first), or None."""
    candidates = [os.environ[TESSDATA_ENV]] if os.environ.get(TESSDATA_ENV) else []
    for d in (*candidates, *TESSDATA_DIRS):
        if (Path(d) / f"{LANGUAGE}.traineddata").is_file():
            return Path(d)
    return None


def problem() -> str | None:
    """Why text on screen cannot be read here, or None."""
    try:
        import tesserocr  # noqa: F401
    except ImportError:
        return "the OCR binding is not installed (pip install 'spicectl[ocr]')"
    if tessdata() is None:
        return "Tesseract's English data is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)"
    return None


class _Engine:
    """One Tesseract instance per process, used by one caller at a time."""

    _lock = threading.Lock()
    _api = None

    @classmethod
    def read(cls, image) -> Reading:
        import tesserocr

        with cls._lock:
            if cls._api is None:
                cls._api = tesserocr.PyTessBaseAPI(path=f"{tessdata()}/", lang=LANGUAGE)
            api = cls._api
            api.SetImage(image)
            api.Recognize()
            text = api.GetUTF8Text()
            words = []
            level = tesserocr.RIL.WORD
            iterator = api.GetIterator()
            for word in tesserocr.iterate_level(iterator, level):
                found = word.GetUTF8Text(level)
                box = word.BoundingBox(level)
                if found and found.strip() and box:
                    x1, y1, x2, y2 = box
                    words.append(Word(found.strip(), x1, y1, x2 - x1, y2 - y1, word.Confidence(level)))
            return Reading(text, words)


def read(frame: np.ndarray, region: Region | None = None) -> Reading:
    """The text in `frame` (RGB), or in `region` of it."""
    from PIL import Image

    why = problem()
    if why is not None:
        raise EnvironmentProblem(f"cannot read text on the screen: {why}")
    ox, oy = 0, 0
    if region is not None:
        x, y, w, h = region
        if x + w > frame.shape[1] or y + h > frame.shape[0]:
            raise InvalidInput(f"the region {w}x{h}+{x}+{y} is outside the {frame.shape[1]}x{frame.shape[0]} screen")
        frame, ox, oy = frame[y:y + h, x:x + w], x, y
    if frame.shape[0] * frame.shape[1] > MAX_PIXELS:
        raise InvalidInput(f"a screen of {frame.shape[1]}x{frame.shape[0]} is too large to read at once: "
                           "give a --region")
    grey = frame.astype(np.uint16) @ np.array([77, 150, 29], np.uint16) >> 8
    grey = grey.astype(np.uint8)
    if grey.mean() < 128:      # light text on a dark screen: Tesseract reads dark on light
        grey = 255 - grey
    image = Image.fromarray(grey, "L")
    image = image.resize((image.width * SCALE, image.height * SCALE), Image.Resampling.LANCZOS)
    seen = _Engine.read(image)
    words = [Word(w.text, ox + w.x // SCALE, oy + w.y // SCALE, -(-w.width // SCALE), -(-w.height // SCALE),
                  w.confidence) for w in seen.words]
    return Reading(seen.text, words)
