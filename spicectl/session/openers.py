"""How the builtin client reaches a guest through spicectl's proxies (one stream per SPICE channel)."""

from __future__ import annotations

import asyncio
import base64
import ssl

from spicectl.errors import ProtocolError

# what our client takes in one WebSocket message from a proxy (ours sends at most 4 MiB a frame)
MAX_PROXY_MESSAGE = 64 * 1024 * 1024


class _WebSocketWriter:
    """The StreamWriter calls the SPICE channel code makes, over a WebSocket."""

    def __init__(self, ws, pump: asyncio.Task) -> None:
        self.ws = ws
        self.pump = pump
        self.buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.buffer.append(bytes(data))

    async def drain(self) -> None:
        if self.buffer:
            data, self.buffer = b"".join(self.buffer), []
            await self.ws.send(data)

    def close(self) -> None:
        self.pump.cancel()
        asyncio.ensure_future(self.ws.close())

    def get_extra_info(self, name: str, default=None):
        return default


def websocket_opener(url: str, *, origin: str | None = None, ssl_context: ssl.SSLContext | None = None):
    async def open_channel(_channel_type: int):
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        try:
            ws = await connect(url, origin=origin, max_size=MAX_PROXY_MESSAGE, compression=None, ssl=ssl_context,
                               subprotocols=["binary"])
        except (OSError, InvalidHandshake) as exc:
            raise ProtocolError(f"the WebSocket proxy refused the connection: {exc}") from None
        reader = asyncio.StreamReader(limit=2 ** 26)

        async def pump():
            try:
                async for message in ws:
                    reader.feed_data(message if isinstance(message, bytes) else message.encode())
            except ConnectionClosed:
                pass
            finally:
                reader.feed_eof()

        return reader, _WebSocketWriter(ws, asyncio.ensure_future(pump()))

    return open_channel


def connect_opener(proxy_host: str, proxy_port: int, token: str, target_host: str, target_port: int,
                   *, ssl_context: ssl.SSLContext, server_hostname: str):
    async def open_channel(_channel_type: int):
        reader, writer = await asyncio.open_connection(proxy_host, proxy_port)
        auth = base64.b64encode(f"spicectl:{token}".encode()).decode()
        writer.write(f"CONNECT {target_host}:{target_port} HTTP/1.1\r\nHost: {target_host}:{target_port}\r\n"
                     f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            writer.close()
            raise ProtocolError(f"the CONNECT proxy refused: {status.decode(errors='replace')}")
        await writer.start_tls(ssl_context, server_hostname=server_hostname)
        return reader, writer

    return open_channel
