"""The pointer over the inputs channel: client mode once the server says it switched, and no more
motion in flight than two acknowledgement bunches (as spice-gtk keeps), against a scripted server."""

from __future__ import annotations

import asyncio

import pytest

from spicectl.errors import ProtocolError
from spicectl.spice import inputs_link as C
from spicectl.spice import messages as M
from spicectl.spice.client import Client
from tests.hostile_server import HostileServer, Script


def moves(script: Script, points: list[tuple[int, int]]) -> tuple[list[int], BaseException | None]:
    """The inputs messages the server received while the client moved to each point, and what ended it."""
    with HostileServer(script) as server:
        async def go():
            client = Client("127.0.0.1", port=server.port, password=b"x")
            try:
                await client.connect(display=False, inputs=True)
                for x, y in points:
                    await client.inputs.mouse_move(x, y)
                await asyncio.sleep(0.2)   # what was flushed reaches the server
            finally:
                await client.close()

        error = None
        try:
            asyncio.run(go())
        except ProtocolError as exc:
            error = exc
        return [m.type for m in server.inputs_received], error


def test_a_slow_grant_of_client_mode_is_waited_for_not_guessed():
    # (a fixed 0.2 s sleep once stood here: a server that took longer got relative motion)
    got, error = moves(Script(inputs=True, client_mouse=True, mode_delay=0.6), [(100, 50)])
    assert error is None and got == [M.MSGC_INPUTS_MOUSE_POSITION]


def test_a_server_that_keeps_server_mode_gets_relative_motion():
    got, error = moves(Script(inputs=True, client_mouse=True, mode_delay=None), [(100, 50)])
    assert error is None and got == [M.MSGC_INPUTS_MOUSE_MOTION] * 2


def test_motion_flows_while_the_server_acknowledges_it():
    got, error = moves(Script(inputs=True, client_mouse=True), [(i, i) for i in range(20)])
    assert error is None and got == [M.MSGC_INPUTS_MOUSE_POSITION] * 20


def test_a_server_that_never_acknowledges_motion_is_a_protocol_error_after_two_bunches(monkeypatch):
    monkeypatch.setattr(C, "MOTION_ACK_WAIT", 0.5)
    got, error = moves(Script(inputs=True, client_mouse=True, ack_every=0), [(i, i) for i in range(20)])
    assert isinstance(error, ProtocolError) and "acknowledged none" in error.message
    assert got == [M.MSGC_INPUTS_MOUSE_POSITION] * C.MOTION_WINDOW


@pytest.mark.parametrize("ack_every", [1, 4])
def test_acknowledgements_free_room_whatever_their_pace(ack_every):
    got, error = moves(Script(inputs=True, client_mouse=False, ack_every=ack_every), [(i, i) for i in range(10)])
    assert error is None and got == [M.MSGC_INPUTS_MOUSE_MOTION] * 20
