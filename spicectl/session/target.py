"""Where a guest's SPICE server is and how to authenticate: from libvirt, or from a spice:// URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from spicectl.errors import InvalidInput, NotFound


@dataclass
class SpiceTarget:
    host: str
    port: int | None
    tls_port: int | None
    password: bytes | None
    ca_file: str | None
    server_hostname: str
    name: str | None = None
    valid_to: str | None = None
    host_subject: str | None = None   # checked against the server certificate when known

    def client(self, **kwargs):
        from spicectl.spice.client import Client

        return Client(self.host, port=self.port, tls_port=self.tls_port, password=self.password,
                      ca_file=self.ca_file, server_hostname=self.server_hostname, host_subject=self.host_subject,
                      **kwargs)


def from_uri(uri: str, *, password: bytes | None, ca_file: str | None,
             host_subject: str | None = None) -> SpiceTarget:
    """spice://HOST[:PORT][?tls-port=N] for guests spicectl does not manage."""
    parts = urlsplit(uri)
    if parts.scheme != "spice" or not parts.hostname:
        raise InvalidInput(f"{uri!r} is not a spice:// URI", hint="write it like spice://host:5900?tls-port=5901")
    query = parse_qs(parts.query)
    try:
        tls_port = int(query["tls-port"][0]) if "tls-port" in query else None
        port = parts.port
    except ValueError:
        raise InvalidInput(f"bad port in {uri!r}") from None
    if port is None and tls_port is None:
        raise InvalidInput(f"{uri!r} names no port", hint="add :PORT or ?tls-port=N")
    if tls_port and not ca_file:
        raise InvalidInput("a TLS connection to a guest spicectl does not manage needs --ca-file")
    return SpiceTarget(parts.hostname, port, tls_port, password, ca_file, parts.hostname,
                       host_subject=host_subject)


def from_libvirt(hv, name: str, *, ca_file: str | None, ttl: int = 30, insecure: bool = False) -> SpiceTarget:
    """Look the guest up, set a fresh ticket, and say where to connect."""
    from spicectl.virt import lifecycle
    from spicectl.virt.tickets import set_ticket

    dom = lifecycle.lookup(hv, name)
    if not lifecycle.is_running(dom):
        raise NotFound(f"{name} is not running", hint=f"spicectl vm start {name}")
    endpoint = lifecycle.spice_endpoint(dom)
    if endpoint is None:
        raise NotFound(f"{name} has no SPICE display")
    ticket = set_ticket(dom, ttl)
    tls_port = None if insecure else endpoint.tls_port
    if tls_port is None and endpoint.port is None:
        raise NotFound(f"{name} has no SPICE port open")
    if tls_port is None and not insecure:
        raise InvalidInput(f"{name} serves SPICE without TLS", hint="add --insecure to connect in the clear")
    if tls_port is not None and (ca_file is None or not Path(ca_file).exists()):
        raise NotFound(f"no CA certificate at {ca_file} to check {name}'s TLS certificate",
                       hint="give --ca-file, or create spicectl's CA with spicectl host setup")
    host = endpoint.connect_host
    if not hv.target.local:
        remote = urlsplit(hv.target.uri).hostname
        if endpoint.listen in ("0.0.0.0", "::"):
            host = remote or host
        elif endpoint.listen in ("127.0.0.1", "::1", "localhost"):
            raise InvalidInput(f"{name} listens on {endpoint.listen} of {remote}, out of reach from here",
                               hint="recreate it with --listen on an address this machine can reach")
    return SpiceTarget(host, endpoint.port, tls_port, ticket.password.encode(), ca_file, host, name,
                       ticket.as_dict()["valid_to"])
