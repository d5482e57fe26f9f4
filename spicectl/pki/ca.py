"""spicectl's certificate authority: creating it, loading it, signing with it.

Layout under `<state>/ca/` (0700):
  ca-cert.pem     the CA certificate (0644)
  ca-key.pem      its key, PKCS#8, optionally passphrase-protected (0600)
  issued/         one JSON record per certificate the CA signed (`cert list`)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spicectl.errors import Conflict, InvalidInput, NotFound, SpicectlError, VerificationFailed
from spicectl.files import read_bytes
from spicectl.pki import store
from spicectl.pki.keys import PrivateKey, generate_key, key_to_pem, load_key
from spicectl.pki.names import parse_subject
from spicectl.pki.profiles import KEY_USAGES, Profile

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
EKU_OIDS = {"server_auth": ExtendedKeyUsageOID.SERVER_AUTH, "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class CA:
    directory: Path
    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self.key, _hash_for(self.key))


def _hash_for(key) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def key_usage_extension(profile: Profile, key) -> x509.KeyUsage:
    usages = set(profile.key_usage)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        # EC keys cannot encipher (RFC 5480); some TLS stacks reject the bit.
        usages.discard("key_encipherment")
    return x509.KeyUsage(**{n: n in usages for n in KEY_USAGES}, encipher_only=False, decipher_only=False)


def base_builder(profile: Profile, subject: x509.Name, issuer: x509.Name, public_key,
                 *, not_before: dt.datetime | None = None) -> x509.CertificateBuilder:
    start = (not_before or utcnow()) - dt.timedelta(minutes=5)  # tolerate small clock skew
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=profile.days, minutes=5))
        .add_extension(
            x509.BasicConstraints(ca=profile.is_ca, path_length=profile.path_length if profile.is_ca else None),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder


def default_ca_subject(profile: Profile) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, profile.organization),
        x509.NameAttribute(NameOID.COMMON_NAME, f"spicectl CA on {socket.gethostname()}"),
    ])


def ca_exists(ca_dir: Path) -> bool:
    return (ca_dir / CA_CERT).exists() or (ca_dir / CA_KEY).exists()


def _ca_exists(ca_dir: Path) -> Conflict:
    return Conflict(f"a CA already exists in {ca_dir}",
                    hint="use it as it is, or pass --force to replace it (the old pair is kept as .bak)")


def init_ca(ca_dir: Path, profile: Profile, *, subject: str | None = None,
            passphrase: bytes | None = None, force: bool = False) -> CA:
    """Create a CA. Refuses to replace one unless `force`, which keeps a .bak of the old pair."""
    name = parse_subject(subject) if subject else default_ca_subject(profile)
    if ca_exists(ca_dir) and not force:
        raise _ca_exists(ca_dir)
    key = generate_key(profile.key_type)
    builder = base_builder(profile, name, name, key.public_key()).add_extension(
        key_usage_extension(profile, key), critical=True
    )
    cert = builder.sign(key, _hash_for(key))
    # encoded before anything is touched: a passphrase the encryption refuses changes no file
    files = {
        ca_dir / CA_KEY: (key_to_pem(key, passphrase), store.KEY_MODE),
        ca_dir / CA_CERT: (cert.public_bytes(serialization.Encoding.PEM), store.CERT_MODE),
    }
    store.ensure_dir(ca_dir)
    with store.locked_dir(ca_dir):  # parallel runs: exactly one makes the CA, the others see it
        if ca_exists(ca_dir) and not force:
            raise _ca_exists(ca_dir)
        store.ensure_dir(ca_dir / "issued")
        if force:
            for fname, mode in ((CA_CERT, store.CERT_MODE), (CA_KEY, store.KEY_MODE)):
                old = ca_dir / fname
                if old.exists():
                    store.atomic_write(ca_dir / (fname + ".bak"), old.read_bytes(), mode)
        with store.staged_files(files, force=True):
            pass
    return CA(ca_dir, cert, key)


def load_ca_cert(ca_dir: Path) -> x509.Certificate:
    path = ca_dir / CA_CERT
    if not path.exists():
        raise NotFound(f"no CA in {ca_dir}", hint="create one with: spicectl ca init")
    return load_cert(path)


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_ca(ca_dir: Path, passphrase: bytes | None = None) -> CA:
    cert = load_ca_cert(ca_dir)
    key = load_key(ca_dir / CA_KEY, passphrase)
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        raise InvalidInput(f"{ca_dir / CA_KEY} does not belong to {ca_dir / CA_CERT}")
    check_is_ca(cert, ca_dir / CA_CERT)
    return CA(ca_dir, cert, key)


def check_is_ca(cert: x509.Certificate, path: Path) -> None:
    """A certificate that is to sign others must say it is a CA: no TLS stack accepts what a leaf signs."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise VerificationFailed(
            f"{path} is not a CA certificate (no basicConstraints CA:TRUE): what it signed would be refused",
            hint=f"put the CA's own certificate there, or move {path.parent} aside and run: spicectl ca init")


def load_cert(path: Path) -> x509.Certificate:
    data = read_bytes(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise InvalidInput(f"{path} is not a PEM certificate") from None


def eku_extension(profile: Profile) -> x509.ExtendedKeyUsage | None:
    if not profile.extended_key_usage:
        return None
    return x509.ExtendedKeyUsage([EKU_OIDS[u] for u in profile.extended_key_usage])


# --- the registry of issued certificates -----------------------------------

def record_issued(ca: CA, cert: x509.Certificate, *, kind: str, path: Path) -> None:
    record = {
        "serial": format(cert.serial_number, "x"),
        "kind": kind,
        "subject": cert.subject.rfc4514_string(),
        "path": str(path),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }
    issued = store.ensure_dir(ca.directory / "issued")
    store.atomic_write(issued / f"{record['serial']}.json", json.dumps(record, indent=2).encode(), 0o644)


RECORD_KEYS = ("serial", "kind", "subject", "path", "not_after", "pem")


def issued_records(ca_dir: Path) -> tuple[list[dict], list[str]]:
    """The registry of issued certificates, and the names of records too damaged to read (skipped:
    a damaged record must not hide the others)."""
    directory = ca_dir / "issued"
    if not directory.is_dir():
        return [], []
    records, skipped = [], []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            record = json.loads(read_bytes(Path(entry.path), "issued-certificate record", 256 * 1024))
            if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in RECORD_KEYS):
                raise ValueError("missing fields")
            record["certificate"] = x509.load_pem_x509_certificate(record["pem"].encode())
        except (SpicectlError, ValueError, UnicodeDecodeError):
            skipped.append(entry.name)
            continue
        records.append(record)
    return records, skipped
