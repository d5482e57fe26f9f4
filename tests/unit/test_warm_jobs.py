"""The holder's background jobs (record-video --background) on its warm sessions: a job keeps its
session (and the holder) alive, shares it with commands, and ends cleanly when stopped."""

from __future__ import annotations

import asyncio
import threading

import pytest

from spicectl.errors import Conflict
from spicectl.holder.warm import WarmSessions


class FakeClient:
    made = 0

    def __init__(self) -> None:
        FakeClient.made += 1
        self.failed = False
        self.closed = False
        self.password = b"x"

        class Screen:
            allow_partial = False

        self.screen = Screen()

    async def connect(self, **kw) -> None:
        self.cursor = kw["cursor"]

    async def close(self) -> None:
        self.closed = True


class FakeServer:
    def client(self, **kw) -> FakeClient:
        return FakeClient()


@pytest.fixture
def warm():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield WarmSessions(loop)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


async def recorder(client, stop, started):
    started.set_result("recording")
    frames = 0
    while not stop.is_set():
        frames += 1
        await asyncio.sleep(0.01)
    return frames


def test_a_job_runs_until_stopped_and_returns_its_result(warm):
    assert warm.start_job(("g",), FakeServer, recorder, cursor=True) == "recording"
    assert warm.running() and warm.running(("g",)) and not warm.running(("other",))
    with pytest.raises(Conflict):
        warm.start_job(("g",), FakeServer, recorder, cursor=True)
    frames = warm.stop_job(("g",))
    assert frames >= 1 and not warm.running()
    assert warm.stop_job(("g",)) is None


def test_commands_share_the_jobs_session_and_idle_expiry_spares_it(warm):
    FakeClient.made = 0
    warm.start_job(("g",), FakeServer, recorder, cursor=True)
    session = warm.sessions[("g",)].client

    async def work(client):
        return client

    # a command without the cursor channel uses the recording's session instead of replacing it
    assert warm.run(("g",), FakeServer, work, cursor=False, allow_partial=False) is session
    assert FakeClient.made == 1
    warm.expire(0)
    assert ("g",) in warm.sessions and not session.closed
    warm.stop_job(("g",))
    warm.expire(0)
    assert ("g",) not in warm.sessions and session.closed


def test_a_job_that_fails_before_it_starts_raises_in_the_starting_command(warm):
    async def broken(client, stop, started):
        raise RuntimeError("no screen")

    with pytest.raises(RuntimeError, match="no screen"):
        warm.start_job(("g",), FakeServer, broken, cursor=False)
    assert not warm.running()


def test_stop_all_ends_every_job_cleanly(warm):
    ended = []

    async def job(client, stop, started):
        started.set_result(None)
        await stop.wait()
        ended.append(client)

    warm.start_job(("a",), FakeServer, job, cursor=False)
    warm.start_job(("b",), FakeServer, job, cursor=False)
    warm.stop_all(timeout=5)
    assert len(ended) == 2 and not warm.running()
