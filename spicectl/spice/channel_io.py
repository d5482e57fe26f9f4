"""What every channel module needs of a session (`Session`, which `Client` is), and two waits:
work that runs for a while or until stopped, and the next message by a deadline. The channel
modules type against `Session`, not `Client`, so that the client can import them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

from spicectl.errors import TimeoutExpired
from spicectl.spice.channel import Message
from spicectl.spice.transport import Connection

if TYPE_CHECKING:
    from spicectl.spice.budget import Budget


class Session(Protocol):
    main: Connection | None
    channels_available: set[tuple[int, int]]
    budget: Budget

    async def open_channel(self, channel_type: int, channel_id: int = 0,
                           caps: tuple[int, ...] = ()) -> Connection: ...

    def raise_if_failed(self) -> None: ...

    async def wait_event(self, event: asyncio.Event, what: str, timeout: float = ...) -> None: ...


async def run_for(work: Awaitable[None], seconds: float | None, stop: asyncio.Event | None = None) -> None:
    """Run `work` for `seconds` (None: no limit) or until `stop` is set, then cancel it; what ended it
    earlier (a closed channel, a protocol error) is raised."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future((stop or asyncio.Event()).wait())
    try:
        done, _ = await asyncio.wait({task, stopped}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
    finally:
        for t in (task, stopped):
            t.cancel()
        await asyncio.gather(task, stopped, return_exceptions=True)


async def read_by(conn: Connection, deadline: float, expired: str) -> Message:
    """The channel's next message if it comes before `deadline` (a time.monotonic()); else `expired`."""
    remaining = deadline - time.monotonic()
    try:
        if remaining <= 0:
            raise TimeoutError
        return await asyncio.wait_for(conn.read(), remaining)
    except TimeoutError:
        raise TimeoutExpired(expired) from None
