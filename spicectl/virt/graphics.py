"""Where a guest's SPICE server listens, read once from its live XML, and access to it with a fresh ticket.

The live graphics element is read here only: lifecycle (`vm list`, waits),
tickets (which update that element) and sessions (through `GuestAccess`)
all take it from `live_graphics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree

from spicectl.errors import InvalidInput, NotFound, SpicectlError
from spicectl.virt.connection import Hypervisor

# libvirt's virDomainState values that spicectl acts on
DOMAIN_RUNNING = 1
DOMAIN_STATES = {0: "no-state", DOMAIN_RUNNING: "running", 2: "blocked", 3: "paused", 4: "shutting-down",
                 5: "shut-off", 6: "crashed", 7: "suspended"}
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # listening everywhere: reach it on loopback from here
LOOPBACKS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class SpiceListen:
    """The address and ports a running guest's SPICE server listens on."""

    listen: str
    port: int | None
    tls_port: int | None

    @property
    def connect_host(self) -> str:
        return WILDCARDS.get(self.listen, self.listen)


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


GRAPHICS = "devices/graphics[@type='spice']"


def live_graphics(dom) -> etree._Element | None:
    """The live SPICE <graphics> element of a domain, or None if it has no SPICE display."""
    return etree.fromstring(dom.XMLDesc(0).encode()).find(GRAPHICS)


def read_listen(graphics: etree._Element) -> SpiceListen:
    listen = graphics.find("listen")
    address = (listen.get("address") if listen is not None else None) or graphics.get("listen") or "127.0.0.1"

    def port(attr: str) -> int | None:
        value = graphics.get(attr)
        return int(value) if value and int(value) > 0 else None

    return SpiceListen(address, port("port"), port("tlsPort"))


def spice_listen(dom) -> SpiceListen | None:
    graphics = live_graphics(dom)
    return None if graphics is None else read_listen(graphics)


def guest_access(hv: Hypervisor, name: str, *, ttl: int = 30, plain: bool = False,
                 state_dir: Path | None = None) -> GuestAccess:
    """Look the guest up, set a fresh ticket, and say where a client connects from here.

    `plain` asks for the unencrypted port (the guest must allow it).
    """
    from spicectl.virt import lifecycle
    from spicectl.virt.tickets import set_ticket

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
    ticket = set_ticket(dom, ttl)
    return GuestAccess(name, host, listen.port, tls_port, ticket.password, ticket.as_dict()["valid_to"], subject,
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
