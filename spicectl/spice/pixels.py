"""Pixel formats, converted in one place: 5-bit channels widened to 8 bits as spice-common does
(the top bits repeated below), and 15-bit RGB words (red in bits 10-14) to bytes."""

from __future__ import annotations

import numpy as np


def widen5(c5: np.ndarray) -> np.ndarray:
    """5-bit channel values (uint8) as 8-bit ones: 31 is 255, 0 is 0."""
    return (c5 << 3) | (c5 >> 2)


def rgb555_bgr(words: np.ndarray) -> np.ndarray:
    """15-bit RGB words as B, G, R bytes, on a new last axis of 3."""
    out = np.empty((*words.shape, 3), np.uint8)
    for channel, shift in ((0, 0), (1, 5), (2, 10)):
        out[..., channel] = widen5(((words >> shift) & 31).astype(np.uint8))
    return out
