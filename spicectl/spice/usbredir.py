"""The usbredir protocol, sans-I/O: packet layouts declared once, a parser and a packer.

Facts from usbredir's `usbredirproto.h` and `usb-redirection-protocol.md`: a
packet is a header (type, length, id; the id is a u32 until both sides
announce `64bits_ids`, then a u64) and `length` bytes: a fixed per-type
header, then data for the types that carry it. Some per-type headers grow
when both sides announce a capability (`device_connect` gains the device
version, `ep_info` the max packet sizes, `bulk_packet` the high 16 length
bits). Each side starts with `hello` (a 64-byte version string and
capability words); everything after it is read with the caps both sides
share. On SPICE the byte stream travels in SPICEVMC_DATA messages.

The client side of usbredir is the USB *host*: it owns devices and answers
the guest side, QEMU's `usb-redir`. The guest is untrusted: every length is
checked before anything is buffered, a packet over `MAX_PACKET` is refused
whole, and the filter QEMU sends is parsed with the same bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spicectl.errors import ProtocolError
from spicectl.spice.wire import Layout, caps_bits, caps_words

VERSION_BYTES = 64
MAX_ENDPOINTS = 32
# a bulk transfer larger than this is refused: QEMU combines a guest's queued transfers into one
# packet, and Linux's usb-storage asks for at most 240 sectors (120 KiB) at a time
MAX_DATA = 4 << 20
MAX_FILTER_RULES = 128

# packet types
(HELLO, DEVICE_CONNECT, DEVICE_DISCONNECT, RESET, INTERFACE_INFO, EP_INFO, SET_CONFIGURATION,
 GET_CONFIGURATION, CONFIGURATION_STATUS, SET_ALT_SETTING, GET_ALT_SETTING, ALT_SETTING_STATUS,
 START_ISO_STREAM, STOP_ISO_STREAM, ISO_STREAM_STATUS, START_INTERRUPT_RECEIVING,
 STOP_INTERRUPT_RECEIVING, INTERRUPT_RECEIVING_STATUS, ALLOC_BULK_STREAMS, FREE_BULK_STREAMS,
 BULK_STREAMS_STATUS, CANCEL_DATA_PACKET, FILTER_REJECT, FILTER_FILTER, DEVICE_DISCONNECT_ACK,
 START_BULK_RECEIVING, STOP_BULK_RECEIVING, BULK_RECEIVING_STATUS) = range(28)
CONTROL_PACKET, BULK_PACKET, ISO_PACKET, INTERRUPT_PACKET, BUFFERED_BULK_PACKET = range(100, 105)

# status codes
SUCCESS, CANCELLED, INVAL, IOERROR, STALL, TIMEOUT, BABBLE = range(7)
# endpoint types (the USB spec's) and speeds
TYPE_CONTROL, TYPE_ISO, TYPE_BULK, TYPE_INTERRUPT, TYPE_INVALID = 0, 1, 2, 3, 255
SPEED_LOW, SPEED_FULL, SPEED_HIGH, SPEED_SUPER = range(4)

# capabilities
(CAP_BULK_STREAMS, CAP_CONNECT_DEVICE_VERSION, CAP_FILTER, CAP_DEVICE_DISCONNECT_ACK,
 CAP_EP_INFO_MAX_PACKET_SIZE, CAP_64BITS_IDS, CAP_32BITS_BULK_LENGTH, CAP_BULK_RECEIVING) = range(8)
CAP_NAMES = {CAP_BULK_STREAMS: "bulk_streams", CAP_CONNECT_DEVICE_VERSION: "connect_device_version",
             CAP_FILTER: "filter", CAP_DEVICE_DISCONNECT_ACK: "device_disconnect_ack",
             CAP_EP_INFO_MAX_PACKET_SIZE: "ep_info_max_packet_size", CAP_64BITS_IDS: "64bits_ids",
             CAP_32BITS_BULK_LENGTH: "32bits_bulk_length", CAP_BULK_RECEIVING: "bulk_receiving"}
# what this side announces: what it does (no bulk streams, no buffered bulk receiving)
OUR_CAPS: tuple[int, ...] = (CAP_CONNECT_DEVICE_VERSION, CAP_FILTER, CAP_DEVICE_DISCONNECT_ACK,
                             CAP_EP_INFO_MAX_PACKET_SIZE, CAP_64BITS_IDS, CAP_32BITS_BULK_LENGTH)

HEADER = Layout("usb_redir_header", [("type", "I"), ("length", "I"), ("id", "I")])
HEADER64 = Layout("usb_redir_header", [("type", "I"), ("length", "I"), ("id", "Q")])

CONNECT_VERSION = Layout("usb_redir_device_connect_header", [
    ("speed", "B"), ("device_class", "B"), ("device_subclass", "B"), ("device_protocol", "B"),
    ("vendor_id", "H"), ("product_id", "H"), ("device_version_bcd", "H")])
CONNECT = Layout("usb_redir_device_connect_header", [
    ("speed", "B"), ("device_class", "B"), ("device_subclass", "B"), ("device_protocol", "B"),
    ("vendor_id", "H"), ("product_id", "H")])
INTERFACE_INFO_L = Layout("usb_redir_interface_info_header", [
    ("interface_count", "I"), ("interface", "32s"), ("interface_class", "32s"),
    ("interface_subclass", "32s"), ("interface_protocol", "32s")])
EP_INFO_MPS = Layout("usb_redir_ep_info_header", [
    ("type", "32s"), ("interval", "32s"), ("interface", "32s"), ("max_packet_size", "64s")])
EP_INFO_BASE = Layout("usb_redir_ep_info_header", [("type", "32s"), ("interval", "32s"), ("interface", "32s")])
CONTROL = Layout("usb_redir_control_packet_header", [
    ("endpoint", "B"), ("request", "B"), ("requesttype", "B"), ("status", "B"),
    ("value", "H"), ("index", "H"), ("length", "H")])
BULK32 = Layout("usb_redir_bulk_packet_header", [
    ("endpoint", "B"), ("status", "B"), ("length", "H"), ("stream_id", "I"), ("length_high", "H")])
BULK = Layout("usb_redir_bulk_packet_header", [
    ("endpoint", "B"), ("status", "B"), ("length", "H"), ("stream_id", "I")])
EP_STATUS = Layout("usb_redir_ep_packet_header", [("endpoint", "B"), ("status", "B"), ("length", "H")])
ENDPOINT = Layout("usb_redir_endpoint_header", [("endpoint", "B")])

# the fixed per-type headers that do not depend on caps; None: no header at all
FIXED: dict[int, Layout | None] = {
    DEVICE_DISCONNECT: None, RESET: None, GET_CONFIGURATION: None, CANCEL_DATA_PACKET: None,
    FILTER_REJECT: None, DEVICE_DISCONNECT_ACK: None, FILTER_FILTER: None,
    INTERFACE_INFO: INTERFACE_INFO_L,
    SET_CONFIGURATION: Layout("usb_redir_set_configuration_header", [("configuration", "B")]),
    CONFIGURATION_STATUS: Layout("usb_redir_configuration_status_header",
                                 [("status", "B"), ("configuration", "B")]),
    SET_ALT_SETTING: Layout("usb_redir_set_alt_setting_header", [("interface", "B"), ("alt", "B")]),
    GET_ALT_SETTING: Layout("usb_redir_get_alt_setting_header", [("interface", "B")]),
    ALT_SETTING_STATUS: Layout("usb_redir_alt_setting_status_header",
                               [("status", "B"), ("interface", "B"), ("alt", "B")]),
    START_ISO_STREAM: Layout("usb_redir_start_iso_stream_header",
                             [("endpoint", "B"), ("pkts_per_urb", "B"), ("no_urbs", "B")]),
    STOP_ISO_STREAM: ENDPOINT,
    ISO_STREAM_STATUS: Layout("usb_redir_iso_stream_status_header", [("status", "B"), ("endpoint", "B")]),
    START_INTERRUPT_RECEIVING: ENDPOINT,
    STOP_INTERRUPT_RECEIVING: ENDPOINT,
    INTERRUPT_RECEIVING_STATUS: Layout("usb_redir_interrupt_receiving_status_header",
                                       [("status", "B"), ("endpoint", "B")]),
    ALLOC_BULK_STREAMS: Layout("usb_redir_alloc_bulk_streams_header", [("endpoints", "I"), ("no_streams", "I")]),
    FREE_BULK_STREAMS: Layout("usb_redir_free_bulk_streams_header", [("endpoints", "I")]),
    BULK_STREAMS_STATUS: Layout("usb_redir_bulk_streams_status_header",
                                [("endpoints", "I"), ("no_streams", "I"), ("status", "B")]),
    START_BULK_RECEIVING: Layout("usb_redir_start_bulk_receiving_header", [
        ("stream_id", "I"), ("bytes_per_transfer", "I"), ("endpoint", "B"), ("no_transfers", "B")]),
    STOP_BULK_RECEIVING: Layout("usb_redir_stop_bulk_receiving_header", [("stream_id", "I"), ("endpoint", "B")]),
    BULK_RECEIVING_STATUS: Layout("usb_redir_bulk_receiving_status_header",
                                  [("stream_id", "I"), ("endpoint", "B"), ("status", "B")]),
    CONTROL_PACKET: CONTROL,
    ISO_PACKET: EP_STATUS,
    INTERRUPT_PACKET: EP_STATUS,
    BUFFERED_BULK_PACKET: Layout("usb_redir_buffered_bulk_packet_header", [
        ("stream_id", "I"), ("length", "I"), ("endpoint", "B"), ("status", "B")]),
}
# the types whose packets carry data after their header
WITH_DATA = {CONTROL_PACKET, BULK_PACKET, ISO_PACKET, INTERRUPT_PACKET, BUFFERED_BULK_PACKET, FILTER_FILTER}


@dataclass
class Hello:
    version: str
    caps: set[int]

    @property
    def cap_names(self) -> list[str]:
        return [CAP_NAMES.get(c, str(c)) for c in sorted(self.caps)]


@dataclass
class Packet:
    type: int
    id: int
    header: dict[str, Any]
    data: bytes = b""


@dataclass(frozen=True)
class FilterRule:
    """One rule of a usbredir filter: -1 matches anything."""
    device_class: int
    vendor_id: int
    product_id: int
    device_version_bcd: int
    allow: bool


def hello(version: str, caps: tuple[int, ...] = OUR_CAPS) -> bytes:
    words = caps_words(list(caps)) or [0]
    body = version.encode()[:VERSION_BYTES - 1].ljust(VERSION_BYTES, b"\0") + b"".join(
        w.to_bytes(4, "little") for w in words)
    return HEADER.pack(type=HELLO, length=len(body), id=0) + body


class Codec:
    """Packs and reads packets with the caps both sides share (known once the peer's hello is in)."""

    def __init__(self, ours: set[int], theirs: set[int]) -> None:
        self.shared = ours & theirs
        self.header = HEADER64 if CAP_64BITS_IDS in self.shared else HEADER

    def layout(self, packet_type: int) -> Layout | None:
        if packet_type == DEVICE_CONNECT:
            return CONNECT_VERSION if CAP_CONNECT_DEVICE_VERSION in self.shared else CONNECT
        if packet_type == EP_INFO:
            return EP_INFO_MPS if CAP_EP_INFO_MAX_PACKET_SIZE in self.shared else EP_INFO_BASE
        if packet_type == BULK_PACKET:
            return BULK32 if CAP_32BITS_BULK_LENGTH in self.shared else BULK
        if packet_type not in FIXED:
            raise ProtocolError(f"usbredir: unknown packet type {packet_type}")
        return FIXED[packet_type]

    def pack(self, packet_type: int, packet_id: int, header: dict[str, Any] | None = None, data: bytes = b"") -> bytes:
        layout = self.layout(packet_type)
        head = layout.pack(**header) if layout is not None and header is not None else b""
        return self.header.pack(type=packet_type, length=len(head) + len(data), id=packet_id) + head + data


def bulk_length(header: dict[str, Any]) -> int:
    return header["length"] | (header.get("length_high", 0) << 16)


def with_bulk_length(header: dict[str, Any], length: int) -> dict[str, Any]:
    return {**header, "length": length & 0xFFFF, "length_high": length >> 16}


class Parser:
    """usbredir packets from the stream's bytes; the first must be the peer's hello.

    `receive_data` returns the packets completed by the bytes given; a packet is
    buffered only once its header has proved it fits the limits.
    """

    def __init__(self, ours: tuple[int, ...] = OUR_CAPS) -> None:
        self._buffer = bytearray()
        self._ours = set(ours)
        self.peer: Hello | None = None
        self.codec: Codec | None = None

    def receive_data(self, data: bytes) -> list[Packet]:
        self._buffer += data
        packets: list[Packet] = []
        while True:
            header = self.codec.header if self.codec else HEADER
            if len(self._buffer) < header.size:
                return packets
            head = header.unpack(self._buffer)
            length = head["length"]
            if self.peer is None:
                if head["type"] != HELLO:
                    raise ProtocolError(f"usbredir: the first packet is type {head['type']}, not hello")
                if not VERSION_BYTES <= length <= VERSION_BYTES + 4 * 64:
                    raise ProtocolError(f"usbredir: a hello of {length} bytes")
            else:
                self._check_length(head["type"], length)
            if len(self._buffer) < header.size + length:
                return packets
            body = bytes(self._buffer[header.size:header.size + length])
            del self._buffer[:header.size + length]
            if self.peer is None:
                version = body[:VERSION_BYTES].split(b"\0", 1)[0].decode("utf-8", errors="replace")
                words = [int.from_bytes(body[i:i + 4], "little") for i in range(VERSION_BYTES, len(body) - 3, 4)]
                self.peer = Hello(version, caps_bits(words))
                self.codec = Codec(self._ours, self.peer.caps)
                continue
            packets.append(self._packet(head["type"], head["id"], body))

    def _check_length(self, packet_type: int, length: int) -> None:
        assert self.codec is not None
        if packet_type == HELLO:
            raise ProtocolError("usbredir: a second hello")
        layout = self.codec.layout(packet_type)
        size = layout.size if layout else 0
        if length < size:
            raise ProtocolError(f"usbredir: packet type {packet_type} of {length} bytes, its header needs {size}")
        if length > size and packet_type not in WITH_DATA:
            raise ProtocolError(f"usbredir: packet type {packet_type} carries {length - size} bytes it may not")
        if length - size > MAX_DATA:
            raise ProtocolError(f"usbredir: a packet of {length - size} data bytes (the limit is {MAX_DATA})")

    def _packet(self, packet_type: int, packet_id: int, body: bytes) -> Packet:
        assert self.codec is not None
        layout = self.codec.layout(packet_type)
        header = layout.unpack(body) if layout else {}
        data = body[layout.size if layout else 0:]
        if packet_type in (CONTROL_PACKET, ISO_PACKET, INTERRUPT_PACKET) and data and len(data) != header["length"]:
            raise ProtocolError(f"usbredir: packet type {packet_type} says {header['length']} bytes, "
                                f"carries {len(data)}")
        if packet_type == BULK_PACKET and data and len(data) != bulk_length(header):
            raise ProtocolError(f"usbredir: a bulk packet says {bulk_length(header)} bytes, carries {len(data)}")
        return Packet(packet_type, packet_id, header, data)


def parse_filter(data: bytes) -> list[FilterRule]:
    """The rules of a filter_filter packet: "class,vendor,product,version,allow|..." NUL-terminated."""
    text = data.split(b"\0", 1)[0]
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("usbredir: a filter that is not ASCII") from None
    rules = []
    for rule in filter(None, decoded.split("|")):
        fields = rule.split(",")
        if len(fields) != 5:
            raise ProtocolError(f"usbredir: a filter rule of {len(fields)} fields: {rule[:60]!r}")
        try:
            values = [int(f, 0) for f in fields]
        except ValueError:
            raise ProtocolError(f"usbredir: a filter rule that is not numbers: {rule[:60]!r}") from None
        cls, vendor, product, version, allow = values
        if not (-1 <= cls <= 255 and -1 <= vendor <= 0xFFFF and -1 <= product <= 0xFFFF and -1 <= version <= 0xFFFF):
            raise ProtocolError(f"usbredir: a filter rule out of range: {rule[:60]!r}")
        rules.append(FilterRule(cls, vendor, product, version, bool(allow)))
        if len(rules) > MAX_FILTER_RULES:
            raise ProtocolError(f"usbredir: a filter of more than {MAX_FILTER_RULES} rules")
    return rules


def filter_verdict(rules: list[FilterRule], *, device_class: int, interfaces: list[tuple[int, int, int]],
                   vendor_id: int, product_id: int, version_bcd: int) -> FilterRule | None:
    """None if usbredir's filter lets the device through; else the rule that blocks it (or a
    default-deny stand-in when no rule matched). The semantics are usbredirfilter_check's, as QEMU
    applies them: the device class unless it is 0x00/0xef, then each interface's class (a non-boot
    HID interface beside others is skipped), the first matching rule deciding, no match denying."""
    def check(cls: int) -> FilterRule | None:
        for r in rules:
            if ((r.device_class in (-1, cls)) and r.vendor_id in (-1, vendor_id)
                    and r.product_id in (-1, product_id) and r.device_version_bcd in (-1, version_bcd)):
                return None if r.allow else r
        return FilterRule(cls, vendor_id, product_id, version_bcd, False)

    if device_class not in (0x00, 0xEF) and (blocked := check(device_class)):
        return blocked
    considered = [i for i in interfaces if not (len(interfaces) > 1 and i == (0x03, 0x00, 0x00))] or interfaces
    for cls, _sub, _proto in considered:
        if blocked := check(cls):
            return blocked
    return None
