"""A host USB device for tests where this host has none (no USB subsystem, no dummy_hcd): the libusb-shaped
`Transfers` of session/usb_host.py answered by an emulated stick or CD drive, as a real device would
answer its host controller: bulk reads it cannot answer yet wait (a device NAKs), every transfer finishes
on a thread of its own (libusb's event thread) unless `threaded` is off."""

from __future__ import annotations

import threading

from spicectl.session.usb_host import DeviceInfo
from spicectl.spice import usbredir as U
from spicectl.spice.usb_storage import MassStorage


class DeviceTransfers:
    def __init__(self, device: MassStorage, *, threaded: bool = True) -> None:
        self.device = device
        self.threaded = threaded
        self.claimed: list[int] = []
        self.released = self.closed = False
        self._waiting: list[tuple[object, int, int, object]] = []   # (token, endpoint, length, done)
        self._lock = threading.Lock()

    def info(self, bus: int = 3, address: int = 7) -> DeviceInfo:
        ident = self.device.identity
        return DeviceInfo(bus, address, ident.vendor_id, ident.product_id, 0, ident.version_bcd, U.SPEED_HIGH,
                          ident.manufacturer, ident.product, tuple(self.device.interfaces))

    def _finish(self, done, status: int, data: bytes = b"") -> None:
        if self.threaded:
            threading.Thread(target=done, args=(status, data), daemon=True).start()
        else:
            done(status, data)

    def descriptor(self, kind: int, index: int, length: int) -> bytes:
        return (self.device.descriptor(kind, index) or b"")[:length]

    def claim(self, interfaces: list[int]) -> None:
        self.claimed = list(interfaces)

    def release(self) -> None:
        self.released = True

    def control(self, requesttype, request, value, index, data, done) -> object:
        token = object()
        with self._lock:
            status, answer = self.device.control(requesttype, request, value, index,
                                                 data if isinstance(data, int) else len(data))
        self._finish(done, status, answer)
        return token

    def bulk(self, endpoint, data, done) -> object:
        token = object()
        with self._lock:
            if isinstance(data, int):
                answer = self.device.bulk_in(endpoint, data)
                if answer is None:
                    self._waiting.append((token, endpoint, data, done))
                    return token
                self._finish(done, *answer)
                return token
            self._finish(done, self.device.bulk_out(endpoint, data))
            ready = []
            while self._waiting:   # what waited may be answerable now
                token2, ep, length, done2 = self._waiting[0]
                answer = self.device.bulk_in(ep, length)
                if answer is None:
                    break
                self._waiting.pop(0)
                ready.append((done2, answer))
        for done2, answer in ready:
            self._finish(done2, *answer)
        return token

    def interrupt(self, endpoint, data, done) -> object:
        self._finish(done, U.STALL)
        return object()

    def cancel(self, token) -> None:
        with self._lock:
            hit = [w for w in self._waiting if w[0] is token]
            self._waiting = [w for w in self._waiting if w[0] is not token]
        for _t, _e, _l, done in hit:
            self._finish(done, U.CANCELLED)

    def set_configuration(self, configuration: int) -> int:
        return self.device.set_configuration(configuration)

    def set_alt_setting(self, interface: int, alt: int) -> int:
        return self.device.set_alt_setting(interface, alt)

    def reset(self) -> None:
        self.device.reset()

    def close(self) -> None:
        self.closed = True
        self.device.close()
