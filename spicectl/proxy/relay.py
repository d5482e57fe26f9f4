"""The one relay pump both front ends share: bytes both ways, with backpressure, counted.

Each side is an endpoint: read() returns the next chunk or None at the end;
write() returns once the chunk is handed to the kernel's buffer (drain), so a
slow reader slows the writer instead of growing memory.

When the guest is a plain TCP socket and the browser's WebSocket is plain TCP
too, guest→browser bytes never enter Python: splice(2) moves them from the
guest's socket through a pipe into the browser's socket, and only each frame's
header is written from here (server-to-client frames are unmasked, so the
payload goes out exactly as it came in). Everything else about the WebSocket —
the handshake, parsing and unmasking the browser's frames, control frames,
closing — stays with the `websockets` library. With TLS on either side the
bytes must pass through Python to be decrypted or encrypted, and the copying
pump is used.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
from dataclasses import dataclass

CHUNK = 256 * 1024          # reads from plain streams (the guest side)
WS_CHUNK = 1024 * 1024      # reads of WebSocket input: several frames parsed per wake-up (measured faster)
PIPE_SIZE = 1024 * 1024     # the splice pipe: one frame carries up to 1 MiB (measured best; 2 MiB and more were slower)


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


class SocketEndpoint:
    """A plain TCP guest connection held as a bare non-blocking socket, so its bytes can be spliced."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def open(cls, host: str, port: int) -> SocketEndpoint:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError | None = None
        for family, type_, proto, _, addr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # SPICE is interactive
                await loop.sock_connect(sock, addr)
                return cls(sock)
            except OSError as exc:
                sock.close()
                error = exc
            except BaseException:
                sock.close()
                raise
        raise error or OSError(f"cannot resolve {host}")

    async def read(self) -> bytes | None:
        try:
            data = await asyncio.get_running_loop().sock_recv(self.sock, CHUNK)
        except (ConnectionError, OSError):
            return None
        return data or None

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def close(self) -> None:
        self.sock.close()


class WebSocketEndpoint(asyncio.BufferedProtocol):
    """Binary WebSocket frames, framed by the `websockets` sans-I/O protocol.

    After the handshake it takes the connection's transport over from the StreamReader
    (see `take_over`) and receives straight into one buffer of its own: the browser's
    bytes are copied once into `websockets`' parser instead of three times through
    a StreamReader on the way."""

    def __init__(self, protocol, transport: asyncio.Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._buffer = memoryview(bytearray(WS_CHUNK))
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._ended = False                                   # no more frames will come
        self._lost = False                                    # the connection is gone
        self._read_waiter: asyncio.Future | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future] = []
        self._mid_frame = False   # a spliced frame is half written: nothing else may go out now
        self._raw: socket.socket | None = None

    @classmethod
    async def take_over(cls, protocol, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> WebSocketEndpoint:
        """Move a connection that finished its handshake on streams onto this protocol."""
        transport = writer.transport
        transport.pause_reading()
        reader.feed_eof()              # nothing more will reach the reader: read() returns what it holds
        leftover = await reader.read()
        self = cls(protocol, transport)
        transport.set_protocol(self)
        if leftover:
            self._receive(leftover)
        transport.resume_reading()
        return self

    # --- asyncio.BufferedProtocol ---------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._receive(self._buffer[:nbytes])

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self._ended = True
        self._wake_reader()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = self._lost = True
        self._wake_reader()
        self._write_paused = False
        self._wake_drainers()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()

    # --- inside ---------------------------------------------------------------------------
    def _receive(self, data) -> None:
        from websockets.frames import Opcode

        self.protocol.receive_data(data)  # a memoryview is fine: the parser copies it into its buffer
        for event in self.protocol.events_received():
            if getattr(event, "opcode", None) in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT) and event.data:
                self._pending.append(event.data)
                self._pending_size += len(event.data)
        self._flush()  # pongs and close replies
        if self.protocol.close_expected() or self.protocol.state.name in ("CLOSING", "CLOSED"):
            self._ended = True
        if self._pending_size >= WS_CHUNK:
            self.transport.pause_reading()  # backpressure: the guest side has not taken the last MiB
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def _wake_drainers(self) -> None:
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()

    def _flush(self) -> None:
        if self._mid_frame or self._lost:
            return  # the splice writer flushes when its frame is complete
        data = self.protocol.data_to_send()
        if data:
            self.transport.writelines(data)

    async def _drain(self) -> None:
        while self._write_paused and not self._lost:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut
        if self._lost:
            raise ConnectionResetError("browser connection lost")

    # --- the endpoint -----------------------------------------------------------------------
    async def read(self) -> bytes | None:
        while not self._pending:
            if self._ended:
                return None
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if not self._lost:
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        self._flush()
        await self._drain()

    # --- the splice path ----------------------------------------------------------------
    def splice_fd(self) -> int | None:
        """A descriptor of our own for the browser's socket when it is plain TCP, else None.

        It is a dup: if the transport closes its descriptor first, the number cannot be
        reused by another connection while a splice still writes to ours."""
        if self._raw is None:
            transport = self.transport
            sock = transport.get_extra_info("socket")
            if sock is None or transport.get_extra_info("sslcontext") is not None:
                return None
            self._raw = socket.socket(fileno=os.dup(sock.fileno()))
            self._raw.setblocking(False)
            # _drain() now waits until the transport's buffer is empty, so a spliced frame
            # never overtakes a control frame still queued there
            transport.set_write_buffer_limits(high=0, low=0)
        return self._raw.fileno()

    async def send_spliced(self, pipe_r: int, n: int) -> None:
        """One binary frame of the n bytes waiting in pipe_r, straight from the pipe to the socket."""
        from websockets.protocol import State

        if self.protocol.state is not State.OPEN:
            raise ConnectionResetError("WebSocket closing")
        loop = asyncio.get_running_loop()
        raw = self._raw
        await self._drain()
        # until the frame is complete nothing else goes out; if this is cancelled or fails
        # half way, the flag stays set and keeps even a close frame out of the broken stream
        self._mid_frame = True
        head = memoryview(frame_head(n))
        while head:
            try:
                head = head[raw.send(head, socket.MSG_MORE):]  # corked: leaves with the payload
            except BlockingIOError:
                await _fd_ready(loop, raw.fileno(), write=True)
        while n:
            try:
                n -= os.splice(pipe_r, raw.fileno(), n, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                await _fd_ready(loop, raw.fileno(), write=True)
        self._mid_frame = False
        self._flush()

    async def close(self) -> None:
        try:
            if self.protocol.state.name == "OPEN" and not self._mid_frame:
                self.protocol.send_close(1000)
                self._flush()
            self.transport.close()
        except Exception:
            pass
        finally:
            if self._raw is not None:
                self._raw.close()


def frame_head(n: int) -> bytes:
    """The header of one final, unmasked binary frame of n payload bytes (RFC 6455 section 5.2).

    The only framing done here, for the splice path, where the payload never reaches
    Python; tests check it byte for byte against `websockets`' own serializer."""
    if n < 126:
        return struct.pack("!BB", 0x82, n)
    if n < 1 << 16:
        return struct.pack("!BBH", 0x82, 126, n)
    return struct.pack("!BBQ", 0x82, 127, n)


async def _fd_ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await fut
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


@dataclass
class Counts:
    up: int = 0       # client → guest
    down: int = 0     # guest → client
    spliced: int = 0  # of down, moved by splice(2)


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


async def _splice_down(guest: SocketEndpoint, client: WebSocketEndpoint, counts: Counts) -> None:
    """guest → browser through a pipe: one frame per splice from the guest."""
    loop = asyncio.get_running_loop()
    gfd = guest.sock.fileno()
    pipe_r, pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only means smaller frames
        size = fcntl.fcntl(pipe_w, fcntl.F_GETPIPE_SZ)
        while True:
            try:
                n = os.splice(gfd, pipe_w, size, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                await _fd_ready(loop, gfd, write=False)
                continue
            except OSError:
                return
            if n == 0:
                return
            try:
                await client.send_spliced(pipe_r, n)
            except (ConnectionError, OSError):
                return
            counts.down += n
            counts.spliced += n
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


def _can_splice(src, dst) -> bool:
    return isinstance(src, SocketEndpoint) and isinstance(dst, WebSocketEndpoint) and dst.splice_fd() is not None


async def relay(client, guest, counts: Counts | None = None) -> Counts:
    """Copy both ways until either side ends; then close both."""
    counts = counts or Counts()
    down = _splice_down(guest, client, counts) if _can_splice(guest, client) else _pump(guest, client, counts, "down")
    tasks = [asyncio.ensure_future(_pump(client, guest, counts, "up")), asyncio.ensure_future(down)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(client.close(), guest.close(), return_exceptions=True)
    return counts
