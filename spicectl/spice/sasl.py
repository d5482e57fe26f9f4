"""SASL login in the SPICE link stage, sans-I/O: the exchange spice-server's reds.cpp runs (SPICE's
common capability AUTH_SASL, chosen with SpiceLinkAuthMechanism), with SCRAM done by `scramp`.

After the client picks SASL, the link carries (u32 little-endian lengths):

    server: mechlist length, mechlist (",SCRAM-SHA-256,...,")
    client: mechanism name length, name; client data length + 1, data, NUL (or 0: no data)
    server: data length (with its NUL, or 0), data, u8 complete      -- then, while not both done:
    client: data length + 1, data, NUL
    server: data length, data, u8 complete

and the link result (u32) follows. spice-server asks for a security layer (SSF 56) on a plain
connection, which SCRAM and PLAIN do not give: over plain TCP only GSSAPI-like mechanisms are
offered, which spicectl does not speak, and says so.
"""

from __future__ import annotations

import struct
from typing import Any

from spicectl.errors import AuthError, ProtocolError

MAX_MECHLIST = 300          # spice-gtk's bounds, which spice-server's messages keep within
MAX_DATA = 64 * 1024
# most preferred first; PLAIN sends the password itself, so only inside TLS
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")


def _frame(data: bytes | None) -> bytes:
    """Client data as SPICE frames it: the length with a NUL, the data, the NUL; or 0 for none."""
    if data is None:
        return struct.pack("<I", 0)
    return struct.pack("<I", len(data) + 1) + data + b"\0"


class SaslLogin:
    """One SASL login over a link: feed it the server's bytes (`receive_data`), send what it returns;
    `done` once the server has accepted the last step (the link result comes next)."""

    def __init__(self, user: str, password: bytes, *, tls: bool, channel: str) -> None:
        self.user = user
        self.password = password
        self.tls = tls
        self.channel = channel
        self.mechanism: str | None = None
        self.done = False
        self._scram: Any = None
        self._buffer = bytearray()
        self._stage = "mechlist-length"
        self._need = 4
        self._length = 0
        self._serverin = b""
        self._steps = 0

    def receive_data(self, data: bytes) -> tuple[bytes, bytes]:
        """Bytes to send, and the bytes past the end of the exchange (the link result's)."""
        self._buffer += data
        out = b""
        while not self.done and len(self._buffer) >= self._need:
            chunk = bytes(self._buffer[:self._need])
            del self._buffer[:self._need]
            out += self._step(chunk)
        rest = bytes(self._buffer) if self.done else b""
        if self.done:
            self._buffer.clear()
        return out, rest

    def receive_eof(self) -> None:
        if self._steps:
            raise AuthError(f"{self.channel} channel: SASL login refused for {self.user!r} (wrong user name or "
                            "password?)", hint="check --sasl-user and the password")
        raise ProtocolError(f"{self.channel} channel: the server closed the link during the SASL login")

    def _step(self, chunk: bytes) -> bytes:
        stage = self._stage
        if stage in ("mechlist-length", "data-length"):
            length = struct.unpack("<I", chunk)[0]
            limit = MAX_MECHLIST if stage == "mechlist-length" else MAX_DATA
            if length > limit:
                raise ProtocolError(f"{self.channel} channel: a SASL message of {length} bytes (at most {limit})")
            if stage == "mechlist-length":
                self._stage, self._need = "mechlist", length
                return self._step(b"") if length == 0 else b""
            self._length = length
            self._stage, self._need = ("data", length) if length else ("complete", 1)
            self._serverin = b""
            return b""
        if stage == "mechlist":
            return self._start(chunk.decode("ascii", errors="replace"))
        if stage == "data":
            if chunk[-1:] != b"\0":
                raise ProtocolError(f"{self.channel} channel: SASL server data without its NUL")
            self._serverin = chunk[:-1]
            self._stage, self._need = "complete", 1
            return b""
        return self._server_step(chunk[0] == 1)

    def _start(self, mechlist: str) -> bytes:
        offered = {m.strip().upper() for m in mechlist.replace(" ", ",").split(",") if m.strip()}
        usable = [m for m in MECHANISMS if m in offered and (m != "PLAIN" or self.tls)]
        if not usable:
            where = "over this plain connection" if not self.tls else ""
            raise AuthError(f"{self.channel} channel: the server offers no SASL mechanism spicectl speaks {where} "
                            f"(it offers: {', '.join(sorted(offered)) or 'none'})".replace("  ", " "),
                            hint="spicectl logs in with SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN, over TLS"
                            + ("" if self.tls else ": use the tls-port"))
        self.mechanism = mechanism = usable[0]
        if mechanism == "PLAIN":
            first = b"\0" + self.user.encode() + b"\0" + self.password
        else:
            from scramp import ScramClient

            self._scram = scram = ScramClient([mechanism], self.user, self.password.decode("utf-8", errors="strict"))
            first = scram.get_client_first().encode()
        self._stage, self._need = "data-length", 4
        self._steps = 1
        name = mechanism.encode()
        return struct.pack("<I", len(name)) + name + _frame(first)

    def _server_step(self, complete: bool) -> bytes:
        from scramp import ScramException

        self._stage, self._need = "data-length", 4
        scram, data = self._scram, self._serverin.decode("utf-8", errors="replace")
        try:
            if scram is None:   # PLAIN: one step, the server's verdict
                if not complete:
                    raise ProtocolError(f"{self.channel} channel: a SASL PLAIN server that wants more")
                self.done = True
                return b""
            if self._steps == 1:
                if complete:
                    raise ProtocolError(f"{self.channel} channel: the SASL server ended SCRAM after one message")
                scram.set_server_first(data)
                self._steps = 2
                return _frame(scram.get_client_final().encode())
            if not complete:
                raise ProtocolError(f"{self.channel} channel: the SASL server wants a third SCRAM message")
            scram.set_server_final(data)   # the server proves it knows the password too
        except (ScramException, ValueError, KeyError, IndexError) as exc:   # what scramp makes of garbage
            raise ProtocolError(f"{self.channel} channel: SASL {self.mechanism}: {exc}") from None
        self.done = True
        return b""
