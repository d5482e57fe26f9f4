"""Frames between a command and the holder: a 4-byte big-endian length, then a marshalled dict.

marshal, not JSON: it is built into the interpreter, so the command's side imports nothing for it
(json pulls in re, which with socket's enum was half of a served command's start-up), and output
bytes travel as they are, not base64. marshal is not meant for data from someone untrusted; both
ends are the same user (the holder checks SO_PEERCRED before reading, the socket lives in that
user's state dir at 0600), and the same interpreter (the command starts the holder with its own
sys.executable), so the format always matches.
"""

from __future__ import annotations

import _socket
import marshal

MAX_FRAME = 256 << 20   # a screenshot PNG of a large screen fits many times over
_LEN = 4


def send(sock: _socket.socket, obj: dict) -> None:
    data = marshal.dumps(obj)
    sock.sendall(len(data).to_bytes(_LEN, "big") + data)


def _exactly(sock: _socket.socket, n: int) -> bytes:
    parts = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def receive(sock: _socket.socket) -> dict:
    size = int.from_bytes(_exactly(sock, _LEN), "big")
    if size > MAX_FRAME:
        raise ConnectionError(f"a frame of {size} bytes is over the limit")
    try:
        obj = marshal.loads(_exactly(sock, size))
    except (EOFError, ValueError, TypeError):
        raise ConnectionError("a frame is not in the holder's format") from None
    if not isinstance(obj, dict):
        raise ConnectionError("a frame is not a dict")
    return obj
