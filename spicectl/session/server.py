"""Where a guest's SPICE server is and how to authenticate: from libvirt, or from a spice:// URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from spicectl.errors import InvalidInput, NotFound
from spicectl.virt.access import GuestAccess

if TYPE_CHECKING:
    from spicectl.spice.client import Client


@dataclass
class SpiceServer:
    host: str
    port: int | None
    tls_port: int | None
    password: bytes | None
    ca_file: str | None
    server_hostname: str
    name: str | None = None
    valid_to: str | None = None
    host_subject: str | None = None   # checked against the server certificate when known
    sasl_user: str | None = None      # a SASL login (`password` is the user's) instead of a ticket

    def client(self, **kwargs: Any) -> Client:
        from spicectl.spice.client import Client

        return Client(self.host, port=self.port, tls_port=self.tls_port, password=self.password,
                      ca_file=self.ca_file, server_hostname=self.server_hostname, host_subject=self.host_subject,
                      sasl_user=self.sasl_user, **kwargs)


SCHEME = "spice://"


def is_spice_uri(text: str) -> bool:
    return text.lower().startswith(SCHEME)


def from_uri(uri: str, *, password: bytes | None, ca_file: str | None, host_subject: str | None = None,
             plain: bool = False) -> SpiceServer:
    """spice://HOST[:PORT][?tls-port=N] for guests spicectl does not manage (`plain`: use PORT even with a
    tls-port)."""
    parts = urlsplit(uri)
    if parts.scheme != "spice" or not parts.hostname:
        raise InvalidInput(f"{uri!r} is not a spice:// URI", hint="write it like spice://host:5900?tls-port=5901")
    query = parse_qs(parts.query)
    try:
        tls_port = int(query["tls-port"][0]) if "tls-port" in query else None
        port = parts.port
    except ValueError:
        raise InvalidInput(f"bad port in {uri!r}") from None
    if plain:
        if port is None:
            raise InvalidInput(f"{uri!r} names no plain port for --plain-port", hint="add :PORT")
        tls_port = None
    if port is None and tls_port is None:
        raise InvalidInput(f"{uri!r} names no port", hint="add :PORT or ?tls-port=N")
    if tls_port and not ca_file:
        raise InvalidInput("a TLS connection to a guest spicectl does not manage needs --ca-file")
    return SpiceServer(parts.hostname, port, tls_port, password, ca_file, parts.hostname, name=uri,
                       host_subject=host_subject)


def from_access(access: GuestAccess, *, ca_file: str | None, own_ca: str) -> SpiceServer:
    """A managed guest's server: where virt/ says it is, checked against the CA the client trusts:
    `ca_file` if given, else the CA the guest's host names (a system libvirt's), else spicectl's `own_ca`."""
    ca_file = ca_file or access.ca_file or own_ca
    if access.tls_port is not None and (ca_file is None or not Path(ca_file).exists()):
        raise NotFound(f"no CA certificate at {ca_file} to check {access.name}'s TLS certificate",
                       hint="give --ca-file, or create spicectl's CA with spicectl host setup")
    return SpiceServer(access.host, access.port, access.tls_port, access.password.encode(), ca_file, access.host,
                       access.name, access.valid_to, access.tls_subject)
