"""How the builtin client reaches a guest through spicectl's proxies (one stream per SPICE channel)."""

from __future__ import annotations

import asyncio
import base64
import ssl

from spicectl.errors import ProtocolError
from spicectl.spice.client import Opener
from spicectl.spice.transport import StreamTransport, Transport, WebSocketTransport

# what our client takes in one WebSocket message from a proxy (ours sends at most 4 MiB a frame)
MAX_PROXY_MESSAGE = 64 * 1024 * 1024
MAX_CONNECT_REPLY = 16 * 1024


def websocket_opener(url: str, *, origin: str | None = None,
                     ssl_context: ssl.SSLContext | None = None) -> Opener:
    async def open_channel(_channel_type: int) -> Transport:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake
        from websockets.typing import Origin, Subprotocol

        try:
            ws = await connect(url, origin=Origin(origin) if origin else None, max_size=MAX_PROXY_MESSAGE,
                               compression=None, ssl=ssl_context, subprotocols=[Subprotocol("binary")])
        except (OSError, InvalidHandshake) as exc:
            raise ProtocolError(f"the WebSocket proxy refused the connection: {exc}") from None
        return WebSocketTransport(ws)

    return open_channel


def connect_opener(proxy_host: str, proxy_port: int, token: str, target_host: str, target_port: int,
                   *, ssl_context: ssl.SSLContext, server_hostname: str) -> Opener:
    async def open_channel(_channel_type: int) -> Transport:
        reader, writer = await asyncio.open_connection(proxy_host, proxy_port)
        try:
            await _http_connect(reader, writer, f"{target_host}:{target_port}", token)
        except BaseException:
            writer.close()
            raise
        # TLS runs end to end, from here to the guest, through the proxy's tunnel
        await writer.start_tls(ssl_context, server_hostname=server_hostname)
        return StreamTransport(reader, writer)

    return open_channel


async def _http_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str,
                        token: str) -> None:
    import h11

    http = h11.Connection(h11.CLIENT)
    auth = base64.b64encode(f"spicectl:{token}".encode()).decode()
    writer.write(http.send(h11.Request(method="CONNECT", target=authority,
                                       headers=[("Host", authority), ("Proxy-Authorization", f"Basic {auth}")])))
    writer.write(http.send(h11.EndOfMessage()))
    await writer.drain()
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as exc:
            raise ProtocolError(f"the CONNECT proxy sent a malformed reply ({exc})") from None
        if event is h11.NEED_DATA:
            data = await reader.read(MAX_CONNECT_REPLY)
            if not data:
                raise ProtocolError("the CONNECT proxy closed the connection before replying")
            http.receive_data(data)
        elif isinstance(event, h11.Response):
            if not 200 <= event.status_code < 300:
                raise ProtocolError(f"the CONNECT proxy refused: {event.status_code} "
                                    f"{event.reason.decode(errors='replace')}")
            if http.trailing_data[0]:
                raise ProtocolError("the CONNECT proxy sent data before the tunnel's TLS")
            return
        elif isinstance(event, h11.InformationalResponse):
            continue
        else:
            raise ProtocolError(f"the CONNECT proxy replied with {type(event).__name__}")
