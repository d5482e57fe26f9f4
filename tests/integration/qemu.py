"""A bare QEMU with a SPICE server, for tests that need the real server but not libvirt."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require_binary


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited early: {proc.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"QEMU did not listen on {port} within {timeout}s")


@contextmanager
def qemu_spice(spice_opts: str, port: int, *, paused: bool = True, env: dict | None = None,
               monitor: bool = False) -> Iterator[subprocess.Popen]:
    """Start a diskless QEMU (TCG; paused, or running SeaBIOS) whose SPICE server listens on 127.0.0.1:port;
    with `monitor`, its human monitor on stdin."""
    qemu = require_binary("qemu-system-x86_64")
    proc = subprocess.Popen(
        [qemu, "-machine", "pc,accel=tcg", *(["-S"] if paused else []), "-nodefaults", "-display", "none",
         "-vga", "qxl", "-m", "64", "-spice", spice_opts, *(["-monitor", "stdio"] if monitor else [])],
        stdin=subprocess.PIPE if monitor else subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env, text=monitor or None,
    )
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def x509_opts(cert_dir: Path, tls_port: int) -> str:
    return f"tls-port={tls_port},addr=127.0.0.1,x509-dir={cert_dir},disable-ticketing=on"
