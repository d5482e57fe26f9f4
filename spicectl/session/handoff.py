"""One session to one guest: the server's identity, .vv files, proxy URLs."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from pathlib import Path
from urllib.parse import quote, urlsplit

from spicectl.errors import InvalidInput, ProtocolError
from spicectl.session.server import SpiceServer
from spicectl.session.vv import VVFile


def server_identity(server: SpiceServer) -> str | None:
    """The host-subject of the guest's TLS certificate, read from a verified handshake."""
    tls_port = server.tls_port
    if not tls_port:
        return None
    from spicectl.pki.names import host_subject_of
    from spicectl.spice.client import tls_context
    from spicectl.spice.transport import open_stream

    async def peek() -> bytes | None:
        stream = await asyncio.wait_for(open_stream(server.host, tls_port, ssl_context=tls_context(
            server.ca_file), server_hostname=server.server_hostname), 10)
        der = stream.peer_certificate()
        stream.close()
        return der

    try:
        der = asyncio.run(peek())
    except ssl.SSLCertVerificationError as exc:
        raise ProtocolError(f"{server.name}'s TLS certificate was refused: {exc.verify_message}") from None
    except (TimeoutError, OSError) as exc:
        raise ProtocolError(f"cannot reach {server.name} at {server.host}:{server.tls_port}: {exc}") from None
    if der is None:
        raise ProtocolError(f"{server.name} sent no certificate")
    return host_subject_of(der)


def make_vv(server: SpiceServer, *, host_subject: str | None, proxy: str | None = None,
            usbredir: bool = False) -> VVFile:
    ca_pem = Path(server.ca_file).read_text() if server.ca_file and server.tls_port else None
    return VVFile(
        host=server.host, port=None if server.tls_port else server.port, tls_port=server.tls_port,
        password=server.password.decode() if server.password else "", ca_pem=ca_pem,
        host_subject=host_subject, title=f"{server.name} (spicectl)", proxy=proxy,
        enable_usbredir=usbredir, username=server.sasl_user,
    )


def parse_listen(value: str, default_port: int = 0) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(default_port)
    try:
        number = int(port)
    except ValueError:
        raise InvalidInput(f"--listen {value!r}: port must be a number") from None
    if not 0 <= number <= 65535:
        raise InvalidInput(f"--listen {value!r}: port out of range")
    address = host.strip("[]") if sep else host
    if not sep and not value:
        raise InvalidInput("--listen is empty", hint="leave it out for 127.0.0.1")
    if address in ("", "localhost"):
        return "127.0.0.1", number
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise InvalidInput(f"--listen {value!r}: {address!r} is not an IP address",
                           hint="listen on an address of this host, e.g. 127.0.0.1:3128 or 0.0.0.0:3128") from None
    return address, number


def html5_url(base: str, token: str, password: bytes | None) -> str:
    """The one-time page URL: spice_auto.html puts the token in a cookie for its WebSocket."""
    url = f"{base.rstrip('/')}/spice_auto.html?token={quote(token)}"
    if password:
        url += f"&password={quote(password.decode())}"
    return url


def proxy_url_parts(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"--proxy-url {url!r} must be http://HOST:PORT or https://HOST:PORT")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
