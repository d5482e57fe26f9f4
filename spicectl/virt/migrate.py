"""Moving a guest between two libvirt hosts through libvirt's own migration API (nothing of ours on the
wire between hypervisors).

libvirt drives it in this process (a managed, not peer-to-peer, migration: begin on the source,
prepare on the destination, perform, finish, confirm), so a failed or cancelled migration leaves the
guest running on the source. QEMU's migration stream goes straight from the source QEMU to a port the
destination opens, at the destination host's address. The destination's SPICE address, ports and
certificate subject reach the source's spice-server through libvirt's migration cookie, and from
there the connected clients (spice-server's client_migrate_info).

Facts found on this machine (../shared/spice-protocol.md): the two libvirts need distinct host UUIDs,
and a process that opens spicectl's embedded libvirt must open the other one first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from spicectl.errors import Conflict, HypervisorError, InvalidInput, TimeoutExpired
from spicectl.virt import lifecycle
from spicectl.virt.connection import Hypervisor

POLL_SECONDS = 0.5


@dataclass
class Progress:
    """One look at a running migration (libvirt's job statistics)."""
    elapsed: float
    memory_processed: int = 0
    memory_total: int = 0
    memory_remaining: int = 0
    disk_processed: int = 0
    disk_total: int = 0
    rate: int = 0                  # bytes per second, QEMU's measure of the memory stream


@dataclass
class Result:
    name: str
    source: str
    destination: str
    live: bool
    seconds: float
    downtime_ms: int | None = None
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    spice: dict = field(default_factory=dict)     # where the guest's SPICE server is now


def migration_address(uri: str) -> str:
    """Where the destination host takes QEMU's migration stream: its URI's host, loopback for this host."""
    host = urlsplit(uri).hostname
    return host or "127.0.0.1"


def _flags(lv, *, live: bool, offline: bool, copy_storage: bool) -> int:
    flags = lv.VIR_MIGRATE_PERSIST_DEST | lv.VIR_MIGRATE_UNDEFINE_SOURCE
    if offline:
        return flags | lv.VIR_MIGRATE_OFFLINE
    flags |= lv.VIR_MIGRATE_ABORT_ON_ERROR
    if live:
        flags |= lv.VIR_MIGRATE_LIVE
    if copy_storage:
        flags |= lv.VIR_MIGRATE_NON_SHARED_DISK
    return flags


def _stats(dom, completed: bool = False) -> dict:
    import libvirt

    try:
        return dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if completed else 0) or {}
    except libvirt.libvirtError:
        return {}


def _progress(stats: dict, elapsed: float) -> Progress:
    return Progress(elapsed, stats.get("memory_processed", 0), stats.get("memory_total", 0),
                    stats.get("memory_remaining", 0), stats.get("disk_processed", 0), stats.get("disk_total", 0),
                    stats.get("memory_bps", 0))


def destination_xml(xml: str, listen: str) -> str:
    """The guest's definition with its SPICE server listening on `listen` (an address of the destination
    host): libvirt lets a migration change that much of the guest."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    for graphics in root.iterfind("devices/graphics[@type='spice']"):
        graphics.set("listen", listen)
        for node in graphics.iterfind("listen"):
            if node.get("type", "address") == "address":
                node.set("address", listen)
    return etree.tostring(root, encoding="unicode")


def migrate(src: Hypervisor, dst: Hypervisor, name: str, *, offline: bool = False, live: bool = True,
            copy_storage: bool = False, listen: str | None = None, bandwidth: int | None = None,
            timeout: float | None = None,
            on_progress: Callable[[Progress], None] = lambda _p: None,
            cancelled: threading.Event | None = None) -> Result:
    """Move guest `name` from `src` to `dst`: live (a running guest), or `offline` (a stopped one's
    definition); `listen` is its SPICE server's address on the destination (None: as it is now),
    `bandwidth` a cap on the stream in MiB/s. It
    is defined on the destination and undefined on the source only once it runs there; a failure,
    `timeout` or `cancelled` aborts the job and leaves it where it was."""
    import libvirt

    dom = lifecycle.lookup(src, name)
    running = lifecycle.is_running(dom)
    if offline and running:
        raise Conflict(f"{name} is running: --offline moves a stopped guest", hint="drop --offline for a live move")
    if not offline and not running:
        raise Conflict(f"{name} is not running", hint="start it, or move its definition with --offline")
    try:
        dst.conn.lookupByName(name)
    except libvirt.libvirtError:
        pass
    else:
        raise Conflict(f"{dst.location.uri} already has a guest named {name}")
    if src.location.uri == dst.location.uri:
        raise InvalidInput("the source and the destination are the same libvirt")
    if dst.location.embedded and not offline:
        # libvirt 9.0's destination side ties the incoming guest to this connection (autodestroy),
        # which its embedded driver does not support: found on this machine
        raise HypervisorError(f"libvirt cannot migrate a running guest into an embedded driver "
                              f"({dst.location.uri}): it does not support the incoming side yet",
                              hint="stop the guest and move its definition: vm migrate --offline; or move "
                                   "it to a libvirtd")
    _check_host_uuids(src, dst)

    params: dict[str, str | int] = {} if offline else {
        libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{migration_address(dst.location.uri)}"}
    if bandwidth is not None and not offline:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth   # MiB/s
    if listen is not None:
        secure = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = destination_xml(dom.XMLDesc(secure), listen)
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = destination_xml(
            dom.XMLDesc(secure | libvirt.VIR_DOMAIN_XML_INACTIVE), listen)
    flags = _flags(libvirt, live=live, offline=offline, copy_storage=copy_storage)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["dom"] = dom.migrate3(dst.conn, params, flags)
        except libvirt.libvirtError as exc:
            outcome["error"] = exc

    start = time.monotonic()
    worker = threading.Thread(target=run, name="migrate", daemon=True)
    worker.start()
    aborted = ""
    while worker.is_alive():
        worker.join(POLL_SECONDS)
        if not worker.is_alive():
            break
        elapsed = time.monotonic() - start
        on_progress(_progress(_stats(dom), elapsed))
        why = "cancelled" if cancelled is not None and cancelled.is_set() else \
            "timed out" if timeout is not None and elapsed > timeout else ""
        if why and not aborted:
            aborted = why
            try:
                dom.abortJob()
            except libvirt.libvirtError:
                pass   # it finished meanwhile, or had not started: the outcome says which
    seconds = time.monotonic() - start
    if "error" in outcome:
        exc = outcome["error"]
        if aborted == "timed out":
            raise TimeoutExpired(f"the migration of {name} took more than {timeout:g}s and was aborted; "
                                 f"{name} runs on {src.location.uri}", hint="a longer --timeout") from None
        if aborted:
            raise HypervisorError(f"the migration of {name} was cancelled; it runs on {src.location.uri}") from None
        raise HypervisorError(f"migrating {name} to {dst.location.uri} failed: {exc.get_error_message()}",
                              hint=_hint(exc.get_error_message())) from None
    moved = outcome["dom"]
    done = _stats(moved, completed=True)
    result = Result(name, src.location.uri, dst.location.uri, not offline, seconds,
                    done.get("downtime"), done.get("memory_processed"), done.get("disk_processed"))
    if not offline:
        result.spice = lifecycle.info(moved).get("spice") or {}
    return result


SAME_HOST_HINT = "give the destination's libvirtd its own host_uuid (libvirtd.conf or virtqemud.conf)"


def _check_host_uuids(src: Hypervisor, dst: Hypervisor) -> None:
    from lxml import etree

    def uuid(hv: Hypervisor) -> str:
        return etree.fromstring(hv.conn.getCapabilities().encode()).findtext("host/uuid") or ""

    ours = uuid(src)   # (a remote libvirt's capabilities are a round trip: asked for once)
    if ours and ours == uuid(dst):
        raise Conflict(f"{src.location.uri} and {dst.location.uri} have the same host UUID ({ours}); "
                       "libvirt takes them for one host and refuses to migrate", hint=SAME_HOST_HINT)


def _hint(message: str) -> str | None:
    if "same host" in message:
        return SAME_HOST_HINT
    if "storage" in message or "No such file" in message:
        return "a disk the destination cannot reach: --copy-storage copies it"
    return None
