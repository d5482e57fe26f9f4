"""The agent's conversation over the main channel, without a server: tokens both ways, capabilities,
and a guest that talks faster than anyone reads."""

from __future__ import annotations

import asyncio

import pytest

from spicectl.errors import ProtocolError, TimeoutExpired
from spicectl.spice import agent as A
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.agent import AgentStream
from spicectl.spice.agent_link import AGENT_WINDOW, AgentLink


class Main:
    """The main channel's sending side: what was sent, by type."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send(self, msg_type: int, body: bytes = b"") -> None:
        self.sent.append((msg_type, body))

    async def flush(self) -> None:
        pass


class Session:
    def __init__(self) -> None:
        self.main = Main()

    def raise_if_failed(self) -> None:
        pass

    async def wait_event(self, event: asyncio.Event, what: str, timeout: float = 1.0) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            raise TimeoutExpired(f"timed out waiting for {what}") from None


def data(msg_type: int, body: bytes = b"") -> list[bytes]:
    return list(AgentStream.chunks(msg_type, body))


def test_start_announces_capabilities_and_returns_the_agents():
    async def go():
        session = Session()
        link = AgentLink(session)
        link.init(True, 5)
        starting = asyncio.ensure_future(link.start(timeout=2))
        await asyncio.sleep(0)
        for chunk in data(A.ANNOUNCE_CAPABILITIES, A.announce(request=False)):
            await link.handle(M.MSG_MAIN_AGENT_DATA, chunk)
        caps = await starting
        types = [t for t, _ in session.main.sent]
        assert types[:2] == [M.MSGC_MAIN_AGENT_START, M.MSGC_MAIN_AGENT_DATA]
        assert M.MSGC_MAIN_AGENT_TOKEN in types   # the chunk's token given back
        return caps

    assert A.CAP_CLIPBOARD_BY_DEMAND in asyncio.run(go())


def test_sending_waits_for_tokens_and_goes_on_when_the_server_gives_some():
    async def go():
        session = Session()
        link = AgentLink(session)
        link.init(True, 0)
        sending = asyncio.ensure_future(link.send(A.CLIPBOARD_GRAB, b"x"))
        await asyncio.sleep(0.05)
        assert not sending.done() and not session.main.sent
        await link.handle(M.MSG_MAIN_AGENT_TOKEN, W.AGENT_TOKENS.pack(num_tokens=1))
        await sending
        assert [t for t, _ in session.main.sent] == [M.MSGC_MAIN_AGENT_DATA]

    asyncio.run(go())


def test_a_guest_that_talks_faster_than_anyone_reads_is_a_protocol_error():
    async def go():
        link = AgentLink(Session())
        link.init(True, 0)
        with pytest.raises(ProtocolError, match="faster than they are read"):
            for _ in range(AGENT_WINDOW * 4 + 1):
                for chunk in data(A.CLIPBOARD_GRAB, b"\x01\x00\x00\x00"):
                    await link.handle(M.MSG_MAIN_AGENT_DATA, chunk)

    asyncio.run(go())
