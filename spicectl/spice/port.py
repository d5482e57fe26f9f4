"""Port channels: named virtio-serial ports a guest opens (spice-webdavd's org.spice-space.webdav.0 among them).

spice-server lists each `spiceport` character device as a PORT channel, the WebDAV one as a WEBDAV
channel; on link both send PORT_INIT (the port's name and whether the guest holds it open), and
PORT_EVENT when the guest opens or closes it. The data itself is spicevmc DATA, as on usbredir.
"""

from __future__ import annotations

from dataclasses import dataclass

from spicectl.errors import ProtocolError
from spicectl.spice import messages as M
from spicectl.spice.wire import PORT_EVENT, PORT_INIT

MAX_NAME = 1024


@dataclass
class PortState:
    name: str
    opened: bool

    def handle(self, msg_type: int, body: bytes) -> None:
        """Follow the guest opening and closing the port."""
        if msg_type == M.MSG_PORT_EVENT:
            event = PORT_EVENT.unpack(body)["event"]
            if event in (M.PORT_EVENT_OPENED, M.PORT_EVENT_CLOSED):
                self.opened = event == M.PORT_EVENT_OPENED


def read_init(body: bytes) -> PortState:
    init = PORT_INIT.unpack(body)
    size, offset = init["name_size"], init["name_offset"]
    if not 0 < size <= MAX_NAME or offset < PORT_INIT.size or offset + size > len(body):
        raise ProtocolError(f"port init: a name of {size} bytes at {offset} is outside the message")
    raw = body[offset:offset + size]
    if raw[-1:] != b"\0":
        raise ProtocolError("port init: the name is not NUL-terminated")
    return PortState(raw[:-1].decode("utf-8", errors="replace"), bool(init["opened"]))
