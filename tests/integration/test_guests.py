"""Guests on a real libvirt and QEMU, driven by separate spicectl processes."""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from spicectl.errors import AuthError
from tests.integration.conftest import spice_link

pytestmark = pytest.mark.integration

TEMPLATES = ["desktop", "media", "headless-ci", "legacy"]


def boot(spicectl, name: str, *args: str) -> dict:
    r = spicectl("vm", "create", name, "--virt-type", "qemu", "--wait", "--json", *args)
    return r.json()


def test_every_template_boots_and_links_over_tls_only_with_a_valid_ticket(spicectl):
    for template in TEMPLATES:
        name = f"tpl-{template}"
        info = boot(spicectl, name, "-t", template)
        assert info["state"] == "running" and info["template"] == template
        port = info["spice"]["tls_port"]
        assert port and info["spice"]["port"] is None  # TLS only
        assert info["spice"]["listen"] == "127.0.0.1"

        # the password set at definition has expired: nobody gets in without a ticket
        with pytest.raises(AuthError):
            spice_link(port, spicectl.ca_file, b"")
        ticket = spicectl("ticket", name).stdout.strip()
        assert len(ticket) >= 32
        with pytest.raises(AuthError):
            spice_link(port, spicectl.ca_file, b"not-" + ticket.encode()[:20])
        assert spice_link(port, spicectl.ca_file, ticket.encode()).error == 0

        short = spicectl("ticket", name, "--ttl", "1").stdout.strip()
        time.sleep(2.2)
        with pytest.raises(AuthError):
            spice_link(port, spicectl.ca_file, short.encode())
        spicectl("vm", "delete", name)


@pytest.fixture(scope="module")
def desktop(spicectl):
    info = boot(spicectl, "shared-desktop", "-t", "desktop", "--usb-redir", "3", "--boot-menu")
    yield info
    spicectl("vm", "delete", "shared-desktop", check=False)


def test_qemu_command_line_has_the_spice_devices(spicectl, desktop):
    log = spicectl.domain_log("shared-desktop").replace(" \\\n", " ")  # libvirt wraps the line
    cmdline = log[log.index("qemu-system-x86_64"):].split("\n", 1)[0]
    assert '"driver":"qxl-vga"' in cmdline
    assert '"driver":"ich9-intel-hda"' in cmdline and '"driver":"hda-duplex"' in cmdline
    assert '"driver":"ich9-usb-ehci1"' in cmdline and '"addr":"0x1d.0x7"' in cmdline
    for n, port in ((1, 0), (2, 2), (3, 4)):
        assert re.search(rf'"driver":"ich9-usb-uhci{n}","masterbus":"usb.0","firstport":{port}', cmdline)
    assert cmdline.count('"driver":"usb-redir"') == 3
    assert "-spice" in cmdline and "tls-port=" in cmdline
    assert '"id":"audio1","driver":"spice"' in cmdline


def test_libvirt_screenshot_is_a_real_image_of_the_display(spicectl, desktop):
    import libvirt  # noqa: F401  (the binding must be present for the oracle)

    from spicectl.virt import lifecycle
    from spicectl.virt.connection import open_hypervisor

    # in a child process: one embedded root per process, and the test process must stay clean
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from spicectl.virt import lifecycle\n"
        "from spicectl.virt.connection import open_hypervisor\n"
        f"with open_hypervisor(None, Path({str(spicectl.state_dir)!r})) as hv:\n"
        "    sys.stdout.buffer.write(lifecycle.screenshot_png(hv, lifecycle.lookup(hv, 'shared-desktop')))\n"
    )
    import subprocess
    import sys

    png = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        png = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env=spicectl.env).stdout
        img = Image.open(io.BytesIO(png)).convert("RGB")
        if len(img.getcolors(1 << 20) or []) > 1:
            break
        time.sleep(0.5)  # SeaBIOS has not drawn yet
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    assert img.size[0] >= 640 and img.size[1] >= 400
    assert len(img.convert("RGB").getcolors(1 << 20)) > 1, "the display is blank"
    del lifecycle, open_hypervisor


def test_ticket_stays_out_of_argv_logs_and_persistent_xml(spicectl, desktop, tmp_path):
    out = tmp_path / "ticket"
    r = spicectl("ticket", "shared-desktop", "--output", str(out), "--json")
    assert "ticket" not in r.json()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    ticket = out.read_text().strip()
    assert ticket not in r.stdout + r.stderr
    assert spice_link(desktop["spice"]["tls_port"], spicectl.ca_file, ticket.encode()).error == 0
    assert ticket not in spicectl("vm", "xml", "shared-desktop", "--inactive").stdout
    # not in any log nor in the stored definition
    for sub in ("log", "etc", "lib"):
        for path in (spicectl.root / sub).rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert ticket.encode() not in path.read_bytes(), f"ticket found in {path}"
    # libvirt's own run-time status file holds the live definition, readable by root only
    status = spicectl.root / "run" / "qemu" / "shared-desktop.xml"
    assert status.stat().st_mode & 0o077 == 0
    assert spicectl.root.stat().st_mode & 0o077 == 0
    pid = int((spicectl.root / "run" / "qemu" / "shared-desktop.pid").read_text())
    assert ticket.encode() not in open(f"/proc/{pid}/cmdline", "rb").read()


def test_lifecycle_across_separate_processes(spicectl):
    info = boot(spicectl, "life", "-t", "headless-ci")
    pid = int((spicectl.root / "run" / "qemu" / "life.pid").read_text())
    for _ in range(3):  # later, separate processes see it running and do not disturb it
        rows = {r["name"]: r for r in spicectl("vm", "list", "--json").json()}
        assert rows["life"]["state"] == "running"
        assert rows["life"]["spice"]["tls_port"] == info["spice"]["tls_port"]
    assert spicectl("ticket", "life").stdout.strip()
    os.kill(pid, 0)  # still the same QEMU
    assert "reason=daemon" not in spicectl.domain_log("life")
    r = spicectl("vm", "stop", "life", "--timeout", "2", "--force", "--json")
    assert r.json()["stopped"] in ("shutdown", "destroyed")
    assert {r["name"]: r for r in spicectl("vm", "list", "--json").json()}["life"]["state"] == "shut-off"
    spicectl("vm", "start", "life", "--wait")
    spicectl("vm", "delete", "life")
    assert "life" not in [r["name"] for r in spicectl("vm", "list", "--json").json()]


def test_name_clash_is_refused_and_leaves_the_first_guest(spicectl, desktop):
    r = spicectl("vm", "create", "shared-desktop", "--virt-type", "qemu", check=False)
    assert r.exit_code == 4
    assert "already exists" in r.stderr
    rows = {x["name"]: x for x in spicectl("vm", "list", "--json").json()}
    assert rows["shared-desktop"]["state"] == "running"


def test_a_start_that_fails_leaves_nothing_defined(spicectl):
    r = spicectl("vm", "create", "broken", "--virt-type", "qemu", "--disk", "/nonexistent/disk.qcow2", check=False)
    assert r.exit_code == 6
    assert "broken failed to start" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2 and "Traceback" not in r.stderr
    assert "broken" not in [x["name"] for x in spicectl("vm", "list", "--json").json()]


def test_created_disk_is_removed_when_start_fails_and_with_delete(spicectl):
    images = spicectl.state_dir / "images"
    r = spicectl("vm", "create", "disky", "--virt-type", "qemu", "--disk", "size=1",
                 "--qemu-arg=-no-such-option", check=False)
    assert r.exit_code == 6
    assert not (images / "disky-disk0.qcow2").exists()
    boot(spicectl, "disky", "--disk", "size=1", "-t", "headless-ci")
    assert (images / "disky-disk0.qcow2").exists()
    spicectl("vm", "delete", "disky")
    assert not (images / "disky-disk0.qcow2").exists()


def test_unreachable_libvirt_names_the_uri_and_hints(spicectl):
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    r = spicectl("--connect", uri, "vm", "list", check=False)
    assert r.exit_code == 6
    assert uri in r.stderr and "hint:" in r.stderr


def test_host_check_passes_on_the_private_default(spicectl):
    spicectl("host", "setup")
    r = spicectl("host", "check", "--json")
    checks = {c["check"]: c for c in r.json()["checks"]}
    for name in ("qemu", "qemu_spice", "libvirt", "spice_tls", "spice_cert", "users"):
        assert checks[name]["ok"], checks[name]


def test_host_check_catches_a_broken_spice_certificate_without_repairing_it(spicectl, tmp_path):
    import shutil

    spicectl("host", "setup")
    cert_dir = spicectl.state_dir / "certs" / "server" / "127.0.0.1"
    saved = tmp_path / "saved"
    shutil.copytree(cert_dir, saved)
    try:
        (cert_dir / "server-cert.pem").write_bytes((spicectl.state_dir / "ca" / "ca-cert.pem").read_bytes())
        r = spicectl("host", "check", "--json", check=False)
        assert r.exit_code == 8
        checks = {c["check"]: c for c in r.json()["checks"]}
        assert not checks["spice_cert"]["ok"]
        assert "do not cover 127.0.0.1" in checks["spice_cert"]["detail"]
        assert spicectl("host", "check", check=False).exit_code == 8  # still broken: check repaired nothing
        spicectl("host", "setup")  # setup does repair it
        assert spicectl("host", "check", check=False).exit_code == 0
    finally:
        shutil.rmtree(cert_dir)
        shutil.copytree(saved, cert_dir)


def test_host_stop_shuts_down_every_guest_of_the_private_libvirt(spicectl):
    for name in ("stop-a", "stop-b"):
        boot(spicectl, name, "-t", "headless-ci")
    r = spicectl("host", "stop", "--timeout", "1", "--json")
    stopped = r.json()["stopped"]
    assert {"stop-a", "stop-b"} <= set(stopped)
    states = {x["name"]: x["state"] for x in spicectl("vm", "list", "--json").json()}
    assert all(state != "running" for state in states.values())
    for name in ("stop-a", "stop-b"):
        spicectl("vm", "delete", name)


@pytest.mark.parametrize("point", ["defined", "started"])
def test_a_vm_create_killed_half_way_is_cleaned_up_by_the_next_one(spicectl, point):
    """SIGKILL once the guest is defined (before its disk is made), or once libvirt's start job has
    QEMU's pid file (the start handshake under way): the next `vm create` of that name says it removes
    the half-made guest and makes it anew, and nothing of the killed one is left running."""
    import signal
    import subprocess

    from tests.integration.conftest import SPICECTL

    name = f"killed-{point}"
    args = ["vm", "create", name, "-t", "headless-ci", "--virt-type", "qemu", "--disk", "size=1", "--wait"]
    sign = spicectl.root / ("etc" if point == "defined" else "run") / "qemu" / (
        f"{name}.xml" if point == "defined" else f"{name}.pid")
    for _attempt in range(5):
        proc = subprocess.Popen([*SPICECTL, *args], env=spicectl.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not sign.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        spicectl("vm", "delete", name, check=False)  # it finished before the kill: try again
    else:
        pytest.fail("vm create always finished before it could be killed")
    listed = {vm["name"]: vm for vm in spicectl("vm", "list", "--json").json()}
    assert listed[name]["creating"]  # the marker of the killed process is still there
    r = spicectl(*args, "--json")
    assert f"warning: removing {name}, left half-made by an interrupted vm create" in r.stderr
    info = r.json()
    assert info["state"] == "running" and info["creating"] is None
    disk = spicectl.state_dir / "images" / f"{name}-disk0.qcow2"
    assert disk.exists()
    checks = {c["check"]: c for c in spicectl("host", "check", "--json", check=False).json()["checks"]}
    assert checks["orphans"]["ok"], checks["orphans"]["detail"]
    spicectl("vm", "delete", name)
    assert not disk.exists()


def stray_probe(spicectl) -> tuple[int, Path]:
    """What a killed libvirt user leaves: a daemonized QEMU capability probe and its qmp-* folder."""
    import shutil
    import subprocess

    probe_dir = spicectl.root / "lib" / "qemu" / "qmp-strayXX"
    probe_dir.mkdir(parents=True)
    pidfile = probe_dir / "qmp.pid"
    subprocess.run([shutil.which("qemu-system-x86_64"), "-S", "-no-user-config", "-nodefaults", "-nographic",
                    "-machine", "none", "-qmp", f"unix:{probe_dir}/qmp.monitor,server=on,wait=off",
                    "-pidfile", str(pidfile), "-daemonize"], check=True)
    return int(pidfile.read_text()), probe_dir


def gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_next_command_that_opens_the_private_root_ends_a_stray_probe(spicectl):
    spicectl("host", "setup")
    pid, probe_dir = stray_probe(spicectl)
    try:
        spicectl("vm", "list")   # (a killed vm create left three creates after it with the probe before)
        assert gone(pid), "the stray QEMU still runs"
        assert not probe_dir.exists()
        checks = {c["check"]: c for c in spicectl("host", "check", "--json", check=False).json()["checks"]}
        assert checks["orphans"]["ok"], checks["orphans"]["detail"]
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, 9)


def test_guests_of_two_state_dirs_started_at_once_get_ports_free_on_the_host(tmp_path):
    """Each private libvirt allocates SPICE ports on its own: two starting at once could pick the same
    one (exit 6, 'binding socket ... failed'); the loser starts again on the next free port."""
    import concurrent.futures
    import tempfile

    from tests.integration.conftest import Spicectl

    dirs = [Path(tempfile.mkdtemp(prefix="spicectl-ports-")) for _ in range(2)]
    tools = [Spicectl(d / "state", d / "no-config.toml") for d in dirs]
    try:
        for sc in tools:
            sc("host", "setup")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            made = list(pool.map(lambda sc: sc("vm", "create", "twin", "-t", "headless-ci", "--virt-type", "qemu",
                                               "--json", check=False), tools))
        assert [m.exit_code for m in made] == [0, 0], [m.stderr for m in made]
        ports = [m.json()["spice"]["tls_port"] for m in made]
        assert len(set(ports)) == 2, ports
    finally:
        import shutil

        for sc, d in zip(tools, dirs, strict=True):
            sc("host", "stop", check=False)
            shutil.rmtree(d, ignore_errors=True)
