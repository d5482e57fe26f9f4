"""Port channel messages: the name and open state a port channel reports, and hostile inits."""

from __future__ import annotations

import struct

import pytest

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice.port import read_init


def init(name: bytes, opened: int, *, size: int | None = None, offset: int = 9) -> bytes:
    return struct.pack("<IIB", len(name) if size is None else size, offset, opened) + name


def test_init_reads_the_name_after_the_fixed_part_and_the_open_state():
    state = read_init(init(b"org.spice-space.webdav.0\0", 1))
    assert (state.name, state.opened) == ("org.spice-space.webdav.0", True)


def test_events_follow_the_guest_opening_and_closing_the_port():
    state = read_init(init(b"com.example.port\0", 0))
    state.handle(M.MSG_PORT_EVENT, bytes([M.PORT_EVENT_OPENED]))
    assert state.opened
    state.handle(M.MSG_PORT_EVENT, bytes([M.PORT_EVENT_BREAK]))
    assert state.opened
    state.handle(M.MSG_PORT_EVENT, bytes([M.PORT_EVENT_CLOSED]))
    assert not state.opened


@pytest.mark.parametrize("body", [
    init(b"x\0", 1, size=100),          # runs past the message
    init(b"x\0", 1, offset=2),          # points into the fixed part
    init(b"x\0", 1, size=0),
    init(b"no-nul", 1),
    b"\1\0\0",
])
def test_a_hostile_init_is_a_protocol_error(body):
    with pytest.raises(ProtocolError):
        read_init(body)
