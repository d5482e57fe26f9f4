"""Embedded-libvirt work for long-running commands, done in a short-lived child process.

libvirt's embedded QEMU driver stays initialised in a process until that
process exits, holding the root's driver.pid lock even after every
connection is closed. A command that runs on after its libvirt work (a
proxy, a viewer session, a wait for the screen) would lock every other
spicectl out of the private libvirt. Such commands do their libvirt work in a
fresh interpreter that exits at once; with any other URI it runs in-process.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from spicectl.virt.connection import resolve


def _target_in_process(connect: str | None, state_dir: Path, pki_dir: Path | None, name: str, ca_file: str | None,
                       ttl: int, insecure: bool):
    from spicectl.session.target import from_libvirt
    from spicectl.virt import lifecycle
    from spicectl.virt.connection import open_hypervisor

    with open_hypervisor(connect, state_dir, pki_dir=pki_dir) as hv:
        target = from_libvirt(hv, name, ca_file=ca_file, ttl=ttl, insecure=insecure)
        usbredir = "<redirdev" in lifecycle.lookup(hv, name).XMLDesc(0)
        if hv.target.embedded and target.tls_port:
            target.host_subject = _embedded_subject(state_dir)
    return target, usbredir


def _embedded_subject(state_dir: Path) -> str | None:
    """The private libvirt serves spicectl's own certificate: its subject is known exactly."""
    from spicectl.pki.ca import load_cert
    from spicectl.pki.names import host_subject
    from spicectl.virt.host import server_cert_dir

    cert = server_cert_dir(state_dir) / "server-cert.pem"
    return host_subject(load_cert(cert).subject) if cert.exists() else None


def session_target(connect: str | None, state_dir: Path, pki_dir: Path | None, name: str, *,
                   ca_file: str | None, ttl: int = 30, insecure: bool = False):
    """(SpiceTarget with a fresh ticket, whether the guest has usbredir channels)."""
    args = (connect, state_dir, pki_dir, name, ca_file, ttl, insecure)
    if not resolve(connect, state_dir).embedded:
        return _target_in_process(*args)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_target_in_process, args)
