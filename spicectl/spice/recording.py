"""Recorded display sessions: the messages a real server sent, replayable without it.

A recording is a file of records, each a `RECORD` header (message type and
body size) and the body, in the order the display channel received them.
Beside `NAME.bin` lies the frame it should replay to, `NAME.bin.libvirt.png`:
libvirt's own screenshot of the guest, taken right after (the independent
reference; a recording is kept only when the client drew exactly that then).
`bench/capture_frames.py` writes them; tests and `bench/codecs.py` read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from spicectl.errors import ProtocolError
from spicectl.spice.channel import Message
from spicectl.spice.wire import Layout

RECORD = Layout("recorded message", [("type", "H"), ("size", "I")])
LIBVIRT_FRAME_SUFFIX = ".libvirt.png"


def write(fh: BinaryIO, messages: Iterable[Message]) -> None:
    for msg in messages:
        fh.write(RECORD.pack(type=msg.type, size=len(msg.body)) + msg.body)


def read(path: Path) -> Iterator[Message]:
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        head = RECORD.unpack(data, pos)
        pos += RECORD.size
        if pos + head["size"] > len(data):
            raise ProtocolError(f"{path}: the last recorded message is cut short")
        yield Message(head["type"], data[pos:pos + head["size"]])
        pos += head["size"]


def libvirt_frame(path: Path) -> Path:
    return path.with_name(path.name + LIBVIRT_FRAME_SUFFIX)
