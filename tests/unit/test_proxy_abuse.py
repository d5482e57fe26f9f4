"""`spicectl proxy serve` under abuse, as its own process: idle floods, garbage, oversized heads,
slowloris, forged tokens. Afterwards a valid session still works and the proxy holds no more
descriptors (and not much more memory) than before."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect as ws_connect

from spicectl.proxy.tokens import Signer, load_secret
from tests.conftest import echo_guest, free_port


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture
def proxy(state_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "SPICECTL_STATE_DIR": str(state_dir), "SPICECTL_CONFIG": str(tmp_path / "none.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "spicectl", "-q", "proxy", "serve", "--listen",
                             f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "proxy serve did not start"
            time.sleep(0.1)
    yield proc, port, Signer(load_secret(state_dir))
    proc.terminate()
    proc.wait(10)


async def valid_session(port: int, signer: Signer, gport: int) -> bytes:
    token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="ws", ttl=60)
    async with ws_connect(f"ws://127.0.0.1:{port}/websockify?token={token}", subprotocols=["binary"]) as ws:
        await ws.send(b"still serving")
        return await asyncio.wait_for(ws.recv(), 10)


async def answer(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def test_the_proxy_survives_abuse_and_returns_to_its_baseline(proxy):
    proc, port, signer = proxy

    async def go():
        guest, gport = await echo_guest()
        assert await valid_session(port, signer, gport) == b"STILL SERVING"
        await asyncio.sleep(0.5)
        base_fds, base_rss = fds(proc.pid), rss_kib(proc.pid)

        # 2,000 connections that never send a byte: each is closed by the handshake timeout
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2000)]
        assert fds(proc.pid) > base_fds + 1000  # they are really held open for now
        closed = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _w in idle)), 30)
        assert all(data == b"" for data in closed)
        for _r, w in idle:
            w.close()

        # slowloris: a byte a second never completes a request within the timeout
        async def slow():
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":
                writer.write(bytes([byte]))
                await asyncio.sleep(1)
                if reader.at_eof():
                    break
            writer.close()
            return reader.at_eof()

        slow_task = asyncio.gather(*(slow() for _ in range(10)))
        garbage = await asyncio.gather(*(answer(port, os.urandom(500) + b"\r\n\r\n") for _ in range(100)))
        assert all(g.startswith(b"HTTP/1.1 4") or g == b"" for g in garbage)
        big = await answer(port, b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 431")
        forged = await answer(port, b"GET /websockify?token=Zm9v.YmFy HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                    b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert forged.startswith(b"HTTP/1.1 403")
        assert all(await asyncio.wait_for(slow_task, 60))  # every slow client was cut off

        assert await valid_session(port, signer, gport) == b"STILL SERVING"
        await asyncio.sleep(1)
        guest.close()
        return base_fds, base_rss

    base_fds, base_rss = asyncio.run(go())
    deadline = time.monotonic() + 10
    while fds(proc.pid) > base_fds and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fds(proc.pid) <= base_fds
    assert rss_kib(proc.pid) - base_rss < 16 * 1024  # KiB: no per-connection leftovers
