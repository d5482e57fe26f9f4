"""A frame with parts the client could not draw is an error, never a plausible-looking picture."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spicectl.spice import messages as M
from spicectl.spice.client import Client, IncompleteScreen


def client_with_screen(**kwargs) -> Client:
    client = Client("127.0.0.1", port=5900, **kwargs)
    client.display.surfaces[0] = np.zeros((8, 8, 4), np.uint8)
    client.display.primary = 0
    client.display.marked = True
    return client


def test_a_complete_screen_is_returned():
    frame = asyncio.run(client_with_screen().frame(settle=0))
    assert frame.shape == (8, 8, 3)


def test_undrawn_text_makes_the_frame_an_error_naming_it():
    client = client_with_screen()
    client.display.handle(M.MSG_DISPLAY_DRAW_TEXT, b"")
    with pytest.raises(IncompleteScreen, match="could not be drawn completely: display message 311"):
        asyncio.run(client.frame(settle=0))


def test_allow_partial_returns_what_was_drawn():
    client = client_with_screen(allow_partial=True)
    client.display.handle(M.MSG_DISPLAY_STREAM_DATA, b"")
    assert asyncio.run(client.frame(settle=0)).shape == (8, 8, 3)


def test_layout_messages_that_draw_nothing_are_not_missing_parts():
    client = client_with_screen()
    client.display.handle(M.MSG_DISPLAY_MONITORS_CONFIG, b"")
    assert asyncio.run(client.frame(settle=0)).shape == (8, 8, 3)
