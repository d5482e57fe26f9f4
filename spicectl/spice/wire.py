"""Message layouts declared once, then used to both encode and decode.

A `Layout` is an ordered list of (field, struct code) pairs, little-endian
as SPICE is on the wire. Decoding checks lengths and raises `ProtocolError`
with the layout's name, so a truncated message never surfaces as a bare
struct.error deep inside a channel.
"""

from __future__ import annotations

import struct
from typing import Any

from spicectl.errors import ProtocolError


class Layout:
    def __init__(self, name: str, fields: list[tuple[str, str]]) -> None:
        self.name = name
        self.fields = [f for f, _ in fields]
        self._struct = struct.Struct("<" + "".join(code for _, code in fields))
        self.size = self._struct.size

    def pack(self, **values: Any) -> bytes:
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise ValueError(f"{self.name}: missing {missing}")
        return self._struct.pack(*(values[f] for f in self.fields))

    def unpack(self, data: bytes | memoryview, offset: int = 0) -> dict[str, Any]:
        if offset < 0 or len(data) - offset < self.size:
            raise ProtocolError(
                f"truncated {self.name}: need {self.size} bytes at offset {offset}, have {max(0, len(data) - offset)}"
            )
        return dict(zip(self.fields, self._struct.unpack_from(data, offset)))


def caps_words(bits: list[int] | tuple[int, ...]) -> list[int]:
    """Capability bit numbers as the u32 words SPICE sends."""
    if not bits:
        return []
    words = [0] * (max(bits) // 32 + 1)
    for bit in bits:
        words[bit // 32] |= 1 << (bit % 32)
    return words


def caps_bits(words: list[int]) -> set[int]:
    return {i * 32 + b for i, w in enumerate(words) for b in range(32) if w & (1 << b)}
