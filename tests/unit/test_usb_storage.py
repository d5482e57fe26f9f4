"""Emulated USB storage over usbredir, sans-I/O: a guest side (tests/usbredir_guest.py) talks to our
usb-host, which answers with an emulated CD drive or stick over an image file."""

from __future__ import annotations

import os

import pytest

from spicectl.errors import InvalidInput, NotFound, ProtocolError
from spicectl.spice import scsi
from spicectl.spice import usbredir as U
from spicectl.spice.usb_storage import CSW_FAILED, CSW_PASSED, READ_CHUNK, open_device
from spicectl.spice.usbredir_host import RedirHost
from tests.usbredir_guest import Guest


def read10(lba: int, count: int) -> bytes:
    return bytes([0x28, 0]) + lba.to_bytes(4, "big") + b"\0" + count.to_bytes(2, "big") + b"\0"


def write10(lba: int, count: int) -> bytes:
    return bytes([0x2A, 0]) + lba.to_bytes(4, "big") + b"\0" + count.to_bytes(2, "big") + b"\0"


def plugged(tmp_path, kind="cd", size=64 * 2048, writable=False, filter_rules=None, fill=None):
    image = tmp_path / f"image.{kind}"
    image.write_bytes(fill if fill is not None else os.urandom(size))
    host = RedirHost(open_device(kind, str(image), writable=writable), "spicectl test")

    def send(data: bytes) -> bytes:
        host.receive(data)
        return host.take_output()

    guest = Guest(send, filter_rules=filter_rules)
    got = guest.hello(host.take_output())
    assert [p.type for p in got] == [U.DEVICE_DISCONNECT]   # the barrier, before anything is plugged
    return host, guest, image


def connect(host, guest):
    got = guest.ack_disconnect()
    return got


def test_a_cd_is_plugged_after_the_barrier_and_described_as_spice_gtks(tmp_path):
    host, guest, _ = plugged(tmp_path)
    got = connect(host, guest)
    assert [p.type for p in got] == [U.INTERFACE_INFO, U.EP_INFO, U.DEVICE_CONNECT]
    info, eps, dev = (p.header for p in got)
    assert info["interface_count"] == 1 and info["interface_class"][0] == 8 and info["interface_protocol"][0] == 0x50
    assert eps["type"][0x11] == U.TYPE_BULK and eps["type"][0x02] == U.TYPE_BULK and eps["type"][0x03] == 255
    assert int.from_bytes(eps["max_packet_size"][0x22:0x24], "little") == 512
    assert (dev["vendor_id"], dev["product_id"], dev["speed"]) == (0x2B23, 0xCDCD, U.SPEED_HIGH)
    assert [e.kind for e in host.events] == ["connected"]
    guest.enumerate()
    assert host.attached and host.events[-1].kind == "attached"
    assert guest.packets[-1].type == U.CONFIGURATION_STATUS and guest.packets[-1].header["status"] == U.SUCCESS


def test_the_guest_reads_the_iso_through_scsi_as_sr_does(tmp_path):
    host, guest, image = plugged(tmp_path)
    connect(host, guest)
    guest.enumerate()
    inquiry, csw = guest.scsi(bytes([0x12, 0, 0, 0, 36, 0]), 36)
    assert inquiry[0] == 0x05 and inquiry[1] & 0x80 and inquiry[16:27] == b"spicectl CD"
    capacity, csw = guest.scsi(bytes([0x25] + [0] * 9), 8)
    assert int.from_bytes(capacity[:4], "big") == 63 and int.from_bytes(capacity[4:], "big") == 2048
    data, csw = guest.scsi(read10(3, 5), 5 * 2048)
    assert csw["status"] == CSW_PASSED and csw["residue"] == 0
    assert data == image.read_bytes()[3 * 2048:8 * 2048]
    toc, csw = guest.scsi(bytes([0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0]), 100)
    assert toc[:4] == bytes([0, 18, 1, 1]) and toc[14] == 0xAA and int.from_bytes(toc[16:20], "big") == 64
    config, csw = guest.scsi(bytes([0x46, 0, 0, 0, 0, 0, 0, 0, 255, 0]), 255)
    assert csw["status"] == CSW_PASSED and config[6:8] == b"\x00\x08"   # current profile: CD-ROM


def test_a_read_past_the_end_fails_with_sense_and_the_guest_can_go_on(tmp_path):
    host, guest, _ = plugged(tmp_path)
    connect(host, guest)
    guest.enumerate()
    data, csw = guest.scsi(read10(60, 8), 8 * 2048)
    assert data == b"" and csw["status"] == CSW_FAILED and csw["residue"] == 8 * 2048
    sense, csw = guest.scsi(bytes([0x03, 0, 0, 0, 18, 0]), 18)
    assert (sense[2], sense[12]) == (0x5, 0x21)   # ILLEGAL REQUEST, LBA out of range
    data, csw = guest.scsi(read10(60, 4), 4 * 2048)
    assert csw["status"] == CSW_PASSED and len(data) == 4 * 2048


def test_eject_in_the_guest_unplugs_the_cd_unless_removal_is_prevented(tmp_path):
    host, guest, _ = plugged(tmp_path)
    connect(host, guest)
    guest.enumerate()
    guest.scsi(bytes([0x1E, 0, 0, 0, 1, 0]))    # PREVENT MEDIUM REMOVAL
    _, csw = guest.scsi(bytes([0x1B, 0, 0, 0, 2, 0]))
    assert csw["status"] == CSW_FAILED and host.state == "connected"
    guest.scsi(bytes([0x1E, 0, 0, 0, 0, 0]))    # ALLOW
    _, csw = guest.scsi(bytes([0x1B, 0, 0, 0, 2, 0]))
    assert csw["status"] == CSW_PASSED and guest.packets[-1].type == U.DEVICE_DISCONNECT
    assert host.state == "releasing"
    guest.ack_disconnect()
    assert host.state == "released" and host.events[-1].detail == "ejected by the guest"


def test_a_writable_stick_puts_each_write_in_the_image_before_its_status(tmp_path):
    host, guest, image = plugged(tmp_path, kind="disk", size=256 * 512, writable=True)
    connect(host, guest)
    assert guest.packets[-1].header["vendor_id"] == 0x46F4
    guest.enumerate()
    payload = os.urandom(9 * 512)
    _, csw = guest.scsi(write10(10, 9), data_out=payload)
    assert csw["status"] == CSW_PASSED
    assert image.read_bytes()[10 * 512:19 * 512] == payload   # in the file (page cache) already
    _, csw = guest.scsi(bytes([0x35] + [0] * 9))            # SYNCHRONIZE CACHE: fsync
    assert csw["status"] == CSW_PASSED
    mode, _ = guest.scsi(bytes([0x1A, 0, 0x3F, 0, 192, 0]), 192)
    assert not mode[2] & 0x80   # not write-protected


def test_a_read_only_stick_says_write_protected_and_leaves_the_image_alone(tmp_path):
    before = os.urandom(64 * 512)
    host, guest, image = plugged(tmp_path, kind="disk", fill=before)
    connect(host, guest)
    guest.enumerate()
    mode, _ = guest.scsi(bytes([0x1A, 0, 0x3F, 0, 192, 0]), 192)
    assert mode[2] & 0x80   # write-protected
    _, csw = guest.scsi(write10(0, 2), data_out=b"x" * 1024)
    assert csw["status"] == CSW_FAILED
    sense, _ = guest.scsi(bytes([0x03, 0, 0, 0, 18, 0]), 18)
    assert (sense[2], sense[12]) == (0x7, 0x27)   # DATA PROTECT, write protected
    assert image.read_bytes() == before


def test_the_guests_filter_blocks_mass_storage_before_anything_is_plugged(tmp_path):
    host, guest, _ = plugged(tmp_path, filter_rules="0x08,-1,-1,-1,0|-1,-1,-1,-1,1")
    got = connect(host, guest)
    assert got == [] and host.state == "rejected"
    assert "class 08" in host.events[-1].detail


def test_a_filter_that_allows_only_other_devices_blocks_it_too(tmp_path):
    host, guest, _ = plugged(tmp_path, filter_rules="0x03,-1,-1,-1,1")
    connect(host, guest)
    assert host.state == "rejected" and "no rule allows it" in host.events[-1].detail


def test_a_filter_allowing_spice_gtks_cd_lets_ours_in(tmp_path):
    host, guest, _ = plugged(tmp_path, filter_rules="-1,0x2b23,0xcdcd,-1,1|-1,-1,-1,-1,0")
    connect(host, guest)
    assert host.state == "connected"


def test_filter_semantics_follow_usbredirfilter():
    rules = U.parse_filter(b"0x03,-1,-1,-1,0|-1,-1,-1,-1,1\0")
    # a non-boot HID interface beside another is skipped; alone it is checked
    assert U.filter_verdict(rules, device_class=0, interfaces=[(3, 0, 0), (8, 6, 0x50)], vendor_id=1,
                            product_id=2, version_bcd=0x100) is None
    assert U.filter_verdict(rules, device_class=0, interfaces=[(3, 0, 0)], vendor_id=1, product_id=2,
                            version_bcd=0x100) == rules[0]
    with pytest.raises(ProtocolError, match="fields"):
        U.parse_filter(b"1,2,3|")
    with pytest.raises(ProtocolError, match="out of range"):
        U.parse_filter(b"0x100,-1,-1,-1,1")


def test_bad_images_are_refused_with_one_clear_line(tmp_path):
    with pytest.raises(NotFound, match="no such file"):
        open_device("cd", str(tmp_path / "missing.iso"))
    (tmp_path / "empty.img").write_bytes(b"")
    with pytest.raises(InvalidInput, match="empty"):
        open_device("disk", str(tmp_path / "empty.img"))
    (tmp_path / "odd.img").write_bytes(b"x" * 1000)
    with pytest.raises(InvalidInput, match="512"):
        open_device("disk", str(tmp_path / "odd.img"))
    with pytest.raises(InvalidInput, match="regular file"):
        open_device("cd", str(tmp_path))


# --- the hostile twins: a guest side that lies, floods or asks for the moon ---

def test_a_huge_bulk_read_is_answered_with_what_the_device_has_never_more(tmp_path):
    host, guest, _ = plugged(tmp_path, size=4096 * 2048)
    connect(host, guest)
    guest.enumerate()
    cbw_only = guest.codec  # noqa: F841 (the CBW below asks for the whole image)
    from spicectl.spice.usb_storage import CBW, CBW_SIGNATURE
    guest.bulk_out(CBW.pack(signature=CBW_SIGNATURE, tag=1, data_length=0xFFFFFFFF, flags=0x80, lun=0,
                            cb_length=10, cb=read10(0, 4096).ljust(16, b"\0")))
    answer = guest.bulk_in(U.MAX_DATA)[-1]
    assert len(answer.data) == READ_CHUNK


def test_a_packet_over_the_limit_is_refused_from_its_header_alone(tmp_path):
    host, guest, _ = plugged(tmp_path)
    connect(host, guest)
    head = guest.codec.header.pack(type=U.BULK_PACKET, length=U.MAX_DATA + 64, id=1)
    with pytest.raises(ProtocolError, match="limit"):
        host.receive(head)


@pytest.mark.parametrize("packet_type,body", [
    (U.DEVICE_CONNECT, bytes(10)),          # what only a host sends
    (U.RESET, b"x"),                        # data where none may be
    (U.CONTROL_PACKET, bytes(4)),           # shorter than its header
    (77, b""),                              # no such type
])
def test_a_malformed_packet_is_a_protocol_error(tmp_path, packet_type, body):
    host, guest, _ = plugged(tmp_path)
    connect(host, guest)
    with pytest.raises(ProtocolError):
        host.receive(guest.codec.header.pack(type=packet_type, length=len(body), id=1) + body)


def test_a_bulk_packet_lying_about_its_length_is_refused(tmp_path):
    host, guest, _ = plugged(tmp_path)
    connect(host, guest)
    header = U.BULK32.pack(endpoint=2, status=0, length=100, stream_id=0, length_high=0)
    body = header + b"x" * 31
    with pytest.raises(ProtocolError, match="says 100"):
        host.receive(guest.codec.header.pack(type=U.BULK_PACKET, length=len(body), id=1) + body)


def test_endless_bulk_reads_with_nothing_to_read_are_bounded(tmp_path):
    host, guest, _ = plugged(tmp_path)
    connect(host, guest)
    guest.enumerate()
    with pytest.raises(ProtocolError, match="waiting"):
        for _ in range(1000):
            guest.bulk_in(512)


def test_a_cancelled_waiting_read_is_answered_cancelled(tmp_path):
    host, guest, _ = plugged(tmp_path)
    connect(host, guest)
    guest.enumerate()
    guest.bulk_in(512)   # nothing to read yet: it waits
    waiting_id = max(p.id for p in guest.packets) + 1  # noqa: F841
    pid = 1000
    guest.exchange(guest.codec.pack(U.BULK_PACKET, pid, U.with_bulk_length(
        {"endpoint": 0x81, "status": 0, "stream_id": 0}, 512)))
    got = guest.exchange(guest.codec.pack(U.CANCEL_DATA_PACKET, pid))
    assert got[-1].id == pid and got[-1].header["status"] == U.CANCELLED


def test_an_invalid_cbw_stalls_until_a_reset_recovery(tmp_path):
    host, guest, _ = plugged(tmp_path)
    connect(host, guest)
    guest.enumerate()
    assert guest.bulk_out(b"not a cbw").header["status"] == U.STALL
    assert guest.bulk_in(13)[-1].header["status"] == U.STALL
    assert guest.control_out(0x21, 0xFF, 0, 0).header["status"] == U.SUCCESS   # bulk-only mass storage reset
    guest.control_out(0x02, 1, 0, 0x81)
    guest.control_out(0x02, 1, 0, 0x02)
    _, csw = guest.scsi(bytes(6))
    assert csw["status"] == CSW_PASSED


def test_scsi_commands_shorter_than_their_opcode_fail_cleanly():
    class NoMedium(scsi.Medium):
        def open(self) -> None:
            self.size = 2048 * 10

    medium = NoMedium("x", 2048, False)
    medium.open()
    for kind in ("cd", "disk"):
        unit = scsi.ScsiDevice(kind, medium)
        for op in range(256):
            for cdb in (bytes([op]), bytes([op]) + os.urandom(15), bytes([op]) + b"\xff" * 15):
                reply = unit.command(cdb)
                assert reply.status in (scsi.GOOD, scsi.CHECK_CONDITION)
                if reply.read:   # whatever it reads is inside the medium
                    assert reply.read[0] + reply.read[1] <= medium.size


def test_a_share_record_is_read_while_its_process_lives_and_dropped_after(tmp_path):
    import subprocess
    import sys

    from spicectl.session.usb_plugs import Plug, ShareRecord, running_share

    record = ShareRecord(tmp_path, "web", [Plug(0, "cd", "/x.iso", False, "attached")])
    record.write()
    assert (record.path.stat().st_mode & 0o777) == 0o600
    pid, plugs = running_share(tmp_path, "web")
    assert pid == os.getpid() and plugs[0].state == "attached"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record.path.write_text(record.path.read_text().replace(str(os.getpid()), gone.stdout.strip()))
    assert running_share(tmp_path, "web") is None and not record.path.exists()
    assert running_share(tmp_path, "other") is None


# --- a host device (session/usb_host.HostDevice): transfers answered later, as libusb's are ---

def host_device_plugged(tmp_path, size=64 * 2048):
    from spicectl.session.usb_host import HostDevice
    from tests.usb_fake import DeviceTransfers

    image = tmp_path / "host.iso"
    image.write_bytes(os.urandom(size))
    io = DeviceTransfers(open_device("cd", str(image)), threaded=False)
    device = HostDevice(io, io.info())
    host = RedirHost(device, "spicectl test")
    device.on_complete = host.complete          # (libusb's thread would go through the loop)
    device.on_interrupt = host.interrupt_data

    def send(data: bytes) -> bytes:
        host.receive(data)
        return host.take_output()

    guest = Guest(send)
    guest.hello(host.take_output())
    return host, guest, image, device, io


def test_a_host_device_is_described_by_its_own_descriptors_and_read_through_submitted_transfers(tmp_path):
    host, guest, image, device, _io = host_device_plugged(tmp_path)
    info, eps, dev = (p.header for p in guest.ack_disconnect())
    assert (dev["vendor_id"], dev["product_id"]) == (0x2B23, 0xCDCD) and info["interface_class"][0] == 8
    assert eps["type"][0x11] == U.TYPE_BULK and device.endpoint_interface == {0x81: 0, 0x02: 0}
    guest.enumerate()
    assert host.attached
    data, csw = guest.scsi(read10(2, 3), 3 * 2048)
    assert csw["status"] == CSW_PASSED and data == image.read_bytes()[2 * 2048:5 * 2048]


def test_a_host_devices_waiting_read_is_cancelled_when_the_guest_cancels_it(tmp_path):
    host, guest, _image, _device, _io = host_device_plugged(tmp_path)
    guest.ack_disconnect()
    guest.enumerate()
    pid = 4242
    assert guest.exchange(guest.codec.pack(U.BULK_PACKET, pid, U.with_bulk_length(
        {"endpoint": 0x81, "status": 0, "stream_id": 0}, 512))) == []   # the device has nothing: it waits
    got = guest.exchange(guest.codec.pack(U.CANCEL_DATA_PACKET, pid))
    assert [(p.id, p.header["status"]) for p in got] == [(pid, U.CANCELLED)]


def test_unplugging_a_host_device_cancels_what_is_in_flight_and_gives_it_back(tmp_path):
    host, guest, _image, device, io = host_device_plugged(tmp_path)
    guest.ack_disconnect()
    guest.enumerate()
    guest.exchange(guest.codec.pack(U.BULK_PACKET, 77, U.with_bulk_length(
        {"endpoint": 0x81, "status": 0, "stream_id": 0}, 512)))
    host.release("stopped")
    out = guest.feed(host.take_output())
    assert (77, U.CANCELLED) in [(p.id, p.header.get("status")) for p in out if p.type == U.BULK_PACKET]
    assert out[-1].type == U.DEVICE_DISCONNECT
    device.close()
    assert io.released and io.closed


def test_a_host_device_descriptor_parser_keeps_alternate_setting_0():
    from spicectl.session.usb_host import parse_config

    config = (bytes([9, 2, 39, 0, 2, 1, 0, 0x80, 50])
              + bytes([9, 4, 0, 0, 1, 3, 1, 1, 0]) + bytes([7, 5, 0x81, 3, 8, 0, 10])
              + bytes([9, 4, 1, 0, 0, 0xFF, 0, 0, 0])
              + bytes([9, 4, 1, 1, 1, 0xFF, 0, 0, 0]) + bytes([7, 5, 0x82, 1, 0, 2, 1]))
    interfaces, numbers, endpoints = parse_config(config[:9] + config[9:])
    assert interfaces == [(3, 1, 1), (0xFF, 0, 0)] and numbers == [0, 1]
    assert endpoints == {0x81: (U.TYPE_INTERRUPT, 8, 0, 10)}   # the alt-1 iso endpoint is not the device's now
    assert parse_config(b"\x09\x02\xff") == ([], [], {})   # cut short: nothing read past it


class KeyboardTransfers:
    """A full-speed boot keyboard as libusb would hand it over: one interrupt-in endpoint, every 10 ms."""

    DEVICE = bytes([18, 1, 0x10, 0x01, 0, 0, 0, 8, 0x6D, 0x04, 0x1C, 0xC3, 0x00, 0x01, 1, 2, 0, 1])
    CONFIG = (bytes([9, 2, 34, 0, 1, 1, 0, 0xA0, 50]) + bytes([9, 4, 0, 0, 1, 3, 1, 1, 0])
              + bytes([9, 0x21, 0x11, 1, 0, 1, 0x22, 63, 0]) + bytes([7, 5, 0x81, 3, 8, 0, 10]))

    def __init__(self) -> None:
        self.reports = [bytes([0, 0, 0x04, 0, 0, 0, 0, 0])]   # the key "a"
        self.polls = 0

    def descriptor(self, kind, index, length):
        return (self.DEVICE if kind == 1 else self.CONFIG)[:length]

    def interrupt(self, endpoint, data, done):
        self.polls += 1
        if self.reports:
            done(0, self.reports.pop(0))
        return object()   # then no key: the poll stays out, as a real one would

    def control(self, requesttype, request, value, index, data, done):
        if requesttype == 0x80 and request == 6:   # GET_DESCRIPTOR, as the guest's enumeration asks
            done(U.SUCCESS, self.descriptor(value >> 8, value & 0xFF, data))
        else:
            done(U.SUCCESS, b"")
        return object()

    def claim(self, interfaces): ...
    def release(self): ...
    def cancel(self, token): ...
    def set_configuration(self, configuration): return U.SUCCESS
    def set_alt_setting(self, interface, alt): return U.SUCCESS
    def reset(self): ...
    def close(self): ...


def test_a_host_keyboard_is_full_speed_its_interval_told_and_its_reports_delivered():
    from spicectl.session.usb_host import DeviceInfo, HostDevice

    io = KeyboardTransfers()
    device = HostDevice(io, DeviceInfo(1, 4, 0x046D, 0xC31C, 0, 0x0100, U.SPEED_FULL, "Logitech", "Keyboard",
                                       ((3, 1, 1),)))
    host = RedirHost(device, "spicectl test")
    device.on_complete, device.on_interrupt = host.complete, host.interrupt_data

    def send(data: bytes) -> bytes:
        host.receive(data)
        return host.take_output()

    guest = Guest(send)
    guest.hello(host.take_output())
    info, eps, dev = (p.header for p in guest.ack_disconnect())
    assert dev["speed"] == U.SPEED_FULL and info["interface_class"][0] == 3
    assert eps["type"][0x11] == U.TYPE_INTERRUPT and eps["interval"][0x11] == 10
    guest.enumerate()
    got = guest.request(U.START_INTERRUPT_RECEIVING, {"endpoint": 0x81})
    status = [p for p in got if p.type == U.INTERRUPT_RECEIVING_STATUS]
    reports = [p for p in got if p.type == U.INTERRUPT_PACKET]
    assert status[0].header["status"] == U.SUCCESS
    assert reports[0].header["endpoint"] == 0x81 and reports[0].data == bytes([0, 0, 0x04, 0, 0, 0, 0, 0])
    assert io.polls == 2   # after a report, the next poll is out
    guest.request(U.STOP_INTERRUPT_RECEIVING, {"endpoint": 0x81})
    assert host.state == "connected"
