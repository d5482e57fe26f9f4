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


@dataclass
class Job:
    """Work running in the background on a warm session (record-video --background) until stopped."""

    task: asyncio.Future
    stop: asyncio.Event


class WarmSessions:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sessions: dict[tuple, Warm] = {}
        self.jobs: dict[tuple, Job] = {}
        self._lock = threading.Lock()   # commands run in threads of their own: one session per guest

    def _call(self, coro: Awaitable) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def run(self, key: tuple, make_server: Callable[[], Any], work: Callable[[Any], Awaitable], *,
            cursor: bool, allow_partial: bool) -> Any:
        with self._lock:
            warm = self._session(key, make_server, cursor, allow_partial)
        return self._call(work(warm.client))

    def start_job(self, key: tuple, make_server: Callable[[], Any],
                  job: Callable[[Any, asyncio.Event, asyncio.Future], Awaitable], *, cursor: bool) -> Any:
        """Run `job(client, stop, started)` on the session for `key` until `stop_job`; return what it
        sets `started` to (or raise what ended it before that)."""
        from spicectl.errors import Conflict

        with self._lock:
            if self.running(key):
                raise Conflict("a background job already runs on this guest's session", hint="stop it first")
            warm = self._session(key, make_server, cursor, False)

            async def launch():
                started = self.loop.create_future()
                stop = asyncio.Event()
                task = asyncio.ensure_future(job(warm.client, stop, started))

                def ended(t: asyncio.Future) -> None:
                    if not started.done():
                        if t.cancelled() or t.exception() is None:
                            started.set_result(None)
                        else:
                            started.set_exception(t.exception())

                task.add_done_callback(ended)
                self.jobs[key] = Job(task, stop)
                return await started

            return self._call(launch())

    def stop_job(self, key: tuple) -> Any:
        """Stop the job on `key`'s session; its result (or what ended it), or None if none runs."""
        job = self.jobs.pop(key, None)
        if job is None:
            return None

        async def finish():
            job.stop.set()
            return await job.task

        return self._call(finish())

    def running(self, key: tuple | None = None) -> bool:
        """Whether a background job runs (on `key`'s session, or on any)."""
        return any(not j.task.done() for k, j in self.jobs.items() if key is None or k == key)

    def stop_all(self, timeout: float) -> None:
        """End every job (a clean stop: a recording writes its index), waiting up to `timeout`."""
        jobs, self.jobs = list(self.jobs.values()), {}

        async def finish():
            for job in jobs:
                job.stop.set()
            await asyncio.wait([j.task for j in jobs], timeout=timeout)

        if jobs:
            self._call(finish())

    def _session(self, key: tuple, make_server: Callable[[], Any], cursor: bool, allow_partial: bool) -> Warm:
        warm = self.sessions.get(key)
        if warm is not None and self.running(key) and not warm.client.failed:
            pass   # a recording runs on it: a session with the cursor channel serves commands without, too
        elif warm is not None and (warm.cursor != cursor or warm.client.failed):
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
        for key in [k for k, w in self.sessions.items() if now - w.used > idle and not self.running(k)]:
            self.drop(key)
