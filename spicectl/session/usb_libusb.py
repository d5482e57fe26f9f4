"""The host's USB devices through libusb-1.0 (python-libusb1): listing them, and `Transfers` for one
opened device, its transfers asynchronous (libusb's own), its events handled by a thread of ours."""

from __future__ import annotations

import threading
from typing import Any

from spicectl.errors import EnvironmentProblem, HypervisorError
from spicectl.session.usb_host import CONTROL_TIMEOUT_MS, DeviceInfo, Done, libusb_available
from spicectl.spice import usbredir as U

HUB = 0x09
# libusb's speed codes to usbredir's
SPEEDS = {1: U.SPEED_LOW, 2: U.SPEED_FULL, 3: U.SPEED_HIGH, 4: U.SPEED_SUPER, 5: U.SPEED_SUPER}


def _status(usb1: Any, code: int) -> int:
    return {usb1.TRANSFER_COMPLETED: U.SUCCESS, usb1.TRANSFER_STALL: U.STALL,
            usb1.TRANSFER_CANCELLED: U.CANCELLED, usb1.TRANSFER_TIMED_OUT: U.TIMEOUT,
            usb1.TRANSFER_OVERFLOW: U.BABBLE}.get(code, U.IOERROR)


class Libusb:
    """This host's USB devices (hubs left out), and opening one for redirection."""

    def __init__(self) -> None:
        libusb_available()
        import usb1

        self.usb1 = usb1
        try:
            self.context = usb1.USBContext()
            self.context.open()
        except usb1.USBError as exc:
            raise EnvironmentProblem(f"libusb cannot start: {exc}") from None
        self._devices: dict[tuple[int, int], Any] = {}

    def devices(self) -> list[DeviceInfo]:
        found = []
        for dev in self.context.getDeviceIterator(skip_on_error=True):
            if dev.getDeviceClass() == HUB:
                continue
            interfaces = []
            try:
                for config in dev.iterConfigurations():
                    for interface in config:
                        setting = interface[0]
                        interfaces.append((setting.getClass(), setting.getSubClass(), setting.getProtocol()))
                    break
            except self.usb1.USBError:
                pass
            strings = []
            for read in (dev.getManufacturer, dev.getProduct):
                try:   # (reading a string opens the device: a user without access gets none)
                    strings.append(read() or "")
                except self.usb1.USBError:
                    strings.append("")
            info = DeviceInfo(dev.getBusNumber(), dev.getDeviceAddress(), dev.getVendorID(), dev.getProductID(),
                              dev.getDeviceClass(), dev.getbcdDevice(), SPEEDS.get(dev.getDeviceSpeed(), U.SPEED_FULL),
                              strings[0], strings[1], tuple(interfaces))
            self._devices[(info.bus, info.address)] = dev
            found.append(info)
        return found

    def open(self, info: DeviceInfo) -> LibusbTransfers:
        dev = self._devices.get((info.bus, info.address))
        if dev is None:
            self.devices()
            dev = self._devices[(info.bus, info.address)]
        try:
            handle = dev.open()
        except self.usb1.USBErrorAccess:
            raise EnvironmentProblem(f"no access to USB device {info.bus}-{info.address} ({info.name})",
                                     hint=f"give your user the device (a udev rule for {info.name}), or run as root") \
                from None
        except self.usb1.USBError as exc:
            raise HypervisorError(f"cannot open USB device {info.bus}-{info.address}: {exc}") from None
        return LibusbTransfers(self, handle)

    def close(self) -> None:
        self.context.close()


class LibusbTransfers:
    """One opened device's transfers, asynchronous, completed on our event thread."""

    def __init__(self, owner: Libusb, handle: Any) -> None:
        self.usb1 = owner.usb1
        self.context = owner.context
        self.handle = handle
        self.claimed: list[int] = []
        self._running = True
        self._live: set[Any] = set()   # submitted transfers (python-libusb1 wants them kept)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._events, name="spicectl-libusb", daemon=True)
        self._thread.start()

    def _events(self) -> None:
        while self._running:
            try:
                self.context.handleEventsTimeout(0.1)
            except self.usb1.USBErrorInterrupted:
                continue

    def descriptor(self, kind: int, index: int, length: int) -> bytes:
        return bytes(self.handle.controlRead(0x80, 6, kind << 8 | index, 0x0409 if kind == 3 else 0, length,
                                             timeout=CONTROL_TIMEOUT_MS))

    def claim(self, interfaces: list[int]) -> None:
        try:
            self.handle.setAutoDetachKernelDriver(True)   # given back to the kernel's drivers on release
        except self.usb1.USBErrorNotSupported:
            pass
        for number in interfaces:
            try:
                self.handle.claimInterface(number)
            except self.usb1.USBError as exc:
                raise HypervisorError(f"cannot take interface {number} of the USB device: {exc}",
                                      hint="is another program using it?") from None
            self.claimed.append(number)

    def release(self) -> None:
        for number in self.claimed:
            try:
                self.handle.releaseInterface(number)
            except self.usb1.USBError:
                pass
        self.claimed.clear()

    def _submit(self, setup: str, args: tuple, done: Done) -> Any:
        transfer = self.handle.getTransfer()
        inbound = isinstance(args[-1], int)

        def callback(t: Any) -> None:
            status = _status(self.usb1, t.getStatus())
            data = bytes(t.getBuffer()[:t.getActualLength()]) if inbound and status == U.SUCCESS else b""
            with self._lock:
                self._live.discard(t)
            done(status, data)

        getattr(transfer, setup)(*args, callback=callback,
                                 timeout=CONTROL_TIMEOUT_MS if setup == "setControl" else 0)
        with self._lock:
            self._live.add(transfer)
        try:
            transfer.submit()
        except self.usb1.USBError:
            with self._lock:
                self._live.discard(transfer)
            done(U.IOERROR, b"")
        return transfer

    def control(self, requesttype: int, request: int, value: int, index: int, data: bytes | int,
                done: Done) -> Any:
        return self._submit("setControl", (requesttype, request, value, index, data), done)

    def bulk(self, endpoint: int, data: bytes | int, done: Done) -> Any:
        return self._submit("setBulk", (endpoint, data), done)

    def interrupt(self, endpoint: int, data: bytes | int, done: Done) -> Any:
        return self._submit("setInterrupt", (endpoint, data), done)

    def cancel(self, token: object) -> None:
        try:
            token.cancel()   # type: ignore[attr-defined]
        except self.usb1.USBError:
            pass

    def _setting(self, call, *args) -> int:
        try:
            call(*args)
            return U.SUCCESS
        except self.usb1.USBErrorPipe:
            return U.STALL
        except self.usb1.USBError:
            return U.IOERROR

    def set_configuration(self, configuration: int) -> int:
        return self._setting(self.handle.setConfiguration, configuration)

    def set_alt_setting(self, interface: int, alt: int) -> int:
        return self._setting(self.handle.setInterfaceAltSetting, interface, alt)

    def reset(self) -> None:
        self._setting(self.handle.resetDevice)

    def close(self) -> None:
        with self._lock:
            live = list(self._live)
        for transfer in live:
            self.cancel(transfer)
        self._running = False
        self._thread.join(2)
        self.handle.close()
