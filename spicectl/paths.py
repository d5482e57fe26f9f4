"""Where spicectl's state and config live by default, and the mode files are made with (the umask).

Plain strings and os.path underneath, so that the fast path in front of every command
(spicectl.holder.client) finds the state dir without importing pathlib or typing (together
half of a served command's start-up); settings.py gives the rest of spicectl Paths.
"""

from __future__ import annotations

import os

SYSTEM_CONFIG = "/etc/spicectl/spicectl.toml"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def state_dir_str() -> str:
    if _is_root():
        return "/var/lib/spicectl"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "spicectl")


def config_dir_str() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "spicectl")


def config_file_str() -> str:
    explicit = os.environ.get("SPICECTL_CONFIG")
    if explicit:
        return explicit
    user = os.path.join(config_dir_str(), "spicectl.toml")
    if not os.path.exists(user) and _is_root() and os.path.exists(SYSTEM_CONFIG):
        return SYSTEM_CONFIG
    return user


def umask() -> int:
    """This process's umask (reading it means setting it: it is set back at once)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
