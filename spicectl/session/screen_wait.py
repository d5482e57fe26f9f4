"""`wait-screen`'s condition: a guest's screen that changed, or that matches a reference, in a region,
or that shows one of a set of openQA needles, or text (read by `ocr.py`).

Frames are RGB arrays as `Client.frame` returns them; two frames are alike in the share of their
pixels that are equal (`similarity`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spicectl.errors import TimeoutExpired

if TYPE_CHECKING:
    import numpy as np

    from spicectl.session.needles import Match, Needle
    from spicectl.session.ocr import Reading
    from spicectl.spice.client import Client

Region = tuple[int, int, int, int]   # x, y, width, height


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pixels equal in both frames (0 for frames of different sizes)."""
    if a.shape != b.shape:
        return 0.0
    return float((a == b).all(axis=2).mean())


@dataclass(frozen=True)
class ScreenWait:
    threshold: float
    reference: Any = None          # an RGB frame to match; None: wait for the screen to change
    region: Region | None = None

    def crop(self, frame: np.ndarray) -> np.ndarray:
        if self.region is None:
            return frame
        x, y, w, h = self.region
        return frame[y:y + h, x:x + w]

    def changed(self, start: np.ndarray, frame: np.ndarray) -> bool:
        a, b = self.crop(frame), self.crop(start)
        return a.shape != b.shape or similarity(a, b) < self.threshold

    def matches(self, frame: np.ndarray) -> bool:
        return similarity(self.crop(frame), self.crop(self.reference)) >= self.threshold

    async def run(self, client: Client, timeout: float) -> tuple[bool, np.ndarray | None]:
        """(True, the frame) once the condition holds; (False, the last frame seen) after `timeout`."""
        if self.reference is None:
            start = await client.screen.frame()

            def predicate(f):
                return self.changed(start, f)
        else:
            predicate = self.matches
        return await _wait(client, predicate, timeout)


@dataclass
class NeedleWait:
    """Wait until one of `needles` matches (os-autoinst's rules, `needles.py`); the best candidate seen
    is kept for the report when none does."""

    needles: list[Needle]
    closest: Match | None = None

    def check(self, frame: np.ndarray) -> Match | None:
        from spicectl.session.needles import best

        found, ranked = best(frame, self.needles)
        if ranked and (self.closest is None or ranked[0].error <= self.closest.error or found is not None):
            self.closest = ranked[0]
        return found

    async def run(self, client: Client, timeout: float) -> tuple[Match | None, np.ndarray | None]:
        """(the match, the frame) once a needle matches; (None, the last frame seen) after `timeout`."""
        matched, frame = await _wait(client, lambda f: self.check(f) is not None, timeout)
        return (self.closest if matched else None), frame


@dataclass
class TextWait:
    """Wait until text matching `pattern` (a regular expression) is on the screen, or in `region`."""

    pattern: re.Pattern
    region: Region | None = None
    last: Reading | None = None
    hit: re.Match | None = None

    def check(self, frame: np.ndarray) -> re.Match | None:
        from spicectl.session.ocr import read

        self.last = read(frame, self.region)
        self.hit = self.pattern.search(self.last.text)
        return self.hit

    async def run(self, client: Client, timeout: float) -> tuple[re.Match | None, np.ndarray | None]:
        """(the match, the frame) once the text is there; (None, the last frame seen) after `timeout`."""
        matched, frame = await _wait(client, lambda f: self.check(f) is not None, timeout)
        return (self.hit if matched else None), frame


async def _wait(client: Client, predicate, timeout: float) -> tuple[bool, np.ndarray | None]:
    """(True, the frame) once `predicate` holds for a settled frame; (False, the last frame seen) after
    `timeout` (the display's current one if no frame was checked)."""
    try:
        return True, await client.screen.wait_for(predicate, timeout=timeout)
    except TimeoutExpired as exc:
        last = getattr(exc, "last_frame", None)  # set unless no frame arrived at all
        return False, last if last is not None else client.screen.display.primary_rgb()
