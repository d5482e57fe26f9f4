"""Describing certificates for `cert show` and `cert list`."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from spicectl.errors import NotFound
from spicectl.pki.ca import CA_CERT, EKU_OIDS, load_cert, utcnow
from spicectl.pki.issue import CLIENT_CERT, SERVER_CERT
from spicectl.pki.keys import key_type_of
from spicectl.pki.names import host_subject, san_strings

SOON_DAYS = 30


def resolve_cert_path(path: Path) -> Path:
    """A certificate file, or a directory holding server-cert.pem, client-cert.pem or ca-cert.pem."""
    if path.is_dir():
        for name in (SERVER_CERT, CLIENT_CERT, CA_CERT):
            if (path / name).exists():
                return path / name
        raise NotFound(f"no certificate in directory {path}")
    return path


def eku_name(oid: x509.ObjectIdentifier) -> str:
    return {o: name for name, o in EKU_OIDS.items()}.get(oid, oid.dotted_string)


def _fingerprint(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(algorithm))


def status_of(cert: x509.Certificate, soon_days: int = SOON_DAYS) -> tuple[str, int]:
    now = utcnow()
    days_left = (cert.not_valid_after_utc - now).days
    if now < cert.not_valid_before_utc:
        return "not-yet-valid", days_left
    if now >= cert.not_valid_after_utc:
        return "expired", days_left
    if days_left < soon_days:
        return "expiring", days_left
    return "valid", days_left


def describe(cert: x509.Certificate, path: Path | None = None) -> dict:
    status, days_left = status_of(cert)
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        eku = [eku_name(oid) for oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value]
    except x509.ExtensionNotFound:
        eku = []
    return {
        "path": str(path) if path else None,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "is_ca": is_ca,
        "key_type": key_type_of(cert.public_key()),
        "sans": san_strings(cert),
        "extended_key_usage": eku,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "days_left": days_left,
        "status": status,
        "fingerprint_sha256": _fingerprint(cert, hashes.SHA256()),
        "fingerprint_sha1": _fingerprint(cert, hashes.SHA1()),
        "host_subject": host_subject(cert.subject),
    }


def show(path: Path) -> dict:
    real = resolve_cert_path(path)
    return describe(load_cert(real), real)
