"""Resolved configuration: option > environment (SPICECTL_*) > config file > default.

One `Settings` object is built by the CLI's root group and handed down; the
library takes the pieces it needs as arguments, never reading globals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from spicectl import paths
from spicectl.errors import InvalidInput

DEFAULT_HOST = "default"   # a [hosts] value naming spicectl's private libvirt
_KNOWN_KEYS = {"connect", "state_dir", "templates_dir", "pki_dir", "recipes_dir", "image_cache", "hosts",
               "max_memory"}


def load_config_file(path: Path) -> dict:
    if not path.exists():
        return {}
    from spicectl.files import check_fields, read_toml

    data = read_toml(path, "config file")
    check_fields(data, {key: "any" if key == "hosts" else "non-empty string" for key in _KNOWN_KEYS},
                 f"config file {path}")
    return data


def _image_cache(cfg: dict) -> Path | None:
    value = os.environ.get("SPICECTL_IMAGE_CACHE") or cfg.get("image_cache")
    return Path(value).expanduser().absolute() if value else None


@dataclass
class Settings:
    state_dir: Path
    connect: str | None = None
    config_path: Path | None = None
    templates_dir: Path | None = None
    pki_dir: Path | None = None
    recipes_dir: Path | None = None
    image_cache_option: Path | None = None
    hosts: dict[str, str] = field(default_factory=dict)
    max_memory: str | None = None    # a SPICE session's memory budget (--max-memory), as the user wrote it

    @classmethod
    def resolve(cls, *, connect: str | None = None, state_dir: str | None = None) -> Settings:
        """Build settings from explicit values (options or their env vars) over the config file."""
        path = Path(paths.config_file_str())
        cfg = load_config_file(path)
        cfg_dir = path.parent
        connect = connect or os.environ.get("LIBVIRT_DEFAULT_URI") or cfg.get("connect")
        if state_dir:
            sd = Path(state_dir)
        elif cfg.get("state_dir"):
            sd = Path(cfg["state_dir"]).expanduser()
        else:
            sd = Path(paths.state_dir_str())
        hosts = cfg.get("hosts", {})
        if not isinstance(hosts, dict) or not all(isinstance(v, str) for v in hosts.values()):
            raise InvalidInput(f"config file {path}: [hosts] must map names to libvirt URIs")
        if connect in hosts:  # --connect NAME: a host the config file names
            connect = None if hosts[connect] == DEFAULT_HOST else hosts[connect]
        return cls(
            state_dir=sd.expanduser().absolute(),
            connect=connect or None,
            config_path=path,
            templates_dir=Path(cfg.get("templates_dir", cfg_dir / "templates")).expanduser(),
            pki_dir=Path(cfg.get("pki_dir", cfg_dir / "pki")).expanduser(),
            recipes_dir=Path(cfg.get("recipes_dir", cfg_dir / "images")).expanduser(),
            image_cache_option=_image_cache(cfg),
            hosts=dict(hosts),
            max_memory=cfg.get("max_memory"),
        )

    @property
    def image_cache(self) -> Path:
        """Built guest images (the bases guests' disks are overlays on)."""
        return self.image_cache_option or self.state_dir / "os-images"

    @property
    def images_dir(self) -> Path:
        """Disk images spicectl creates for guests (removed with the guest)."""
        return self.state_dir / "images"

    @property
    def ca_dir(self) -> Path:
        return self.state_dir / "ca"

    @property
    def certs_dir(self) -> Path:
        return self.state_dir / "certs"
