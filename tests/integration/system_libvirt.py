"""A system libvirtd (and virtlogd) as a Debian host runs them, started by a test and stopped after,
and the host files such tests change, put back after."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.integration.conftest import kill

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
CERT_DIR = Path("/etc/pki/libvirt-spice")
SASL_DIR = Path("/etc/spicectl/sasl")   # what host setup --sasl --apply writes
LIBVIRT_SOCK = Path("/run/libvirt/libvirt-sock")
RUN_DIR = LIBVIRT_SOCK.parent
STORAGE = Path("/etc/libvirt/storage")
POOL_DIR = Path("/var/lib/libvirt/images")
# without systemd and polkit, libvirt's documented alternative: the libvirt group may use the socket
LIBVIRTD_CONF = """unix_sock_group = "libvirt"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
# a host UUID of its own: the private libvirt beside it reads this machine's, and libvirt refuses to
# migrate between two libvirts it takes for one host
host_uuid = "5b1c3a6e-0d1f-4c2a-9e1b-7a6f3c2d1e0f"
"""


def wait_for(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


class SystemLibvirt:
    """libvirtd (and virtlogd) as a host runs them, started here and stopped after; restartable."""

    def __init__(self) -> None:
        if LIBVIRT_SOCK.exists():
            pytest.fail("a system libvirtd already runs here; these tests start (and restart) their own")
        self.libvirtd = require_binary("libvirtd")
        self.folder = Path(tempfile.mkdtemp(prefix="spicectl-libvirtd-"))
        (self.folder / "libvirtd.conf").write_text(LIBVIRTD_CONF)
        self.run_dir_mode = RUN_DIR.stat().st_mode & 0o7777 if RUN_DIR.exists() else None
        self.virtlogd_pid = self._daemon([require_binary("virtlogd"), "-d"], Path("/run/virtlogd.pid"),
                                         Path("/run/libvirt/virtlogd-sock"))
        self.pid = self._start()

    @staticmethod
    def _daemon(argv: list[str], pidfile: Path, sock: Path) -> int | None:
        if sock.exists():
            return None
        subprocess.run(argv, check=True)
        wait_for(sock.exists, f"{argv[0]} did not start")
        return int(pidfile.read_text())

    def _start(self) -> int:
        pid = self._daemon([self.libvirtd, "-d", "-f", str(self.folder / "libvirtd.conf")],
                           Path("/run/libvirtd.pid"), LIBVIRT_SOCK)
        assert pid is not None
        RUN_DIR.chmod(0o755)   # as systemd's libvirtd.socket makes it: others reach the socket
        return pid

    def _stop(self, pid: int | None) -> None:
        if pid is None:
            return
        kill(pid)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), f"pid {pid} did not end")

    def restart(self) -> None:
        self._stop(self.pid)
        wait_for(lambda: not LIBVIRT_SOCK.exists(), "libvirtd left its socket")
        self.pid = self._start()

    def stop(self) -> None:
        self._stop(self.pid)
        self._stop(self.virtlogd_pid)
        if self.run_dir_mode is not None:
            RUN_DIR.chmod(self.run_dir_mode)
        shutil.rmtree(self.folder, ignore_errors=True)


class HostFiles:
    """What the tests change on the "remote" host (this machine's /etc and /dev/kvm), put back after."""

    def __init__(self) -> None:
        self.qemu_conf = QEMU_CONF.read_bytes()
        self.had_pki = CERT_DIR.parent.exists()
        self.had_spicectl_etc = SASL_DIR.parent.exists()
        self.pools = set(STORAGE.glob("*.xml"))
        self.volumes = set(POOL_DIR.iterdir()) if POOL_DIR.exists() else set()
        self.kvm = os.stat("/dev/kvm") if Path("/dev/kvm").exists() else None

    def open_kvm_to_qemu(self) -> None:
        # what udev does on a host: without it libvirt re-probes QEMU on every call (host check's kvm_user)
        if self.kvm is not None:
            shutil.chown("/dev/kvm", group="kvm")
            os.chmod("/dev/kvm", 0o660)

    def restore(self) -> None:
        QEMU_CONF.write_bytes(self.qemu_conf)
        QEMU_CONF.with_name(QEMU_CONF.name + ".spicectl-bak").unlink(missing_ok=True)
        shutil.rmtree(CERT_DIR.parent if not self.had_pki else CERT_DIR, ignore_errors=True)
        shutil.rmtree(SASL_DIR.parent if not self.had_spicectl_etc else SASL_DIR, ignore_errors=True)
        # the pool spicectl defined, and the volumes it made (libvirt is stopped by now)
        for path in set(STORAGE.glob("*.xml")) - self.pools:
            path.unlink()
            (STORAGE / "autostart" / path.name).unlink(missing_ok=True)
        for path in (set(POOL_DIR.iterdir()) if POOL_DIR.exists() else set()) - self.volumes:
            path.unlink()
        if self.kvm is not None:
            os.chown("/dev/kvm", self.kvm.st_uid, self.kvm.st_gid)
            os.chmod("/dev/kvm", self.kvm.st_mode & 0o7777)


