"""A folder served over WebDAV to a guest, for `spicectl share` (and the client's serve_webdav).

WsgiDAV (the WebDAV protocol: PROPFIND, GET, PUT, MOVE, locks) runs under cheroot on a UNIX
socket in a private 0700 directory: nothing but this process reaches it, and each guest
connection that spice-webdavd carries over SPICE becomes one connection to it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path

from spicectl.errors import InvalidInput

SOCKET = "webdav.sock"


class FolderServer:
    """Serves `folder` (read-only unless `writable`) until closed; `socket_path` is where."""

    def __init__(self, folder: Path, *, writable: bool) -> None:
        if not folder.is_dir():
            raise InvalidInput(f"{folder} is not a directory")
        from cheroot import wsgi
        from wsgidav.wsgidav_app import WsgiDAVApp

        app = WsgiDAVApp({
            "provider_mapping": {"/": {"root": str(folder.resolve()), "readonly": not writable}},
            "simple_dc": {"user_mapping": {"*": True}},  # the guest's own programs: SPICE authenticated the session
            "verbose": 0,
            "logging": {"enable": False, "enable_loggers": []},
            "dir_browser": {"enable": True},
        })
        self._dir = Path(tempfile.mkdtemp(prefix="spicectl-share-"))  # 0700
        self.socket_path = str(self._dir / SOCKET)
        self._server = wsgi.Server(self.socket_path, app)
        self._server.prepare()
        self._thread = threading.Thread(target=self._server.serve, name="webdav", daemon=True)
        self._thread.start()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the server, for one guest connection (`Client.serve_webdav`'s connector)."""
        return await asyncio.open_unix_connection(self.socket_path)

    def close(self) -> None:
        self._server.stop()
        self._thread.join(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FolderServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
