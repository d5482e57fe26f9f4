"""A guest's serial console through libvirt's own console stream (what `virsh console` uses).

Scriptable: send text, then wait for a regular expression in what comes
back, re-sending after a while if nothing matched (a console opened early in
boot has no shell yet to read it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from spicectl.errors import Conflict, TimeoutExpired
from spicectl.virt.connection import Hypervisor, libvirt_error

WOULD_BLOCK = -2
POLL_SECONDS = 0.02


@dataclass
class ExpectResult:
    output: str
    match: str | None
    seconds: float


class Console:
    """One open console stream of a running guest."""

    def __init__(self, hv: Hypervisor, dom, *, force: bool = True) -> None:
        import libvirt

        if not dom.isActive():   # (lifecycle waits on consoles: console imports nothing of it)
            raise Conflict(f"{dom.name()} is not running", hint=f"spicectl vm start {dom.name()}")
        self._libvirt = libvirt
        self.stream = hv.conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
        try:
            dom.openConsole(None, self.stream, flags)
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, f"opening {dom.name()}'s console") from None
        self.name = dom.name()

    def read(self) -> bytes:
        """What has arrived (b'' if nothing yet)."""
        try:
            data = self.stream.recv(64 * 1024)
        except self._libvirt.libvirtError as exc:
            raise libvirt_error(exc, f"reading {self.name}'s console") from None
        if data == WOULD_BLOCK or data is None:
            return b""
        if isinstance(data, int):
            return b""
        if data == b"":
            raise Conflict(f"{self.name}'s console closed (the guest stopped?)")
        return data

    def drain(self, quiet: float = 0.3, limit: float = 2.0) -> bytes:
        """Read and return what is waiting, until `quiet` seconds pass with nothing new (at most `limit`)."""
        out = bytearray()
        end = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            data = self.read()
            if data:
                out += data
                last = time.monotonic()
            else:
                time.sleep(POLL_SECONDS)
        return bytes(out)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.stream.send(bytes(view))
            except self._libvirt.libvirtError as exc:
                raise libvirt_error(exc, f"writing to {self.name}'s console") from None
            if sent == WOULD_BLOCK or sent is None or sent < 0:
                time.sleep(POLL_SECONDS)
                continue
            view = view[sent:]

    def expect(self, pattern: str | None, *, send: bytes = b"", timeout: float = 30.0,
               retry_every: float | None = None, quiet_after: float = 1.0, on_output=lambda _b: None) -> ExpectResult:
        """Send `send`, then read until `pattern` matches (or, without one, until `quiet_after` s of silence).

        Output that was waiting before `send` (an earlier command's, queued in the console) is dropped
        first, so `pattern` matches only what came after.
        """
        regex = re.compile(pattern) if pattern else None
        started = time.monotonic()
        deadline = started + timeout
        buffer = bytearray()
        if send:
            self.drain()
            self.send(send)
        last_send = last_data = time.monotonic()
        while True:
            data = self.read()
            now = time.monotonic()
            if data:
                buffer += data
                last_data = now
                on_output(data)
                if regex is not None:
                    found = regex.search(buffer.decode(errors="replace"))
                    if found:
                        return ExpectResult(buffer.decode(errors="replace"), found.group(0), now - started)
            if regex is None and now - last_data >= quiet_after:
                return ExpectResult(buffer.decode(errors="replace"), None, now - started)
            if now > deadline:
                tail = buffer.decode(errors="replace").strip().splitlines()[-1:] or ["nothing"]
                exc = TimeoutExpired(f"{self.name}'s console did not show /{pattern}/ within {timeout:g}s "
                                     f"(last line: {tail[0][:120]!r})")
                exc.output = buffer.decode(errors="replace")  # type: ignore[attr-defined]
                raise exc
            if send and retry_every and now - last_send >= retry_every:
                self.send(send)
                last_send = now
            if not data:
                time.sleep(POLL_SECONDS)

    def close(self) -> None:
        try:
            self.stream.finish()
        except self._libvirt.libvirtError:
            try:
                self.stream.abort()
            except self._libvirt.libvirtError:
                pass

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
