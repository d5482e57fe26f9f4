"""The one relay pump both front ends share: bytes both ways, with backpressure, counted.

Each side is an endpoint: read() returns the next chunk or None at the end;
write() returns once the chunk is handed to the kernel (or to the transport's
buffer, drained), so a slow reader slows the writer instead of growing memory.

The WebSocket path is built for throughput (measured in bench/proxy.py):
- the guest connection (for the CONNECT tunnel too) is a bare non-blocking
  socket, TLS-wrapped by the ssl module when the guest speaks TLS, read with
  recv_into() into one buffer the whole process shares (`_SHARED`) and framed
  by `websockets` straight from it;
- frames to a plain-TCP browser go out with send() on a socket of our own, not
  through the asyncio transport, whose writelines() joins and whose buffer
  copies again;
- the browser's bytes arrive through a BufferedProtocol into the `websockets`
  parser (see `WebSocketEndpoint`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from dataclasses import dataclass

CHUNK = 256 * 1024          # reads for the CONNECT tunnel
WS_CHUNK = 1024 * 1024      # reads of WebSocket input: several frames parsed per wake-up (measured faster)
GUEST_CHUNK = 4 << 20       # one read from the guest, one frame to the browser: 4 MiB measured best, 1 MiB ~20% slower

# Reads land in these, one of each for the whole process, however many sessions there are:
# each is emptied before anything else can run. Guest → browser: websockets copies the bytes
# into a frame, and no await lies between a recv_into() and the send_binary() that consumes it.
# Browser → guest: the transport calls buffer_updated() right after its recv_into(), and the
# bytes go into websockets' parser there and then.
_SHARED = memoryview(bytearray(GUEST_CHUNK))
_SHARED_WS = memoryview(bytearray(WS_CHUNK))


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

    def shutdown_write(self) -> bool:
        """Half-close: tell the peer no more bytes come, keep reading. False where it cannot be done."""
        if self.writer.can_write_eof():
            try:
                self.writer.write_eof()
                return True
            except (ConnectionError, OSError, RuntimeError):
                pass
        return False

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:
            pass


class _Readiness:
    """Wait for a descriptor to become readable or writable, for any number of waiters at once
    (the loop keeps one callback per descriptor and direction, and both pumps may wait on one
    socket: a TLS write can need a read first)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._waiters: dict[bool, list[asyncio.Future]] = {False: [], True: []}

    async def wait(self, *, write: bool) -> None:
        loop = asyncio.get_running_loop()
        waiters = self._waiters[write]
        if not waiters:
            (loop.add_writer if write else loop.add_reader)(self.fd, self._ready, write)
        fut = loop.create_future()
        waiters.append(fut)
        try:
            await fut
        finally:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                (loop.remove_writer if write else loop.remove_reader)(self.fd)

    def _ready(self, write: bool) -> None:
        for fut in self._waiters[write]:
            if not fut.done():
                fut.set_result(None)


class SocketEndpoint:
    """A guest connection held as a bare non-blocking socket, TLS-wrapped by the ssl module when
    the guest speaks TLS; read into caller-supplied buffers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._ready = _Readiness(sock.fileno())

    @classmethod
    async def open(cls, host: str, port: int, tls: ssl.SSLContext | None = None) -> SocketEndpoint:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError | None = None
        for family, type_, proto, _, addr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # SPICE is interactive
                await loop.sock_connect(sock, addr)
                if tls is None:
                    return cls(sock)
                wrapped = tls.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
                sock = wrapped  # what the handlers below close
                endpoint = cls(wrapped)
                await endpoint._retry(wrapped.do_handshake)
                return endpoint
            except ssl.SSLError:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                error = exc
            except BaseException:
                sock.close()
                raise
        raise error or OSError(f"cannot resolve {host}")

    async def _retry(self, call, *args, sending: bool = False):
        """Run a non-blocking socket call until it does not ask to wait. TLS may want the other
        direction than the call's own (a read can need a write, and a write a read)."""
        while True:
            try:
                return call(*args)
            except BlockingIOError:
                await self._ready.wait(write=sending)
            except ssl.SSLWantReadError:
                await self._ready.wait(write=False)
            except ssl.SSLWantWriteError:
                await self._ready.wait(write=True)

    async def recv_into(self, buffer: memoryview) -> int:
        """Bytes received into buffer; 0 at the end (or on a connection error)."""
        try:
            n = await self._retry(self.sock.recv_into, buffer)
        except (ConnectionError, OSError):  # ssl.SSLError included
            return 0
        if isinstance(self.sock, ssl.SSLSocket):
            # TLS hands over one record (16 KiB at most) per call: gather what has already
            # arrived, so that one frame carries it rather than one frame per record
            while 0 < n < len(buffer):
                try:
                    more = self.sock.recv_into(buffer[n:])
                except OSError:  # would block (SSLWantRead/Write), or an error the next call reports
                    break
                if not more:
                    break
                n += more
        return n

    async def read(self) -> bytes | None:
        n = await self.recv_into(_SHARED[:CHUNK])
        return bytes(_SHARED[:n]) if n else None

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[await self._retry(self.sock.send, view, sending=True):]

    def shutdown_write(self) -> bool:
        if isinstance(self.sock, ssl.SSLSocket):
            return False  # TLS has no half-close we could pass on
        try:
            self.sock.shutdown(socket.SHUT_WR)
            return True
        except OSError:
            return False

    async def close(self) -> None:
        self.sock.close()


class WebSocketEndpoint(asyncio.BufferedProtocol):
    """Binary WebSocket frames, framed by the `websockets` sans-I/O protocol.

    After the handshake it takes the connection's transport over from the StreamReader
    (see `take_over`) and receives straight into a shared buffer: the browser's bytes
    are copied once into `websockets`' parser instead of three times through a
    StreamReader on the way. Data frames to a plain-TCP browser are sent on a socket
    of our own; control frames (pongs, close) still go through the transport."""

    def __init__(self, protocol, transport: asyncio.Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._ended = False                                   # no more frames will come
        self._lost = False                                    # the connection is gone
        self._read_waiter: asyncio.Future | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future] = []
        self._mid_frame = False   # a frame is half sent on the raw socket: nothing else may go out now
        self._raw: SocketEndpoint | None = None

    def _own_socket(self) -> SocketEndpoint | None:
        """A socket of our own for the browser's connection when it is plain TCP (with TLS the
        transport must encrypt). It is a dup: if the transport closes its descriptor first, the
        number cannot be reused by another connection while we still send on ours."""
        sock = self.transport.get_extra_info("socket")
        if sock is None or self.transport.get_extra_info("sslcontext") is not None:
            return None
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        raw.setblocking(False)
        # _drain() now waits until the transport's buffer is empty, so a frame sent on the raw
        # socket never overtakes a control frame still queued there
        self.transport.set_write_buffer_limits(high=0, low=0)
        return SocketEndpoint(raw)

    @classmethod
    async def take_over(cls, protocol, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> WebSocketEndpoint:
        """Move a connection that finished its handshake on streams onto this protocol."""
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)  # a socket's, which reads as well as writes
        transport.pause_reading()
        reader.feed_eof()              # nothing more will reach the reader: read() returns what it holds
        leftover = await reader.read()
        self = cls(protocol, transport)
        transport.set_protocol(self)
        self._raw = self._own_socket()  # after the switch: flow control now reports to us
        if leftover:
            self._receive(leftover)
        transport.resume_reading()
        return self

    # --- asyncio.BufferedProtocol ---------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return _SHARED_WS

    def buffer_updated(self, nbytes: int) -> None:
        self._receive(_SHARED_WS[:nbytes])

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
            return  # the raw sender flushes when its frame is complete
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

    async def write(self, data) -> None:
        """One binary frame of data (bytes or a view, copied into the frame before any await)."""
        from websockets.protocol import State

        if self.protocol.state is not State.OPEN:
            raise ConnectionResetError("WebSocket closing")
        self.protocol.send_binary(data)
        if self._raw is None:
            self._flush()
            await self._drain()
            return
        # until the frames are out nothing else goes out; if this is cancelled or fails half way,
        # the flag stays set and keeps even a close frame out of the broken stream
        self._mid_frame = True
        await self._drain()
        for frame in self.protocol.data_to_send():
            await self._raw.write(frame)
        self._mid_frame = False
        self._flush()

    def shutdown_write(self) -> bool:
        return False  # a WebSocket has no half-close: the session ends

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
                await self._raw.close()


@dataclass
class Counts:
    up: int = 0       # client → guest
    down: int = 0     # guest → client


END, BROKEN = "end", "broken"  # how a direction stopped: its source ended, or a write failed


async def _pump(src, dst, counts: Counts, attr: str) -> str:
    while True:
        data = await src.read()
        if data is None:
            return END
        try:
            await dst.write(data)
        except (ConnectionError, OSError):
            return BROKEN
        setattr(counts, attr, getattr(counts, attr) + len(data))


async def _guest_to_browser(guest: SocketEndpoint, client: WebSocketEndpoint, counts: Counts) -> str:
    while True:
        n = await guest.recv_into(_SHARED)
        if not n:
            return END
        try:
            await client.write(_SHARED[:n])  # framed (copied out of _SHARED) before its first await
        except (ConnectionError, OSError):
            return BROKEN
        counts.down += n


HALF_CLOSE_GRACE = 30.0  # seconds the other direction may still take after a half-close


async def relay(client, guest, counts: Counts | None = None, on_end=None) -> Counts:
    """Copy both ways; when one side has said all it will (a half-close), pass that on and keep
    the other direction open until it ends too (where both ends can half-close); then close both."""
    counts = counts or Counts()
    if isinstance(guest, SocketEndpoint) and isinstance(client, WebSocketEndpoint):
        down = _guest_to_browser(guest, client, counts)
    else:
        down = _pump(guest, client, counts, "down")
    up_task = asyncio.ensure_future(_pump(client, guest, counts, "up"))
    down_task = asyncio.ensure_future(down)
    tasks = {up_task: guest, down_task: client}  # each direction, and the end it writes to
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if on_end is not None:
            on_end()  # the session is ending: it takes no new connections from here on
        first = done.pop()
        outcome = BROKEN if first.exception() is not None else first.result()
        if pending and outcome == END and tasks[first].shutdown_write():
            await asyncio.wait(pending, timeout=HALF_CLOSE_GRACE)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(client.close(), guest.close(), return_exceptions=True)
    return counts
