"""Frames between a command and the holder: a 4-byte big-endian length, then a JSON object."""

from __future__ import annotations

import json
import socket
import struct

MAX_FRAME = 256 << 20   # a screenshot PNG of a large screen, base64-encoded, fits many times over
_LEN = struct.Struct(">I")


def send(sock: socket.socket, obj: dict) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(_LEN.pack(len(data)) + data)


def _exactly(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def receive(sock: socket.socket) -> dict:
    (size,) = _LEN.unpack(_exactly(sock, _LEN.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"a frame of {size} bytes is over the limit")
    obj = json.loads(_exactly(sock, size))
    if not isinstance(obj, dict):
        raise ConnectionError("a frame is not a JSON object")
    return obj
