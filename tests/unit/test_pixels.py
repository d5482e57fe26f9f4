"""RGB555 and 5-bit channels widened to 8 bits, one way for every decoder (spice-common's rule)."""

from __future__ import annotations

import numpy as np

from spicectl.spice.pixels import rgb555_bgr, widen5


def test_five_bits_widen_with_their_top_bits_repeated_below():
    c5 = np.arange(32, dtype=np.uint8)
    assert widen5(c5).tolist() == [(c << 3) | (c >> 2) for c in range(32)]
    assert widen5(np.array([0, 31], np.uint8)).tolist() == [0, 255]


def test_every_15_bit_word_becomes_blue_green_red_bytes():
    words = np.arange(1 << 15, dtype=np.uint16)
    bgr = rgb555_bgr(words)

    def wide(c):
        return (c << 3) | (c >> 2)

    expected = np.array([[wide(w & 31), wide(w >> 5 & 31), wide(w >> 10 & 31)] for w in range(1 << 15)], np.uint8)
    assert bgr.shape == (1 << 15, 3) and (bgr == expected).all()
    assert rgb555_bgr(np.array([[0x8000 | 0x7C00]], np.uint16)).tolist() == [[[0, 0, 255]]]   # bit 15 is unused
