"""An emulated USB mass-storage device: descriptors, control requests and the bulk-only transport.

USB Mass Storage Class, Bulk-Only Transport 1.0: the host sends a 31-byte
command block wrapper (CBW) on the bulk-out endpoint, data moves in the
direction the CBW names, and the device ends with a 13-byte status wrapper
(CSW) on bulk-in. The SCSI command inside is answered by `scsi.ScsiDevice`.
Bulk-in requests are answered from what the current phase has to give, at
most `READ_CHUNK` bytes read from the image per request, however much the
guest asks for; a request that comes while the device has nothing to send
waits (the caller keeps it). A device the guest's filter sees is described
by `interfaces` and `endpoints`, as usbredir's interface_info and ep_info
carry them.
"""

from __future__ import annotations

from dataclasses import dataclass

from spicectl.spice import scsi
from spicectl.spice.usbredir import BABBLE, STALL, SUCCESS, TYPE_BULK, TYPE_CONTROL
from spicectl.spice.wire import Layout

CBW = Layout("CommandBlockWrapper", [("signature", "I"), ("tag", "I"), ("data_length", "I"), ("flags", "B"),
                                     ("lun", "B"), ("cb_length", "B"), ("cb", "16s")])
CSW = Layout("CommandStatusWrapper", [("signature", "I"), ("tag", "I"), ("residue", "I"), ("status", "B")])
CBW_SIGNATURE, CSW_SIGNATURE = 0x43425355, 0x53425355
CSW_PASSED, CSW_FAILED, CSW_PHASE_ERROR = 0, 1, 2
EP_IN, EP_OUT, BULK_MAX_PACKET, EP0_MAX_PACKET = 0x81, 0x02, 512, 64
READ_CHUNK = 1 << 20
MASS_STORAGE, SCSI_TRANSPARENT, BULK_ONLY = 0x08, 0x06, 0x50
# the standard and class requests this device answers (bmRequestType, bRequest)
GET_STATUS, CLEAR_FEATURE, SET_FEATURE, GET_DESCRIPTOR = 0, 1, 3, 6
BOT_RESET, GET_MAX_LUN = 0xFF, 0xFE
DT_DEVICE, DT_CONFIG, DT_STRING, DT_QUALIFIER = 1, 2, 3, 6
ENGLISH_US = 0x0409


@dataclass(frozen=True)
class Identity:
    """What the device says it is: the IDs a usbredir filter matches, and its strings."""
    vendor_id: int
    product_id: int
    manufacturer: str
    product: str
    version_bcd: int = 0x0100


# the emulated CD is the one spice-gtk presents (remote-viewer --spice-share-cd), so a guest's filter
# for it applies to ours too; the disk takes the ID of QEMU's own emulated usb-storage
CD_IDENTITY = Identity(0x2B23, 0xCDCD, "Red Hat", "spicectl CD")
DISK_IDENTITY = Identity(0x46F4, 0x0001, "QEMU", "spicectl disk")


def _string(text: str) -> bytes:
    data = text.encode("utf-16-le")[:252]
    return bytes([len(data) + 2, DT_STRING]) + data


class MassStorage:
    """One emulated USB stick or CD drive with a single logical unit."""

    interfaces = [(MASS_STORAGE, SCSI_TRANSPARENT, BULK_ONLY)]
    # endpoint address -> (type, max packet size); endpoint 0 both ways is the control pipe
    endpoints = {0x00: (TYPE_CONTROL, EP0_MAX_PACKET), 0x80: (TYPE_CONTROL, EP0_MAX_PACKET),
                 EP_IN: (TYPE_BULK, BULK_MAX_PACKET), EP_OUT: (TYPE_BULK, BULK_MAX_PACKET)}
    device_class = 0

    def __init__(self, unit: scsi.ScsiDevice, identity: Identity, serial: str) -> None:
        self.unit = unit
        self.identity = identity
        self.serial = serial
        self.halted: set[int] = set()
        self.commands = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self._reset_transport()

    def _reset_transport(self) -> None:
        self.phase = "command"
        self.tag = 0
        self.host_length = 0
        self.moved = 0
        self.device_length = 0
        self.status = CSW_PASSED
        self.reply = scsi.Reply()

    def reset(self) -> None:
        self._reset_transport()
        self.halted.clear()

    def close(self) -> None:
        self.unit.medium.close()

    @property
    def ejected(self) -> bool:
        """The guest ejected the medium and has read the command's status: time to unplug."""
        return self.unit.ejected and self.phase == "command"

    # (what a real device's host-side driver would do; an emulated device has one configuration and
    # one interface with one alternate setting, and no interrupt endpoint)
    def set_configuration(self, configuration: int) -> int:
        if configuration not in (0, 1):
            return STALL
        self.reset()
        return SUCCESS

    def set_alt_setting(self, interface: int, alt: int) -> int:
        return SUCCESS if (interface, alt) == (0, 0) else STALL

    def get_alt_setting(self, interface: int) -> tuple[int, int]:
        return (SUCCESS, 0) if interface == 0 else (STALL, 0)

    def start_interrupt_receiving(self, endpoint: int) -> int:
        return STALL

    def stop_interrupt_receiving(self, endpoint: int) -> None:
        pass

    # --- descriptors and control requests ---
    def descriptor(self, kind: int, index: int) -> bytes | None:
        ident = self.identity
        if kind == DT_DEVICE:
            return (bytes([18, DT_DEVICE]) + (0x0200).to_bytes(2, "little") + bytes([0, 0, 0, EP0_MAX_PACKET])
                    + ident.vendor_id.to_bytes(2, "little") + ident.product_id.to_bytes(2, "little")
                    + ident.version_bcd.to_bytes(2, "little") + bytes([1, 2, 3, 1]))
        if kind == DT_CONFIG:
            interface = bytes([9, 4, 0, 0, 2, MASS_STORAGE, SCSI_TRANSPARENT, BULK_ONLY, 0])
            endpoints = b"".join(bytes([7, 5, address, TYPE_BULK]) + BULK_MAX_PACKET.to_bytes(2, "little") + b"\0"
                                 for address in (EP_IN, EP_OUT))
            total = 9 + len(interface) + len(endpoints)
            config = bytes([9, DT_CONFIG]) + total.to_bytes(2, "little") + bytes([1, 1, 0, 0x80, 50])
            return config + interface + endpoints
        if kind == DT_QUALIFIER:
            return bytes([10, DT_QUALIFIER]) + (0x0200).to_bytes(2, "little") + bytes([0, 0, 0, EP0_MAX_PACKET, 1, 0])
        if kind == DT_STRING:
            strings = {0: bytes([4, DT_STRING]) + ENGLISH_US.to_bytes(2, "little"),
                       1: _string(ident.manufacturer), 2: _string(ident.product), 3: _string(self.serial)}
            return strings.get(index)
        return None

    def control(self, requesttype: int, request: int, value: int, index: int, length: int) -> tuple[int, bytes]:
        """The status and data-in of a control request (QEMU answers SET_ADDRESS, SET_CONFIGURATION and
        SET/GET_INTERFACE through their own usbredir packets)."""
        if requesttype == 0x80 and request == GET_DESCRIPTOR:
            data = self.descriptor(value >> 8, value & 0xFF)
            return (STALL, b"") if data is None else (SUCCESS, data[:length])
        if requesttype in (0x80, 0x81, 0x82) and request == GET_STATUS:
            halted = requesttype == 0x82 and (index & 0xFF) in self.halted
            return SUCCESS, bytes([1 if halted else 0, 0])[:length]
        if requesttype in (0x00, 0x01, 0x02) and request in (CLEAR_FEATURE, SET_FEATURE):
            if requesttype == 0x02 and value == 0:   # ENDPOINT_HALT
                (self.halted.discard if request == CLEAR_FEATURE else self.halted.add)(index & 0xFF)
            return SUCCESS, b""
        if requesttype == 0x21 and request == BOT_RESET and index == 0:
            self._reset_transport()
            return SUCCESS, b""
        if requesttype == 0xA1 and request == GET_MAX_LUN and index == 0:
            return SUCCESS, b"\0"[:length]
        return STALL, b""

    # --- the bulk-only transport ---
    def bulk_out(self, endpoint: int, data: bytes) -> int:
        if endpoint != EP_OUT or endpoint in self.halted:
            return STALL
        if self.phase == "command":
            return self._command(data)
        if self.phase != "data_out":
            return STALL
        take = data[:self.host_length - self.moved]
        target = self.reply.write
        if target is not None and self.status == CSW_PASSED:
            offset, count = target
            inside = take[:max(0, count - self.moved)]
            if inside:
                try:
                    self.unit.medium.write(offset + self.moved, inside)
                    self.bytes_written += len(inside)
                except OSError:
                    self.unit.write_failed()
                    self.status = CSW_FAILED
        self.moved += len(take)
        if self.moved >= self.host_length:
            if target is not None and self.status == CSW_PASSED:
                self.unit.writes += 1
            self.phase = "status"
        return SUCCESS

    def _command(self, data: bytes) -> int:
        if len(data) != CBW.size:
            self.halted.update((EP_IN, EP_OUT))   # an invalid CBW: stalled until a reset recovery
            return STALL
        cbw = CBW.unpack(data)
        if cbw["signature"] != CBW_SIGNATURE or cbw["lun"] != 0 or not 1 <= cbw["cb_length"] <= 16:
            self.halted.update((EP_IN, EP_OUT))
            return STALL
        self.commands += 1
        self.tag, self.host_length, self.moved = cbw["tag"], cbw["data_length"], 0
        self.reply = reply = self.unit.command(cbw["cb"][:cbw["cb_length"]])
        self.status = CSW_PASSED if reply.status == scsi.GOOD else CSW_FAILED
        wants_in = bool(reply.data) or reply.read is not None
        self.device_length = len(reply.data) if reply.data else (reply.read[1] if reply.read else 0)
        if cbw["flags"] & 0x80:   # data-in
            if reply.write is not None:
                self.status, self.device_length = CSW_PHASE_ERROR, 0
            elif self.device_length > self.host_length:
                self.status, self.device_length = CSW_PHASE_ERROR, self.host_length
            self.phase = "data_in" if self.host_length else "status"
        else:
            if wants_in and self.host_length:
                self.status = CSW_PHASE_ERROR
            elif self.host_length == 0 and (wants_in or reply.write):
                self.status = CSW_PHASE_ERROR
            self.phase = "data_out" if self.host_length else "status"
        return SUCCESS

    def bulk_in(self, endpoint: int, length: int) -> tuple[int, bytes] | None:
        """The answer to a bulk-in request of `length` bytes, or None while there is nothing to send."""
        if endpoint != EP_IN or endpoint in self.halted:
            return STALL, b""
        if self.phase == "data_in":
            count = min(length, self.device_length - self.moved, READ_CHUNK)
            data = b""
            if count > 0:
                try:
                    data = self._data_in(count)
                except OSError:
                    self.unit.read_failed()
                    self.status, count = CSW_FAILED, 0
            self.moved += count
            if count < length or self.moved >= self.host_length:
                self.phase = "status"
            return SUCCESS, data
        if self.phase == "status":
            csw = CSW.pack(signature=CSW_SIGNATURE, tag=self.tag, residue=max(0, self.host_length - self.moved),
                           status=self.status)
            self._reset_transport()
            return (SUCCESS, csw) if length >= len(csw) else (BABBLE, csw[:length])
        return None

    def _data_in(self, count: int) -> bytes:
        reply = self.reply
        if reply.read is None:
            return reply.data[self.moved:self.moved + count]
        data = self.unit.medium.read(reply.read[0] + self.moved, count)
        self.bytes_read += len(data)
        return data


def open_device(kind: str, path: str, *, writable: bool = False, number: int = 1) -> MassStorage:
    """A CD drive (`cd`, an ISO image, read-only) or a USB stick (`disk`) over the image at `path`."""
    import hashlib
    import os
    import stat

    from spicectl.errors import InvalidInput, NotFound

    what = "--cd" if kind == "cd" else "--disk"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{what} {path}: no such file") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{what} {path}: not a regular file (an image file is needed)")
    if info.st_size == 0:
        raise InvalidInput(f"{what} {path}: the image is empty")
    block = scsi.CD_BLOCK if kind == "cd" else scsi.DISK_BLOCK
    if kind == "disk" and info.st_size % block:
        raise InvalidInput(f"--disk {path}: {info.st_size} bytes is not a whole number of {block}-byte sectors",
                           hint="make the image with qemu-img create or truncate -s to a multiple of 512")
    medium = scsi.Medium(path, block, writable and kind == "disk")
    try:
        medium.open()
    except PermissionError:
        raise InvalidInput(f"{what} {path}: permission denied"
                           + (" (--writable needs write access)" if medium.writable else "")) from None
    digest = hashlib.sha256(f"{os.path.realpath(path)}\0{number}".encode()).hexdigest()
    unit = scsi.ScsiDevice(kind, medium, serial=digest[:12].upper())
    return MassStorage(unit, CD_IDENTITY if kind == "cd" else DISK_IDENTITY, serial=digest[:12].upper())
