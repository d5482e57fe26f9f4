"""What the holder process keeps between commands and lends to each one it runs: libvirt
connections by URI and SPICE sessions by guest. The CLI finds it on `App.runtime` (None in
every other process) and asks it, instead of opening its own."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from spicectl.holder.warm import WarmSessions
from spicectl.virt.connection import Hypervisor, open_hypervisor


class _Borrowed(Hypervisor):
    """A pooled connection lent to one command: closing it leaves it open for the next."""

    def close(self) -> None:
        pass


def _alive(hv: Hypervisor) -> bool:
    try:
        return bool(hv.conn.isAlive())
    except Exception:  # libvirt raises its own error class for a dead connection
        return False


class Runtime:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.warm = WarmSessions(loop)
        self._pool: dict[tuple[str | None, str], Hypervisor] = {}
        self._lock = threading.Lock()   # commands run in threads of their own: one connection per URI

    def hypervisor(self, connect: str | None, state_dir: Path, *, pki_dir: Path | None = None,
                   passphrase: bytes | None = None, prepare: bool = True) -> Hypervisor:
        """The pooled connection for this URI (opened, or opened again if it died). The private
        default's lock stays with the pooled connection for the holder's life."""
        key = (connect, str(state_dir))
        with self._lock:
            hv = self._pool.get(key)
            if hv is None or hv.conn is None or not _alive(hv):
                if hv is not None:
                    hv.close()
                hv = self._pool[key] = open_hypervisor(connect, state_dir, pki_dir=pki_dir, passphrase=passphrase,
                                                       prepare=prepare)
        return _Borrowed(hv.conn, hv.location)
