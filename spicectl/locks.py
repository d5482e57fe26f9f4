"""Exclusive flock locks on a file or a folder: one helper for every lock spicectl takes.

A lock file is made 0600 and never opened through a link (a link there would lock, or create,
a file of someone else's); a folder is locked on its own descriptor, leaving no file behind.
Whoever holds a lock may be asked to let go: `on_busy` runs once, when the lock is first
found held (the session holder is asked to exit that way).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from spicectl.errors import EnvironmentProblem, TimeoutExpired

POLL = 0.05   # seconds between tries while another process holds the lock


def _open(path: Path) -> int:
    try:
        if path.is_dir():
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot open {path} to lock it: {exc.strerror}") from None


def try_lock(path: Path) -> int | None:
    """The locked descriptor (close it to let go), or None if another process holds the lock."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock(path: Path, *, wait: float | None, busy: str, on_busy: Callable[[], None] | None = None,
         poll: float = POLL) -> int:
    """Wait up to `wait` seconds (None: for ever) for the lock; TimeoutExpired(`busy`) after that."""
    fd = _open(path)
    deadline = None if wait is None else time.monotonic() + wait
    asked = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        except BaseException:
            os.close(fd)
            raise
        if not asked and on_busy is not None:
            asked = True
            try:
                on_busy()
            except BaseException:
                os.close(fd)
                raise
            continue
        if deadline is not None and time.monotonic() > deadline:
            os.close(fd)
            raise TimeoutExpired(busy)
        time.sleep(poll)
