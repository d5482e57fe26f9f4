"""Reading the small files users hand spicectl (templates, profiles, recipes, certificates, secrets).

Bounded: `/dev/zero` or a huge file is refused after `limit` bytes instead of filling memory;
a directory, a missing file or bytes that are not UTF-8 text are one clear error each.
"""

from __future__ import annotations

from pathlib import Path

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
