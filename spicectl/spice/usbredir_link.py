"""The usbredir channels: each one linked, and the usbredir hello exchanged with its peer."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from spicectl.spice import link, usbredir
from spicectl.spice import messages as M
from spicectl.spice.channel_io import read_by

if TYPE_CHECKING:
    from spicectl.spice.channel_io import Session


async def usbredir_hellos(session: Session, *, timeout: float = 15) -> dict[int, usbredir.Hello]:
    """Link each usbredir channel, exchange the usbredir hello, and return what each peer said."""
    from spicectl import __version__

    hellos: dict[int, usbredir.Hello] = {}
    for channel_id in sorted(i for t, i in session.channels_available if t == link.USBREDIR):
        conn = await session.open_channel(link.USBREDIR, channel_id)
        try:
            conn.send(M.MSGC_SPICEVMC_DATA, usbredir.hello(f"spicectl {__version__}"))
            await conn.flush()
            parser = usbredir.Parser()
            deadline = time.monotonic() + timeout
            while parser.peer is None:
                msg_type, body = await read_by(conn, deadline,
                                                f"usbredir channel {channel_id}: no hello within {timeout:g}s")
                if msg_type == M.MSG_SPICEVMC_DATA:
                    parser.receive_data(body)
            hellos[channel_id] = parser.peer
        finally:
            conn.close()
    return hellos
