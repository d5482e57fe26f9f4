"""Image recipes: TOML files in the shipped `images/` folder or the user's own.

A recipe names a Debian suite, the packages to install, folders of files laid
over the root filesystem (`images/files/NAME/`), systemd units to enable, the
filesystem size and the kernel command line. Its digest covers everything
that changes the built image (not its description), so an unchanged recipe
is a cache hit and any change rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spicectl.domain.units import parse_size_kib
from spicectl.errors import InvalidInput, NotFound, SpicectlError
from spicectl.files import open_regular
from spicectl.resources import data_dir

# Bump when the way an image is built changes, so every cached image is rebuilt.
BUILD_FORMAT = 1

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?")
_UNIT = re.compile(r"[A-Za-z0-9@._:-]+\.(service|target|timer|socket|path|mount)")
_SUITE = re.compile(r"[a-z][a-z0-9-]*")

# key -> (type, required, what it is); the one description of a recipe file
KEYS: dict[str, tuple[str, bool, str]] = {   # kind (files.KINDS), required, what it is
    "description": ("str", False, "one line shown by `image list`"),
    "suite": ("str", True, "Debian suite, e.g. bookworm (from the host's apt sources)"),
    "packages": ("list", True, "Debian packages to install (with their dependencies)"),
    "exclude": ("list", False, "dpkg path-exclude globs: files left out of the image"),
    "overlays": ("list", False, "folders under images/files/ copied over the root filesystem, in order"),
    "enable": ("list", False, "systemd units to enable"),
    "size": ("str", True, "filesystem size, e.g. 2G (the image file is sparse)"),
    "cmdline": ("str", True, "kernel command line"),
    "template": ("str", False, "VM template a guest from this image starts from"),
}


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    builtin: bool
    description: str
    suite: str
    packages: tuple[str, ...]
    exclude: tuple[str, ...]
    overlays: tuple[Path, ...]
    enable: tuple[str, ...]
    size_bytes: int
    cmdline: str
    template: str | None

    def digest(self) -> str:
        """sha256 over what the image is made of: settings and every overlay file's path, bytes and executable bit.

        Only the executable bit of a mode counts: it is all git keeps, so clones agree whatever their umask.
        """
        h = hashlib.sha256()
        settings = {"format": BUILD_FORMAT, "suite": self.suite, "packages": self.packages, "exclude": self.exclude,
                    "enable": self.enable, "size": self.size_bytes, "cmdline": self.cmdline}
        h.update(json.dumps(settings, sort_keys=True).encode())
        for overlay in self.overlays:
            h.update(b"\0overlay\0" + overlay.name.encode())
            for path in sorted(p for p in overlay.rglob("*") if not p.is_dir()):
                rel = path.relative_to(overlay).as_posix()
                if path.is_symlink():
                    data = str(path.readlink()).encode()
                    h.update(f"\0{rel}\0l\0{len(data)}\0".encode() + data)
                    continue
                # open_regular: a FIFO here would block the digest (and `image list`) for ever
                with open_regular(path, f"{self.name}'s overlay file") as fh:
                    info = os.fstat(fh.fileno())
                    kind = "x" if info.st_mode & 0o111 else "-"
                    h.update(f"\0{rel}\0{kind}\0{info.st_size}\0".encode())
                    left = info.st_size
                    while left and (chunk := fh.read(min(left, 1 << 20))):
                        h.update(chunk)
                        left -= len(chunk)
                    if left:
                        raise InvalidInput(f"{path} changed while it was read")
        return h.hexdigest()


def _dirs(user_dir: Path | None) -> list[tuple[Path, bool]]:
    dirs = [(data_dir("images"), True)]
    if user_dir is not None and user_dir.is_dir():
        dirs.append((user_dir, False))
    return dirs


def _strings(value: Any, key: str, source: str, pattern: re.Pattern | None = None) -> tuple[str, ...]:
    for item in value:
        if not isinstance(item, str):
            raise InvalidInput(f"{source}: {key} must be a list of strings, not {value!r}")
        if pattern is not None and not pattern.fullmatch(item):
            raise InvalidInput(f"{source}: {key} entry {item!r} is not a valid name")
        if any(ord(c) < 32 for c in item):
            raise InvalidInput(f"{source}: {key} entry {item!r} holds a control character")
    return tuple(value)


def _overlay(name: str, directories: list[tuple[Path, bool]], source: str) -> Path:
    for directory, _builtin in reversed(directories):
        path = directory / "files" / name
        if path.is_dir():
            return path
    raise InvalidInput(f"{source}: no overlay folder files/{name}",
                       hint="overlays name folders under images/files/ (or the same under your recipes folder)")


def load_file(path: Path, builtin: bool = False, user_dir: Path | None = None) -> Recipe:
    source = f"image recipe {path}"
    from spicectl.files import check_fields, read_toml

    values = read_toml(path, "image recipe")
    check_fields(values, {key: kind for key, (kind, _required, _what) in KEYS.items()}, source)
    missing = [k for k, (_t, required, _d) in KEYS.items() if required and k not in values]
    if missing:
        raise InvalidInput(f"{source}: missing {', '.join(missing)}")
    suite = values["suite"]
    if not _SUITE.fullmatch(suite):
        raise InvalidInput(f"{source}: suite {suite!r} is not a Debian suite name")
    cmdline = values["cmdline"]
    if any(ord(c) < 32 for c in cmdline):
        raise InvalidInput(f"{source}: cmdline holds a control character")
    size_kib = parse_size_kib(values["size"], what=f"{source}: size")
    if size_kib < 256 * 1024:
        raise InvalidInput(f"{source}: size {values['size']!r} is too small (at least 256M)")
    directories = _dirs(user_dir) if builtin else [*_dirs(user_dir), (path.parent, False)]
    return Recipe(
        name=path.stem, path=path, builtin=builtin,
        description=values.get("description", ""),
        suite=suite,
        packages=_strings(values["packages"], "packages", source, _PACKAGE),
        exclude=_strings(values.get("exclude", []), "exclude", source),
        overlays=tuple(_overlay(n, directories, source)
                       for n in _strings(values.get("overlays", []), "overlays", source, _NAME)),
        enable=_strings(values.get("enable", []), "enable", source, _UNIT),
        size_bytes=size_kib * 1024,
        cmdline=cmdline,
        template=values.get("template"),
    )


def list_recipes(user_dir: Path | None = None, problems: list[SpicectlError] | None = None) -> list[Recipe]:
    """Every recipe; with `problems`, one that cannot be read is left out and its error kept there (one
    bad recipe of the user's does not hide the others), else it is raised."""
    found: dict[str, Recipe] = {}
    for directory, builtin in _dirs(user_dir):
        for path in sorted(directory.glob("*.toml")):
            try:
                found[path.stem] = load_file(path, builtin, user_dir)  # the user's recipe shadows a built-in one
            except (InvalidInput, NotFound) as exc:
                if problems is None:
                    raise
                found.pop(path.stem, None)
                problems.append(InvalidInput(exc.message, exc.hint))
    return sorted(found.values(), key=lambda r: r.name)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"invalid image name {name!r}", hint="letters, digits, '.', '_' and '-'")
    return name


def load_recipe(name: str, user_dir: Path | None = None) -> Recipe:
    if "/" in name or name.endswith(".toml"):
        path = Path(name)
        check_name(path.stem)
        return load_file(path, False, user_dir)
    check_name(name)
    for directory, builtin in reversed(_dirs(user_dir)):
        path = directory / f"{name}.toml"
        if path.is_file():
            return load_file(path, builtin, user_dir)
    names = [r.name for r in list_recipes(user_dir, problems=[])]
    raise InvalidInput(f"no image recipe {name!r}", hint="recipes: " + ", ".join(names))
