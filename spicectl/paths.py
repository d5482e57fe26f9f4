"""Where spicectl's state and config live by default: standard library only, so that the
fast path in front of every command (spicectl.holder.fast) can find the state dir cheaply."""

from __future__ import annotations

import os
from pathlib import Path


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_state_dir() -> Path:
    if _is_root():
        return Path("/var/lib/spicectl")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "spicectl"


def default_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "spicectl"


def config_file_path() -> Path:
    explicit = os.environ.get("SPICECTL_CONFIG")
    if explicit:
        return Path(explicit)
    user = default_config_dir() / "spicectl.toml"
    if not user.exists() and _is_root() and Path("/etc/spicectl/spicectl.toml").exists():
        return Path("/etc/spicectl/spicectl.toml")
    return user
