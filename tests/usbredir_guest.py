"""The guest side of usbredir (what QEMU's usb-redir is), for tests: drives a usb-host over bytes.

It speaks through the protocol's own layouts (spicectl.spice.usbredir), with
the capabilities QEMU 7.2 announces, and does what a guest's USB stack and
usb-storage driver would: enumerate, configure, and run SCSI commands over the
bulk-only transport.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from spicectl.spice import usbredir as U
from spicectl.spice.usb_storage import CBW, CBW_SIGNATURE, CSW, EP_IN, EP_OUT

QEMU_CAPS = (U.CAP_CONNECT_DEVICE_VERSION, U.CAP_FILTER, U.CAP_EP_INFO_MAX_PACKET_SIZE, U.CAP_64BITS_IDS,
             U.CAP_32BITS_BULK_LENGTH, U.CAP_BULK_RECEIVING, U.CAP_BULK_STREAMS)


class Guest:
    """`send` carries bytes to the host and returns the host's answer bytes."""

    def __init__(self, send: Callable[[bytes], bytes], caps: tuple[int, ...] = QEMU_CAPS,
                 filter_rules: str | None = None) -> None:
        self._send = send
        self.parser = U.Parser(caps)
        self.caps = caps
        self.filter_rules = filter_rules
        self.packets: list[U.Packet] = []
        self._ids = itertools.count(1)

    @property
    def codec(self) -> U.Codec:
        assert self.parser.codec is not None
        return self.parser.codec

    def feed(self, data: bytes) -> list[U.Packet]:
        got = self.parser.receive_data(data)
        self.packets += got
        return got

    def hello(self, host_output: bytes) -> list[U.Packet]:
        """Our hello (and filter, as QEMU sends it on the host's hello) given the host's first bytes."""
        self.feed(host_output)
        out = U.hello("qemu usb-redir guest test", self.caps)
        if self.filter_rules is not None:
            out += self.codec.pack(U.FILTER_FILTER, 0, None, self.filter_rules.encode() + b"\0")
        return self.exchange(out)

    def exchange(self, data: bytes) -> list[U.Packet]:
        return self.feed(self._send(data))

    def request(self, packet_type: int, header: dict | None = None, data: bytes = b"") -> list[U.Packet]:
        return self.exchange(self.codec.pack(packet_type, next(self._ids), header, data))

    def ack_disconnect(self) -> list[U.Packet]:
        return self.exchange(self.codec.pack(U.DEVICE_DISCONNECT_ACK, 0))

    def control_in(self, requesttype: int, request: int, value: int, index: int, length: int) -> U.Packet:
        return self.request(U.CONTROL_PACKET, {"endpoint": 0x80, "request": request, "requesttype": requesttype,
                                               "status": 0, "value": value, "index": index, "length": length})[-1]

    def control_out(self, requesttype: int, request: int, value: int, index: int) -> U.Packet:
        return self.request(U.CONTROL_PACKET, {"endpoint": 0, "request": request, "requesttype": requesttype,
                                               "status": 0, "value": value, "index": index, "length": 0})[-1]

    def bulk_out(self, data: bytes) -> U.Packet:
        return self.request(U.BULK_PACKET, U.with_bulk_length({"endpoint": EP_OUT, "status": 0, "stream_id": 0},
                                                              len(data)), data)[-1]

    def bulk_in(self, length: int) -> list[U.Packet]:
        return self.request(U.BULK_PACKET, U.with_bulk_length({"endpoint": EP_IN, "status": 0, "stream_id": 0},
                                                              length))

    def enumerate(self) -> None:
        """What a guest's USB core does first: descriptors, then configuration 1."""
        self.control_in(0x80, 6, 0x0100, 0, 18)
        self.control_in(0x80, 6, 0x0200, 0, 255)
        self.request(U.SET_CONFIGURATION, {"configuration": 1})

    def scsi(self, cdb: bytes, length: int = 0, data_out: bytes = b"", tag: int = 7) -> tuple[bytes, dict]:
        """One command over the bulk-only transport: its data-in and its CSW."""
        flags = 0x80 if length else 0
        cbw = CBW.pack(signature=CBW_SIGNATURE, tag=tag, data_length=length or len(data_out), flags=flags, lun=0,
                       cb_length=len(cdb), cb=cdb.ljust(16, b"\0"))
        assert self.bulk_out(cbw).header["status"] == U.SUCCESS
        data = b""
        if data_out:
            self.bulk_out(data_out)
        while length and len(data) < length:
            asked = length - len(data)
            answer = self.bulk_in(asked)[-1]
            data += answer.data
            if len(answer.data) < asked:   # a short transfer ends the data phase
                break
        csw = CSW.unpack(next(p for p in self.bulk_in(13) if p.type == U.BULK_PACKET).data)
        assert csw["tag"] == tag
        return data, csw
