"""The one asyncio adapter: runs the sans-I/O link and channel over a byte transport.

A `Transport` moves bytes: a TCP or TLS stream (`StreamTransport`) or a
WebSocket whose binary messages carry the SPICE byte stream
(`WebSocketTransport`, spice-html5's framing). `link()` runs a
`Handshake` over one, and a `Connection` then reads and writes channel
messages.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from spicectl.errors import ProtocolError
from spicectl.spice.channel import Channel, Message
from spicectl.spice.link import Handshake

READ_CHUNK = 256 * 1024


class Transport(Protocol):
    async def receive(self) -> bytes:
        """The next bytes from the server; b"" once it has closed."""
        ...

    async def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def peer_certificate(self) -> bytes | None:
        """The server's certificate (DER) when this transport runs the TLS to the guest itself."""
        ...


class StreamTransport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def receive(self) -> bytes:
        try:
            return await self.reader.read(READ_CHUNK)
        except (ConnectionError, OSError) as exc:
            raise ProtocolError(f"connection lost ({exc})") from None

    async def send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ProtocolError(f"connection lost ({exc})") from None

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # closing a broken TLS stream may raise; nothing to do
            pass

    def peer_certificate(self) -> bytes | None:
        sslobj = self.writer.get_extra_info("ssl_object")
        return sslobj.getpeercert(binary_form=True) if sslobj is not None else None


class WebSocketTransport:
    """A SPICE byte stream in binary WebSocket messages (the proxy holds the TLS to the guest)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def receive(self) -> bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            message = await self.ws.recv()
        except ConnectionClosed:
            return b""
        return message if isinstance(message, bytes) else message.encode()

    async def send(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send(data)
        except ConnectionClosed as exc:
            raise ProtocolError(f"the WebSocket proxy closed the connection ({exc})") from None

    def close(self) -> None:
        asyncio.ensure_future(self.ws.close())

    def peer_certificate(self) -> bytes | None:
        return None


async def open_stream(host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                      server_hostname: str | None = None) -> StreamTransport:
    if ssl_context is None:
        reader, writer = await asyncio.open_connection(host, port)
    else:
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context,
                                                       server_hostname=server_hostname or host)
    return StreamTransport(reader, writer)


class Connection:
    """A linked channel over a transport: `read()` the channel's messages, `send()` then `flush()`."""

    def __init__(self, transport: Transport, channel: Channel) -> None:
        self.transport = transport
        self.channel = channel
        self.observers: list[Callable[[Message], None]] = []  # e.g. a recorder

    @property
    def name(self) -> str:
        return self.channel.name

    @property
    def channel_caps(self) -> set[int]:
        return self.channel.channel_caps

    async def read(self) -> Message:
        while True:
            msg = self.channel.next_message()
            await self.flush()  # answers to pings and acks go out before we wait again
            if msg is not None:
                for observe in self.observers:
                    observe(msg)
                return msg
            try:
                data = await self.transport.receive()
            except ProtocolError as exc:
                raise ProtocolError(f"{self.name} channel: {exc.message}") from None
            if data:
                self.channel.receive_data(data)
            else:
                self.channel.receive_eof()

    def send(self, msg_type: int, body: bytes = b"") -> None:
        self.channel.send(msg_type, body)

    async def flush(self) -> None:
        data = self.channel.data_to_send()
        if data:
            await self.transport.send(data)

    def close(self) -> None:
        self.transport.close()


async def link(transport: Transport, handshake: Handshake) -> Connection:
    """Run the link stage over `transport`; the linked channel as a Connection."""
    await transport.send(handshake.start())
    while not handshake.done:
        data = await transport.receive()
        if not data:
            handshake.receive_eof()
        out = handshake.receive_data(data)
        if out:
            await transport.send(out)
    assert handshake.reply is not None
    return Connection(transport, Channel(handshake.channel_type, handshake.reply, leftover=handshake.leftover))
