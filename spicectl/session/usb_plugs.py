"""What a running `usb share` has plugged into a guest, kept where `usb status` can read it.

A SPICE server serves one client at a time: `usb status` linking the guest's
channels would cut a running share off. So a share keeps a small file in the
state dir (STATE_DIR/usb-shares/GUEST.json, 0600) while it runs, rewritten on
each change, and `usb status` reports from it, without connecting, while the
process that wrote it lives.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

DIRECTORY = "usb-shares"
LIMIT = 64 * 1024


@dataclass
class Plug:
    channel: int
    device: str        # "cd" | "disk"
    file: str
    writable: bool
    state: str         # "plugging" | "attached" | "released"


def _path(state_dir: Path, name: str) -> Path:
    return state_dir / DIRECTORY / (quote(name, safe="") + ".json")


class ShareRecord:
    """This process's share of guest `name`: written as the plugs change, removed when it ends."""

    def __init__(self, state_dir: Path, name: str, plugs: list[Plug]) -> None:
        self.path = _path(state_dir, name)
        self.name = name
        self.plugs = plugs

    def write(self) -> None:
        from spicectl.pki.store import atomic_write, ensure_dir

        ensure_dir(self.path.parent)
        data = {"pid": os.getpid(), "name": self.name, "plugs": [asdict(p) for p in self.plugs]}
        atomic_write(self.path, json.dumps(data).encode(), 0o600)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def running_share(state_dir: Path, name: str) -> tuple[int, list[Plug]] | None:
    """The pid and plugs of a live `usb share` of guest `name`, if one runs; a stale record is removed."""
    from spicectl.files import read_text

    path = _path(state_dir, name)
    if not path.is_file() or path.is_symlink():
        return None
    try:
        data = json.loads(read_text(path, "usb share record", LIMIT))
        pid = int(data["pid"])
        plugs = [Plug(int(p["channel"]), str(p["device"]), str(p["file"]), bool(p["writable"]), str(p["state"]))
                 for p in data["plugs"]]
    except (ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    except PermissionError:
        pass
    return pid, plugs
