"""Issuing and renewing leaf certificates into the directory layouts QEMU and clients read.

Server directory (QEMU `-spice x509-dir=`, libvirt `spice_tls_x509_cert_dir`):
  ca-cert.pem, server-cert.pem, server-key.pem
Client directory (mutual TLS to the session proxy):
  ca-cert.pem, client-cert.pem, client-key.pem
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from spicectl.errors import InvalidInput, NotFound
from spicectl.pki import store
from spicectl.pki.ca import CA, CA_CERT, base_builder, eku_extension, key_usage_extension, load_cert, record_issued
from spicectl.pki.keys import generate_key, key_to_pem, key_type_of, load_key
from spicectl.pki.names import build_sans, check_dns, is_ip
from spicectl.pki.profiles import KEY_TYPES, Profile

KINDS = ("server", "client")


def cert_name(kind: str) -> str:
    return f"{kind}-cert.pem"


def key_name(kind: str) -> str:
    return f"{kind}-key.pem"


SERVER_CERT, SERVER_KEY = cert_name("server"), key_name("server")
CLIENT_CERT = cert_name("client")


@dataclass
class Issued:
    kind: str
    directory: Path
    cert: x509.Certificate

    @property
    def cert_path(self) -> Path:
        return self.directory / cert_name(self.kind)

    @property
    def key_path(self) -> Path:
        return self.directory / key_name(self.kind)


MAX_CN = 64


def _subject(profile: Profile, cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, profile.organization),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _build(ca: CA, profile: Profile, subject: x509.Name, sans: list[x509.GeneralName], key) -> x509.Certificate:
    builder = base_builder(profile, subject, ca.cert.subject, key.public_key())
    builder = builder.add_extension(key_usage_extension(profile, key), critical=True)
    eku = eku_extension(profile)
    if eku is not None:
        builder = builder.add_extension(eku, critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
    )
    return ca.sign(builder)


def _write(ca: CA, kind: str, out: Path, cert: x509.Certificate, key, *, force: bool, backup: bool = False) -> Issued:
    store.ensure_dir(out)
    issued = Issued(kind, out, cert)
    with store.locked_dir(out):  # parallel runs into one folder: exactly one writes, the others see its files
        if backup:
            for path, mode in ((issued.cert_path, store.CERT_MODE), (issued.key_path, store.KEY_MODE)):
                if path.exists():
                    store.atomic_write(path.with_name(path.name + ".bak"), path.read_bytes(), mode)
        with store.staged_files(
            {
                issued.key_path: (key_to_pem(key), store.KEY_MODE),
                issued.cert_path: (cert.public_bytes(serialization.Encoding.PEM), store.CERT_MODE),
                out / CA_CERT: (ca.cert_pem, store.CERT_MODE),
            },
            force=force,
        ):
            record_issued(ca, cert, kind=kind, path=issued.cert_path)
    return issued


def issue_server(ca: CA, profile: Profile, out: Path, *, host: str, dns: Sequence[str] = (),
                 ips: Sequence[str] = (), force: bool = False) -> Issued:
    sans = build_sans(host, list(dns), list(ips))
    cn = host if is_ip(host) else check_dns(host)
    if len(cn) > MAX_CN:
        # X.509 caps a CN at 64 characters; the full name is in the SANs, which clients check
        cn = cn.split(".", 1)[0]
    key = generate_key(profile.key_type)
    cert = _build(ca, profile, _subject(profile, cn), sans, key)
    return _write(ca, "server", out, cert, key, force=force)


def issue_client(ca: CA, profile: Profile, out: Path, *, name: str, force: bool = False) -> Issued:
    if not name or len(name) > 64 or name in (".", "..") or any(c in "/\\" or ord(c) < 32 for c in name):
        raise InvalidInput(f"invalid client name {name!r}", hint="use up to 64 characters, no slashes")
    key = generate_key(profile.key_type)
    cert = _build(ca, profile, _subject(profile, name), [], key)
    return _write(ca, "client", out, cert, key, force=force)


def find_leaf(directory: Path) -> tuple[str, Path]:
    for kind in KINDS:
        path = directory / f"{kind}-cert.pem"
        if path.exists():
            return kind, path
    raise NotFound(f"no server-cert.pem or client-cert.pem in {directory}")


def renew(ca: CA, profile: Profile, directory: Path, *, keep_key: bool = False) -> Issued:
    """Re-issue the certificate in `directory` with the same subject and SANs.

    The previous pair is kept as `*.pem.bak`; the new pair replaces it atomically.
    """
    kind, cert_path = find_leaf(directory)
    old = load_cert(cert_path)
    key_path = directory / f"{kind}-key.pem"
    if keep_key:
        key = load_key(key_path)
    else:
        old_type = key_type_of(old.public_key())
        key = generate_key(old_type if old_type in KEY_TYPES else profile.key_type)
    try:
        sans = list(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    cert = _build(ca, profile, old.subject, sans, key)
    return _write(ca, kind, directory, cert, key, force=True, backup=True)
