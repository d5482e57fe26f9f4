"""The WebDAV channel at work: the guest's folder-sharing connections (spice-webdavd's, muxed by
`webdav.Demux`) carried to a WebDAV server of ours, one server connection per guest connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from spicectl.errors import NotFound
from spicectl.spice import link, webdav
from spicectl.spice import messages as M
from spicectl.spice.channel_io import run_for

if TYPE_CHECKING:
    from spicectl.spice.channel_io import Session


Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def serve_webdav(session: Session, connect: Connector, *, seconds: float | None = None,
                       stop: asyncio.Event | None = None,
                       on_connection: Callable[[int], None] = lambda _n: None,
                       on_ready: Callable[[], None] = lambda: None) -> int:
    """Carry the guest's folder-sharing connections (spice-webdavd's, muxed on the WebDAV channel)
    to a WebDAV server: `connect()` opens one server connection per guest connection. Runs for
    `seconds` or until `stop` is set (or forever); returns how many guest connections it carried.
    `on_ready` runs once the channel is linked: from then on the guest's connections reach us."""
    if (link.WEBDAV, 0) not in session.channels_available:
        raise NotFound("the guest has no folder-sharing channel",
                       hint="create the guest with --folder-sharing (spicectl vm create --help)")
    channel = await session.open_channel(link.WEBDAV, 0)
    on_ready()
    demux = webdav.Demux()
    servers: dict[int, asyncio.StreamWriter] = {}
    pumps: set[asyncio.Task] = set()
    carried = 0
    send_lock = asyncio.Lock()

    async def to_guest(client_id: int, data: bytes) -> None:
        async with send_lock:
            channel.send(M.MSGC_SPICEVMC_DATA, webdav.frames(client_id, data))
            await channel.flush()

    async def pump(client_id: int, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(webdav.MAX_FRAME):
                await to_guest(client_id, data)
        except OSError:
            pass
        finally:
            if servers.pop(client_id, None) is not None:
                await to_guest(client_id, b"")  # the server is done with it: so is the guest

    async def carry() -> None:
        nonlocal carried
        while True:
            msg_type, body = await channel.read()
            if msg_type != M.MSG_SPICEVMC_DATA:
                continue  # PORT_INIT and PORT_EVENT: spice-webdavd opening and closing its end
            for client_id, data in demux.feed(body):
                writer = servers.get(client_id)
                if writer is None:
                    if not data:
                        continue
                    webdav.check_clients(len(servers) + 1)
                    reader, writer = await connect()
                    servers[client_id] = writer
                    carried += 1
                    on_connection(carried)
                    task = asyncio.ensure_future(pump(client_id, reader))
                    pumps.add(task)
                    task.add_done_callback(pumps.discard)
                if data:
                    try:
                        writer.write(data)
                        await writer.drain()
                    except OSError:   # the server closed this one (a refusal): the others go on
                        if servers.pop(client_id, None) is not None:
                            writer.close()
                            await to_guest(client_id, b"")
                else:  # the guest program closed its connection
                    servers.pop(client_id, None)
                    writer.close()

    try:
        await run_for(carry(), seconds, stop)
    finally:
        for t in pumps:
            t.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for writer in servers.values():
            writer.close()
        channel.close()
    return carried
