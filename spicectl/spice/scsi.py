"""SCSI commands over an image file: a CD-ROM (MMC) or a disk (SBC), as a USB stick answers them.

The commands a guest's sr/sd drivers, `mount`, `eject` and udev's probes send,
from SPC-4, SBC-3 and MMC-6. Sans-I/O but for the image itself: a command
returns a `Reply` that says what the data phase carries (a few bytes, a range
of the image to read, or a range the host will write), and the transport
(`usb_storage`) moves the bytes, reading and writing the image in bounded
pieces. The guest chooses every number in a command: each is checked against
the medium before the image is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

GOOD, CHECK_CONDITION = 0, 2
CD_BLOCK, DISK_BLOCK = 2048, 512
DVD_BLOCKS = (700 << 20) // CD_BLOCK   # a bigger image than a CD holds is a DVD-ROM

# sense: (key, additional sense code, qualifier)
NO_SENSE = (0x0, 0x00, 0x00)
NOT_PRESENT = (0x2, 0x3A, 0x00)
MEDIUM_ERROR = (0x3, 0x11, 0x00)
WRITE_ERROR = (0x3, 0x0C, 0x00)
INVALID_OPCODE = (0x5, 0x20, 0x00)
OUT_OF_RANGE = (0x5, 0x21, 0x00)
INVALID_FIELD = (0x5, 0x24, 0x00)
REMOVAL_PREVENTED = (0x5, 0x53, 0x02)
WRITE_PROTECTED = (0x7, 0x27, 0x00)

(TEST_UNIT_READY, REQUEST_SENSE, READ_6, WRITE_6, INQUIRY, MODE_SELECT_6, MODE_SENSE_6, START_STOP_UNIT,
 PREVENT_ALLOW, READ_CAPACITY_10, READ_10, WRITE_10, VERIFY_10, SYNCHRONIZE_CACHE_10, READ_TOC,
 GET_CONFIGURATION, GET_EVENT_STATUS, READ_DISC_INFORMATION, MODE_SELECT_10, MODE_SENSE_10, READ_16, WRITE_16,
 SYNCHRONIZE_CACHE_16, SERVICE_ACTION_IN_16, READ_12, WRITE_12, MECHANISM_STATUS) = (
    0x00, 0x03, 0x08, 0x0A, 0x12, 0x15, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2F, 0x35, 0x43, 0x46, 0x4A, 0x51,
    0x55, 0x5A, 0x88, 0x8A, 0x91, 0x9E, 0xA8, 0xAA, 0xBD)
READ_CAPACITY_16 = 0x10   # the service action of SERVICE ACTION IN(16)
MODE_PAGE_CACHING, MODE_PAGE_CAPABILITIES, MODE_PAGE_ALL = 0x08, 0x2A, 0x3F
MAX_MODE_SELECT = 4096   # parameter data the device takes (and ignores); more is refused


@dataclass
class Reply:
    """What a command does in its data phase, and its status once that is over."""
    status: int = GOOD
    data: bytes = b""                 # data-in of a few bytes
    read: tuple[int, int] | None = None    # data-in from the image: (byte offset, byte count)
    write: tuple[int, int] | None = None   # data-out to the image: (byte offset, byte count)


def _be(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def _ascii(text: str, size: int) -> bytes:
    return text.encode("ascii", "replace")[:size].ljust(size)


@dataclass
class Medium:
    """An image file opened for the device: its size in blocks, never read past its end."""
    path: str
    block: int
    writable: bool
    fd: int = -1
    size: int = 0

    def open(self) -> None:
        self.fd = os.open(self.path, (os.O_RDWR if self.writable else os.O_RDONLY) | os.O_CLOEXEC)
        self.size = os.fstat(self.fd).st_size

    @property
    def blocks(self) -> int:
        return -(-self.size // self.block)

    def read(self, offset: int, count: int) -> bytes:
        data = os.pread(self.fd, count, offset)
        return data.ljust(count, b"\0")   # the last block of an image not a whole number of blocks

    def write(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def flush(self) -> None:
        if self.writable and self.fd >= 0:
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self.fd)
                self.fd = -1


@dataclass
class ScsiDevice:
    """One logical unit: a CD-ROM (`cd`) or a disk (`disk`) over a Medium."""
    kind: str
    medium: Medium
    vendor: str = "spicectl"
    product: str = ""
    revision: str = "1.0"
    serial: str = "000000000001"
    sense: tuple[int, int, int] = NO_SENSE
    present: bool = True
    prevent_removal: bool = False
    ejected: bool = False      # the guest ejected the medium (START STOP UNIT with LoEj)
    writes: int = 0            # WRITE commands completed
    _media_event: int = 2      # GET EVENT STATUS NOTIFICATION: "new media" once, then "no change"
    _handlers: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.product = self.product or ("spicectl CD" if self.kind == "cd" else "spicectl disk")

    @property
    def is_cd(self) -> bool:
        return self.kind == "cd"

    @property
    def read_only(self) -> bool:
        return not self.medium.writable

    # --- the command set ---
    def command(self, cdb: bytes) -> Reply:
        """Run one command; a failure sets the sense data REQUEST SENSE returns next."""
        if not cdb:
            return self._fail(INVALID_OPCODE)
        op = cdb[0]
        if op != REQUEST_SENSE:
            self.sense = NO_SENSE
        handler = _HANDLERS.get(op)
        if handler is None or (op in _CD_ONLY and not self.is_cd) or (op in _DISK_ONLY and self.is_cd):
            return self._fail(INVALID_OPCODE)
        if op in _NEED_MEDIUM and not self.present:
            return self._fail(NOT_PRESENT)
        try:
            return handler(self, cdb)
        except IndexError:   # a CDB shorter than its opcode's
            return self._fail(INVALID_FIELD)

    def _fail(self, sense: tuple[int, int, int]) -> Reply:
        self.sense = sense
        return Reply(status=CHECK_CONDITION)

    def write_failed(self) -> None:
        self.sense = WRITE_ERROR

    def read_failed(self) -> None:
        self.sense = MEDIUM_ERROR

    def _ok(self, data: bytes, allocation: int) -> Reply:
        return Reply(data=data[:allocation])

    def _test_unit_ready(self, cdb: bytes) -> Reply:
        return Reply()

    def _request_sense(self, cdb: bytes) -> Reply:
        key, asc, ascq = self.sense
        self.sense = NO_SENSE
        data = bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0])
        return self._ok(data, cdb[4])

    def _inquiry(self, cdb: bytes) -> Reply:
        peripheral = 0x05 if self.is_cd else 0x00
        allocation = int.from_bytes(cdb[3:5], "big")
        if cdb[1] & 1:   # vital product data
            page = cdb[2]
            if page == 0x00:
                return self._ok(bytes([peripheral, 0x00, 0, 2, 0x00, 0x80]), allocation)
            if page == 0x80:
                serial = self.serial.encode()
                return self._ok(bytes([peripheral, 0x80, 0, len(serial)]) + serial, allocation)
            return self._fail(INVALID_FIELD)
        if cdb[2]:
            return self._fail(INVALID_FIELD)
        data = (bytes([peripheral, 0x80, 0x05, 0x02, 31, 0, 0, 0]) + _ascii(self.vendor, 8)
                + _ascii(self.product, 16) + _ascii(self.revision, 4))
        return self._ok(data, allocation)

    def _mode_pages(self, page: int) -> bytes | None:
        pages = {}
        if self.is_cd:
            # capabilities: reads CD-ROM; a tray that locks and ejects
            pages[MODE_PAGE_CAPABILITIES] = bytes([MODE_PAGE_CAPABILITIES, 20, 0, 0, 0, 0, 0x29, 0]) + bytes(14)
        else:
            # caching: writes go to the host's page cache (a write-back cache: SYNCHRONIZE CACHE is fsync)
            pages[MODE_PAGE_CACHING] = bytes([MODE_PAGE_CACHING, 18, 0x04 if self.medium.writable else 0]) + bytes(17)
        if page == MODE_PAGE_ALL:
            return b"".join(pages[p] for p in sorted(pages))
        return pages.get(page)

    def _mode_sense(self, cdb: bytes) -> Reply:
        ten = cdb[0] == MODE_SENSE_10
        pages = self._mode_pages(cdb[2] & 0x3F)
        if pages is None:
            return self._fail(INVALID_FIELD)
        specific = 0x80 if not self.is_cd and self.read_only else 0x00   # write-protected
        if ten:
            data = _be(len(pages) + 6, 2) + bytes([0, specific, 0, 0, 0, 0]) + pages
            return self._ok(data, int.from_bytes(cdb[7:9], "big"))
        data = bytes([len(pages) + 3, 0, specific, 0]) + pages
        return self._ok(data, cdb[4])

    def _mode_select(self, cdb: bytes) -> Reply:
        length = int.from_bytes(cdb[7:9], "big") if cdb[0] == MODE_SELECT_10 else cdb[4]
        # the parameters are taken and ignored: nothing here is changeable
        return self._fail(INVALID_FIELD) if length > MAX_MODE_SELECT else Reply()

    def _start_stop(self, cdb: bytes) -> Reply:
        start, load_eject = cdb[4] & 1, cdb[4] & 2
        if load_eject and not start:
            if self.prevent_removal:
                return self._fail(REMOVAL_PREVENTED)
            self.present, self.ejected = False, True
        return Reply()

    def _prevent_allow(self, cdb: bytes) -> Reply:
        self.prevent_removal = bool(cdb[4] & 1)
        return Reply()

    def _read_capacity_10(self, cdb: bytes) -> Reply:
        last = min(self.medium.blocks - 1, 0xFFFFFFFF)
        return Reply(data=_be(last, 4) + _be(self.medium.block, 4))

    def _service_action_in(self, cdb: bytes) -> Reply:
        if cdb[1] & 0x1F != READ_CAPACITY_16:
            return self._fail(INVALID_OPCODE)
        data = _be(self.medium.blocks - 1, 8) + _be(self.medium.block, 4) + bytes(20)
        return self._ok(data, int.from_bytes(cdb[10:14], "big"))

    def _range(self, cdb: bytes) -> tuple[int, int]:
        op = cdb[0]
        if op in (READ_6, WRITE_6):
            return int.from_bytes(cdb[1:4], "big") & 0x1FFFFF, cdb[4] or 256
        if op in (READ_10, WRITE_10, VERIFY_10):
            return int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[7:9], "big")
        if op in (READ_12, WRITE_12):
            return int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[6:10], "big")
        return int.from_bytes(cdb[2:10], "big"), int.from_bytes(cdb[10:14], "big")

    def _read(self, cdb: bytes) -> Reply:
        if len(cdb) < {READ_6: 6, READ_10: 10, READ_12: 12, READ_16: 16}[cdb[0]]:
            return self._fail(INVALID_FIELD)
        lba, count = self._range(cdb)
        if lba + count > self.medium.blocks:
            return self._fail(OUT_OF_RANGE)
        return Reply(read=(lba * self.medium.block, count * self.medium.block))

    def _write(self, cdb: bytes) -> Reply:
        if len(cdb) < {WRITE_6: 6, WRITE_10: 10, WRITE_12: 12, WRITE_16: 16}[cdb[0]]:
            return self._fail(INVALID_FIELD)
        lba, count = self._range(cdb)
        if self.read_only:
            return self._fail(WRITE_PROTECTED)
        if lba + count > self.medium.blocks:
            return self._fail(OUT_OF_RANGE)
        return Reply(write=(lba * self.medium.block, count * self.medium.block))

    def _verify(self, cdb: bytes) -> Reply:
        lba, count = self._range(cdb)
        return self._fail(OUT_OF_RANGE) if lba + count > self.medium.blocks else Reply()

    def _synchronize_cache(self, cdb: bytes) -> Reply:
        try:
            self.medium.flush()
        except OSError:
            return self._fail(WRITE_ERROR)
        return Reply()

    # --- MMC ---
    @property
    def _profile(self) -> int:
        return 0x0010 if self.medium.blocks > DVD_BLOCKS else 0x0008   # DVD-ROM, CD-ROM

    def _read_toc(self, cdb: bytes) -> Reply:
        msf, fmt, track = bool(cdb[1] & 2), cdb[2] & 0x0F, cdb[6]
        allocation = int.from_bytes(cdb[7:9], "big")

        def address(lba: int) -> bytes:
            if not msf:
                return _be(lba, 4)
            frames = lba + 150
            return bytes([0, frames // 4500, frames // 75 % 60, frames % 75])

        if fmt == 0:
            entries = []
            if track <= 1:
                entries.append(bytes([0, 0x14, 1, 0]) + address(0))
            if track <= 1 or track == 0xAA:
                entries.append(bytes([0, 0x14, 0xAA, 0]) + address(self.medium.blocks))
            else:
                return self._fail(INVALID_FIELD)
            body = bytes([1, 1]) + b"".join(entries)
        elif fmt == 1:   # session information: one session, its first track at 0
            body = bytes([1, 1]) + bytes([0, 0x14, 1, 0]) + address(0)
        else:
            return self._fail(INVALID_FIELD)
        return self._ok(_be(len(body), 2) + body, allocation)

    def _get_configuration(self, cdb: bytes) -> Reply:
        requested, start = cdb[1] & 3, int.from_bytes(cdb[2:4], "big")
        profile, present = self._profile, self.present

        def feature(code: int, version: int, persistent: bool, current: bool, data: bytes) -> tuple[int, bool, bytes]:
            flags = version << 2 | persistent << 1 | current
            return code, current, _be(code, 2) + bytes([flags, len(data)]) + data

        features = [
            feature(0x0000, 0, True, True, _be(profile, 2) + bytes([1, 0])),
            feature(0x0001, 1, True, True, _be(8, 4) + bytes([0, 0, 0, 0])),      # core: USB
            feature(0x0003, 0, True, True, bytes([0x29, 0, 0, 0])),              # removable: tray, eject, lock
            feature(0x0010, 0, False, present, _be(CD_BLOCK, 4) + _be(16 if profile == 0x10 else 1, 2) + bytes(2)),
            feature(0x001E if profile == 0x08 else 0x001F, 0, False, present, bytes(4) if profile == 0x08 else b""),
        ]
        chosen = [d for code, current, d in features
                  if (requested == 0 and code >= start) or (requested == 1 and current and code >= start)
                  or (requested == 2 and code == start)]
        body = bytes(2) + _be(profile if present else 0, 2) + b"".join(chosen)
        return self._ok(_be(len(body), 4) + body, int.from_bytes(cdb[7:9], "big"))

    def _get_event_status(self, cdb: bytes) -> Reply:
        if not cdb[1] & 1:   # only polled operation
            return self._fail(INVALID_FIELD)
        allocation = int.from_bytes(cdb[7:9], "big")
        if not cdb[4] & 0x10:   # no media class requested: "no event available"
            return self._ok(bytes([0, 2, 0x80, 0x10]), allocation)
        event = self._media_event if self.present else 3   # new media / no change / removal
        self._media_event = 0
        data = bytes([0, 6, 0x04, 0x10, event, 0x02 if self.present else 0x00, 0, 0])
        return self._ok(data, allocation)

    def _read_disc_information(self, cdb: bytes) -> Reply:
        # a complete, finalised disc: one session, one track
        data = _be(32, 2) + bytes([0x0E, 1, 1, 1, 1, 0, 0, 0, 0, 0]) + bytes(4) + b"\xff" * 8 + bytes(10)
        return self._ok(data, int.from_bytes(cdb[7:9], "big"))

    def _mechanism_status(self, cdb: bytes) -> Reply:
        return self._ok(bytes(8), int.from_bytes(cdb[8:10], "big"))


_HANDLERS = {
    TEST_UNIT_READY: ScsiDevice._test_unit_ready, REQUEST_SENSE: ScsiDevice._request_sense,
    INQUIRY: ScsiDevice._inquiry, MODE_SENSE_6: ScsiDevice._mode_sense, MODE_SENSE_10: ScsiDevice._mode_sense,
    MODE_SELECT_6: ScsiDevice._mode_select, MODE_SELECT_10: ScsiDevice._mode_select,
    START_STOP_UNIT: ScsiDevice._start_stop, PREVENT_ALLOW: ScsiDevice._prevent_allow,
    READ_CAPACITY_10: ScsiDevice._read_capacity_10, SERVICE_ACTION_IN_16: ScsiDevice._service_action_in,
    READ_6: ScsiDevice._read, READ_10: ScsiDevice._read, READ_12: ScsiDevice._read, READ_16: ScsiDevice._read,
    WRITE_6: ScsiDevice._write, WRITE_10: ScsiDevice._write, WRITE_12: ScsiDevice._write,
    WRITE_16: ScsiDevice._write, VERIFY_10: ScsiDevice._verify,
    SYNCHRONIZE_CACHE_10: ScsiDevice._synchronize_cache, SYNCHRONIZE_CACHE_16: ScsiDevice._synchronize_cache,
    READ_TOC: ScsiDevice._read_toc, GET_CONFIGURATION: ScsiDevice._get_configuration,
    GET_EVENT_STATUS: ScsiDevice._get_event_status, READ_DISC_INFORMATION: ScsiDevice._read_disc_information,
    MECHANISM_STATUS: ScsiDevice._mechanism_status,
}
_CD_ONLY = {READ_TOC, GET_CONFIGURATION, GET_EVENT_STATUS, READ_DISC_INFORMATION, MECHANISM_STATUS}
_DISK_ONLY = {WRITE_6, WRITE_10, WRITE_12, WRITE_16, SYNCHRONIZE_CACHE_10, SYNCHRONIZE_CACHE_16, READ_6}
_NEED_MEDIUM = {TEST_UNIT_READY, READ_CAPACITY_10, SERVICE_ACTION_IN_16, READ_6, READ_10, READ_12, READ_16,
                WRITE_6, WRITE_10, WRITE_12, WRITE_16, VERIFY_10, READ_TOC, READ_DISC_INFORMATION}
