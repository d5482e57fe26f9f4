"""A folder served over WebDAV to a guest, for `spicectl share` (and webdav_link.serve_webdav).

WsgiDAV (the WebDAV protocol: PROPFIND, GET, PUT, MOVE, locks) runs under cheroot on a UNIX
socket in a private 0700 directory: nothing but this process reaches it, and each guest
connection that spice-webdavd carries over SPICE becomes one connection to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from pathlib import Path

from spicectl.errors import EnvironmentProblem, InvalidInput
from spicectl.paths import umask

SOCKET = "webdav.sock"
LOCK = "lock"                  # held while the share runs: a folder whose lock is free was left by a kill
DIR_PREFIX = "spicectl-share-"
PART_SUFFIX = ".spicectl-part"  # an upload on its way, beside the file it will replace
DEFAULT_MAX_UPLOAD = 4 << 30   # bytes one PUT may write


def clean_stale(tmp: Path | None = None) -> list[Path]:
    """Remove the private folders of shares that were killed (their lock is free); the ones removed."""
    removed = []
    for folder in Path(tmp or tempfile.gettempdir()).glob(DIR_PREFIX + "*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.lstat().st_uid != os.getuid():
                continue
            fd = os.open(folder / LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue   # a share that runs
        finally:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _provider(root: str, *, writable: bool, max_upload: int):
    """WsgiDAV's filesystem provider, with uploads that land whole or not at all.

    WsgiDAV writes a PUT straight into the file (truncating it first): a share killed, or a guest
    connection dropped, half-way through left half a file and the old content gone. Here a PUT
    writes a temporary file in the same folder and renames it over the old one once the whole body
    (as long as its Content-Length says) is on disk; anything less leaves the old file as it was.
    """
    from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_FORBIDDEN, HTTP_REQUEST_ENTITY_TOO_LARGE, DAVError
    from wsgidav.dav_provider import DAVNonCollection
    from wsgidav.fs_dav_provider import FileResource, FilesystemProvider, FolderResource

    class Upload:
        """The file object a PUT writes: bounded, and synced before it may be renamed into place."""

        def __init__(self, fd: int, expected: int | None) -> None:
            self.file = os.fdopen(fd, "wb")
            self.written = 0
            self.expected = expected

        def write(self, data: bytes) -> None:
            self.written += len(data)
            if self.written > max_upload:
                raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, f"an upload of more than {max_upload} bytes")
            self.file.write(data)

        def close(self) -> None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if self.expected is not None and self.written != self.expected:
                raise DAVError(HTTP_BAD_REQUEST, f"{self.written} bytes of {self.expected} arrived")

    class AtomicFile(FileResource):
        def __init__(self, path: str, environ: dict, file_path: str, *, exists: bool = True) -> None:
            DAVNonCollection.__init__(self, path, environ)  # (FileResource's own stats a file that may not be)
            self._file_path = file_path
            self.name = os.path.basename(file_path)
            self.file_stat = os.stat(file_path) if exists else None
            self._part: str | None = None
            self._upload: Upload | None = None

        def begin_write(self, *, content_type=None):
            if self.provider.readonly:
                raise DAVError(HTTP_FORBIDDEN)
            length = self.environ.get("CONTENT_LENGTH")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > max_upload:
                raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, f"an upload of {expected} bytes")
            folder, name = os.path.split(self._file_path)
            fd, self._part = tempfile.mkstemp(prefix=f".{name}.", suffix=PART_SUFFIX, dir=folder)
            # the mode of the file it replaces; a new one's as the umask makes it
            mode = self.file_stat.st_mode & 0o7777 if self.file_stat else 0o666 & ~umask()
            os.fchmod(fd, mode)
            self._upload = Upload(fd, expected)
            return self._upload

        def end_write(self, *, with_errors: bool) -> None:
            part, self._part = self._part, None
            if part is None:
                return
            if with_errors:
                with contextlib.suppress(OSError):
                    os.unlink(part)
                return
            os.replace(part, self._file_path)
            self.file_stat = os.stat(self._file_path)

    class Folder(FolderResource):
        def create_empty_resource(self, name: str):
            # nothing on disk until the whole upload is: a new file appears complete or not at all
            if self.provider.readonly:
                raise DAVError(HTTP_FORBIDDEN)
            path = self.path.rstrip("/") + "/" + name
            return AtomicFile(path, self.environ, self.provider._loc_to_file_path(path, self.environ), exists=False)

    class Provider(FilesystemProvider):
        def get_resource_inst(self, path: str, environ: dict):
            self._count_get_resource_inst += 1
            fp = self._loc_to_file_path(path, environ)
            if not os.path.exists(fp):
                return None
            if os.path.islink(fp):
                raise DAVError(HTTP_FORBIDDEN, "links are not followed")
            if os.path.isdir(fp):
                return Folder(path, environ, fp)
            return AtomicFile(path, environ, fp)

    return Provider(root, readonly=not writable, fs_opts={})


def _whole_error_bodies(app):
    """WSGI middleware: an error response's Content-Length is the length of the body really sent.

    WsgiDAV answers some refusals (a path with '..' in it, for one) with a Content-Length of 431 and
    no body; a guest client on a kept-alive connection then waits for ever for bytes that never
    come (10 s and a timeout in the guest). Error bodies are small: they are read whole here.
    """
    def wrapped(environ, start_response):
        held: list = []

        def hold(status, headers, exc_info=None):
            code = str(status).strip()[:3]
            if not code.isdigit() or int(code) < 400:
                return start_response(status, headers, exc_info)
            held[:] = [status, headers, exc_info]
            return lambda data: None

        result = app(environ, hold)   # (WsgiDAV starts its response as it is iterated)

        def body():
            kept = []
            try:
                for chunk in result:
                    if held:
                        kept.append(chunk)
                    else:
                        yield chunk
            finally:
                if hasattr(result, "close"):
                    result.close()
            if held:
                data = b"".join(kept)[:1 << 16]
                status, headers, exc_info = held
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                start_response(status, headers + [("Content-Length", str(len(data)))], exc_info)
                yield data

        return body()

    return wrapped


class FolderServer:
    """Serves `folder` (read-only unless `writable`) until closed; `socket_path` is where."""

    def __init__(self, folder: Path, *, writable: bool, max_upload: int = DEFAULT_MAX_UPLOAD) -> None:
        if not folder.is_dir():
            raise InvalidInput(f"{folder} is not a directory")
        try:
            from cheroot import wsgi
            from wsgidav.wsgidav_app import WsgiDAVApp
        except ImportError as exc:
            raise EnvironmentProblem(f"folder sharing needs WsgiDAV and cheroot ({exc.name} is not installed)",
                                     hint="pip install 'spicectl[share]'") from None

        clean_stale()
        app = WsgiDAVApp({
            "provider_mapping": {"/": _provider(str(folder.resolve()), writable=writable, max_upload=max_upload)},
            "simple_dc": {"user_mapping": {"*": True}},  # the guest's own programs: SPICE authenticated the session
            "verbose": 0,
            "logging": {"enable": False, "enable_loggers": []},
            "dir_browser": {"enable": True},
        })
        self._dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))  # 0700
        self._lock = os.open(self._dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.socket_path = str(self._dir / SOCKET)
        self._server = wsgi.Server(self.socket_path, _whole_error_bodies(app))
        self._server.prepare()
        self._thread = threading.Thread(target=self._server.serve, name="webdav", daemon=True)
        self._thread.start()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the server, for one guest connection (`webdav_link.serve_webdav`'s connector)."""
        return await asyncio.open_unix_connection(self.socket_path)

    def close(self) -> None:
        self._server.stop()
        self._thread.join(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)
        os.close(self._lock)

    def __enter__(self) -> FolderServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
