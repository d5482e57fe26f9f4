"""Folder sharing's framing: spice-webdavd's multiplexer on the WebDAV port channel.

In the guest, spice-webdavd listens on localhost:9843 and carries every connection a guest program
makes there over the one virtio-serial port (org.spice-space.webdav.0), which spice-server hands
the client as spicevmc DATA on the WebDAV channel. Each way, a frame is the guest connection's id
(i64), a size (u16) and that many bytes; a frame of size 0 says the connection ended. The client
answers each connection from a WebDAV server of its own, one server connection per guest one.
"""

from __future__ import annotations

from spicectl.errors import ProtocolError
from spicectl.spice.wire import Layout

MUX_HEAD = Layout("spice-webdavd mux frame", [("client", "q"), ("size", "H")])
MAX_FRAME = 0xFFFF
MAX_CLIENTS = 256   # guest connections open at once: more is a runaway guest, not a file manager


def frames(client: int, data: bytes) -> bytes:
    """`data` for guest connection `client` as mux frames; no data is the frame that ends it."""
    if not data:
        return MUX_HEAD.pack(client=client, size=0)
    return b"".join(MUX_HEAD.pack(client=client, size=len(part)) + part
                    for part in (data[i:i + MAX_FRAME] for i in range(0, len(data), MAX_FRAME)))


class Demux:
    """Bytes from the port in, (connection id, data) frames out; b"" data: that connection ended."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        out = []
        while len(self._buffer) >= MUX_HEAD.size:
            head = MUX_HEAD.unpack(self._buffer)
            end = MUX_HEAD.size + head["size"]
            if len(self._buffer) < end:
                break
            out.append((head["client"], bytes(self._buffer[MUX_HEAD.size:end])))
            del self._buffer[:end]
        return out


def check_clients(open_now: int) -> None:
    if open_now > MAX_CLIENTS:
        raise ProtocolError(f"webdav channel: the guest opened over {MAX_CLIENTS} connections at once")
