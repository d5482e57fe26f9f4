"""`cert verify`: check a certificate directory the way QEMU and a SPICE client will use it.

Each check is independent and explains its own failure, so one run lists every
fault rather than stopping at the first.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from spicectl.errors import SpicectlError
from spicectl.pki.ca import CA_CERT, EKU_OIDS, load_cert
from spicectl.pki.inspect import status_of
from spicectl.pki.issue import find_leaf, key_name
from spicectl.pki.keys import load_key
from spicectl.pki.names import san_strings, sans_cover


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def _validity(cert: x509.Certificate, what: str) -> Check:
    status, days = status_of(cert)
    if status == "expired":
        return Check(f"{what}_validity", False, f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d}; renew it")
    if status == "not-yet-valid":
        return Check(f"{what}_validity", False,
                     f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the clock)")
    return Check(f"{what}_validity", True, f"{what} valid until {cert.not_valid_after_utc:%Y-%m-%d} ({days} days left)")


def verify_directory(directory: Path, *, host: str | None = None, trusted_ca: Path | None = None) -> list[Check]:
    """Every check of a certificate directory; with `trusted_ca`, also that its certificate chains to that CA."""
    checks: list[Check] = []
    try:
        kind, cert_path = find_leaf(directory)
    except SpicectlError as exc:
        return [Check("files", False, exc.message)]
    key_path = directory / key_name(kind)
    ca_path = directory / CA_CERT

    ca = cert = key = None
    try:
        ca = load_cert(ca_path)
    except SpicectlError as exc:
        checks.append(Check("ca_file", False, exc.message))
    try:
        cert = load_cert(cert_path)
    except SpicectlError as exc:
        checks.append(Check("cert_file", False, exc.message))
    try:
        key = load_key(key_path)
    except SpicectlError as exc:
        checks.append(Check("key_file", False, exc.message))
    if not checks:
        checks.append(
            Check("files", True, f"{ca_path.name}, {cert_path.name} and {key_path.name} present and readable")
        )

    if ca is not None:
        try:
            is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        checks.append(Check("ca_is_ca", is_ca, f"{CA_CERT} is a CA certificate" if is_ca else
                            f"{CA_CERT} is not a CA certificate (no basicConstraints CA:TRUE)"))
        checks.append(_validity(ca, "ca"))
    if cert is not None:
        checks.append(_validity(cert, kind))
        if ca is not None:
            try:
                cert.verify_directly_issued_by(ca)
                checks.append(Check("chain", True, f"{cert_path.name} is signed by {CA_CERT}"))
            except (ValueError, TypeError, InvalidSignature):
                checks.append(Check("chain", False,
                                    f"{cert_path.name} was not signed by the CA in {CA_CERT} "
                                    f"(issuer {cert.issuer.rfc4514_string()}, CA {ca.subject.rfc4514_string()})"))
        wanted = EKU_OIDS[f"{kind}_auth"]
        try:
            ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
            ok = wanted in ekus
        except x509.ExtensionNotFound:
            ok = True  # no EKU extension means no restriction
        checks.append(Check("usage", ok, f"certificate may be used for TLS {kind} authentication" if ok else
                            f"certificate's extended key usage does not allow TLS {kind} authentication"))
        if host is not None:
            covered = sans_cover(cert, host)
            sans = ", ".join(san_strings(cert)) or "none"
            checks.append(Check("host", covered, f"SANs cover {host}" if covered else
                                f"SANs ({sans}) do not cover {host}; clients checking the name will refuse"))
    if cert is not None and key is not None:
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        match = key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)
        checks.append(Check("key_match", match, f"{key_path.name} matches {cert_path.name}" if match else
                            f"{key_path.name} does not belong to {cert_path.name}"))
    if key_path.exists():
        mode = stat.S_IMODE(key_path.stat().st_mode)
        # Group read is allowed: a system libvirt runs QEMU as its own user and
        # the usual setup shares the key through that user's group (mode 0640).
        private = mode & 0o007 == 0
        checks.append(Check("key_permissions", private, f"{key_path.name} mode {mode:04o}" if private else
                            f"{key_path.name} mode {mode:04o} lets any user read it; chmod 600 {key_path}"))
    if trusted_ca is not None and cert is not None:
        checks.append(_chains_to(cert, cert_path, trusted_ca))
    return checks


def _chains_to(cert: x509.Certificate, cert_path: Path, trusted_ca: Path) -> Check:
    try:
        authority = load_cert(trusted_ca)
    except SpicectlError as exc:
        return Check("trusted_ca", False, f"cannot read spicectl's CA: {exc.message}")
    try:
        cert.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return Check("trusted_ca", False, f"{cert_path.name} was not issued by spicectl's current CA ({trusted_ca}); "
                                          "clients that trust that CA refuse it")
    return Check("trusted_ca", True, f"{cert_path.name} chains to spicectl's CA")
