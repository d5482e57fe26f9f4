from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from spicectl.cli.main import cli

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture(scope="module", params=["compiled", "python"])
def decoders(request):
    """Runs each test of a module with the compiled decoder loops, then again with the pure-Python
    reference (module-scoped so hypothesis examples share it)."""
    from spicectl.spice.codecs import accel

    saved = accel.native
    if request.param == "compiled":
        assert saved is not None, f"the compiled decoders are not built: {accel.why_not}"
    else:
        accel.native = None
    yield request.param
    accel.native = saved


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def run(state_dir: Path, tmp_path: Path, monkeypatch):
    """Run the CLI in-process with an isolated state dir and no user config."""
    monkeypatch.setenv("SPICECTL_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.delenv("SPICECTL_CA_PASSPHRASE", raising=False)
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    monkeypatch.delenv("SPICECTL_CONNECT", raising=False)

    def _run(*args: str, input: str | None = None, env: dict | None = None) -> Result:
        runner = CliRunner()
        full_env = {"SPICECTL_STATE_DIR": str(state_dir), **(env or {})}
        r = runner.invoke(cli, list(args), input=input, env=full_env, prog_name="spicectl")
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return Result(r.exit_code, r.stdout, r.stderr, r.exception)

    return _run


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on `address` now (the kernel's pick; another process may take it after)."""
    import socket

    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


async def echo_guest():
    """A stand-in for a guest's SPICE port: echoes bytes back, upper-cased (so direction is visible)."""
    import asyncio

    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, but CI must run this test (scripts/test installs it)")
        pytest.skip(f"{name} is not installed (scripts/test installs it)")
    return path


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true",
                     help="rewrite tests/golden/ from the current output instead of comparing")
