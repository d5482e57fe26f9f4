"""Files on disk: atomic writes with the right permissions, and the CA's layout.

Every file is written to a temporary file in the same directory and renamed
into place, so an interrupted run leaves either the old file or the new one,
never half of either. Private keys are 0600 from the moment they exist (the
temporary file is created with that mode), and their directories 0700.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spicectl.errors import Conflict, EnvironmentProblem, InvalidInput

KEY_MODE = 0o600
CERT_MODE = 0o644
PRIVATE_DIR_MODE = 0o700


def ensure_dir(path: Path, mode: int = PRIVATE_DIR_MODE) -> Path:
    """Make `path` (mode `mode`) unless it is there: a folder the user made keeps the mode they chose."""
    try:
        if path.is_dir():
            return path
        path.mkdir(parents=True, mode=mode)
        os.chmod(path, mode)  # mkdir's mode is filtered through the umask
    except FileExistsError:
        if path.is_dir():
            return path  # another process made it just now
        raise InvalidInput(f"{path} exists and is not a directory") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create directory {path}: {exc.strerror}") from None
    return path


@contextmanager
def locked_dir(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on a directory while its files are checked and written.

    Two writers that both saw no file and both wrote would each report success;
    under the lock the second sees the first one's files. The lock is on the
    directory itself (flock works on a directory's descriptor): no lock file is
    left in a folder the user chose."""
    from spicectl.locks import lock

    fd = lock(path, wait=None, busy="")
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def check_output_path(path: Path) -> None:
    """Refuse, before any work, a file path that cannot be written: a directory, or one in no directory."""
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise InvalidInput(f"{path.parent} is not a directory", hint="create it first, or write elsewhere")


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` via a same-directory temp file and rename; into a character device or a
    FIFO (-o /dev/null, a named pipe) it is written as it is: renaming over one would put a regular
    file in its place (as root, /dev/null itself)."""
    check_output_path(path)
    try:
        kind = os.stat(path).st_mode
    except OSError:
        kind = 0
    if stat.S_ISCHR(kind) or stat.S_ISFIFO(kind):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write {path}: {exc.strerror or exc}") from None
        return
    if kind and not stat.S_ISREG(kind):
        raise InvalidInput(f"{path} is not a regular file, a character device or a FIFO: nothing is written there")
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write in {directory}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):  # a full disk, a quota: the old file is untouched
            raise EnvironmentProblem(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


@contextmanager
def staged_files(targets: dict[Path, tuple[bytes, int]], *, force: bool) -> Iterator[None]:
    """Write several files so that either all of them land or none.

    Checks for clobbering first (unless `force`), writes every file to a
    temporary name, and renames them all only after every write succeeded.
    The body of the `with` runs after staging and before the renames; if it
    raises, nothing is renamed.
    """
    if not force:
        existing = [p for p in targets if p.exists()]
        if existing:
            raise Conflict(
                f"{existing[0]} already exists",
                hint="pass --force to replace it, or choose another --out directory",
            )
    staged: list[tuple[str, Path]] = []
    try:
        for path, (data, mode) in targets.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        yield
        for tmp, path in staged:
            os.replace(tmp, path)
        staged.clear()
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {exc.filename or 'file'}: {exc.strerror}") from None
    finally:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
