"""Certificate profiles: key type, lifetime and usages, as TOML.

Built-in profiles live in the top-level `pki/` folder; a file of the same
name in the user's pki dir overrides individual keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spicectl.errors import InvalidInput, NotFound
from spicectl.resources import data_dir

KEY_TYPES = ("rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384")
KEY_USAGES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign",
)
EXTENDED_KEY_USAGES = ("server_auth", "client_auth")
PROFILE_NAMES = ("ca", "server", "client")


@dataclass(frozen=True)
class Profile:
    name: str
    key_type: str = "ec-p256"
    days: int = 365
    organization: str = "spicectl"
    is_ca: bool = False
    path_length: int | None = None
    key_usage: tuple[str, ...] = ("digital_signature",)
    extended_key_usage: tuple[str, ...] = field(default_factory=tuple)

    def with_overrides(self, *, key_type: str | None = None, days: int | None = None) -> Profile:
        changes: dict[str, Any] = {}
        if key_type is not None:
            changes["key_type"] = check_key_type(key_type)
        if days is not None:
            changes["days"] = check_days(days)
        return replace(self, **changes)


def check_key_type(value: str) -> str:
    if value not in KEY_TYPES:
        raise InvalidInput(f"unknown key type {value!r}", hint="valid key types: " + ", ".join(KEY_TYPES))
    return value


def check_days(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"lifetime must be a positive number of days, not {value!r}")
    if value > 36500:
        raise InvalidInput(f"lifetime of {value} days is over 100 years")
    return value


# what a profile file's keys hold (files.KINDS); days is checked by check_days, in its own words
KINDS = {"key_type": "str", "organization": "str", "is_ca": "bool", "path_length": "int", "key_usage": "list",
         "extended_key_usage": "list", "days": "any"}


def _apply(profile: Profile, data: dict, source: Path) -> Profile:
    from spicectl.files import check_fields

    check_fields(data, KINDS, str(source))
    values = dict(data)
    try:
        if values.get("organization") == "" or any(ord(c) < 32 for c in values.get("organization", "")):
            raise InvalidInput(f"organization {values['organization']!r} must be non-empty text")
        if values.get("path_length") is not None and not 0 <= values["path_length"] <= 16:
            raise InvalidInput(f"path_length must be a whole number from 0 to 16, not {values['path_length']!r}")
        if "key_type" in values:
            check_key_type(values["key_type"])
        if "days" in values:
            check_days(values["days"])
        for key, allowed in (("key_usage", KEY_USAGES), ("extended_key_usage", EXTENDED_KEY_USAGES)):
            if key in values:
                bad = [u for u in values[key] if u not in allowed]
                if bad:
                    raise InvalidInput(f"unknown {key} {bad[0]!r}", hint="valid: " + ", ".join(allowed))
                values[key] = tuple(values[key])
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: {exc.message}", hint=exc.hint) from None
    return replace(profile, **values)


def _read(path: Path) -> dict:
    from spicectl.files import read_toml

    return read_toml(path, "certificate profile")


def load_profile(name: str, user_dir: Path | None = None) -> Profile:
    if name not in PROFILE_NAMES:
        raise NotFound(f"no certificate profile {name!r}", hint="profiles: " + ", ".join(PROFILE_NAMES))
    builtin = data_dir("pki") / f"{name}.toml"
    profile = _apply(Profile(name=name), _read(builtin), builtin)
    if user_dir is not None:
        override = user_dir / f"{name}.toml"
        if override.is_file():
            profile = _apply(profile, _read(override), override)
    return profile
