"""A second hypervisor, reached as a remote one is: a real sshd on 127.0.0.2 in front of a system
libvirtd, driven through libvirt's own qemu+ssh transport, set up for SPICE TLS by `host setup
--apply` over that SSH, and a gateway proxy here in front of its guest (remote-viewer and
spice-html5 in Chromium through it, TLS verified against our CA up to the remote QEMU)."""

from __future__ import annotations

import grp
import io
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import free_port, require_binary
from tests.integration.conftest import (
    Spicectl,
    differs_only_in_one_text_cell,
    finish,
    grab_x,
    html5_page,
    kill,
    locate,
    popen,
)
from tests.integration.system_libvirt import CERT_DIR, QEMU_CONF, SASL_DIR, HostFiles, SystemLibvirt, wait_for

pytestmark = pytest.mark.integration
ADDRESS = "127.0.0.2"   # the "remote" host: a second loopback address, nothing beyond loopback
GUEST = "far"


class Sshd:
    """sshd on ADDRESS with a host key and a client key made here; `command` is the ssh that knows them."""

    def __init__(self, folder: Path) -> None:
        sshd = require_binary("sshd")
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
        self.port = free_port(ADDRESS)
        (folder / "sshd_config").write_text(
            f"ListenAddress {ADDRESS}:{self.port}\nHostKey {folder / 'host'}\n"
            f"AuthorizedKeysFile {folder / 'client.pub'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            # the test's files live under /tmp (world-writable): sshd's ownership checks would refuse them
            "StrictModes no\n")
        (folder / "known_hosts").write_text(f"[{ADDRESS}]:{self.port} {(folder / 'host.pub').read_text()}")
        (folder / "ssh_config").write_text(
            f"Host {ADDRESS}\n  IdentityFile {folder / 'client'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {folder / 'known_hosts'}\n  StrictHostKeyChecking yes\n  BatchMode yes\n")
        # libvirt's ssh transport runs `command=` in place of ssh: this one reads our config, nothing of ~/.ssh
        self.command = folder / "ssh"
        self.command.write_text(f"#!/bin/sh\nexec ssh -F {folder / 'ssh_config'} \"$@\"\n")
        self.command.chmod(0o755)
        Path("/run/sshd").mkdir(exist_ok=True)   # its privilege separation directory
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(folder / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def answers() -> bool:
            assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else "sshd exited"
            try:
                socket.create_connection((ADDRESS, self.port), 1).close()
                return True
            except OSError:
                return False

        wait_for(answers, "sshd did not listen")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Remote:
    sc: Spicectl          # spicectl with a config file naming the hosts
    uri: str
    libvirt: SystemLibvirt
    files: HostFiles

    def shot(self, name: str) -> np.ndarray:
        """libvirt's own screenshot of a guest on the remote host, through qemu+ssh (the oracle)."""
        import sys

        code = ("import sys\nfrom pathlib import Path\nfrom spicectl.virt import lifecycle\n"
                "from spicectl.virt.connection import open_hypervisor\n"
                "with open_hypervisor(sys.argv[1], Path(sys.argv[2])) as hv:\n"
                "    sys.stdout.buffer.write(lifecycle.screenshot_png(hv, lifecycle.lookup(hv, sys.argv[3])))\n")
        r = subprocess.run([sys.executable, "-c", code, self.uri, str(self.sc.state_dir), name],
                           capture_output=True, env=self.sc.env, timeout=120)
        assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
        return np.asarray(Image.open(io.BytesIO(r.stdout)).convert("RGB"))


@pytest.fixture(scope="module")
def remote(spicectl):
    require_binary("qemu-system-x86_64")
    folder = Path(tempfile.mkdtemp(prefix="spicectl-remote-"))
    files = HostFiles()
    libvirt = sshd = None
    try:
        files.open_kvm_to_qemu()
        libvirt = SystemLibvirt()
        sshd = Sshd(folder)
        uri = f"qemu+ssh://root@{ADDRESS}:{sshd.port}/system?command={sshd.command}"
        config = folder / "spicectl.toml"
        config.write_text(f'[hosts]\nhere = "default"\nlab = "{uri}"\n')
        yield Remote(Spicectl(spicectl.state_dir, config), uri, libvirt, files)
    finally:
        if libvirt is not None:
            subprocess.run(["virsh", "-c", "qemu:///system", "destroy", GUEST], capture_output=True)
            subprocess.run(["virsh", "-c", "qemu:///system", "undefine", GUEST], capture_output=True)
            libvirt.stop()
        if sshd is not None:
            sshd.stop()
        files.restore()
        shutil.rmtree(folder, ignore_errors=True)


def checks(sc: Spicectl, *args: str) -> tuple[int, dict]:
    r = sc("--connect", "lab", "host", "check", "--json", *args, check=False)
    return r.exit_code, {c["check"]: c for c in r.json()["checks"]}


def test_apply_sets_up_spice_tls_on_the_remote_host_over_ssh(remote):
    sc = remote.sc
    code, found = checks(sc)
    assert code == 8 and not found["spice_tls"]["ok"]
    assert found["kvm_user"]["ok"]

    r = sc("--connect", "lab", "host", "setup", "--apply", "--json").json()
    assert r["host"] == ADDRESS and r["cert_dir"] == str(CERT_DIR)
    assert [line.split()[1] for line in r["changed"][:3]] == [str(CERT_DIR / f) for f in
                                                              ("ca-cert.pem", "server-cert.pem", "server-key.pem")]
    assert "restart" in r["restart"]
    key = (CERT_DIR / "server-key.pem").stat()
    assert key.st_mode & 0o777 == 0o640 and key.st_gid == grp.getgrnam("libvirt-qemu").gr_gid
    assert (CERT_DIR / "ca-cert.pem").read_bytes() == Path(sc.ca_file).read_bytes()
    conf = QEMU_CONF.read_text()
    assert 'spice_tls = 1\nspice_tls_x509_cert_dir = "/etc/pki/libvirt-spice"' in conf
    assert QEMU_CONF.with_name("qemu.conf.spicectl-bak").read_bytes() == remote.files.qemu_conf
    again = sc("--connect", "lab", "host", "setup", "--apply", "--json").json()
    assert again["changed"] == [] and again["restart"] is None
    remote.libvirt.restart()

    code, found = checks(sc)
    assert code == 0 and found["spice_tls"]["ok"] and found["spice_cert"]["ok"], found

    # a certificate from another CA on the host: check says so (exit 8); --apply puts ours back
    other = Spicectl(sc.state_dir.parent / "other-state", Path(sc.env["SPICECTL_CONFIG"]))
    other("ca", "init")
    other("cert", "issue", "server", "--host", ADDRESS, "--out", str(sc.state_dir.parent / "foreign"))
    saved = (CERT_DIR / "server-cert.pem").read_bytes()
    shutil.copy(sc.state_dir.parent / "foreign" / "server-cert.pem", CERT_DIR / "server-cert.pem")
    code, found = checks(sc)
    assert code == 8 and "not issued by spicectl's current CA" in found["spice_cert"]["detail"]
    fixed = sc("--connect", "lab", "host", "setup", "--apply", "--json").json()
    assert fixed["changed"] == [f"wrote {CERT_DIR / 'server-cert.pem'}"]
    assert (CERT_DIR / "server-cert.pem").read_bytes() == saved


@pytest.fixture(scope="module")
def far_guest(remote):
    """A guest on the remote host, its SPICE on the host's address; SeaBIOS's screen settled."""
    sc = remote.sc
    if not checks(sc)[1]["spice_tls"]["ok"]:
        pytest.fail("SPICE TLS is not set up on the remote host (the --apply test runs first)")
    sc("--connect", "lab", "vm", "create", GUEST, "-t", "headless-ci", "--virt-type", "qemu",
       "--listen", ADDRESS, "--wait")
    deadline = time.monotonic() + 90
    while not remote.shot(GUEST)[176:192].any():   # "No bootable device.": the last thing SeaBIOS draws
        assert time.monotonic() < deadline, "SeaBIOS did not reach its last line"
        time.sleep(0.5)
    yield GUEST
    sc("--connect", "lab", "vm", "delete", GUEST, check=False)


def test_a_guest_on_the_remote_host_from_create_to_delete(remote, far_guest, tmp_path):
    sc = remote.sc
    sc("vm", "create", "near", "-t", "headless-ci", "--virt-type", "qemu", "--no-start")  # the private default
    try:
        rows = sc("vm", "list", "--all-hosts", "--json").json()
        assert {(r["host"], r["name"]) for r in rows} >= {("here", "near"), ("lab", far_guest)}
        far = next(r for r in rows if r["name"] == far_guest)
        assert far["state"] == "running" and far["spice"]["listen"] == ADDRESS and far["uri"] == remote.uri
    finally:
        sc("vm", "delete", "near")

    ticket = sc("--connect", "lab", "ticket", far_guest, "--json").json()
    assert len(ticket["ticket"]) >= 16

    out = tmp_path / "far.png"
    sc("--connect", "lab", "screenshot", far_guest, "-o", str(out))
    ours = np.asarray(Image.open(out).convert("RGB"))
    assert differs_only_in_one_text_cell(ours, remote.shot(far_guest))

    vv = tmp_path / "far.vv"
    sc("--connect", "lab", "connect", far_guest, "--vv", str(vv))
    from spicectl.session.vv import parse

    keys = parse(vv.read_text())
    assert keys["host"] == ADDRESS and keys["host-subject"] == f"O=spicectl,CN={ADDRESS}"
    assert keys["ca"].replace("\\n", "\n").strip() == Path(sc.ca_file).read_text().strip()


def start_gateway(sc: Spicectl):
    port = free_port("127.0.0.1")
    serve = popen(sc, "proxy", "serve", "--listen", f"127.0.0.1:{port}")
    wait_for(lambda: serve.poll() is None and _answers(port), "the gateway did not listen", 15)
    return serve, f"http://127.0.0.1:{port}"


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def test_a_gateway_here_carries_clients_to_the_remote_guest(remote, far_guest, tmp_path, xdisplay):
    """The oVirt/Proxmox model: one proxy in front, tokens minted for the remote guest's endpoint."""
    sc = remote.sc
    truth = remote.shot(far_guest)
    serve, url = start_gateway(sc)
    try:
        shot = tmp_path / "via-gateway.png"
        sc("--connect", "lab", "connect", far_guest, "--proxy", "ws", "--proxy-url", url, "--builtin",
           "--screenshot", str(shot))
        assert differs_only_in_one_text_cell(np.asarray(Image.open(shot).convert("RGB")), truth)

        minted = sc("--connect", "lab", "connect", far_guest, "--proxy", "ws", "--proxy-url", url, "--json").json()
        with html5_page(minted["url"]) as canvas:
            _until_shown(canvas, truth)

        require_binary("remote-viewer")
        viewer = popen(sc, "--connect", "lab", "connect", far_guest, "--proxy", "http-connect", "--proxy-url", url,
                       "--viewer", "--json", display=xdisplay)
        out, err = viewer.communicate(timeout=60)
        assert viewer.returncode == 0, err
        info = json.loads(out)
        try:
            _until_shown(lambda: grab_x(xdisplay), truth)
        finally:
            kill(info["pid"])
    finally:
        serve.send_signal(signal.SIGTERM)
        log = finish(serve)
    assert log.count(f"session guest={far_guest}") >= 2, log
    assert "via=websocket" in log and "via=http-connect" in log


def _until_shown(grab, truth: np.ndarray, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shot = grab()
        if shot is not None and locate(shot, truth):
            return
        time.sleep(1)
    pytest.fail("the client never showed the remote guest's screen")


def test_deleting_the_remote_guest_removes_it_on_that_host(remote, far_guest):
    remote.sc("--connect", "lab", "vm", "delete", far_guest)
    listed = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert far_guest not in listed
    assert far_guest not in [r["name"] for r in remote.sc("--connect", "lab", "vm", "list", "--json").json()]


def test_sasl_set_up_over_ssh_logs_a_user_in_to_a_new_guest_on_the_remote_host(remote, tmp_path):
    """host setup --sasl --apply and sasl user add over the URI's SSH; a guest defined there with --sasl
    takes the user's SCRAM login and refuses a wrong password; --no-sasl --apply turns it off again."""
    require_binary("saslpasswd2")
    sc = remote.sc
    r = sc("--connect", "lab", "host", "setup", "--sasl", "--apply", "--json").json()
    assert r["sasl"] is True and r["sasl_dir"] == str(SASL_DIR)
    assert f"wrote {SASL_DIR / 'qemu.conf'}" in r["changed"] and r["restart"]
    conf = QEMU_CONF.read_text()
    assert 'spice_sasl = 1' in conf and f'spice_sasl_dir = "{SASL_DIR}"' in conf
    pw = tmp_path / "pw"
    pw.write_text("carol-secret-1")
    sc("--connect", "lab", "sasl", "user", "add", "carol", "--password-file", str(pw))
    assert sc("--connect", "lab", "sasl", "user", "list", "--json").json()["users"] == ["carol"]
    db = (SASL_DIR / "passwd.db").stat()
    assert db.st_mode & 0o777 == 0o640 and db.st_gid == grp.getgrnam("libvirt-qemu").gr_gid
    remote.libvirt.restart()
    sc("--connect", "lab", "vm", "create", "sasl-far", "-t", "headless-ci", "--virt-type", "qemu",
       "--listen", ADDRESS, "--sasl", "--wait")
    try:
        shot = tmp_path / "far.png"
        sc("--connect", "lab", "screenshot", "sasl-far", "--sasl-user", "carol", "--password-file", str(pw),
           "-o", str(shot))
        assert Image.open(shot).size == (720, 400)
        wrong = tmp_path / "wrong"
        wrong.write_text("not-carols")
        refused = sc("--connect", "lab", "screenshot", "sasl-far", "--sasl-user", "carol", "--password-file",
                     str(wrong), "-o", str(shot), check=False)
        assert refused.exit_code == 5, refused.stderr
        sc("--connect", "lab", "sasl", "user", "delete", "carol")
        assert sc("--connect", "lab", "sasl", "user", "list", "--json").json()["users"] == []
    finally:
        sc("--connect", "lab", "vm", "delete", "sasl-far", check=False)
    off = sc("--connect", "lab", "host", "setup", "--no-sasl", "--apply", "--json").json()
    assert off["sasl"] is False and "spice_sasl = 0" in QEMU_CONF.read_text()
    remote.libvirt.restart()


def rows_now(sc: Spicectl) -> dict:
    return {(r["host"], r["name"]): r for r in sc("vm", "list", "--all-hosts", "--json").json()}


def test_a_running_guest_migrates_live_to_the_remote_host_and_comes_back_offline(remote, tmp_path):
    """vm migrate through libvirt's migration API, from the private default to the system libvirtd over
    qemu+ssh and back; the guest keeps running and its SPICE server serves it on each side."""
    sc = remote.sc
    sc("vm", "create", "mover", "-t", "headless-ci", "--virt-type", "qemu", "--wait")
    try:
        moved = sc("vm", "migrate", "mover", "--to", "lab", "--listen", ADDRESS, "--json", timeout=300).json()
        assert moved["live"] and moved["to"] == remote.uri and moved["spice"]["listen"] == ADDRESS
        assert moved["downtime_ms"] is not None and moved["memory_bytes"] > 0
        rows = {(r["host"], r["name"]): r for r in sc("vm", "list", "--all-hosts", "--json").json()}
        assert ("lab", "mover") in rows and ("here", "mover") not in rows
        assert rows[("lab", "mover")]["state"] == "running"
        shot = tmp_path / "there.png"
        sc("--connect", "lab", "screenshot", "mover", "-o", str(shot))
        assert Image.open(shot).size == (720, 400)
        # it is defined there (persistent), so it would survive that host's libvirtd restarting
        persistent = subprocess.run(["virsh", "-c", "qemu:///system", "dominfo", "mover"], capture_output=True,
                                    text=True, check=True).stdout
        assert "Persistent:     yes" in persistent
        again = sc("vm", "migrate", "mover", "--to", "lab", check=False)
        assert again.exit_code != 0 and "mover" in again.stderr   # not here any more
        # a running guest cannot come into an embedded libvirt (libvirt 9.0): refused up front, nothing moved
        live_back = sc("--connect", "lab", "vm", "migrate", "mover", "--to", "here", check=False)
        assert live_back.exit_code == 6 and "embedded" in live_back.stderr and "--offline" in live_back.stderr
        assert rows_now(sc)[("lab", "mover")]["state"] == "running"
        # stopped, its definition comes home, and it starts here
        sc("--connect", "lab", "vm", "stop", "mover", "--timeout", "5", "--force")
        back = sc("--connect", "lab", "vm", "migrate", "mover", "--to", "here", "--offline", "--listen", "127.0.0.1",
                  "--json").json()
        assert not back["live"] and back["to"].startswith("qemu:///embed")
        assert ("lab", "mover") not in rows_now(sc)
        sc("vm", "start", "mover", "--wait")
        sc("screenshot", "mover", "-o", str(tmp_path / "home.png"))
    finally:
        sc("vm", "delete", "mover", check=False)
        sc("--connect", "lab", "vm", "delete", "mover", check=False)


def test_a_killed_migration_leaves_the_guest_running_on_the_source_and_the_next_one_works(remote):
    sc = remote.sc

    def on_system() -> list[str]:
        return subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True,
                              text=True, check=True).stdout.split()

    sc("vm", "create", "killed", "-t", "headless-ci", "--virt-type", "qemu", "--wait")
    try:
        # a capped stream keeps the transfer going long enough to be cut in the middle
        proc = popen(sc, "vm", "migrate", "killed", "--to", "lab", "--listen", ADDRESS, "--bandwidth", "1")
        wait_for(lambda: "killed" in on_system(), "the destination never took the incoming guest", timeout=60)
        time.sleep(1)
        assert proc.poll() is None, "the migration ended before it could be cut"
        proc.kill()
        proc.communicate(timeout=30)
        wait_for(lambda: "killed" not in on_system(), "the destination kept the half-moved guest", timeout=60)
        assert rows_now(sc)[("here", "killed")]["state"] == "running"
        moved = sc("vm", "migrate", "killed", "--to", "lab", "--listen", ADDRESS, "--json", timeout=300).json()
        assert moved["to"] == remote.uri and ("lab", "killed") in rows_now(sc)
    finally:
        sc("vm", "delete", "killed", check=False)
        sc("--connect", "lab", "vm", "delete", "killed", check=False)
