"""The cache of built images: CACHE/NAME/VERSION/ with the disk, kernel, initrd and image.json.

VERSION is the start of the recipe's digest, so a changed recipe builds a new
version beside the old one; guests' disks are copy-on-write overlays on a
version's `disk.raw`, which is never written to, and a version an overlay
still uses is never deleted behind its back.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spicectl.errors import Conflict, NotFound

META = "image.json"
DISK = "disk.raw"
KERNEL = "vmlinuz"
INITRD = "initrd.img"
VERSION_CHARS = 16


def version_of(digest: str) -> str:
    return digest[:VERSION_CHARS]


@dataclass(frozen=True)
class BuiltImage:
    name: str
    version: str
    dir: Path
    meta: dict[str, Any]

    @property
    def disk(self) -> Path:
        return self.dir / DISK

    @property
    def kernel(self) -> Path:
        return self.dir / KERNEL

    @property
    def initrd(self) -> Path:
        return self.dir / INITRD

    @property
    def cmdline(self) -> str:
        return str(self.meta["cmdline"])

    def as_dict(self) -> dict:
        return {**self.meta, "version": self.version, "dir": str(self.dir), "disk": str(self.disk),
                "kernel": str(self.kernel), "initrd": str(self.initrd)}


def _load(version_dir: Path, name: str) -> BuiltImage | None:
    try:
        meta = json.loads((version_dir / META).read_text())
    except (OSError, ValueError):
        return None  # not (completely) built
    if not isinstance(meta, dict) or not all((version_dir / f).is_file() for f in (DISK, KERNEL, INITRD)):
        return None
    return BuiltImage(name, version_dir.name, version_dir, meta)


def versions(cache: Path, name: str) -> list[BuiltImage]:
    """Every complete build of NAME, newest first."""
    base = cache / name
    found = [b for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")
             for b in [_load(d, name)] if b is not None] if base.is_dir() else []
    return sorted(found, key=lambda b: b.meta.get("built_at", ""), reverse=True)


def find(cache: Path, name: str, digest: str) -> BuiltImage | None:
    return _load(cache / name / version_of(digest), name)


def qcow2_backing_file(path: Path) -> str | None:
    """The backing file a qcow2 image names in its header, or None."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(20)
            if len(header) < 20 or header[:4] != b"QFI\xfb":
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if not offset or not 0 < size <= 4096:
                return None
            fh.seek(offset)
            return fh.read(size).decode(errors="replace")
    except OSError:
        return None


def users_of(image: BuiltImage, images_dir: Path) -> list[Path]:
    """Guest disks (overlays under `images_dir`) backed by this build."""
    if not images_dir.is_dir():
        return []
    disk = str(image.disk)
    return sorted(p for p in images_dir.iterdir() if p.is_file() and qcow2_backing_file(p) == disk)


def delete(cache: Path, name: str, images_dir: Path, *, force: bool = False,
           keep: str | None = None) -> list[BuiltImage]:
    """Remove every build of NAME (but `keep`); a build a guest's disk still uses only with `force`."""
    builds = [b for b in versions(cache, name) if b.version != keep]
    if keep is None and not builds and not (cache / name).exists():
        raise NotFound(f"image {name!r} is not built", hint="see: spicectl image list")
    in_use = {b.version: users_of(b, images_dir) for b in builds}
    if not force:
        busy = [in_use[b.version] for b in builds if in_use[b.version]]
        if busy and keep is None:
            disks = busy[0]
            raise Conflict(f"image {name} is the base of {len(disks)} guest disk(s), e.g. {disks[0]}",
                           hint="delete those guests first (spicectl vm delete), or pass --force")
        builds = [b for b in builds if not in_use[b.version]]
    for build in builds:
        shutil.rmtree(build.dir)
    if keep is None:
        shutil.rmtree(cache / name, ignore_errors=True)
    return builds
