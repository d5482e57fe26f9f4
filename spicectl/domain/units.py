"""Sizes and names as users type them, checked the way libvirt will check them."""

from __future__ import annotations

import re
from fractions import Fraction

from spicectl.errors import InvalidInput

# ASCII digits only: Python's \d and float() take any script's digits ('٣G' would be 3 GiB)
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_SIZE = re.compile(rf"^\s*({_NUMBER})\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE | re.ASCII)
_PLAIN = re.compile(rf"^\s*({_NUMBER})\s*$", re.ASCII)


def parse_number(text: str) -> Fraction | None:
    """A plain decimal number ('12', '0.5') of any length, exactly; None for anything else (signs,
    exponents, 'inf', '1_000', other scripts' digits)."""
    match = _PLAIN.match(text)
    return Fraction(match.group(1)) if match else None
_FACTOR_KIB = {"K": 1, "M": 1024, "G": 1024 ** 2, "T": 1024 ** 3}


def parse_size_kib(text: str | int, *, default_unit: str = "M", what: str = "size") -> int:
    """'2G', '512M', '512MiB', '1.5G', or a bare number in `default_unit`; returns KiB."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    match = _SIZE.match(str(text))
    if not match:
        raise InvalidInput(f"malformed {what} {text!r}", hint="write it like 2G, 512M or 1536 (MiB)")
    # exact: a float overflows to infinity on a 30-digit number
    number, unit = Fraction(match.group(1)), (match.group(2) or default_unit).upper()
    kib = int(number * _FACTOR_KIB[unit])
    if kib <= 0:
        raise InvalidInput(f"{what} {text!r} must be more than zero")
    return kib


def check_domain_name(name: str) -> str:
    """libvirt refuses empty names, '/' and newlines; we also refuse what breaks files and shells."""
    if not name:
        raise InvalidInput("the VM name is empty")
    if "/" in name or "\n" in name or "\0" in name:
        raise InvalidInput(f"invalid VM name {name!r}: libvirt names cannot contain '/' or newlines")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", name):
        raise InvalidInput(
            f"invalid VM name {name!r}",
            hint="use 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit",
        )
    return name


def check_choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise InvalidInput(f"unknown {what} {value!r}", hint=f"valid {what}s: " + ", ".join(valid))
    return value
