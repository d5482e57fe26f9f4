"""SPICE sessions the holder keeps open between commands, one per guest.

A session is linked once with a fresh ticket; the password is dropped as soon as every channel
is linked (a linked channel needs none), so the holder keeps no ticket. A session whose
connection failed, or that a command asked for with other channels, is replaced by a fresh one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Warm:
    client: Any
    cursor: bool
    used: float = field(default_factory=time.monotonic)


class WarmSessions:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sessions: dict[tuple, Warm] = {}
        self._lock = threading.Lock()   # commands run in threads of their own: one session per guest

    def _call(self, coro: Awaitable) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def run(self, key: tuple, make_server: Callable[[], Any], work: Callable[[Any], Awaitable], *,
            cursor: bool, allow_partial: bool) -> Any:
        with self._lock:
            warm = self._session(key, make_server, cursor, allow_partial)
        return self._call(work(warm.client))

    def _session(self, key: tuple, make_server: Callable[[], Any], cursor: bool, allow_partial: bool) -> Warm:
        warm = self.sessions.get(key)
        if warm is not None and (warm.cursor != cursor or warm.client.failed):
            self.drop(key)
            warm = None
        if warm is None:
            server = make_server()

            async def connect():
                client = server.client(allow_partial=allow_partial)
                try:
                    await client.connect(display=True, inputs=True, cursor=cursor)
                except BaseException:
                    await client.close()
                    raise
                client.password = None
                return client

            warm = self.sessions[key] = Warm(self._call(connect()), cursor)
        warm.used = time.monotonic()
        warm.client.screen.allow_partial = allow_partial
        return warm

    def drop(self, key: tuple) -> None:
        warm = self.sessions.pop(key, None)
        if warm is not None:
            self._call(warm.client.close())

    def expire(self, idle: float) -> None:
        now = time.monotonic()
        for key in [k for k, w in self.sessions.items() if now - w.used > idle]:
            self.drop(key)
