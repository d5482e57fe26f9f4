"""Host USB devices redirected to a guest: a device of this host, its transfers run by libusb
(python-libusb1's asynchronous API) and answered to the guest's usbredir side as they finish.

`HostDevice` is what usbredir_host.RedirHost drives (an asynchronous device): it reads the
device's own descriptors, takes the guest's control, bulk and interrupt packets and hands each
one's answer back through `on_complete`. What moves the bytes is a `Transfers` object: libusb's
(`Libusb`), or any other with the same few calls. Isochronous endpoints (webcams, audio) are not
redirected: the guest is told they stall.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from spicectl.errors import EnvironmentProblem, InvalidInput, NotFound
from spicectl.spice import usbredir as U
from spicectl.spice.usb_storage import Identity

Done = Callable[[int, bytes], None]          # (usbredir status, data in) from any thread
CONTROL_TIMEOUT_MS = 5000                   # a device that does not answer a control request is broken
MAX_CONFIG = 4096


@dataclass(frozen=True)
class DeviceInfo:
    bus: int
    address: int
    vendor_id: int
    product_id: int
    device_class: int
    version_bcd: int
    speed: int                               # usbredir's speed code
    manufacturer: str = ""
    product: str = ""
    interfaces: tuple[tuple[int, int, int], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.vendor_id:04x}:{self.product_id:04x}"


class Transfers(Protocol):
    """One opened device: its transfers (each `done` once, from any thread) and its settings."""

    def descriptor(self, kind: int, index: int, length: int) -> bytes: ...
    def claim(self, interfaces: list[int]) -> None: ...
    def release(self) -> None: ...
    def control(self, requesttype: int, request: int, value: int, index: int, data: bytes | int,
                done: Done) -> object: ...
    def bulk(self, endpoint: int, data: bytes | int, done: Done) -> object: ...
    def interrupt(self, endpoint: int, data: bytes | int, done: Done) -> object: ...
    def cancel(self, token: object) -> None: ...
    def set_configuration(self, configuration: int) -> int: ...
    def set_alt_setting(self, interface: int, alt: int) -> int: ...
    def reset(self) -> None: ...
    def close(self) -> None: ...


Endpoint = tuple[int, int, int, int]   # type, max packet size, interface number, interval


def parse_config(config: bytes) -> tuple[list[tuple[int, int, int]], list[int], dict[int, Endpoint]]:
    """A configuration descriptor's interfaces (class, subclass, protocol of alternate setting 0), their
    numbers, and its endpoints: address -> (type, max packet size, interface number, interval)."""
    interfaces: list[tuple[int, int, int]] = []
    numbers: list[int] = []
    endpoints: dict[int, Endpoint] = {}
    offset, current, alt = 0, -1, 0
    while offset + 2 <= len(config):
        length, kind = config[offset], config[offset + 1]
        if length < 2 or offset + length > len(config):
            break
        body = config[offset:offset + length]
        if kind == 4 and length >= 9:
            current, alt = body[2], body[3]
            if alt == 0:
                interfaces.append((body[5], body[6], body[7]))
                numbers.append(current)
        elif kind == 5 and length >= 7 and alt == 0:
            endpoints[body[2]] = (body[3] & 3, int.from_bytes(body[4:6], "little") & 0x7FF, current, body[6])
        offset += length
    return interfaces, numbers, endpoints


@dataclass
class HostDevice:
    """A host device as usbredir_host.RedirHost drives it: asynchronous, its transfers through `io`."""
    io: Transfers
    info: DeviceInfo
    asynchronous: bool = True
    on_complete: Callable[[int, int, bytes], None] = lambda _id, _s, _d: None        # (packet id, status, data)
    on_interrupt: Callable[[int, int, bytes], None] = lambda _ep, _s, _d: None       # (endpoint, status, data)
    _pending: dict[int, object] = field(default_factory=dict)
    _receiving: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        device = self.io.descriptor(1, 0, 18)
        if len(device) < 18 or device[1] != 1:
            raise InvalidInput(f"USB device {self.info.name}: an unreadable device descriptor")
        head = self.io.descriptor(2, 0, 9)
        total = int.from_bytes(head[2:4], "little") if len(head) >= 4 else 0
        config = self.io.descriptor(2, 0, min(max(total, 9), MAX_CONFIG))
        self.interfaces, self.numbers, endpoints = parse_config(config)
        self.endpoints = {0x00: (U.TYPE_CONTROL, device[7]), 0x80: (U.TYPE_CONTROL, device[7])}
        self.endpoints.update({a: (t, size) for a, (t, size, _n, _i) in endpoints.items()})
        self.endpoint_interface = {a: n for a, (_t, _s, n, _i) in endpoints.items()}
        self.endpoint_interval = {a: i for a, (_t, _s, _n, i) in endpoints.items()}
        self.device_class = device[4]
        self.identity = Identity(int.from_bytes(device[8:10], "little"), int.from_bytes(device[10:12], "little"),
                                 self.info.manufacturer, self.info.product, int.from_bytes(device[12:14], "little"))
        self.speed = self.info.speed
        self._alt: dict[int, int] = {}

    # --- what RedirHost asks at once ---
    def reset(self) -> None:
        self.io.reset()

    def set_configuration(self, configuration: int) -> int:
        return self.io.set_configuration(configuration)

    def set_alt_setting(self, interface: int, alt: int) -> int:
        status = self.io.set_alt_setting(interface, alt)
        if status == U.SUCCESS:
            self._alt[interface] = alt
        return status

    def get_alt_setting(self, interface: int) -> tuple[int, int]:
        return (U.SUCCESS, self._alt.get(interface, 0)) if interface in self.numbers else (U.STALL, 0)

    def start_interrupt_receiving(self, endpoint: int) -> int:
        kind = self.endpoints.get(endpoint, (None, 0))[0]
        if kind != U.TYPE_INTERRUPT or not endpoint & 0x80:
            return U.STALL
        with self._lock:
            self._receiving.add(endpoint)
        self._receive(endpoint)
        return U.SUCCESS

    def stop_interrupt_receiving(self, endpoint: int) -> None:
        with self._lock:
            self._receiving.discard(endpoint)

    def _receive(self, endpoint: int) -> None:
        size = self.endpoints[endpoint][1] or 8

        def done(status: int, data: bytes) -> None:
            with self._lock:
                going = endpoint in self._receiving
            if going:
                self.on_interrupt(endpoint, status, data)
                if status == U.SUCCESS:
                    self._receive(endpoint)   # the next poll, as a host controller would

        self.io.interrupt(endpoint, size, done)

    # --- what RedirHost submits, answered later ---
    def submit(self, packet: U.Packet) -> None:
        h = packet.header
        finished = threading.Event()   # (a transfer may finish before the call that started it returns)

        def done(status: int, data: bytes) -> None:
            with self._lock:
                finished.set()
                self._pending.pop(packet.id, None)
            self.on_complete(packet.id, status, data)

        if packet.type == U.CONTROL_PACKET:
            inbound = bool(h["requesttype"] & 0x80)
            token = self.io.control(h["requesttype"], h["request"], h["value"], h["index"],
                                    h["length"] if inbound else packet.data, done)
        else:
            endpoint = h["endpoint"]
            kind = self.endpoints.get(endpoint, (None, 0))[0]
            wanted = U.TYPE_BULK if packet.type == U.BULK_PACKET else U.TYPE_INTERRUPT
            if kind != wanted:
                done(U.STALL, b"")
                return
            length = U.bulk_length(h) if packet.type == U.BULK_PACKET else h["length"]
            data: bytes | int = min(length, U.MAX_DATA) if endpoint & 0x80 else packet.data
            transfer = self.io.bulk if packet.type == U.BULK_PACKET else self.io.interrupt
            token = transfer(endpoint, data, done)
        with self._lock:
            if not finished.is_set():
                self._pending[packet.id] = token

    def cancel(self, packet_id: int) -> None:
        with self._lock:
            token = self._pending.pop(packet_id, None)
        if token is not None:
            self.io.cancel(token)

    def cancel_all(self) -> None:
        with self._lock:
            tokens = list(self._pending.values())
            self._pending.clear()
            self._receiving.clear()
        for token in tokens:
            self.io.cancel(token)

    def close(self) -> None:
        self.cancel_all()
        try:
            self.io.release()
        finally:
            self.io.close()


def parse_selector(text: str) -> tuple[str, int, int]:
    """--device VID:PID (hex) or BUS-ADDR (decimal), as ("id", vid, pid) or ("at", bus, address)."""
    try:
        if ":" in text:
            vid, pid = text.split(":", 1)
            return "id", int(vid, 16), int(pid, 16)
        if "-" in text:
            bus, address = text.split("-", 1)
            return "at", int(bus), int(address)
    except ValueError:
        pass
    raise InvalidInput(f"--device {text!r}: give VID:PID (hex, as lsusb shows them) or BUS-ADDR (e.g. 1-4)")


def choose(devices: list[DeviceInfo], text: str) -> DeviceInfo:
    how, a, b = parse_selector(text)
    found = [d for d in devices if (how == "id" and (d.vendor_id, d.product_id) == (a, b))
             or (how == "at" and (d.bus, d.address) == (a, b))]
    if not found:
        raise NotFound(f"no USB device {text} on this host" + ("" if devices else " (libusb sees none at all)"),
                       hint="see: spicectl usb list")
    if len(found) > 1:
        raise InvalidInput(f"{len(found)} USB devices are {text}", hint="name one by BUS-ADDR (spicectl usb list)")
    return found[0]


def libusb_available() -> None:
    try:
        import usb1  # noqa: F401
    except ImportError:
        raise EnvironmentProblem("host USB devices need python-libusb1 and libusb-1.0",
                                 hint="pip install 'spicectl[usb]' (and apt-get install libusb-1.0-0)") from None
