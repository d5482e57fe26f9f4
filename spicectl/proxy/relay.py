"""The one relay pump both front ends share: bytes both ways, with backpressure, counted.

Each side is an `Endpoint`: read() returns the next chunk or None at the end;
write() returns once the chunk is handed to the kernel's buffer (drain), so a
slow reader slows the writer instead of growing memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

CHUNK = 256 * 1024          # reads from plain streams (the guest side)
WS_CHUNK = 1024 * 1024      # reads of WebSocket input: several frames parsed per wake-up (measured faster)


class StreamEndpoint:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, leftover: bytes = b"") -> None:
        self.reader = reader
        self.writer = writer
        self._leftover = leftover

    async def read(self) -> bytes | None:
        if self._leftover:
            data, self._leftover = self._leftover, b""
            return data
        try:
            data = await self.reader.read(CHUNK)
        except (ConnectionError, OSError):
            return None
        return data or None

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (ConnectionError, OSError, asyncio.TimeoutError, Exception):
            pass


class WebSocketEndpoint:
    """Binary WebSocket frames over a stream, framed by the `websockets` sans-I/O protocol."""

    def __init__(self, protocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.protocol = protocol
        self.reader = reader
        self.writer = writer
        self._pending: list[bytes] = []

    def _flush(self) -> None:
        data = self.protocol.data_to_send()
        if data:
            self.writer.writelines(data)  # no join: the frames go to the transport as they are

    async def read(self) -> bytes | None:
        from websockets.frames import Opcode

        while not self._pending:
            for event in self.protocol.events_received():
                if getattr(event, "opcode", None) in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT) and event.data:
                    self._pending.append(event.data)
            self._flush()  # pongs and close replies
            if self._pending:
                break
            if self.protocol.close_expected() or self.protocol.state.name in ("CLOSING", "CLOSED"):
                return None
            try:
                data = await self.reader.read(WS_CHUNK)
            except (ConnectionError, OSError):
                return None
            if not data:
                self.protocol.receive_eof()
                return None
            self.protocol.receive_data(data)
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        return data

    async def write(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        self._flush()
        await self.writer.drain()

    async def close(self) -> None:
        try:
            if self.protocol.state.name == "OPEN":
                self.protocol.send_close(1000)
                self._flush()
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:
            pass


@dataclass
class Counts:
    up: int = 0     # client → guest
    down: int = 0   # guest → client


async def _pump(src, dst, counts: Counts, attr: str) -> None:
    while True:
        data = await src.read()
        if data is None:
            return
        try:
            await dst.write(data)
        except (ConnectionError, OSError):
            return
        setattr(counts, attr, getattr(counts, attr) + len(data))


async def relay(client, guest, counts: Counts | None = None) -> Counts:
    """Copy both ways until either side ends; then close both."""
    counts = counts or Counts()
    tasks = [asyncio.ensure_future(_pump(client, guest, counts, "up")),
             asyncio.ensure_future(_pump(guest, client, counts, "down"))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(client.close(), guest.close(), return_exceptions=True)
    return counts
