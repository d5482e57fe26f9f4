"""`view` converts and draws only what changed on the guest's screen: the display's dirty area and the
slot that hands it to the window. (The window's pixels against the guest's are checked for real in
tests/integration/test_images.py.)"""

from __future__ import annotations

import numpy as np

from spicectl.session.viewer import _ToWindow
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.display import Display, Rect
from tests.display_messages import fill, jpeg_copy, picture_bytes, stream_create, surface_create


def screen(w: int = 64, h: int = 48) -> Display:
    d = Display()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, w, h))
    return d


def test_a_new_primary_surface_is_dirty_whole_and_a_fill_only_where_it_drew():
    d = screen()
    assert d.take_dirty() == Rect(0, 0, 48, 64)
    assert d.take_dirty() is None
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 10, 5, 20, 30, 0xFF0000))
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 30, 40, 35, 50, 0x00FF00))
    assert d.take_dirty() == Rect(10, 5, 35, 50)


def test_drawing_off_screen_or_on_another_surface_dirties_nothing_visible():
    d = screen()
    d.take_dirty()
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(3, 16, 16, primary=False))
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(3, 0, 0, 16, 16, 0xFF0000))
    assert d.take_dirty() is None
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 40, 60, 4000, 6000, 0xFF0000))   # clipped to the surface
    assert d.take_dirty() == Rect(40, 60, 48, 64)


def test_a_video_frame_dirties_its_stream_destination():
    d = screen()
    d.take_dirty()
    d.handle(M.MSG_DISPLAY_STREAM_CREATE, stream_create(0, 5, (8, 16, 24, 48)))
    frame = picture_bytes(32, 16, "JPEG")
    d.handle(M.MSG_DISPLAY_STREAM_DATA, W.STREAM_DATA.pack(base=dict(id=5, multi_media_time=0),
                                                          data_size=len(frame)) + frame)
    assert d.take_dirty() == Rect(8, 16, 24, 48)
    d.handle(M.MSG_DISPLAY_DRAW_COPY, jpeg_copy(8, 8, picture_bytes(8, 8, "JPEG")))
    assert d.take_dirty() is not None


def test_the_slot_hands_the_window_the_whole_screen_then_only_the_changed_area():
    d, slot = screen(), _ToWindow()
    assert slot.offer(d)
    first = slot.take()
    assert first.whole and first.bgrx.shape == (48, 64, 4)
    assert not slot.offer(d) and slot.take() is None   # nothing drawn since
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 10, 5, 20, 30, 0xFF0000))
    assert slot.offer(d)
    patch = slot.take()
    assert not patch.whole and patch.area == Rect(10, 5, 20, 30)
    assert (patch.bgrx[:, :, :3] == (0, 0, 255)).all()   # red, as BGRX
    assert np.array_equal(patch.bgrx, d.surfaces[0][10:20, 5:30])


def test_areas_the_window_has_not_taken_yet_are_joined_and_read_again():
    d, slot = screen(), _ToWindow()
    slot.offer(d)
    slot.take()
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 0, 0, 4, 4, 0xFF0000))
    slot.offer(d)
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 2, 2, 8, 8, 0x0000FF))
    slot.offer(d)
    patch = slot.take()
    assert patch.area == Rect(0, 0, 8, 8)
    assert np.array_equal(patch.bgrx, d.surfaces[0][:8, :8])   # the newest pixels of both areas


def test_a_resized_screen_goes_to_the_window_whole():
    d, slot = screen(), _ToWindow()
    slot.offer(d)
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 0, 0, 4, 4, 0xFF0000))
    d.handle(M.MSG_DISPLAY_SURFACE_CREATE, surface_create(0, 80, 60))
    d.handle(M.MSG_DISPLAY_DRAW_FILL, fill(0, 0, 0, 4, 4, 0xFF0000))
    slot.offer(d)
    patch = slot.take()
    assert patch.whole and patch.size == (80, 60) and patch.bgrx.shape == (60, 80, 4)
