"""Disks on a libvirt daemon whose QEMU cannot read our files: volumes in its storage pool.

The private default and qemu:///session run QEMU as the user, who reads the disks spicectl made
in the state dir. A system libvirt runs QEMU as its own user and a remote one on another
machine: there a new disk is a volume of the daemon's `default` pool (made through libvirt,
as virt-install does), and an image's base disk, kernel and initrd are uploaded into that pool
once (named by the image's digest) and shared by every guest made from it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import escape

from spicectl.domain.spec import DiskSpec, VMSpec
from spicectl.errors import HypervisorError
from spicectl.virt.connection import Hypervisor, LibvirtURI, libvirt_error

POOL = "default"
POOL_DIR = "/var/lib/libvirt/images"     # where libvirt's packages and virt-install keep it
GUEST_PREFIX = "spicectl-vm-"            # a guest's own volumes: spicectl-vm-NAME-...
IMAGE_PREFIX = "spicectl-image-"         # an image's shared files: spicectl-image-RECIPE-DIGEST-FILE

Progress = Callable[[str], None]


def pooled(location: LibvirtURI) -> bool:
    """Whether new disks go into the daemon's pool (its QEMU does not run as us, or not here)."""
    return location.system or not location.local


def _lv():
    import libvirt

    return libvirt


def pool(hv: Hypervisor):
    """The daemon's `default` pool, defined (a folder at POOL_DIR) and started if it is not."""
    libvirt = _lv()
    try:
        p = hv.conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise libvirt_error(exc, f"looking up storage pool {POOL}") from None
        try:
            p = hv.conn.storagePoolDefineXML(f"<pool type='dir'><name>{POOL}</name><target><path>{POOL_DIR}"
                                             "</path></target></pool>", 0)
            p.build(0)
            p.setAutostart(1)
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, f"defining storage pool {POOL} at {POOL_DIR}") from None
    try:
        if not p.isActive():
            p.create(0)
        p.refresh(0)
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, f"starting storage pool {POOL}") from None
    return p


def _pool_dir(p) -> str:
    from lxml import etree

    return etree.fromstring(p.XMLDesc(0).encode()).findtext("target/path") or POOL_DIR


def place(hv: Hypervisor, spec: VMSpec, progress: Progress) -> VMSpec:
    """`spec` with the disks spicectl will create, and an image's files, moved into the daemon's pool
    (the image's files uploaded there if they are not yet)."""
    p = pool(hv)
    folder = Path(_pool_dir(p))
    shared: dict[str, str] = {}

    def upload_once(local: str) -> str:
        if local not in shared:
            base = Path(local)
            shared[local] = _upload(hv, p, base, f"{IMAGE_PREFIX}{base.parent.parent.name}-{base.parent.name}-"
                                    f"{base.name}", progress)
        return shared[local]

    disks: list[DiskSpec] = []
    for disk in spec.disks:
        if disk.size_gib is None and disk.backing is None:
            disks.append(disk)
            continue
        disks.append(replace(disk, path=str(folder / f"{GUEST_PREFIX}{Path(disk.path).name}"),
                             backing=upload_once(disk.backing) if disk.backing else None))
    kernel = upload_once(spec.kernel) if spec.kernel else None
    initrd = upload_once(spec.initrd) if spec.initrd else None
    return replace(spec, disks=disks, kernel=kernel, initrd=initrd)


def _volume(p, name: str):
    libvirt = _lv()
    try:
        return p.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise libvirt_error(exc, f"looking up volume {name}") from None


def _upload(hv: Hypervisor, p, local: Path, name: str, progress: Progress) -> str:
    """Copy a file of the image cache into the pool, holes kept; an upload cut short leaves no volume."""
    libvirt = _lv()
    size = local.stat().st_size
    vol = _volume(p, name)
    if vol is not None and vol.info()[1] == size:
        return vol.path()
    if vol is not None:   # a cut-short upload of an older spicectl, or a stranger's: made anew
        vol.delete(0)
    progress(f"uploading {local.name} of {local.parent.parent.name} into pool {POOL} on {hv.location.uri} "
             f"({size / 2**20:.0f} MiB, holes skipped)")
    try:
        vol = p.createXML(f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
                          "<target><format type='raw'/><permissions><mode>0644</mode></permissions></target>"
                          "</volume>", 0)
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, f"creating volume {name}") from None
    stream = hv.conn.newStream(0)
    fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
    try:
        vol.upload(stream, 0, size, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
        stream.sparseSendAll(lambda _s, n, f: os.read(f, n), _hole, lambda _s, n, f: os.lseek(f, n, os.SEEK_CUR),
                             fd)
        stream.finish()
    except BaseException as exc:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        try:
            vol.delete(0)
        except libvirt.libvirtError:
            pass
        if isinstance(exc, libvirt.libvirtError):
            raise libvirt_error(exc, f"uploading {local} into pool {POOL}") from None
        raise
    finally:
        os.close(fd)
    return vol.path()


def _hole(_stream, fd: int) -> list:
    """libvirt's sparse-stream question: is the file at its offset in data or in a hole, and for how long."""
    here = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        data = os.lseek(fd, here, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        data = -1
    if data < 0:           # a hole to the end
        answer = [False, os.lseek(fd, 0, os.SEEK_END) - here]
    elif data > here:
        answer = [False, data - here]
    else:
        answer = [True, os.lseek(fd, here, os.SEEK_HOLE) - here]
    os.lseek(fd, here, os.SEEK_SET)
    return answer


def create_volumes(hv: Hypervisor, spec: VMSpec, progress: Progress) -> list[Path]:
    """The volumes `place` named (in the pool it made ready): blank ones of their size, or copy-on-write
    overlays on an image."""
    libvirt = _lv()
    try:
        p = hv.conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, f"looking up storage pool {POOL}") from None
    created: list[Path] = []
    try:
        for disk in spec.disks:
            if disk.size_gib is None and disk.backing is None:
                continue
            name = Path(disk.path).name
            if _volume(p, name) is not None:
                raise HypervisorError(f"volume {name} already exists in pool {POOL} on {hv.location.uri}",
                                      hint=f"remove it (virsh vol-delete --pool {POOL} {name}) or choose "
                                      "another guest name")
            if disk.backing:
                capacity = hv.conn.storageVolLookupByPath(disk.backing).info()[1]
                backing = (f"<backingStore><path>{escape(disk.backing)}</path><format type='raw'/>"
                           "</backingStore>")
                progress(f"creating overlay {name} on {Path(disk.backing).name} in pool {POOL}")
            else:
                assert disk.size_gib is not None
                capacity, backing = int(disk.size_gib * 2**30), ""
                progress(f"creating {disk.size_gib:g} GiB volume {name} in pool {POOL}")
            try:
                vol = p.createXML(f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{capacity}"
                                  f"</capacity><target><format type='{disk.format}'/></target>{backing}</volume>", 0)
            except libvirt.libvirtError as exc:
                raise libvirt_error(exc, f"creating volume {name}") from None
            created.append(Path(vol.path()))
    except BaseException:
        remove(hv, created)
        raise
    return created


def owned(location: LibvirtURI, guest: str, paths: list[Path]) -> list[Path]:
    """Of a guest's disks, the volumes spicectl made for it in the pool."""
    if not pooled(location):
        return []
    return [p for p in paths if p.name.startswith(f"{GUEST_PREFIX}{guest}-")]


def remove(hv: Hypervisor, paths: list[Path]) -> None:
    """Delete volumes through libvirt (the files are the daemon's, not ours); missing ones are gone already."""
    libvirt = _lv()
    for path in paths:
        try:
            hv.conn.storageVolLookupByPath(str(path)).delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise libvirt_error(exc, f"deleting volume {path}") from None
