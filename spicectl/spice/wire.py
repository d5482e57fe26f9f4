"""SPICE's wire structures, declared once and used to both encode and decode.

Four kinds of declaration cover every structure the client meets:

- `Layout`: fixed-size fields (struct codes, or nested Layouts), compiled to
  one `struct.Struct`; little-endian as SPICE is on the wire.
- `Counted`: a count followed by that many items (clip rectangles, the
  channel list).
- `Tagged`: a tag byte choosing what follows (a clip's rectangles, a brush's
  colour or pattern).
- `Struct`: a sequence of any of these, for messages with a variable part
  (every draw message starts with a DisplayBase whose clip varies).

Each has `read(data, offset) -> (value, next offset)` and `pack(...)`.
Decoding checks lengths and raises `ProtocolError` naming the structure, so a
truncated message never surfaces as a bare struct.error inside a channel.
Field names follow spice-common's `spice.proto`.
"""

from __future__ import annotations

import struct
from typing import Any, Union

from spicectl.errors import ProtocolError


class Layout:
    """Fixed-size fields; a field's type is a struct code or a nested Layout (read as a dict)."""

    def __init__(self, name: str, fields: list[tuple[str, str | Layout]]) -> None:
        self.name = name
        self.fields = [f for f, _ in fields]
        self._types = [t for _, t in fields]
        self._struct = struct.Struct("<" + "".join(t if isinstance(t, str) else t._codes for t in self._types))
        self._codes: str = self._struct.format[1:]
        self.size = self._struct.size

    def pack(self, **values: Any) -> bytes:
        return self._struct.pack(*self._flatten(values))

    def _flatten(self, values: dict[str, Any]) -> list[Any]:
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise ValueError(f"{self.name}: missing {missing}")
        flat: list[Any] = []
        for f, t in zip(self.fields, self._types, strict=True):
            flat.extend(t._flatten(values[f]) if isinstance(t, Layout) else [values[f]])
        return flat

    def _nest(self, flat: tuple, pos: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        for f, t in zip(self.fields, self._types, strict=True):
            if isinstance(t, Layout):
                out[f], pos = t._nest(flat, pos)
            else:
                out[f], pos = flat[pos], pos + 1
        return out, pos

    def unpack(self, data: bytes | bytearray | memoryview, offset: int = 0) -> dict[str, Any]:
        if offset < 0 or len(data) - offset < self.size:
            raise ProtocolError(
                f"truncated {self.name}: need {self.size} bytes at offset {offset}, have {max(0, len(data) - offset)}"
            )
        return self._nest(self._struct.unpack_from(data, offset), 0)[0]

    def read(self, data: bytes | bytearray | memoryview, offset: int) -> tuple[dict[str, Any], int]:
        return self.unpack(data, offset), offset + self.size


class Counted:
    """A count (struct code) followed by that many items; more than `limit` is refused."""

    def __init__(self, name: str, count_code: str, item: Layout, *, limit: int) -> None:
        self.name = name
        self.count = Layout(name, [("count", count_code)])
        self.item = item
        self.limit = limit

    def read(self, data: bytes | bytearray | memoryview, offset: int) -> tuple[list[dict[str, Any]], int]:
        n = self.count.unpack(data, offset)["count"]
        offset += self.count.size
        if n > self.limit:
            raise ProtocolError(f"{self.name}: {n} items is over the limit of {self.limit}")
        if len(data) - offset < n * self.item.size:
            raise ProtocolError(f"truncated {self.name}: {n} items run past the message")
        return [self.item.unpack(data, offset + i * self.item.size) for i in range(n)], offset + n * self.item.size

    def pack(self, items: list[dict[str, Any]]) -> bytes:
        return self.count.pack(count=len(items)) + b"".join(self.item.pack(**i) for i in items)


Part = Union[str, Layout, Counted, "Tagged", "Struct"]


def _read(part: Part, data: bytes | bytearray | memoryview, offset: int, name: str) -> tuple[Any, int]:
    if isinstance(part, str):
        size = struct.calcsize("<" + part)
        if offset < 0 or len(data) - offset < size:
            raise ProtocolError(f"truncated {name} at byte {offset}")
        return struct.unpack_from("<" + part, data, offset)[0], offset + size
    return part.read(data, offset)


def _pack(part: Part, value: Any) -> bytes:
    if isinstance(part, str):
        return struct.pack("<" + part, value)
    if isinstance(part, Counted):
        return part.pack(value)
    return part.pack(**value)


class Tagged:
    """A tag, then the part its value selects: reads as {"type": tag, key: value} (no key for empty cases)."""

    def __init__(self, name: str, tag_code: str, cases: dict[int, tuple[str, Part] | None]) -> None:
        self.name = name
        self.tag_code = tag_code
        self.cases = cases

    def read(self, data: bytes | bytearray | memoryview, offset: int) -> tuple[dict[str, Any], int]:
        tag, offset = _read(self.tag_code, data, offset, self.name)
        if tag not in self.cases:
            raise ProtocolError(f"{self.name}: unknown type {tag}")
        case = self.cases[tag]
        if case is None:
            return {"type": tag}, offset
        key, part = case
        value, offset = _read(part, data, offset, self.name)
        return {"type": tag, key: value}, offset

    def pack(self, **value: Any) -> bytes:
        case = self.cases[value["type"]]
        out = _pack(self.tag_code, value["type"])
        return out if case is None else out + _pack(case[1], value[case[0]])


class Struct:
    """Fields in order, any of them variable-sized."""

    def __init__(self, name: str, fields: list[tuple[str, Part]]) -> None:
        self.name = name
        self.fields = fields

    def read(self, data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        for key, part in self.fields:
            out[key], offset = _read(part, data, offset, self.name)
        return out, offset

    def unpack(self, data: bytes | bytearray | memoryview, offset: int = 0) -> dict[str, Any]:
        return self.read(data, offset)[0]

    def pack(self, **values: Any) -> bytes:
        return b"".join(_pack(part, values[key]) for key, part in self.fields)


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


# --- link stage (spice-protocol protocol.h) ------------------------------------------------------
TICKET_PUBKEY_BYTES = 162
LINK_HEADER = Layout("SpiceLinkHeader", [("magic", "I"), ("major", "I"), ("minor", "I"), ("size", "I")])
LINK_MESS = Layout("SpiceLinkMess", [
    ("connection_id", "I"), ("channel_type", "B"), ("channel_id", "B"),
    ("num_common_caps", "I"), ("num_channel_caps", "I"), ("caps_offset", "I"),
])
LINK_REPLY = Layout("SpiceLinkReply", [
    ("error", "I"), ("pub_key", f"{TICKET_PUBKEY_BYTES}s"),
    ("num_common_caps", "I"), ("num_channel_caps", "I"), ("caps_offset", "I"),
])
AUTH_MECHANISM = Layout("SpiceLinkAuthMechanism", [("auth_mechanism", "I")])
LINK_RESULT = Layout("SpiceLinkResult", [("error", "I")])

# --- framing -------------------------------------------------------------------------------------
MINI_HEADER = Layout("SpiceMiniDataHeader", [("type", "H"), ("size", "I")])
FULL_HEADER = Layout("SpiceDataHeader", [("serial", "Q"), ("type", "H"), ("size", "I"), ("sub_list", "I")])

# --- base channel --------------------------------------------------------------------------------
SET_ACK = Layout("SpiceMsgSetAck", [("generation", "I"), ("window", "I")])
ACK_SYNC = Layout("SpiceMsgcAckSync", [("generation", "I")])
PING = Layout("SpiceMsgPing", [("id", "I"), ("timestamp", "Q")])
NOTIFY = Layout("SpiceMsgNotify", [("time_stamp", "Q"), ("severity", "I"), ("visibility", "I"), ("what", "I"),
                                   ("message_len", "I")])

# --- main channel --------------------------------------------------------------------------------
MAX_CHANNELS = 256
MAIN_INIT = Layout("SpiceMsgMainInit", [
    ("session_id", "I"), ("display_channels_hint", "I"), ("supported_mouse_modes", "I"),
    ("current_mouse_mode", "I"), ("agent_connected", "I"), ("agent_tokens", "I"), ("multi_media_time", "I"),
    ("ram_hint", "I"),
])
CHANNEL_ID = Layout("SpiceChannelId", [("type", "B"), ("id", "B")])
CHANNELS_LIST = Struct("SpiceMsgChannels", [("channels", Counted("SpiceMsgChannels", "I", CHANNEL_ID,
                                                                  limit=MAX_CHANNELS))])
# the port's name sits after the fixed part, at name_offset from the message start, NUL included in name_size
PORT_INIT = Layout("SpiceMsgPortInit", [("name_size", "I"), ("name_offset", "I"), ("opened", "B")])
PORT_EVENT = Layout("SpiceMsgPortEvent", [("event", "B")])
AGENT_TOKENS = Layout("SpiceMsgMainAgentTokens", [("num_tokens", "I")])  # also AGENT_START's body
MAIN_MOUSE_MODE = Layout("SpiceMsgMainMouseMode", [("supported_modes", "H"), ("current_mode", "H")])
MOUSE_MODE_REQUEST = Layout("SpiceMsgcMainMouseModeRequest", [("mode", "H")])

# --- display channel: geometry and the parts every draw message shares ---------------------------
MAX_CLIP_RECTS = 65536
CLIP_TYPE_NONE, CLIP_TYPE_RECTS = 0, 1
BRUSH_TYPE_NONE, BRUSH_TYPE_SOLID, BRUSH_TYPE_PATTERN = 0, 1, 2
MASK_INVERS = 1
RECT = Layout("SpiceRect", [("top", "i"), ("left", "i"), ("bottom", "i"), ("right", "i")])
POINT = Layout("SpicePoint", [("x", "i"), ("y", "i")])
CLIP = Tagged("SpiceClip", "B", {
    CLIP_TYPE_NONE: None,
    CLIP_TYPE_RECTS: ("rects", Counted("SpiceClipRects", "I", RECT, limit=MAX_CLIP_RECTS)),
})
DISPLAY_BASE = Struct("SpiceMsgDisplayBase", [("surface_id", "I"), ("box", RECT), ("clip", CLIP)])
QMASK = Layout("SpiceQMask", [("flags", "B"), ("pos", POINT), ("bitmap", "I")])  # bitmap: offset of an image
PATTERN = Layout("SpicePattern", [("pat", "I"), ("pos", POINT)])
BRUSH = Tagged("SpiceBrush", "B", {
    BRUSH_TYPE_NONE: None,
    BRUSH_TYPE_SOLID: ("color", "I"),
    BRUSH_TYPE_PATTERN: ("pattern", PATTERN),
})

# --- display channel: the draw operations (offsets point into the same message) ------------------
COPY = Layout("SpiceCopy", [("src_bitmap", "I"), ("src_area", RECT), ("rop_descriptor", "H"),
                            ("scale_mode", "B"), ("mask", QMASK)])
OPAQUE = Struct("SpiceOpaque", [("src_bitmap", "I"), ("src_area", RECT), ("brush", BRUSH),
                                ("rop_descriptor", "H"), ("scale_mode", "B"), ("mask", QMASK)])
FILL = Struct("SpiceFill", [("brush", BRUSH), ("rop_descriptor", "H"), ("mask", QMASK)])
MASK_ONLY = Layout("SpiceBlackness", [("mask", QMASK)])  # also Whiteness and Invers
TRANSPARENT = Layout("SpiceTransparent", [("src_bitmap", "I"), ("src_area", RECT), ("src_color", "I"),
                                          ("true_color", "I")])
ALPHA_FLAGS_DEST_HAS_ALPHA, ALPHA_FLAGS_SRC_SURFACE_HAS_ALPHA = 1, 2
ALPHA_BLEND = Layout("SpiceAlphaBlend", [("alpha_flags", "B"), ("alpha", "B"), ("src_bitmap", "I"),
                                         ("src_area", RECT)])
COPY_BITS = Layout("SpiceMsgDisplayCopyBits", [("src_pos", POINT)])
ROP3 = Struct("SpiceRop3", [("src_bitmap", "I"), ("src_area", RECT), ("brush", BRUSH), ("rop3", "B"),
                            ("scale_mode", "B"), ("mask", QMASK)])
# DRAW_STROKE: the path's offset, the line attributes (a dash style only when STYLED), brush and modes
LINE_FLAGS_START_WITH_GAP, LINE_FLAGS_STYLED = 4, 8
STROKE_HEAD = Layout("SpiceStroke", [("path", "I"), ("attr_flags", "B")])
LINE_STYLE = Layout("SpiceLineAttr", [("style_nseg", "B"), ("style", "I")])  # style: offset of nseg fixed28_4
STROKE_TAIL = Struct("SpiceStroke", [("brush", BRUSH), ("fore_mode", "H"), ("back_mode", "H")])
# a path's segments and a string's glyphs follow their head inline (spice.proto's @ptr_array is the
# demarshalled C structure's, not the wire's)
PATH = Layout("SpicePath", [("num_segments", "I")])  # then num_segments PATH_SEGs
PATH_SEG = Layout("SpicePathSeg", [("flags", "B"), ("count", "I")])  # then count 28.4 (x, y) pairs
TEXT = Struct("SpiceText", [("str", "I"), ("back_area", RECT), ("fore_brush", BRUSH), ("back_brush", BRUSH),
                            ("fore_mode", "H"), ("back_mode", "H")])
STRING_RASTER_A1, STRING_RASTER_A4, STRING_RASTER_A8, STRING_RASTER_TOP_DOWN = 1, 2, 4, 8
STRING = Layout("SpiceString", [("length", "H"), ("flags", "B")])  # then length RASTER_GLYPHs
RASTER_GLYPH = Layout("SpiceRasterGlyph", [("render_pos", POINT), ("glyph_origin", POINT), ("width", "H"),
                                           ("height", "H")])  # then ((width*bpp+7)/8)*height bytes
# DRAW_COMPOSITE: flags, the source, then what the flags say is present, then the two origins
COMPOSITE_OP_MASK = 0xFF
COMPOSITE_SRC_FILTER_SHIFT, COMPOSITE_MASK_FILTER_SHIFT = 8, 11
COMPOSITE_SRC_REPEAT_SHIFT, COMPOSITE_MASK_REPEAT_SHIFT = 14, 16
COMPOSITE_COMPONENT_ALPHA, COMPOSITE_HAS_MASK, COMPOSITE_HAS_SRC_TRANSFORM = 1 << 18, 1 << 19, 1 << 20
COMPOSITE_HAS_MASK_TRANSFORM, COMPOSITE_SOURCE_OPAQUE, COMPOSITE_MASK_OPAQUE = 1 << 21, 1 << 22, 1 << 23
COMPOSITE_DEST_OPAQUE = 1 << 24
COMPOSITE_HEAD = Layout("SpiceComposite", [("flags", "I"), ("src_bitmap", "I")])
IMAGE_OFFSET = Layout("SpiceImage*", [("offset", "I")])
TRANSFORM = Layout("SpiceTransform", [("t00", "I"), ("t01", "I"), ("t02", "I"), ("t10", "I"), ("t11", "I"),
                                      ("t12", "I")])
COMPOSITE_ORIGINS = Layout("SpiceCompositeOrigins", [("src_x", "h"), ("src_y", "h"), ("mask_x", "h"),
                                                     ("mask_y", "h")])

# --- display channel: video streams -------------------------------------------------------------
STREAM_CREATE = Struct("SpiceMsgDisplayStreamCreate", [
    ("surface_id", "I"), ("id", "I"), ("flags", "B"), ("codec_type", "B"), ("stamp", "Q"),
    ("stream_width", "I"), ("stream_height", "I"), ("src_width", "I"), ("src_height", "I"), ("dest", RECT),
    ("clip", CLIP),
])
STREAM_DATA_HEADER = Layout("SpiceStreamDataHeader", [("id", "I"), ("multi_media_time", "I")])
STREAM_DATA = Layout("SpiceMsgDisplayStreamData", [("base", STREAM_DATA_HEADER), ("data_size", "I")])  # then data
STREAM_DATA_SIZED = Layout("SpiceMsgDisplayStreamDataSized", [
    ("base", STREAM_DATA_HEADER), ("width", "I"), ("height", "I"), ("dest", RECT), ("data_size", "I"),
])
STREAM_CLIP = Struct("SpiceMsgDisplayStreamClip", [("id", "I"), ("clip", CLIP)])
STREAM_ID = Layout("SpiceMsgDisplayStreamDestroy", [("id", "I")])

# --- display channel: resources --------------------------------------------------------------------
DISPLAY_INIT = Layout("SpiceMsgcDisplayInit", [
    ("pixmap_cache_id", "B"), ("pixmap_cache_size", "q"), ("glz_dictionary_id", "B"),
    ("glz_dictionary_window_size", "i"),
])
SURFACE_CREATE = Layout("SpiceMsgSurfaceCreate", [("surface_id", "I"), ("width", "I"), ("height", "I"),
                                                  ("format", "I"), ("flags", "I")])
SURFACE_DESTROY = Layout("SpiceMsgSurfaceDestroy", [("surface_id", "I")])
# the monitors the guest shows, as places on a surface (heads of one QXL device share the primary)
MAX_HEADS = 64
MONITORS_CONFIG = Layout("SpiceMsgDisplayMonitorsConfig", [("count", "H"), ("max_allowed", "H")])
HEAD = Layout("SpiceHead", [("monitor_id", "I"), ("surface_id", "I"), ("width", "I"), ("height", "I"), ("x", "I"),
                            ("y", "I"), ("flags", "I")])
RESOURCE_ID = Layout("SpiceResourceID", [("type", "B"), ("id", "Q")])
INVAL_LIST = Struct("SpiceResourceList", [("resources", Counted("SpiceResourceList", "H", RESOURCE_ID,
                                                                limit=65535))])
INVAL_ONE = Layout("SpiceMsgDisplayInvalOne", [("id", "Q")])
IMAGE_DESCRIPTOR = Layout("SpiceImageDescriptor", [("id", "Q"), ("type", "B"), ("flags", "B"), ("width", "I"),
                                                   ("height", "I")])
BITMAP = Layout("SpiceBitmap", [("format", "B"), ("flags", "B"), ("x", "I"), ("y", "I"), ("stride", "I")])
PALETTE_HEAD = Layout("SpicePalette", [("unique", "Q"), ("num_ents", "H")])  # then num_ents u32 colours
PALETTE_PTR = Layout("SpicePalette*", [("palette", "I")])
PALETTE_ID = Layout("SpicePaletteId", [("palette_id", "Q")])  # instead of the pointer when cached
SURFACE_IMAGE = Layout("SpiceSurface", [("surface_id", "I")])
IMAGE_DATA = Layout("SpiceBinaryData", [("data_size", "I")])  # LZ, GLZ, JPEG, QUIC, LZ4: then the bytes
LZ_PLT_DATA = Layout("SpiceLZPLTData", [("flags", "B"), ("data_size", "I")])  # then palette, then the bytes
# then the JPEG (jpeg_size bytes) and the alpha plane as an LZ XXXA image
JPEG_ALPHA_DATA = Layout("SpiceJPEGAlphaData", [("flags", "B"), ("jpeg_size", "I"), ("data_size", "I")])
ZLIB_GLZ_DATA = Layout("SpiceZlibGlzRGBData", [("glz_data_size", "I"), ("data_size", "I")])

# --- cursor channel -----------------------------------------------------------------------------
POINT16 = Layout("SpicePoint16", [("x", "h"), ("y", "h")])
CURSOR_INIT = Layout("SpiceMsgCursorInit", [("position", POINT16), ("trail_length", "H"), ("trail_frequency", "H"),
                                            ("visible", "B")])  # then a SpiceCursor
CURSOR_SET = Layout("SpiceMsgCursorSet", [("position", POINT16), ("visible", "B")])  # then a SpiceCursor
CURSOR_MOVE = Layout("SpiceMsgCursorMove", [("position", POINT16)])
CURSOR_FLAGS = Layout("SpiceCursor", [("flags", "H")])  # then, unless NONE, the header and the shape's data
CURSOR_HEADER = Layout("SpiceCursorHeader", [("unique", "Q"), ("type", "B"), ("width", "H"), ("height", "H"),
                                             ("hot_spot_x", "H"), ("hot_spot_y", "H")])

# --- playback channel ---------------------------------------------------------------------------
PLAYBACK_PACKET = Layout("SpiceMsgPlaybackPacket", [("time", "I")])  # then the samples
PLAYBACK_MODE = Layout("SpiceMsgPlaybackMode", [("time", "I"), ("mode", "H")])
PLAYBACK_START = Layout("SpiceMsgPlaybackStart", [("channels", "I"), ("format", "H"), ("frequency", "I"),
                                                  ("time", "I")])
RECORD_START = Layout("SpiceMsgRecordStart", [("channels", "I"), ("format", "H"), ("frequency", "I")])
RECORD_PACKET = Layout("SpiceMsgcRecordPacket", [("time", "I")])  # then the samples
RECORD_MODE = Layout("SpiceMsgcRecordMode", [("time", "I"), ("mode", "H")])
RECORD_START_MARK = Layout("SpiceMsgcRecordStartMark", [("time", "I")])

# --- inputs channel ----------------------------------------------------------------------------------
KEY_CODE = Layout("SpiceMsgcKeyCode", [("code", "I")])
MOUSE_MOTION = Layout("SpiceMsgcMouseMotion", [("dx", "i"), ("dy", "i"), ("buttons_state", "H")])
MOUSE_POSITION = Layout("SpiceMsgcMousePosition", [("x", "I"), ("y", "I"), ("buttons_state", "H"),
                                                   ("display_id", "B")])
MOUSE_BUTTON = Layout("SpiceMsgcMouseButton", [("button", "B"), ("buttons_state", "H")])
