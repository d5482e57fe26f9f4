"""All a client needs to reach one running guest: where its SPICE server is from here, a fresh
ticket, and what to expect of its certificate. Above lifecycle and tickets, which it uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree

from spicectl.errors import InvalidInput, NotFound, SpicectlError
from spicectl.virt import lifecycle
from spicectl.virt.connection import Hypervisor
from spicectl.virt.graphics import GRAPHICS, LOOPBACKS, WILDCARDS, read_listen
from spicectl.virt.tickets import SaslOnly, set_ticket


@dataclass(frozen=True)
class GuestAccess:
    """All a client needs to reach one running guest: where, a fresh ticket, and what to expect."""

    name: str
    host: str
    port: int | None
    tls_port: int | None          # None when the caller asked for the plain port
    password: str
    valid_to: str                 # ISO 8601, UTC
    tls_subject: str | None       # the server certificate's subject, when known exactly
    usbredir: bool                # the guest has usbredir channels
    ca_file: str | None = None    # the CA its certificate chains to, when the hypervisor's host names it


def guest_access(hv: Hypervisor, name: str, *, ttl: int = 30, plain: bool = False,
                 state_dir: Path | None = None) -> GuestAccess:
    """Look the guest up, set a fresh ticket, and say where a client connects from here.

    `plain` asks for the unencrypted port (the guest must allow it).
    """
    dom = lifecycle.lookup(hv, name)
    if not lifecycle.is_running(dom):
        raise NotFound(f"{name} is not running", hint=f"spicectl vm start {name}")
    live = etree.fromstring(dom.XMLDesc(0).encode())  # read once: the listen address and the usbredir devices
    graphics = live.find(GRAPHICS)
    if graphics is None:
        raise NotFound(f"{name} has no SPICE display")
    listen = read_listen(graphics)
    tls_port = None if plain else listen.tls_port
    if tls_port is None and listen.port is None:
        raise NotFound(f"{name} has no SPICE port open")
    if tls_port is None and not plain:
        raise InvalidInput(f"{name} serves SPICE without TLS", hint="add --plain-port to connect in the clear")
    host = listen.connect_host
    if not hv.location.local:
        remote = urlsplit(hv.location.uri).hostname
        if listen.listen in WILDCARDS:
            host = remote or host
        elif listen.listen in LOOPBACKS:
            raise InvalidInput(f"{name} listens on {listen.listen} of {remote}, out of reach from here",
                               hint="recreate it with --listen on an address this machine can reach")
    subject, ca_file = None, None
    if tls_port and hv.location.embedded and state_dir:
        subject = _embedded_subject(state_dir)
    elif tls_port and hv.location.system:
        subject, ca_file = _system_trust()
    try:
        ticket = set_ticket(dom, ttl)
        password, valid_to = ticket.password, ticket.as_dict()["valid_to"]
    except SaslOnly:   # the client logs in with --sasl-user, or hears that it must
        password, valid_to = "", ""
    return GuestAccess(name, host, listen.port, tls_port, password, valid_to, subject,
                       live.find("devices/redirdev") is not None, ca_file)


def _system_trust() -> tuple[str | None, str | None]:
    """A local system libvirt serves the certificate in its own SPICE folder, from its administrator's
    CA: that CA and that subject, when root owns them (a user in the libvirt group trusts root's word)."""
    from spicectl.pki.ca import load_cert
    from spicectl.pki.issue import SERVER_CERT
    from spicectl.pki.names import host_subject
    from spicectl.virt.host import system_spice_ca

    ca = system_spice_ca()
    if ca is None:
        return None, None
    try:
        subject = host_subject(load_cert(ca.parent / SERVER_CERT).subject)
    except SpicectlError:
        subject = None
    return subject, str(ca)


def _embedded_subject(state_dir: Path) -> str | None:
    """The private libvirt serves spicectl's own certificate: its subject is known exactly."""
    from spicectl.pki.ca import load_cert
    from spicectl.pki.issue import SERVER_CERT
    from spicectl.pki.names import host_subject
    from spicectl.virt.host import server_cert_dir

    cert = server_cert_dir(state_dir) / SERVER_CERT
    return host_subject(load_cert(cert).subject) if cert.exists() else None
