"""The usbredir protocol's first step over a SPICE usbredir channel: the hello each side sends.

Facts from usbredir's `usbredirproto.h`: packets of a header (type, length,
id: three little-endian u32 while 64-bit ids are not negotiated) and a
body; `hello` (type 0) carries a 64-byte version string and capability
words. On SPICE the byte stream travels in SPICEVMC_DATA messages.

The client side of usbredir is the USB *host* (it owns devices); QEMU's
`usb-redir` device is the guest side. A later step that redirects a device
goes on from here with device_connect, interface and endpoint info, then
control/bulk/interrupt packets (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from spicectl.errors import ProtocolError
from spicectl.spice.wire import Layout, caps_bits, caps_words

HEADER = Layout("usb_redir_header", [("type", "I"), ("length", "I"), ("id", "I")])
VERSION_BYTES = 64
HELLO = 0
MAX_PACKET = 1 << 20
CAP_NAMES = {0: "bulk_streams", 1: "connect_device_version", 2: "filter", 3: "device_disconnect_ack",
             4: "ep_info_max_packet_size", 5: "64bits_ids", 6: "32bits_bulk_length", 7: "bulk_receiving"}
# what this side announces: nothing it does not do yet (no device is redirected)
OUR_CAPS: tuple[int, ...] = ()


@dataclass
class Hello:
    version: str
    caps: set[int]

    @property
    def cap_names(self) -> list[str]:
        return [CAP_NAMES.get(c, str(c)) for c in sorted(self.caps)]


def hello(version: str) -> bytes:
    words = caps_words(list(OUR_CAPS)) or [0]
    body = version.encode()[:VERSION_BYTES - 1].ljust(VERSION_BYTES, b"\0") + b"".join(
        w.to_bytes(4, "little") for w in words)
    return HEADER.pack(type=HELLO, length=len(body), id=0) + body


class Parser:
    """usbredir packets from the stream's bytes; the first must be the peer's hello."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.peer: Hello | None = None

    def receive_data(self, data: bytes) -> None:
        self._buffer += data
        while self.peer is None and len(self._buffer) >= HEADER.size:
            head = HEADER.unpack(self._buffer)
            if head["type"] != HELLO:
                raise ProtocolError(f"usbredir: the first packet is type {head['type']}, not hello")
            if not VERSION_BYTES <= head["length"] <= MAX_PACKET:
                raise ProtocolError(f"usbredir: a hello of {head['length']} bytes")
            if len(self._buffer) < HEADER.size + head["length"]:
                return
            body = bytes(self._buffer[HEADER.size:HEADER.size + head["length"]])
            del self._buffer[:HEADER.size + head["length"]]
            version = body[:VERSION_BYTES].split(b"\0", 1)[0].decode("utf-8", errors="replace")
            words = [int.from_bytes(body[i:i + 4], "little") for i in range(VERSION_BYTES, len(body) - 3, 4)]
            self.peer = Hello(version, caps_bits(words))
