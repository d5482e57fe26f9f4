"""VM profiles as TOML: the built-in ones in templates/, plus the user's own folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spicectl.domain.build import check_value_types
from spicectl.errors import InvalidInput
from spicectl.resources import data_dir


@dataclass
class Template:
    name: str
    path: Path
    values: dict[str, Any]
    builtin: bool

    @property
    def description(self) -> str:
        return self.values.get("description", "")


def _dirs(user_dir: Path | None) -> list[tuple[Path, bool]]:
    dirs = [(data_dir("templates"), True)]
    if user_dir is not None and user_dir.is_dir():
        dirs.append((user_dir, False))
    return dirs


def list_templates(user_dir: Path | None = None) -> list[Template]:
    found: dict[str, Template] = {}
    for directory, builtin in _dirs(user_dir):
        for path in sorted(directory.glob("*.toml")):
            found[path.stem] = load_file(path, builtin)  # the user's file shadows a built-in one
    return sorted(found.values(), key=lambda t: t.name)


def load_file(path: Path, builtin: bool = False) -> Template:
    from spicectl.files import read_toml

    values = read_toml(path, "template")
    check_value_types(values, f"template {path}")
    return Template(path.stem, path, values, builtin)


def load_template(name: str, user_dir: Path | None = None) -> Template:
    if "/" in name or name.endswith(".toml"):
        return load_file(Path(name))
    for directory, builtin in reversed(_dirs(user_dir)):
        path = directory / f"{name}.toml"
        if path.is_file():
            return load_file(path, builtin)
    names = [t.name for t in list_templates(user_dir)]
    # A usage error rather than NotFound: the name is an option value the user typed.
    raise InvalidInput(f"no template {name!r}", hint="templates: " + ", ".join(names))
