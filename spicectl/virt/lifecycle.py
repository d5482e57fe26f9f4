"""Guests on a libvirt connection: create (all or nothing), start, stop, delete, inspect."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from lxml import etree

from spicectl.domain.spec import VMSpec
from spicectl.domain.xml import SPICECTL_NS
from spicectl.errors import Conflict, EnvironmentProblem, HypervisorError, NotFound, TimeoutExpired
from spicectl.virt import storage
from spicectl.virt.connection import Hypervisor, libvirt_error
from spicectl.virt.graphics import DOMAIN_RUNNING, DOMAIN_STATES, SpiceListen, spice_listen

Progress = Callable[[str], None]


def _noop(_message: str) -> None:
    pass


def _lv():
    import libvirt

    return libvirt


def lookup(hv: Hypervisor, name: str):
    libvirt = _lv()
    try:
        return hv.conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFound(f"no guest named {name!r} on {hv.location.uri}", hint="see: spicectl vm list") from None
        raise libvirt_error(exc, f"looking up {name}") from None


def is_running(dom) -> bool:
    return bool(dom.isActive())


META_KEYS = ("template", "image", "creating")


def spicectl_metadata(dom) -> dict[str, str | None]:
    """The template and image spicectl recorded in the guest's metadata (and `creating`, while a
    `vm create` is still setting it up)."""
    try:
        meta = dom.metadata(_lv().VIR_DOMAIN_METADATA_ELEMENT, SPICECTL_NS)
    except _lv().libvirtError:
        return dict.fromkeys(META_KEYS)
    el = etree.fromstring(meta.encode())
    return {key: el.findtext(f"{{{SPICECTL_NS}}}{key}") or el.findtext(key) for key in META_KEYS}


def _this_process() -> str:
    return f"{os.getpid()} {_boot_id()}"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def abandoned(marker: str | None) -> bool:
    """Whether the `vm create` that left `marker` ("PID BOOT_ID") is gone (killed, or the host rebooted)."""
    if not marker:
        return False
    pid, _, boot = marker.partition(" ")
    if boot != _boot_id() or not pid.isdigit():
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"spicectl" not in cmdline


def _finish_marker(dom, meta: dict[str, str | None]) -> None:
    """Drop the `creating` marker: the guest is complete."""
    libvirt = _lv()
    vm = etree.Element("vm")  # libvirt puts it (and its children) into SPICECTL_NS itself
    for key in ("template", "image"):
        if meta.get(key):
            etree.SubElement(vm, key).text = meta[key]
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if is_running(dom) else 0)
    try:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, etree.tostring(vm, encoding="unicode"), "spicectl",
                        SPICECTL_NS, flags)
    except libvirt.libvirtError as exc:
        if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE and not is_running(dom):
            raise HypervisorError(f"{dom.name()} stopped right after it started",
                                  hint="its QEMU log says why (STATE/libvirt/log/qemu/ for the private libvirt)"
                                  ) from None
        raise libvirt_error(exc, f"cannot finish {dom.name()}'s definition") from None


def info(dom) -> dict:
    state, _reason = dom.state()
    endpoint = spice_listen(dom) if state == DOMAIN_RUNNING else None
    _st, max_mem, _mem, vcpus, _cpu = dom.info()
    return {
        "name": dom.name(),
        "uuid": dom.UUIDString(),
        "state": DOMAIN_STATES.get(state, str(state)),
        "id": dom.ID() if state == DOMAIN_RUNNING else None,
        "vcpus": vcpus,
        "memory_kib": max_mem,
        **spicectl_metadata(dom),
        "spice": None if endpoint is None else {
            "listen": endpoint.listen, "port": endpoint.port, "tls_port": endpoint.tls_port,
        },
    }


def list_domains(hv: Hypervisor) -> list[dict]:
    return sorted((info(d) for d in hv.conn.listAllDomains(0)), key=lambda i: i["name"])


def check_spice_supported(hv: Hypervisor, spec: VMSpec) -> None:
    from spicectl.virt.host import domcaps_support_spice

    libvirt = _lv()
    try:
        caps = hv.conn.getDomainCapabilities(None, spec.arch, spec.machine, spec.virt_type, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return  # a driver without domain capabilities (e.g. test:///) cannot tell us; let define decide
        raise HypervisorError(
            f"{hv.location.uri} cannot run {spec.virt_type} guests of {spec.arch}/{spec.machine}: "
            f"{exc.get_error_message()}",
            hint="is qemu-system-x86 installed? (--virt-type qemu uses TCG where KVM is missing)",
        ) from None
    if not domcaps_support_spice(caps):
        raise HypervisorError(f"the QEMU behind {hv.location.uri} is built without SPICE",
                              hint="install a QEMU with SPICE (Debian: qemu-system-x86)")


def host_has_kvm(hv: Hypervisor, arch: str = "x86_64") -> bool:
    caps = etree.fromstring(hv.conn.getCapabilities().encode())
    return bool(caps.xpath(f"guest/arch[@name='{arch}']/domain[@type='kvm']"))


def _create_disks(hv: Hypervisor, spec: VMSpec, progress: Progress) -> list[Path]:
    created: list[Path] = []
    try:
        for disk in spec.disks:
            if disk.size_gib is None and disk.backing is None:
                continue
            path = Path(disk.path)
            if path.exists():
                raise Conflict(f"disk image {path} already exists", hint="pass it as --disk PATH to reuse it")
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if disk.backing:
                progress(f"creating overlay {path} on {disk.backing}")
                argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", disk.backing, "-F", "raw", str(path)]
            else:
                assert disk.size_gib is not None
                progress(f"creating {disk.size_gib:g} GiB disk {path}")
                argv = ["qemu-img", "create", "-q", "-f", disk.format, str(path), f"{int(disk.size_gib * 1024)}M"]
            try:
                subprocess.run(argv, check=True, capture_output=True, text=True)
            except FileNotFoundError:
                raise EnvironmentProblem("qemu-img is not installed", hint="apt-get install qemu-utils") from None
            except subprocess.CalledProcessError as exc:
                raise HypervisorError(f"qemu-img could not create {path}: {exc.stderr.strip()}") from None
            created.append(path)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return created


def create(hv: Hypervisor, spec: VMSpec, *, start: bool = True, wait: bool | str = False, timeout: float = 60,
           progress: Progress = _noop, images_dir: Path | None = None, notice: Progress = _noop) -> object:
    """Define (and start) the guest; on any failure nothing is left defined or created.

    Until it is complete the guest's metadata names this process; a guest a killed `vm create`
    left behind is removed here (with the disks spicectl made for it) and made anew.
    """
    from spicectl.domain.validate import validate
    from spicectl.domain.xml import to_element, to_xml

    libvirt = _lv()
    validate(to_element(spec))
    try:
        existing = hv.conn.lookupByName(spec.name)
    except libvirt.libvirtError:
        existing = None
    if existing is not None:
        marker = spicectl_metadata(existing)["creating"]
        if marker is None or not abandoned(marker):
            raise Conflict(f"a guest named {spec.name!r} already exists on {hv.location.uri}",
                           hint=f"choose another name, or remove it: spicectl vm delete {spec.name}")
        # said even under --json: the user should know a guest of this name was replaced
        notice(f"removing {spec.name}, left half-made by an interrupted vm create (process {marker.split()[0]}); "
               "making it anew")
        delete(hv, spec.name, images_dir=images_dir or Path("/nonexistent"))
    check_spice_supported(hv, spec)
    if storage.pooled(hv.location):
        spec = storage.place(hv, spec, progress)
        validate(to_element(spec))
    spec = replace(spec, creating=_this_process())
    dom = None
    created: list[Path] = []
    try:
        progress(f"defining {spec.name}")
        try:
            dom = hv.conn.defineXML(to_xml(spec))
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, f"libvirt refused to define {spec.name}") from None
        # disks after the definition: a guest killed half-way is found by its marker, with its disks
        created = storage.create_volumes(hv, spec, progress) if storage.pooled(hv.location) else \
            _create_disks(hv, spec, progress)
        if start:
            deadline = time.monotonic() + timeout
            _start(dom, spec.name, bool(wait), timeout, progress)
            if wait == READY and spec.image:
                wait_ready(hv, dom, max(1.0, deadline - time.monotonic()), progress)
        _finish_marker(dom, {"template": spec.template, "image": spec.image})
        return dom
    except BaseException:
        if dom is not None:
            try:
                if is_running(dom):
                    dom.destroy()
            except libvirt.libvirtError:
                pass
            try:
                _undefine(dom)
            except libvirt.libvirtError:
                pass
        _remove_disks(hv, created)
        raise


def _remove_disks(hv: Hypervisor, paths: list[Path]) -> None:
    if storage.pooled(hv.location):
        storage.remove(hv, paths)
        return
    for path in paths:
        path.unlink(missing_ok=True)


def wait_for_spice(dom, timeout: float = 60, progress: Progress = _noop) -> SpiceListen:
    """Return once the guest's SPICE ports accept TCP connections."""
    progress(f"waiting for {dom.name()}'s SPICE ports")
    deadline = time.monotonic() + timeout
    while True:
        endpoint = spice_listen(dom) if is_running(dom) else None
        if endpoint is not None:
            ports = [p for p in (endpoint.tls_port, endpoint.port) if p]
            try:
                for port in ports:
                    with socket.create_connection((endpoint.connect_host, port), timeout=1):
                        pass
                if ports:
                    return endpoint
            except OSError:
                pass
        elif not is_running(dom):
            raise HypervisorError(f"{dom.name()} is not running")
        if time.monotonic() > deadline:
            raise TimeoutExpired(f"{dom.name()}'s SPICE ports did not open within {timeout:g}s")
        time.sleep(0.1)


def start(hv: Hypervisor, name: str, *, wait: bool | str = False, timeout: float = 60, progress: Progress = _noop):
    """Start a defined guest; `wait` is False, PORTS (its SPICE ports accept connections) or READY (for a
    guest of spicectl's images, also its console shell, and a desktop image's X session)."""
    dom = lookup(hv, name)
    if is_running(dom):
        raise Conflict(f"{name} is already running")
    deadline = time.monotonic() + timeout
    _start(dom, name, bool(wait), timeout, progress)
    if wait == READY and spicectl_metadata(dom)["image"]:
        wait_ready(hv, dom, max(1.0, deadline - time.monotonic()), progress)
    return dom


PORTS, READY = "ports", "ready"   # what a --wait waits for
# typed on an image guest's console (root is logged in there): a desktop image's X session (unless its
# session is masked or disabled, e.g. with systemd.mask= on the kernel command line), then a line the
# shell computes, so that the echo of what was typed does not match
READY_PROBE = (b"systemctl -q is-enabled spicectl-desktop-ready.service 2>/dev/null && "
               b"until [ -e /run/spicectl-desktop-ready ]; do sleep 1; done; echo SPICECTL-READY-$((40+2))\n")
READY_MARK = "SPICECTL-READY-42"
READY_RETRY = 3.0


def wait_ready(hv: Hypervisor, dom, timeout: float, progress: Progress = _noop) -> None:
    """Return once a guest of spicectl's images answers on its console shell (and, for a desktop
    image, once its X session is drawn): what a user means by a guest that is ready to use."""
    from spicectl.virt.connection import open_uri, start_event_loop
    from spicectl.virt.console import Console

    progress(f"waiting for {dom.name()} to be ready (its console shell; a desktop image's X session)")
    # a console stream is driven by libvirt's event loop, which a connection uses only if it was
    # registered before the connection opened: a daemon's (qemu:///session, system) gets one of its
    # own here (without, the stream's data came in bursts: 232 s instead of 20 to see the shell)
    start_event_loop()
    own = None if hv.location.embedded else open_uri(hv.location)
    try:
        with Console(own or hv, own.conn.lookupByName(dom.name()) if own else dom) as console:
            console.expect(READY_MARK, send=READY_PROBE, timeout=timeout, retry_every=READY_RETRY)
    except TimeoutExpired as exc:
        raise TimeoutExpired(f"{dom.name()} was not ready within {timeout:g}s ({exc.message})",
                             hint=f"a longer --timeout, or see: spicectl console {dom.name()}") from None
    finally:
        if own is not None:
            own.close()


PORT_RETRIES = 5
START_LOCK = "spicectl-start.lock"   # in /run/lock: every user's spicectl starts one guest at a time
START_LOCK_WAIT = 60.0


@contextlib.contextmanager
def host_start_lock(folder: Path = Path("/run/lock")):
    """Hold the host-wide start lock while QEMU binds its ports (read-only and 0444, so every user can
    flock it; never through a link). If it cannot be had within a minute, or at all, go on without:
    a start that loses its port is tried again anyway."""
    import fcntl

    fd = None
    try:
        fd = os.open(folder / START_LOCK, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
        deadline = time.monotonic() + START_LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    fd = None
                    break
                time.sleep(0.05)
    except OSError:
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _port_taken(message: str) -> bool:
    return "binding socket to" in message or "Address already in use" in message


def _start(dom, name: str, wait: bool, timeout: float, progress: Progress) -> None:
    libvirt = _lv()
    progress(f"starting {name}")
    for attempt in range(PORT_RETRIES):
        try:
            # libvirt picks a SPICE port that is free on the host when it checks; another libvirt
            # (another state dir, another user) could take it before this QEMU binds it. Starts are
            # taken one at a time on the host, and one that lost its port anyway is tried again.
            with host_start_lock():
                dom.create()
            break
        except libvirt.libvirtError as exc:
            if attempt + 1 < PORT_RETRIES and _port_taken(exc.get_error_message()):
                progress(f"{name}: its SPICE port was taken meanwhile; starting it again")
                time.sleep(0.2 * (attempt + 1))
                continue
            raise libvirt_error(exc, f"{name} failed to start") from None
    if wait:
        wait_for_spice(dom, timeout, progress)


def stop(hv: Hypervisor, name: str, *, timeout: float = 60, force: bool = False, progress: Progress = _noop) -> str:
    """ACPI shutdown; after `timeout`, power off if `force`. Returns how it ended."""
    libvirt = _lv()
    dom = lookup(hv, name)
    if not is_running(dom):
        raise Conflict(f"{name} is not running")
    progress(f"asking {name} to shut down")
    try:
        dom.shutdown()
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, f"shutting down {name}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(dom):
            return "shutdown"
        time.sleep(0.2)
    if not force:
        raise TimeoutExpired(f"{name} did not shut down within {timeout:g}s",
                             hint=f"add --force to power it off, or: spicectl vm destroy {name}")
    progress(f"powering {name} off")
    destroy(hv, name)
    return "destroyed"


def destroy(hv: Hypervisor, name: str) -> None:
    libvirt = _lv()
    dom = lookup(hv, name)
    if not is_running(dom):
        raise Conflict(f"{name} is not running")
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, f"powering off {name}") from None


def owned_disks(hv: Hypervisor, dom, images_dir: Path) -> list[Path]:
    """Disk images spicectl created for this guest: those under its images dir, or its volumes in
    the daemon's pool."""
    tree = etree.fromstring(dom.XMLDesc(_lv().VIR_DOMAIN_XML_INACTIVE).encode())
    paths = [Path(p) for p in tree.xpath("devices/disk[@device='disk']/source/@file")]
    if storage.pooled(hv.location):
        return storage.owned(hv.location, dom.name(), paths)
    return [p for p in paths if images_dir in p.parents]


def _undefine(dom) -> None:
    libvirt = _lv()
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    except libvirt.libvirtError as exc:
        # drivers without NVRAM or managed save (the test driver) refuse the flags
        if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        dom.undefine()


def delete(hv: Hypervisor, name: str, *, images_dir: Path, keep_disks: bool = False) -> list[str]:
    """Power off if needed, undefine, and remove the disks spicectl created (unless keep_disks)."""
    libvirt = _lv()
    dom = lookup(hv, name)
    disks = [] if keep_disks else owned_disks(hv, dom, images_dir)
    try:
        if is_running(dom):
            dom.destroy()
        _undefine(dom)
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, f"deleting {name}") from None
    _remove_disks(hv, disks)
    return [str(p) for p in disks]


def screenshot_png(hv: Hypervisor, dom, screen: int = 0) -> bytes:
    """libvirt's own screenshot of the guest display (QEMU's screendump), as PNG bytes."""
    import io

    from PIL import Image

    libvirt = _lv()
    stream = hv.conn.newStream(0)
    try:
        mime = dom.screenshot(stream, screen, 0)
        chunks = []
        while True:
            data = stream.recv(256 * 1024)
            if not data:
                break
            chunks.append(data)
        stream.finish()
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, f"screenshot of {dom.name()}") from None
    raw = b"".join(chunks)
    if mime == "image/png":
        return raw
    out = io.BytesIO()
    Image.open(io.BytesIO(raw)).save(out, "PNG")
    return out.getvalue()
