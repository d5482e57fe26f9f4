"""spicectl's own SPICE client against a real QEMU: screenshots equal libvirt's, keys reach the guest."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.integration.conftest import differs_only_in_one_text_cell, libvirt_screenshot, our_screenshot

pytestmark = pytest.mark.integration
COMPRESSIONS = ["off", "lz", "glz", "auto_glz"]
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
    yield dict(zip(COMPRESSIONS, names))
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


def test_escape_opens_the_boot_menu_as_libvirt_sees_it(spicectl, menu_guest, tmp_path):
    # wait for SeaBIOS to print "Press ESC for boot menu." (its third text line), then press ESC
    deadline = time.monotonic() + 60
    while not libvirt_screenshot(spicectl, menu_guest)[48:64].any():
        assert time.monotonic() < deadline, "SeaBIOS never showed its prompt"
        time.sleep(0.5)
    assert not (menu_region(libvirt_screenshot(spicectl, menu_guest)) == BOOT_MENU).all()
    spicectl("send-keys", menu_guest, "esc")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (menu_region(libvirt_screenshot(spicectl, menu_guest)) == BOOT_MENU).all():
            break
        time.sleep(0.5)
    else:
        pytest.fail("the boot menu did not appear after ESC")
    assert (menu_region(our_screenshot(spicectl, menu_guest, tmp_path)) == BOOT_MENU).all()


def test_wait_screen_match_succeeds_and_a_mismatch_times_out(spicectl, menu_guest, tmp_path):
    # the previous test left the boot menu on screen; make sure of it for a lone run
    if not (menu_region(libvirt_screenshot(spicectl, menu_guest)) == BOOT_MENU).all():
        spicectl("send-keys", menu_guest, "esc")
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
    spicectl("screenshot", "label", "--uri", uri, "--password-file", str(pw), "--ca-file", spicectl.ca_file,
             "-o", str(out))
    assert Image.open(out).size == (720, 400)
    subject = spicectl("cert", "show", str(spicectl.state_dir / "certs" / "server" / "127.0.0.1"),
                       "--json").json()["host_subject"]
    spicectl("ticket", menu_guest, "--output", str(pw))
    spicectl("screenshot", "label", "--uri", uri, "--password-file", str(pw), "--ca-file", spicectl.ca_file,
             "--host-subject", subject, "-o", str(out))
    spicectl("ticket", menu_guest, "--output", str(pw))
    r = spicectl("screenshot", "label", "--uri", uri, "--password-file", str(pw), "--ca-file", spicectl.ca_file,
                 "--host-subject", "O=spicectl,CN=impostor", "-o", str(out), check=False)
    assert r.exit_code == 7
    assert "is not 'O=spicectl,CN=impostor'" in r.stderr
    bad = tmp_path / "bad"
    bad.write_text("wrong-password")
    r = spicectl("screenshot", "label", "--uri", uri, "--password-file", str(bad), "--ca-file", spicectl.ca_file,
                 "-o", str(out), check=False)
    assert r.exit_code == 5
    assert "permission denied" in r.stderr


def test_mouse_and_typing_reach_the_guest(spicectl, menu_guest, tmp_path):
    if not (menu_region(libvirt_screenshot(spicectl, menu_guest)) == BOOT_MENU).all():
        spicectl("send-keys", menu_guest, "esc")
        time.sleep(2)
    r = spicectl("mouse", menu_guest, "--move", "10,10", "--click", "left", "--json")
    assert r.json()["clicked"] == "left" and r.json()["mouse_mode"] in ("client", "server")
    # "1" picks the first entry of SeaBIOS's boot menu, which then tries to boot it and says so
    before = libvirt_screenshot(spicectl, menu_guest)
    time.sleep(2)
    assert differs_only_in_one_text_cell(libvirt_screenshot(spicectl, menu_guest), before), "the menu is not idle"
    spicectl("type", menu_guest, "1")
    deadline = time.monotonic() + 30
    while differs_only_in_one_text_cell(libvirt_screenshot(spicectl, menu_guest), before):
        assert time.monotonic() < deadline, "typing 1 changed nothing on the guest's screen"
        time.sleep(0.5)


def test_library_client_is_importable_from_the_package():
    from spicectl.spice import Client

    assert callable(Client.screenshot) and callable(Client.send_keys) and callable(Client.type_text)
    assert callable(Client.wait_for)


def test_a_screen_the_client_cannot_draw_is_an_error_not_a_picture(spicectl, tmp_path):
    # QUIC is not decoded yet: the screenshot must say so (exit 7), not save a plausible picture
    spicectl("vm", "create", "shot-quic", "-t", "headless-ci", "--image-compression", "quic", "--virt-type", "qemu",
             "--wait")
    try:
        out = tmp_path / "quic.png"
        deadline = time.monotonic() + 60
        while True:  # until SeaBIOS has drawn something (a black screen needs no image at all)
            r = spicectl("screenshot", "shot-quic", "-o", str(out), check=False)
            if r.exit_code != 0 or time.monotonic() > deadline:
                break
            out.unlink()
            time.sleep(1)
        assert r.exit_code == 7, r.stderr
        assert "could not be drawn completely" in r.stderr and "QUIC" in r.stderr
        assert not out.exists()
        r = spicectl("screenshot", "shot-quic", "-o", str(out), "--allow-partial")
        assert Image.open(out).size == (720, 400)
    finally:
        spicectl("vm", "delete", "shot-quic", check=False)
