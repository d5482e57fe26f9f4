"""Opening libvirt: any URI the user names, or spicectl's private embedded default.

The embedded default is libvirt's in-process QEMU driver
(`qemu:///embed?root=STATE/libvirt`): no daemon to run, state and logs under
spicectl's state dir. It needs a libvirt event loop in a thread of this
process. Guests it starts outlive the process; the next process reconnects
to them. Two processes reconnecting at once would fight over each guest's
monitor socket, so every process holds an exclusive lock on the root for as
long as its connection is open.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from spicectl.errors import EnvironmentProblem, HypervisorError, InvalidInput

_loop_lock = threading.Lock()
_loop_started = False


def _libvirt():
    try:
        import libvirt
    except ImportError:
        raise EnvironmentProblem("the libvirt Python binding is not installed",
                                 hint="pip install libvirt-python (needs libvirt-dev and pkg-config)") from None
    return libvirt


def start_event_loop() -> None:
    """libvirt's default event loop, run in a daemon thread (once per process)."""
    global _loop_started
    libvirt = _libvirt()
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _silence_libvirt() -> None:
    # libvirt prints every error to stderr by default; we report them ourselves.
    _libvirt().registerErrorHandler(lambda _ctx, _err: None, None)


@dataclass
class LibvirtURI:
    uri: str
    embedded: bool
    root: Path | None = None

    @classmethod
    def given(cls, uri: str) -> LibvirtURI:
        """A URI the user named (--connect, a [hosts] entry)."""
        return cls(uri, embedded=uri.startswith("qemu:///embed"))

    @property
    def local(self) -> bool:
        return self.embedded or self.uri.split("://", 1)[-1].startswith("/") or "://" not in self.uri

    @property
    def system(self) -> bool:
        """This host's system libvirt: QEMU runs as its own user, and reads files as that user."""
        return not self.embedded and self.local and urlsplit(self.uri).path.rstrip("/") == "/system"


def embedded_root(state_dir: Path) -> Path:
    return state_dir / "libvirt"


def resolve(connect: str | None, state_dir: Path) -> LibvirtURI:
    if connect:
        return LibvirtURI.given(connect)
    root = embedded_root(state_dir)
    return LibvirtURI(f"qemu:///embed?root={root}", embedded=True, root=root)


class Hypervisor:
    """An open libvirt connection (and, for the embedded default, the root's lock)."""

    def __init__(self, conn, location: LibvirtURI, lock_fd: int | None = None) -> None:
        self.conn = conn
        self.location = location
        self._lock_fd = lock_fd

    def close(self) -> None:
        try:
            if self.conn is not None:
                self.conn.close()
        finally:
            self.conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_uri(target: LibvirtURI, lock_fd: int | None = None) -> Hypervisor:
    libvirt = _libvirt()
    _silence_libvirt()
    if target.embedded:
        start_event_loop()
    try:
        conn = libvirt.open(target.uri)
    except libvirt.libvirtError as exc:
        if lock_fd is not None:
            os.close(lock_fd)
        raise HypervisorError(
            f"cannot connect to libvirt at {target.uri}: {exc.get_error_message()}",
            hint="is libvirtd (or virtqemud) running and the URI right? "
                 "Without --connect spicectl uses its private embedded libvirt",
        ) from None
    return Hypervisor(conn, target, lock_fd)


def libvirt_error(exc, what: str) -> HypervisorError:
    return HypervisorError(f"{what}: {exc.get_error_message()}")


def wait_for_reconnects(hv: Hypervisor) -> None:
    """Block until libvirt has reconnected to every running guest.

    On open, the embedded driver reconnects to each running QEMU in a thread
    that holds the domain's job. If the connection closed (or this process
    exited) while such a thread was still working, libvirt would count the
    reconnect as failed and kill the guest ("shutting down, reason=daemon").
    Any call that takes a job waits for the reconnect to finish; memoryStats
    takes a query job and is harmless.
    """
    libvirt = _libvirt()
    for dom in hv.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            dom.memoryStats()
        except libvirt.libvirtError:
            pass  # the guest may have gone in between; nothing to wait for


# QEMU's monitor sockets live under the embedded root, and a UNIX socket path holds 107
# bytes. libvirt's capability probe uses ROOT/lib/qemu/qmp-XXXXXX/qmp.monitor (32 more):
# beyond that every define fails with libvirt's "the cause is unknown".
MAX_EMBEDDED_ROOT = 107 - len("/lib/qemu/qmp-XXXXXX/qmp.monitor")


def check_root_length(root: Path) -> None:
    path = str(root.absolute())
    size = len(path.encode())
    if size > MAX_EMBEDDED_ROOT:
        raise InvalidInput(
            f"the private libvirt's root {path} is {size} bytes long; QEMU's "
            f"monitor sockets under it allow at most {MAX_EMBEDDED_ROOT}",
            hint="choose a shorter state dir (--state-dir, SPICECTL_STATE_DIR or state_dir in the config)",
        )


def open_hypervisor(connect: str | None, state_dir: Path, *, pki_dir: Path | None = None,
                    passphrase: bytes | None = None, prepare: bool = True,
                    on_busy: Callable[[], None] | None = None) -> Hypervisor:
    """Open the user's URI, or the private embedded default (set up on first use unless not `prepare`).

    The private default is one process's at a time: `on_busy` runs once if another holds it (the CLI
    asks the session holder to let go that way)."""
    target = resolve(connect, state_dir)
    lock_fd = None
    if target.embedded and target.root is not None:
        from spicectl.virt.host import clear_interrupted_starts, end_stray_probes, lock_root, prepare_embedded

        check_root_length(target.root)
        lock_fd = lock_root(target.root, on_busy=on_busy)
        try:
            if prepare:
                prepare_embedded(state_dir, target.root, pki_dir=pki_dir, passphrase=passphrase)
            clear_interrupted_starts(target.root)
            end_stray_probes(target.root)
        except BaseException:
            os.close(lock_fd)
            raise
    if target.embedded and target.root is not None:
        # The in-process driver logs warnings (e.g. "tainted: high-privileges")
        # to stderr; keep them in the private instance's log instead. libvirt
        # reads this once, at its first use in the process.
        # libvirt fails to initialise at all if that file's directory is missing
        (target.root / "log").mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ.setdefault("LIBVIRT_LOG_OUTPUTS", f"3:file:{target.root / 'log' / 'libvirt.log'}")
    hv = open_uri(target, lock_fd)
    if target.embedded:
        wait_for_reconnects(hv)
    return hv
