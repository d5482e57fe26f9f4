"""The usb-host side of one usbredir channel with one device (emulated, or a host's), sans-I/O.

Feed it the channel's bytes (`receive`), send what `take_output` returns, and
read what happened from `events`. The conversation:

1. Both sides say hello. QEMU answers ours with the guest's filter
   (`filter_filter`) when the guest has one, so before plugging anything in
   we send a `device_disconnect`, which QEMU acknowledges (we announce
   `device_disconnect_ack`): by then any filter has arrived. If the peer
   never acknowledges, `barrier_expired` plugs in anyway; QEMU still applies
   the filter itself and answers `filter_reject`.
2. A device the filter blocks is not plugged in (event `rejected`).
   Otherwise `interface_info`, `ep_info` and `device_connect` plug it in;
   the guest enumerates it and sets a configuration (event `attached`).
3. Control and bulk packets are answered by the device: an emulated one at
   once (bulk-in requests it cannot answer yet wait, `MAX_WAITING` at most),
   an asynchronous one (a host device) later, through `complete`.
4. `release` unplugs it (`device_disconnect`); so does the guest ejecting the
   medium. The acknowledgement ends it (event `released`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from spicectl.errors import ProtocolError
from spicectl.spice import usbredir as U
from spicectl.spice.usb_storage import MassStorage

MAX_WAITING = 64
# what only a usb-host sends: the guest side sending one is confused or hostile
HOST_ONLY = {U.DEVICE_CONNECT, U.DEVICE_DISCONNECT, U.INTERFACE_INFO, U.EP_INFO, U.CONFIGURATION_STATUS,
             U.ALT_SETTING_STATUS, U.ISO_STREAM_STATUS, U.INTERRUPT_RECEIVING_STATUS, U.BULK_STREAMS_STATUS,
             U.BULK_RECEIVING_STATUS, U.BUFFERED_BULK_PACKET}


class AsyncDevice(Protocol):
    """A device whose transfers finish later (session/usb_host.HostDevice): besides what MassStorage
    answers (descriptors, configuration, alternate settings, interrupt receiving), it takes control,
    bulk and interrupt packets and hands each one's answer to RedirHost.complete."""
    asynchronous: bool
    interfaces: list[tuple[int, int, int]]
    endpoints: dict[int, tuple[int, int]]
    device_class: int

    def submit(self, packet: U.Packet) -> None: ...
    def cancel(self, packet_id: int) -> None: ...
    def cancel_all(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class Event:
    kind: str      # "connected" | "attached" | "rejected" | "released"
    detail: str = ""


def describe_rule(rule: U.FilterRule) -> str:
    def part(value: int, width: int) -> str:
        return "any" if value == -1 else f"{value:0{width}x}"
    return (f"class {part(rule.device_class, 2)}, vendor {part(rule.vendor_id, 4)}, "
            f"product {part(rule.product_id, 4)}, version {part(rule.device_version_bcd, 4)}")


def refusal(rules: list[U.FilterRule], blocked: U.FilterRule) -> str:
    """Why a filter refuses a device: the rule that blocks it, or that none allows it."""
    return (f"the guest's USB filter blocks it ({describe_rule(blocked)}"
            f"{'' if blocked in rules else ': no rule allows it'})")


class RedirHost:
    def __init__(self, device: MassStorage | AsyncDevice, version: str) -> None:
        # (MassStorage's methods, or an asynchronous device's: the code below asks only what each has)
        self.device: Any = device
        # a device that answers transfers later (a host device) takes them with submit() and answers with
        # complete(); an emulated one answers each at once
        self._async: AsyncDevice | None = device if getattr(device, "asynchronous", False) else None  # type: ignore
        self.parser = U.Parser()
        self.state = "hello"      # hello -> barrier -> connected -> releasing -> released | rejected
        self.rules: list[U.FilterRule] | None = None
        self.configuration = 0
        self.attached = False     # the guest has configured the device
        self.events: list[Event] = []
        self._out = bytearray(U.hello(version))
        self._waiting: deque[U.Packet] = deque()
        self._in_flight: dict[int, U.Packet] = {}   # submitted to an asynchronous device, by packet id
        self._release_reason = ""

    @property
    def codec(self) -> U.Codec:
        assert self.parser.codec is not None
        return self.parser.codec

    def take_output(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def _send(self, packet_type: int, packet_id: int = 0, header: dict | None = None, data: bytes = b"") -> None:
        self._out += self.codec.pack(packet_type, packet_id, header, data)

    def receive(self, data: bytes) -> None:
        had_hello = self.parser.peer is not None
        packets = self.parser.receive_data(data)
        if not had_hello and self.parser.peer is not None:
            self.state = "barrier"
            self._send(U.DEVICE_DISCONNECT)
        for packet in packets:
            self._handle(packet)

    # --- plugging in and out ---
    def barrier_expired(self) -> None:
        if self.state == "barrier":
            self._connect()

    def _connect(self) -> None:
        dev = self.device
        ident = dev.identity
        if self.rules:
            blocked = U.filter_verdict(self.rules, device_class=dev.device_class, interfaces=dev.interfaces,
                                       vendor_id=ident.vendor_id, product_id=ident.product_id,
                                       version_bcd=ident.version_bcd)
            if blocked is not None:
                self.state = "rejected"
                self.events.append(Event("rejected", refusal(self.rules, blocked)))
                return
        classes = [i[0] for i in dev.interfaces]
        self._send(U.INTERFACE_INFO, 0, {
            "interface_count": len(dev.interfaces),
            "interface": bytes(getattr(dev, "numbers", range(len(classes)))),
            "interface_class": bytes(classes), "interface_subclass": bytes(i[1] for i in dev.interfaces),
            "interface_protocol": bytes(i[2] for i in dev.interfaces)})
        types, sizes = bytearray([U.TYPE_INVALID] * 32), bytearray(64)
        intervals, interfaces = bytearray(32), bytearray(32)
        # (a host device knows each endpoint's interval and interface; QEMU refuses an interrupt or
        # isochronous endpoint polled every 0 frames)
        interval_of = getattr(dev, "endpoint_interval", {})
        interface_of = getattr(dev, "endpoint_interface", {})
        for address, (kind, size) in dev.endpoints.items():
            index = (address & 0x80) >> 3 | (address & 0x0F)
            types[index] = kind
            sizes[2 * index:2 * index + 2] = size.to_bytes(2, "little")
            intervals[index] = interval_of.get(address, 0)
            interfaces[index] = interface_of.get(address, 0)
        header = {"type": bytes(types), "interval": bytes(intervals), "interface": bytes(interfaces)}
        if U.CAP_EP_INFO_MAX_PACKET_SIZE in self.codec.shared:
            header["max_packet_size"] = bytes(sizes)
        self._send(U.EP_INFO, 0, header)
        connect = {"speed": getattr(dev, "speed", U.SPEED_HIGH), "device_class": dev.device_class, "device_subclass": 0,
                   "device_protocol": 0, "vendor_id": ident.vendor_id, "product_id": ident.product_id}
        if U.CAP_CONNECT_DEVICE_VERSION in self.codec.shared:
            connect["device_version_bcd"] = ident.version_bcd
        self._send(U.DEVICE_CONNECT, 0, connect)
        self.state = "connected"
        self.events.append(Event("connected"))

    def release(self, reason: str) -> None:
        """Unplug the device; `released` follows the peer's acknowledgement."""
        if self.state not in ("connected", "barrier"):
            return
        self._release_reason = reason
        for packet in [*self._waiting, *self._in_flight.values()]:   # the device is going: what waited is cancelled
            self._cancelled(packet)
        self._waiting.clear()
        self._in_flight.clear()
        if self._async:
            self._async.cancel_all()
        if self.state == "barrier":
            self.state = "released"
            self.events.append(Event("released", reason))
            return
        # the guest side acknowledges since we announce device_disconnect_ack; `release_expired` if not
        self._send(U.DEVICE_DISCONNECT)
        self.state = "releasing"

    def release_expired(self) -> None:
        if self.state == "releasing":
            self.state = "released"
            self.events.append(Event("released", self._release_reason))

    # --- packets ---
    def _handle(self, p: U.Packet) -> None:
        t = p.type
        if t in HOST_ONLY:
            raise ProtocolError(f"usbredir: the guest side sent packet type {t}, which only a USB host sends")
        if t == U.DEVICE_DISCONNECT_ACK:
            if self.state == "barrier":
                self._connect()
            elif self.state == "releasing":
                self.state = "released"
                self.events.append(Event("released", self._release_reason))
            return
        if t == U.FILTER_FILTER:
            self.rules = U.parse_filter(p.data)
            return
        if t == U.FILTER_REJECT:
            if self.state in ("connected", "releasing"):
                self.state = "rejected"
                self.events.append(Event("rejected", "the guest's USB filter (checked by QEMU) blocks it"))
            return
        attached = self.state == "connected"
        if t == U.RESET:
            if attached:
                self.device.reset()
        elif t == U.SET_CONFIGURATION:
            status = self.device.set_configuration(p.header["configuration"]) if attached else U.IOERROR
            if status == U.SUCCESS:
                self.configuration = p.header["configuration"]
                if self.configuration and not self.attached:
                    self.attached = True
                    self.events.append(Event("attached"))
            self._send(U.CONFIGURATION_STATUS, p.id, {"status": status, "configuration": self.configuration})
        elif t == U.GET_CONFIGURATION:
            self._send(U.CONFIGURATION_STATUS, p.id, {"status": U.SUCCESS if attached else U.IOERROR,
                                                      "configuration": self.configuration})
        elif t in (U.SET_ALT_SETTING, U.GET_ALT_SETTING):
            interface = p.header["interface"]
            if not attached:
                status, alt = U.IOERROR, 0
            elif t == U.SET_ALT_SETTING:
                status, alt = self.device.set_alt_setting(interface, p.header["alt"]), p.header["alt"]
            else:
                status, alt = self.device.get_alt_setting(interface)
            self._send(U.ALT_SETTING_STATUS, p.id, {"status": status, "interface": interface, "alt": alt})
        elif t == U.CONTROL_PACKET:
            self._control(p, attached)
        elif t == U.BULK_PACKET:
            self._bulk(p, attached)
        elif t == U.CANCEL_DATA_PACKET:
            for waiting in list(self._waiting):
                if waiting.id == p.id:
                    self._waiting.remove(waiting)
                    self._cancelled(waiting)
            if p.id in self._in_flight:   # the device's answer, if it still comes, is dropped
                self._cancelled(self._in_flight.pop(p.id))
                if self._async:
                    self._async.cancel(p.id)
        elif t == U.START_ISO_STREAM:
            self._send(U.ISO_STREAM_STATUS, p.id, {"status": U.STALL, "endpoint": p.header["endpoint"]})
        elif t == U.START_INTERRUPT_RECEIVING:
            ep = p.header["endpoint"]
            status = self.device.start_interrupt_receiving(ep) if attached else U.IOERROR
            self._send(U.INTERRUPT_RECEIVING_STATUS, p.id, {"status": status, "endpoint": ep})
        elif t == U.STOP_INTERRUPT_RECEIVING:
            if attached:
                self.device.stop_interrupt_receiving(p.header["endpoint"])
            self._send(U.INTERRUPT_RECEIVING_STATUS, p.id, {"status": U.SUCCESS, "endpoint": p.header["endpoint"]})
        elif t == U.INTERRUPT_PACKET:
            self._submit(p, attached)
        elif t == U.ALLOC_BULK_STREAMS:
            self._send(U.BULK_STREAMS_STATUS, p.id, {"endpoints": p.header["endpoints"],
                                                     "no_streams": p.header["no_streams"], "status": U.STALL})
        elif t == U.START_BULK_RECEIVING:
            self._send(U.BULK_RECEIVING_STATUS, p.id, {"stream_id": p.header["stream_id"],
                                                       "endpoint": p.header["endpoint"], "status": U.STALL})
        # the rest (stop_iso_stream, free_bulk_streams, iso data) concern what no device here has

    # --- what an asynchronous device (a host device, see session/usb_host.py) answers later ---
    def _submit(self, p: U.Packet, attached: bool) -> bool:
        """Hand the packet to an asynchronous device; False for a device that answers at once."""
        if self._async is None:
            if p.type == U.INTERRUPT_PACKET:   # (no interrupt endpoint on an emulated device)
                self._send(U.INTERRUPT_PACKET, p.id, {**p.header, "status": U.STALL, "length": 0})
                return True
            return False
        if not attached:
            self._cancelled(p, U.IOERROR)
            return True
        if len(self._in_flight) >= MAX_WAITING:
            raise ProtocolError(f"usbredir: more than {MAX_WAITING} transfers in flight")
        self._in_flight[p.id] = p
        self._async.submit(p)
        return True

    def complete(self, packet_id: int, status: int, data: bytes = b"") -> None:
        """An asynchronous device's answer to a packet it took (dropped if it was cancelled meanwhile)."""
        p = self._in_flight.pop(packet_id, None)
        if p is None:
            return
        h = p.header
        if p.type == U.CONTROL_PACKET:
            inbound = bool(h["requesttype"] & 0x80)
            length = len(data) if inbound else (len(p.data) if status == U.SUCCESS else 0)
            self._send(U.CONTROL_PACKET, p.id, {**h, "status": status, "length": length}, data if inbound else b"")
        elif p.type == U.BULK_PACKET:
            inbound = bool(h["endpoint"] & 0x80)
            length = len(data) if inbound else (len(p.data) if status == U.SUCCESS else 0)
            self._send(U.BULK_PACKET, p.id, U.with_bulk_length({**h, "status": status}, length),
                       data if inbound else b"")
        else:
            inbound = bool(h["endpoint"] & 0x80)
            self._send(U.INTERRUPT_PACKET, p.id, {**h, "status": status, "length": len(data) if inbound else 0},
                       data if inbound else b"")

    def interrupt_data(self, endpoint: int, status: int, data: bytes) -> None:
        """What an interrupt-in endpoint the guest receives from delivered (started by start_interrupt_receiving)."""
        if self.state == "connected":
            self._send(U.INTERRUPT_PACKET, 0, {"endpoint": endpoint, "status": status, "length": len(data)}, data)

    def _cancelled(self, p: U.Packet, status: int = U.CANCELLED) -> None:
        h = p.header
        if p.type == U.BULK_PACKET:
            self._send(U.BULK_PACKET, p.id, U.with_bulk_length({**h, "status": status}, 0))
        elif p.type in (U.CONTROL_PACKET, U.INTERRUPT_PACKET):
            self._send(p.type, p.id, {**h, "status": status, "length": 0})

    def _control(self, p: U.Packet, attached: bool) -> None:
        if self._submit(p, attached):
            return
        h = p.header
        if not attached:
            status, data = U.IOERROR, b""
        else:
            status, data = self.device.control(h["requesttype"], h["request"], h["value"], h["index"], h["length"])
        if not h["requesttype"] & 0x80:
            length = len(p.data) if status == U.SUCCESS else 0
            self._send(U.CONTROL_PACKET, p.id, {**h, "status": status, "length": length})
        else:
            self._send(U.CONTROL_PACKET, p.id, {**h, "status": status, "length": len(data)}, data)

    def _bulk(self, p: U.Packet, attached: bool) -> None:
        if self._submit(p, attached):
            if p.data and p.header["endpoint"] & 0x80:
                raise ProtocolError("usbredir: a bulk-in request that carries data")
            return
        h = p.header
        if not attached:
            self._send(U.BULK_PACKET, p.id, U.with_bulk_length({**h, "status": U.IOERROR}, 0))
            return
        if not h["endpoint"] & 0x80:
            status = self.device.bulk_out(h["endpoint"], p.data)
            self._send(U.BULK_PACKET, p.id, U.with_bulk_length(
                {**h, "status": status}, len(p.data) if status == U.SUCCESS else 0))
            self._serve_waiting()
            return
        if p.data:
            raise ProtocolError("usbredir: a bulk-in request that carries data")
        if self._waiting or not self._answer_in(p):
            if len(self._waiting) >= MAX_WAITING:
                raise ProtocolError(f"usbredir: more than {MAX_WAITING} bulk-in requests waiting")
            self._waiting.append(p)

    def _answer_in(self, p: U.Packet) -> bool:
        answer = self.device.bulk_in(p.header["endpoint"], U.bulk_length(p.header))
        if answer is None:
            return False
        status, data = answer
        self._send(U.BULK_PACKET, p.id, U.with_bulk_length({**p.header, "status": status}, len(data)), data)
        if getattr(self.device, "ejected", False):
            self.release("ejected by the guest")
        return True

    def _serve_waiting(self) -> None:
        while self._waiting and self.state == "connected":
            packet = self._waiting.popleft()
            if not self._answer_in(packet):
                self._waiting.appendleft(packet)
                return
