"""Subjects and subject alternative names: parsing user input, formatting for clients."""

from __future__ import annotations

import ipaddress
import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from spicectl.errors import InvalidInput

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

# Short names as OpenSSL prints them and spice-gtk's host-subject parser reads them.
_SHORT = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "emailAddress",
}


def parse_subject(text: str) -> x509.Name:
    """An RFC 4514 string such as 'CN=My CA,O=Example' (most specific first)."""
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise InvalidInput(f"invalid subject {text!r}: {exc}", hint="write it like 'CN=My CA,O=Example'") from None
    if not name.get_attributes_for_oid(NameOID.COMMON_NAME):
        raise InvalidInput(f"subject {text!r} has no CN")
    return name


def host_subject_of(der: bytes) -> str:
    """The host-subject of a DER certificate (as a TLS handshake hands it over)."""
    return host_subject(x509.load_der_x509_certificate(der).subject)


def host_subject(name: x509.Name) -> str:
    """The `host-subject` string remote-viewer and spice-gtk compare with the server's subject.

    spice-common's parser reads KEY=VALUE pairs in certificate order,
    separated by commas, with a backslash escaping a comma in a value.
    """
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            key = _SHORT.get(attr.oid, attr.oid.dotted_string)
            value = str(attr.value).replace("\\", "\\\\").replace(",", "\\,")
            parts.append(f"{key}={value}")
    return ",".join(parts)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise InvalidInput(f"{text!r} is not an IP address", hint="give DNS names with --dns") from None


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False


def check_dns(text: str) -> str:
    if is_ip(text):
        raise InvalidInput(f"{text!r} is an IP address, not a DNS name", hint="give it with --ip")
    name = text.rstrip(".")
    labels = name.split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            raise InvalidInput(f"wildcard {text!r} must cover a domain of two labels or more")
    if not name or len(name) > 253 or not labels or not all(_LABEL.match(label) for label in labels):
        raise InvalidInput(f"{text!r} is not a valid DNS name")
    return name.lower()


def build_sans(host: str, dns: list[str], ips: list[str]) -> list[x509.GeneralName]:
    """SANs covering the host (as DNS name or IP, whichever it is) and every extra name."""
    names: list[x509.GeneralName] = []
    seen: set[str] = set()

    def add(general: x509.GeneralName) -> None:
        key = f"{type(general).__name__}:{general.value}"
        if key not in seen:
            seen.add(key)
            names.append(general)

    if is_ip(host):
        add(x509.IPAddress(parse_ip(host)))
    else:
        add(x509.DNSName(check_dns(host)))
    for d in dns:
        add(x509.DNSName(check_dns(d)))
    for ip in ips:
        add(x509.IPAddress(parse_ip(ip)))
    return names


def san_strings(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = [f"DNS:{v}" for v in ext.get_values_for_type(x509.DNSName)]
    out += [f"IP:{v}" for v in ext.get_values_for_type(x509.IPAddress)]
    return out


def sans_cover(cert: x509.Certificate, host: str) -> bool:
    """Whether the certificate's SANs match `host` the way a TLS client checks it (RFC 6125)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if is_ip(host):
        ip = parse_ip(host)
        return ip in ext.get_values_for_type(x509.IPAddress)
    wanted = host.rstrip(".").lower()
    for pattern in ext.get_values_for_type(x509.DNSName):
        pattern = pattern.lower()
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted:
            first, rest = wanted.split(".", 1)
            if rest == pattern[2:] and first:
                return True
    return False
