"""Runs libvirt work in a spawned child process when the connection is the embedded default.

libvirt's embedded QEMU driver stays initialised in a process until that
process exits, holding the root's driver.pid lock even after every
connection is closed. A command that runs on after its libvirt work (a
proxy, a viewer session, a wait for the screen) would lock every other
spicectl out of the private libvirt. Such commands do their libvirt work in a
fresh interpreter that exits at once; with any other URI it runs in-process.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from spicectl.virt.access import GuestAccess, guest_access
from spicectl.virt.connection import open_hypervisor, resolve

T = TypeVar("T")


def run_libvirt_work(connect: str | None, state_dir: Path, work: Callable[..., T], *args: object) -> T:
    """`work(*args)` in a spawned child for the embedded default, else here. `work` and `args` must pickle."""
    if not resolve(connect, state_dir).embedded:
        return work(*args)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(work, args)


def _access(connect: str | None, state_dir: Path, pki_dir: Path | None, name: str, ttl: int,
            plain: bool, on_busy: Callable[[], None] | None) -> GuestAccess:
    with open_hypervisor(connect, state_dir, pki_dir=pki_dir, on_busy=on_busy) as hv:
        return guest_access(hv, name, ttl=ttl, plain=plain, state_dir=state_dir)


def fetch_access(connect: str | None, state_dir: Path, pki_dir: Path | None, name: str, *, ttl: int = 30,
                 plain: bool = False, on_busy: Callable[[], None] | None = None) -> GuestAccess:
    """A running guest's SPICE access with a fresh ticket, without keeping the private libvirt busy
    (`on_busy`: as open_hypervisor's)."""
    return run_libvirt_work(connect, state_dir, _access, connect, state_dir, pki_dir, name, ttl, plain, on_busy)
