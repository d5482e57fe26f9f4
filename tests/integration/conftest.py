"""Real libvirt + QEMU: spicectl runs as separate processes against one private embedded root.

Each test session gets its own state dir; every guest is removed at the end
(`spicectl host stop`, then `vm delete`), so no QEMU outlives the suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from spicectl.spice import link
from tests.conftest import require_binary

SPICECTL = [sys.executable, "-m", "spicectl"]


@dataclass
class Proc:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


class Spicectl:
    def __init__(self, state_dir: Path, config: Path) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, "SPICECTL_STATE_DIR": str(state_dir), "SPICECTL_CONFIG": str(config)}
        for key in ("SPICECTL_CONNECT", "LIBVIRT_DEFAULT_URI", "SPICECTL_CA_PASSPHRASE"):
            self.env.pop(key, None)

    def __call__(self, *args: str, check: bool = True, timeout: float = 180) -> Proc:
        r = subprocess.run([*SPICECTL, *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"spicectl {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return Proc(r.returncode, r.stdout, r.stderr)

    @property
    def root(self) -> Path:
        return self.state_dir / "libvirt"

    @property
    def ca_file(self) -> str:
        return str(self.state_dir / "ca" / "ca-cert.pem")

    def domain_log(self, name: str) -> str:
        return (self.root / "log" / "qemu" / f"{name}.log").read_text()


@pytest.fixture(scope="session")
def spicectl(tmp_path_factory) -> Spicectl:
    require_binary("qemu-system-x86_64")
    base = tmp_path_factory.mktemp("embedded")
    sc = Spicectl(base / "state", base / "no-config.toml")
    yield sc
    sc("host", "stop", "--timeout", "1", check=False)
    listed = sc("vm", "list", "--json", check=False)
    if listed.exit_code == 0:
        for vm in listed.json():
            sc("vm", "delete", vm["name"], check=False)


async def _tls_link(port: int, cafile: str, password: bytes | None, channel: int = link.MAIN) -> link.LinkReply:
    ctx = ssl.create_default_context(cafile=cafile)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    try:
        return await link.link(reader, writer, channel_type=channel, password=password)
    finally:
        writer.close()


def spice_link(port: int, cafile: str, password: bytes | None) -> link.LinkReply:
    return asyncio.run(_tls_link(port, cafile, password))
