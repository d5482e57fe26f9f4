"""Reading the small files users hand spicectl (templates, profiles, recipes, certificates, secrets).

Bounded: `/dev/zero` or a huge file is refused after `limit` bytes instead of filling memory;
a directory, a missing file or bytes that are not UTF-8 text are one clear error each. The TOML
ones (config, templates, recipes, profiles) are read by `read_toml` and their keys checked by
`check_fields`, against a table of each key's kind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from spicectl.errors import InvalidInput, NotFound

LIMIT = 1 << 20


def read_bytes(path: Path, what: str, limit: int = LIMIT) -> bytes:
    """A regular file's bytes: a FIFO (which would block), a device or a directory is refused."""
    with open_regular(path, what) as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InvalidInput(f"{what} {path} is larger than {limit} bytes")
    return data


def read_text(path: Path, what: str, limit: int = LIMIT) -> str:
    try:
        return read_bytes(path, what, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} {path} is not UTF-8 text") from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's table (`what`: "template", "config file"...), or one clear error."""
    import tomllib

    text = read_text(path, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{what} {path} is not valid TOML: {exc}") from None


# what a key of a TOML file may hold, by the kind its table names
KINDS: dict[str, Callable[[object], bool]] = {
    "str": lambda v: isinstance(v, str),
    "non-empty string": lambda v: isinstance(v, str) and bool(v),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "size": lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),   # "2G", or MiB
    "list": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "any": lambda v: True,   # checked by whoever reads it, with its own words
}


def check_fields(values: dict[str, Any], kinds: dict[str, str], source: str) -> None:
    """Every key of `values` is one of `kinds` and holds that kind: else one error naming the key."""
    import difflib

    for key, value in values.items():
        if key not in kinds:
            close = difflib.get_close_matches(key, kinds, n=1)
            raise InvalidInput(f"{source}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                               hint="known keys: " + ", ".join(sorted(kinds)))
        kind = kinds[key]
        if not KINDS[kind](value):
            raise InvalidInput(f"{source}: {key} must be {'a list of strings' if kind == 'list' else 'a ' + kind}, "
                               f"not {value!r}")


def open_regular(path: Path, what: str):
    """A regular file opened for reading (binary), without blocking on a FIFO: a device, a FIFO or a
    directory is refused. Its size is fstat's."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"no {what} at {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory, not a file" if stat.S_ISDIR(mode) else "not a regular file"
        raise InvalidInput(f"{what} {path} is {kind}")
    return os.fdopen(fd, "rb")
