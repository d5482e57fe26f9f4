"""Port channels (and the WebDAV channel, a port too): each one's name and whether the guest holds it open."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from spicectl.spice import link, port
from spicectl.spice import messages as M
from spicectl.spice.channel_io import read_by
from spicectl.spice.port import PortState

if TYPE_CHECKING:
    from spicectl.spice.channel_io import Session


async def list_ports(session: Session, *, timeout: float = 15) -> dict[tuple[int, int], PortState]:
    """Link each port and WebDAV channel; its name and whether the guest holds it open."""
    found: dict[tuple[int, int], PortState] = {}
    for key in sorted(k for k in session.channels_available if k[0] in (link.PORT, link.WEBDAV)):
        conn = await session.open_channel(*key)
        try:
            deadline = time.monotonic() + timeout
            while True:
                msg_type, body = await read_by(conn, deadline, f"{link.CHANNEL_NAMES[key[0]]} channel {key[1]}: "
                                                                f"no port init within {timeout:g}s")
                if msg_type == M.MSG_PORT_INIT:
                    found[key] = port.read_init(body)
                    break
        finally:
            conn.close()
    return found
