"""spicectl's own SPICE client against a real QEMU: screenshots equal libvirt's, keys reach the guest."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.integration.conftest import differs_only_in_one_text_cell, libvirt_screenshot, our_screenshot

pytestmark = pytest.mark.integration
COMPRESSIONS = ["off", "lz", "glz", "auto_lz", "auto_glz", "quic"]
BOOT_MENU = np.asarray(Image.open(REPO / "tests" / "data" / "bootmenu-region.png").convert("RGB"))
MENU_BOX = (0, 80, 360, 50)  # x, y, w, h of "Select boot device: / 1. Legacy option rom"


@pytest.fixture(scope="module")
def guests(spicectl):
    names = []
    for comp in COMPRESSIONS:
        name = f"shot-{comp.replace('_', '-')}"
        spicectl("vm", "create", name, "-t", "headless-ci", "--image-compression", comp, "--virt-type", "qemu",
                 "--wait")
        names.append(name)
    yield dict(zip(COMPRESSIONS, names, strict=True))
    for name in names:
        spicectl("vm", "delete", name, check=False)


@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_screenshot_equals_libvirts(spicectl, guests, comp, tmp_path):
    name = guests[comp]
    for _attempt in range(10):  # the guest may be mid-change; compare frames taken around libvirt's
        before = our_screenshot(spicectl, name, tmp_path)
        oracle = libvirt_screenshot(spicectl, name)
        after = our_screenshot(spicectl, name, tmp_path)
        if oracle.any() and (differs_only_in_one_text_cell(before, oracle) or
                             differs_only_in_one_text_cell(after, oracle)):
            return
        time.sleep(1)
    diff = (before != oracle).any(axis=2)
    pytest.fail(f"{comp}: our screenshot differs from libvirt's in {int(diff.sum())} pixels")


def menu_region(frame):
    x, y, w, h = MENU_BOX
    return frame[y:y + h, x:x + w]


@pytest.fixture(scope="module")
def menu_guest(spicectl):
    spicectl("vm", "create", "menu", "-t", "headless-ci", "--boot-menu-timeout", "60000", "--virt-type", "qemu",
             "--wait")
    yield "menu"
    spicectl("vm", "delete", "menu", check=False)


def menu_shown(spicectl, guest) -> bool:
    return bool((menu_region(libvirt_screenshot(spicectl, guest)) == BOOT_MENU).all())


def fresh_boot_prompt(spicectl, guest) -> None:
    """Power the guest off and on; return once SeaBIOS prints "Press ESC for boot menu." (its third line)."""
    spicectl("vm", "destroy", guest)
    spicectl("vm", "start", guest, "--wait")
    deadline = time.monotonic() + 60
    while not libvirt_screenshot(spicectl, guest)[48:64].any():
        assert time.monotonic() < deadline, "SeaBIOS never showed its prompt"
        time.sleep(0.5)


def wait_for_menu(spicectl, guest, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not menu_shown(spicectl, guest):
        assert time.monotonic() < deadline, "the boot menu did not appear after ESC"
        time.sleep(0.5)


def boot_menu_up(spicectl, guest) -> None:
    """Each test that needs SeaBIOS's boot menu brings it up itself (from a fresh boot if need be)."""
    if not menu_shown(spicectl, guest):
        fresh_boot_prompt(spicectl, guest)
        spicectl("send-keys", guest, "esc")
        wait_for_menu(spicectl, guest)


def test_escape_opens_the_boot_menu_as_libvirt_sees_it(spicectl, menu_guest, tmp_path):
    fresh_boot_prompt(spicectl, menu_guest)
    assert not menu_shown(spicectl, menu_guest)
    spicectl("send-keys", menu_guest, "esc")
    wait_for_menu(spicectl, menu_guest)
    assert (menu_region(our_screenshot(spicectl, menu_guest, tmp_path)) == BOOT_MENU).all()


def test_wait_screen_match_succeeds_and_a_mismatch_times_out(spicectl, menu_guest, tmp_path):
    boot_menu_up(spicectl, menu_guest)
    ref = tmp_path / "menu.png"
    full = np.zeros((400, 720, 3), np.uint8)
    x, y, w, h = MENU_BOX
    full[y:y + h, x:x + w] = BOOT_MENU
    Image.fromarray(full).save(ref)
    region = ",".join(map(str, MENU_BOX))
    r = spicectl("wait-screen", menu_guest, "--match", str(ref), "--region", region, "--threshold", "1.0",
                 "--timeout", "30", "--json")
    assert r.json()["matched"] is True

    white = tmp_path / "white.png"
    Image.fromarray(np.full((400, 720, 3), 255, np.uint8)).save(white)
    last = tmp_path / "last.png"
    r = spicectl("wait-screen", menu_guest, "--match", str(white), "--timeout", "2", "--last-frame", str(last),
                 check=False)
    assert r.exit_code == 9
    assert "did not match" in r.stderr
    frame = np.asarray(Image.open(last).convert("RGB"))
    assert (menu_region(frame) == BOOT_MENU).all()


def test_screenshot_to_stdout_is_a_png(spicectl, menu_guest):
    import subprocess
    import sys

    png = subprocess.run([sys.executable, "-m", "spicectl", "screenshot", menu_guest, "-o", "-"], env=spicectl.env,
                         capture_output=True, check=True).stdout
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_client_via_spice_uri_with_password_file(spicectl, menu_guest, tmp_path):
    info = spicectl("vm", "show", menu_guest, "--json").json()
    pw = tmp_path / "pw"
    r = spicectl("ticket", menu_guest, "--output", str(pw))
    assert r.exit_code == 0
    uri = f"spice://127.0.0.1?tls-port={info['spice']['tls_port']}"
    out = tmp_path / "uri.png"
    spicectl("screenshot", uri, "--password-file", str(pw), "--ca-file", spicectl.ca_file,
             "-o", str(out))
    assert Image.open(out).size == (720, 400)
    subject = spicectl("cert", "show", str(spicectl.state_dir / "certs" / "server" / "127.0.0.1"),
                       "--json").json()["host_subject"]
    spicectl("ticket", menu_guest, "--output", str(pw))
    spicectl("screenshot", uri, "--password-file", str(pw), "--ca-file", spicectl.ca_file,
             "--host-subject", subject, "-o", str(out))
    spicectl("ticket", menu_guest, "--output", str(pw))
    r = spicectl("screenshot", uri, "--password-file", str(pw), "--ca-file", spicectl.ca_file,
                 "--host-subject", "O=spicectl,CN=impostor", "-o", str(out), check=False)
    assert r.exit_code == 7
    assert "is not 'O=spicectl,CN=impostor'" in r.stderr
    bad = tmp_path / "bad"
    bad.write_text("wrong-password")
    r = spicectl("screenshot", uri, "--password-file", str(bad), "--ca-file", spicectl.ca_file,
                 "-o", str(out), check=False)
    assert r.exit_code == 5
    assert "permission denied" in r.stderr


def test_typing_reaches_the_guest(spicectl, menu_guest):
    # (the pointer is proven on the desktop guest, where X reports where a click landed: test_images.py)
    boot_menu_up(spicectl, menu_guest)
    # "1" picks the first entry of SeaBIOS's boot menu, which then tries to boot it and says so
    before = libvirt_screenshot(spicectl, menu_guest)
    time.sleep(2)
    assert differs_only_in_one_text_cell(libvirt_screenshot(spicectl, menu_guest), before), "the menu is not idle"
    spicectl("type", menu_guest, "1")
    deadline = time.monotonic() + 30
    while differs_only_in_one_text_cell(libvirt_screenshot(spicectl, menu_guest), before):
        assert time.monotonic() < deadline, "typing 1 changed nothing on the guest's screen"
        time.sleep(0.5)


def test_the_library_client_sees_the_guest_without_the_cli(spicectl, menu_guest):
    import asyncio

    from spicectl.spice import Client

    boot_menu_up(spicectl, menu_guest)
    tls_port = spicectl("vm", "show", menu_guest, "--json").json()["spice"]["tls_port"]
    password = spicectl("ticket", menu_guest).stdout.strip().encode()

    async def shot():
        async with Client("127.0.0.1", tls_port=tls_port, password=password, ca_file=spicectl.ca_file) as client:
            return await client.screen.screenshot()

    frame = np.asarray(asyncio.run(shot()).convert("RGB"))
    assert (menu_region(frame) == BOOT_MENU).all()


def test_a_guest_without_usbredir_channels_reports_none(spicectl, menu_guest):
    assert spicectl("usb", "status", menu_guest, "--json").json()["channels"] == []


def test_a_guest_without_usbredir_channels_cannot_take_a_usb_device(spicectl, menu_guest, tmp_path):
    iso = tmp_path / "cd.iso"
    iso.write_bytes(bytes(64 * 2048))
    r = spicectl("usb", "share", menu_guest, "--cd", str(iso), check=False)
    assert r.exit_code == 3 and "no usbredir channels" in r.stderr and "--usb-redir" in r.stderr


def test_a_guest_whose_usb_filter_blocks_mass_storage_refuses_the_cd_and_the_client_says_so(spicectl, tmp_path):
    """QEMU sends the guest's filter (libvirt's <redirfilter>) over usbredir; the device is never plugged in.
    No OS is needed: the filter is QEMU's and ours, decided before the guest sees anything."""
    spicectl("vm", "create", "nostorage", "-t", "headless-ci", "--usb", "ehci", "--usb-redir", "1",
             "--usb-filter", "class=0x08,allow=no", "--usb-filter", "allow", "--virt-type", "qemu", "--wait")
    try:
        iso = tmp_path / "cd.iso"
        iso.write_bytes(bytes(64 * 2048))
        r = spicectl("usb", "share", "nostorage", "--cd", str(iso), "--json", check=False)
        assert r.exit_code == 5, r.stderr
        assert "filter blocks it (class 08" in r.stderr and r.stdout == ""
        too_many = spicectl("usb", "share", "nostorage", "--cd", str(iso), "--disk", str(iso), check=False)
        assert too_many.exit_code == 2 and "1 usbredir channel" in too_many.stderr
        # this host has no USB devices at all (no USB subsystem): said as such, never a traceback
        assert spicectl("usb", "list", "nostorage", "--json").json() == {"devices": [], "guest": "nostorage"}
        none = spicectl("usb", "attach", "nostorage", "--device", "1-4", check=False)
        assert none.exit_code == 3 and "no USB device 1-4" in none.stderr
    finally:
        spicectl("vm", "delete", "nostorage", check=False)


def test_a_guest_without_folder_sharing_lists_no_port_channels(spicectl, menu_guest):
    listed = spicectl("channels", menu_guest, "--json").json()["channels"]
    assert {c["type"] for c in listed} >= {"main", "display", "inputs", "cursor"}
    assert not [c for c in listed if c["type"] in ("port", "webdav")]
