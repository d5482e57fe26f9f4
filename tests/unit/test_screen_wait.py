"""wait-screen's condition on frames: a change past the threshold, a match within it, in a region."""

from __future__ import annotations

import numpy as np

from spicectl.session.screen_wait import ScreenWait, similarity


def frame(w=10, h=4, color=(0, 0, 0)) -> np.ndarray:
    f = np.zeros((h, w, 3), np.uint8)
    f[:] = color
    return f


def test_similarity_is_the_share_of_equal_pixels_and_zero_for_other_sizes():
    a, b = frame(), frame()
    b[0, :5] = 255   # 5 of 40 pixels differ
    assert similarity(a, b) == 35 / 40
    assert similarity(a, frame(w=9)) == 0.0


def test_a_change_counts_once_fewer_pixels_than_the_threshold_stay_equal():
    start, now = frame(), frame()
    now[0, 0] = 1
    assert not ScreenWait(0.95).changed(start, now)           # 39/40 still equal
    assert ScreenWait(0.99).changed(start, now)
    assert ScreenWait(0.5).changed(start, frame(w=12))        # a new size is a change


def test_a_region_limits_what_is_compared():
    start, now = frame(), frame()
    now[3, 9] = 200   # outside the region
    inside = ScreenWait(1.0, region=(0, 0, 5, 2))
    assert not inside.changed(start, now)
    assert ScreenWait(1.0).changed(start, now)
    reference = frame(color=(9, 9, 9))
    reference[:2, :5] = 0
    assert ScreenWait(1.0, reference, (0, 0, 5, 2)).matches(start)
    assert not ScreenWait(1.0, reference).matches(start)
