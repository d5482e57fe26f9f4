"""The session holder: repeated commands through one warm libvirt connection and SPICE session."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import Spicectl, differs_only_in_one_text_cell, libvirt_screenshot

pytestmark = pytest.mark.integration
GUEST = "warm"


def holder_pids() -> list[int]:
    import subprocess

    out = subprocess.run(["pgrep", "-f", "spicectl.holder"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def warm(spicectl):
    spicectl("vm", "create", GUEST, "-t", "headless-ci", "--virt-type", "qemu", "--wait")
    deadline = time.monotonic() + 90
    while not libvirt_screenshot(spicectl, GUEST)[176:192].any():   # SeaBIOS's last line
        assert time.monotonic() < deadline, "SeaBIOS did not reach its last line"
        time.sleep(0.5)
    sc = Spicectl(spicectl.state_dir, Path(spicectl.env["SPICECTL_CONFIG"]))
    sc.env["SPICECTL_PERSIST"] = "30"
    yield sc
    spicectl("vm", "delete", GUEST, check=False)   # (asks a holder to exit first)


def test_repeated_commands_go_through_one_holder_and_draw_the_same_screen(spicectl, warm, tmp_path):
    before = set(holder_pids())
    rows = warm("vm", "list", "--json").json()   # (other modules' guests may still be there)
    assert [r["state"] for r in rows if r["name"] == GUEST] == ["running"]
    sock = spicectl.state_dir / "holder.sock"
    assert sock.exists() and sock.stat().st_mode & 0o777 == 0o600
    started = set(holder_pids()) - before
    assert len(started) == 1
    ticket = warm("ticket", GUEST, "--json").json()["ticket"]
    shots = []
    for i in range(3):
        out = tmp_path / f"warm-{i}.png"
        r = warm("screenshot", GUEST, "-o", str(out), "--json")
        assert r.json()["width"] == 720
        shots.append(np.asarray(Image.open(out).convert("RGB")))
    warm("send-keys", GUEST, "shift")
    assert set(holder_pids()) - before == started, "every command used the same holder"
    assert ticket not in (spicectl.state_dir / "holder.log").read_text()
    # libvirt's own screenshot opens the private libvirt here: the holder lets go of it and exits
    truth = libvirt_screenshot(spicectl, GUEST)
    for shot in shots:
        assert differs_only_in_one_text_cell(shot, truth)
    assert not sock.exists() and not set(holder_pids()) & started


def test_persist_0_never_starts_a_holder_and_an_idle_one_exits(spicectl, warm):
    before = set(holder_pids())
    spicectl("vm", "list")   # SPICECTL_PERSIST=0: starts none (and a running one lets go of the root)
    assert set(holder_pids()) <= before and not (spicectl.state_dir / "holder.sock").exists()
    warm("--persist", "1", "vm", "list")
    assert (spicectl.state_dir / "holder.sock").exists()
    deadline = time.monotonic() + 15
    while (spicectl.state_dir / "holder.sock").exists() or not set(holder_pids()) <= before:
        assert time.monotonic() < deadline, "an idle holder did not exit"
        time.sleep(0.2)


def test_a_command_the_holder_does_not_serve_still_works_while_it_runs(spicectl, warm):
    warm("vm", "list")
    assert (spicectl.state_dir / "holder.sock").exists()
    r = warm("vm", "xml", GUEST)   # not served: the holder exits and leaves the private libvirt to it
    assert "<domain" in r.stdout
    assert not (spicectl.state_dir / "holder.sock").exists()


@pytest.mark.parametrize("command", [("host", "setup"), ("host", "check")])
def test_host_commands_ask_the_holder_to_let_go_of_the_private_libvirt(spicectl, warm, command):
    """A holder that would idle for ten minutes owns the private libvirt; `host setup` (which once took
    the root's lock without asking, and so waited out its 120 s and failed) and `host check` ask it
    to exit and go on."""
    patient = Spicectl(spicectl.state_dir, Path(spicectl.env["SPICECTL_CONFIG"]))
    patient.env["SPICECTL_PERSIST"] = "600"
    patient("vm", "list", "--json")
    sock = spicectl.state_dir / "holder.sock"
    assert sock.exists()
    r = patient(*command, "--json")
    assert r.exit_code == 0 and r.json()
    assert not sock.exists()


def test_vm_restart_starts_a_new_qemu_and_wait_screen_changed_sees_seabios_move_on(spicectl, warm):
    """`vm restart` (SeaBIOS ignores ACPI: --force powers it off) brings up a new QEMU whose SPICE
    ports accept connections; then `wait-screen --changed` returns when SeaBIOS's boot menu times out
    and it draws on, and times out (exit 9) on the screen it settled on."""
    pid_file = spicectl.state_dir / "libvirt" / "run" / "qemu" / f"{GUEST}.pid"
    before = int(pid_file.read_text())
    data = spicectl("vm", "restart", GUEST, "--force", "--timeout", "5", "--wait", "--json").json()
    assert data["state"] == "running" and data["spice"]["tls_port"]
    assert int(pid_file.read_text()) != before
    changed = spicectl("wait-screen", GUEST, "--changed", "--timeout", "60", "--json")
    assert changed.exit_code == 0, changed.stderr
    deadline = time.monotonic() + 90
    while not libvirt_screenshot(spicectl, GUEST)[176:192].any():   # SeaBIOS's last line
        assert time.monotonic() < deadline, "SeaBIOS did not reach its last line"
        time.sleep(0.5)
    settled = spicectl("wait-screen", GUEST, "--changed", "--timeout", "3", check=False)
    assert settled.exit_code == 9, settled.stderr
