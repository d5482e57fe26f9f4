"""`usb share` against a hostile usbredir peer: a fake SPICE server whose usbredir channel speaks the
protocol badly (wrong lengths, huge transfers, endless packets). Each run ends with exit 7 (or, for a
peer that merely stops listening, at --seconds) in bounded memory, never with a traceback or a hang."""

from __future__ import annotations

import os

import pytest

from spicectl.spice import usbredir as U
from tests.hostile_server import HostileServer, Script, run_cli
from tests.usbredir_guest import QEMU_CAPS

# what the client may map beyond what it starts with (RLIMIT_AS): past it, an allocation fails (exit 70)
MEMORY = 256 << 20
GUEST = U.Codec(set(QEMU_CAPS), set(U.OUR_CAPS))   # how the guest side packs, once both hellos are in
HELLO = U.hello("qemu usb-redir guest hostile", QEMU_CAPS)
ACK = GUEST.pack(U.DEVICE_DISCONNECT_ACK, 0)       # lets the client plug its device in
CONFIGURE = GUEST.pack(U.SET_CONFIGURATION, 1, {"configuration": 1})
BULK_IN = GUEST.pack(U.BULK_PACKET, 5, U.with_bulk_length({"endpoint": 0x81, "status": 0, "stream_id": 0}, 512))
GET_DESCRIPTOR = GUEST.pack(U.CONTROL_PACKET, 9, {"endpoint": 0x80, "request": 6, "requesttype": 0x80, "status": 0,
                                                  "value": 0x0100, "index": 0, "length": 18})


def lying_control() -> bytes:
    head = U.CONTROL.pack(endpoint=0, request=9, requesttype=0, status=0, value=1, index=0, length=100)
    body = head + b"x" * 5
    return GUEST.header.pack(type=U.CONTROL_PACKET, length=len(body), id=3) + body


HOSTILE = {
    "not hello first": Script(usbredir=[GUEST.pack(U.RESET, 0)]),
    "a hello of a gigabyte": Script(usbredir=[U.HEADER.pack(type=U.HELLO, length=1 << 30, id=0)]),
    "a control packet lying about its length": Script(usbredir=[HELLO, ACK, CONFIGURE, lying_control()]),
    "a 4 GB bulk transfer": Script(usbredir=[HELLO, ACK, GUEST.header.pack(type=U.BULK_PACKET, length=0xFFFFFF00,
                                                                            id=4)]),
    "endless bulk reads with nothing to read": Script(usbredir=[HELLO, ACK, CONFIGURE], usbredir_forever=BULK_IN),
    "endless garbage after hello": Script(usbredir=[HELLO], usbredir_forever=os.urandom(4096)),
    "what only a host sends": Script(usbredir=[HELLO, ACK, GUEST.pack(U.DEVICE_CONNECT, 0, {
        "speed": 2, "device_class": 0, "device_subclass": 0, "device_protocol": 0, "vendor_id": 1,
        "product_id": 2, "device_version_bcd": 3})]),
}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("usb") / "cd.iso"
    path.write_bytes(os.urandom(16 * 2048))
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_usbredir_peer_ends_usb_share_with_exit_7(case, image):
    with HostileServer(HOSTILE[case]) as server:
        run = run_cli(["usb", "share", f"spice://127.0.0.1:{server.port}", "--plain-port", "--cd", str(image),
                       "--seconds", "20", "--max-memory", "256M"], extra=MEMORY, seconds=30)
    assert run.how == "exit" and run.code == 7, str(run)
    assert "Traceback" not in run.stderr and "usbredir" in run.stderr, str(run)


def test_a_peer_that_floods_requests_and_never_reads_is_left_at_seconds(image):
    script = Script(usbredir=[HELLO, ACK, CONFIGURE], usbredir_forever=GET_DESCRIPTOR * 64, usbredir_deaf=True)
    with HostileServer(script) as server:
        run = run_cli(["usb", "share", f"spice://127.0.0.1:{server.port}", "--plain-port", "--cd", str(image),
                       "--seconds", "2", "--max-memory", "256M"], extra=MEMORY, seconds=30)
    assert run.how == "exit" and run.code == 0, str(run)


def test_a_peer_that_never_configures_the_device_is_a_timeout(image):
    with HostileServer(Script(usbredir=[HELLO, ACK])) as server:
        run = run_cli(["usb", "share", f"spice://127.0.0.1:{server.port}", "--plain-port", "--cd", str(image),
                       "--attach-timeout", "2"], seconds=30)
    assert run.how == "exit" and run.code == 9 and "did not take" in run.stderr, str(run)
