"""The guest agent's protocol (spice-vdagent), carried in the main channel's AGENT_DATA messages.

Facts from spice-protocol `spice/vd_agent.h`: a byte stream of VDAgentMessage
headers and payloads, cut into chunks of at most 2048 bytes a SPICE message.
`AgentStream` reassembles messages from chunks and cuts messages into
chunks; it does no I/O. Both directions are flow-controlled with tokens (one
per chunk), which `spice/client.py` keeps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from spicectl.errors import ProtocolError
from spicectl.spice.wire import Layout, caps_bits, caps_words

PROTOCOL = 1
MAX_CHUNK = 2048            # VD_AGENT_MAX_DATA_SIZE
MAX_MESSAGE = 64 << 20      # a clipboard image at most; anything larger is refused

MOUSE_STATE, MONITORS_CONFIG, REPLY, CLIPBOARD, DISPLAY_CONFIG, ANNOUNCE_CAPABILITIES, CLIPBOARD_GRAB, \
    CLIPBOARD_REQUEST, CLIPBOARD_RELEASE, FILE_XFER_START, FILE_XFER_STATUS, FILE_XFER_DATA, \
    CLIENT_DISCONNECTED, MAX_CLIPBOARD = range(1, 15)
CAP_MOUSE_STATE, CAP_MONITORS_CONFIG, CAP_REPLY, CAP_CLIPBOARD, CAP_DISPLAY_CONFIG, CAP_CLIPBOARD_BY_DEMAND, \
    CAP_CLIPBOARD_SELECTION, CAP_SPARSE_MONITORS_CONFIG, CAP_GUEST_LINEEND_LF, CAP_GUEST_LINEEND_CRLF, \
    CAP_MAX_CLIPBOARD, CAP_AUDIO_VOLUME_SYNC, CAP_MONITORS_CONFIG_POSITION, CAP_FILE_XFER_DISABLED, \
    CAP_FILE_XFER_DETAILED_ERRORS, CAP_GRAPHICS_DEVICE_INFO, CAP_CLIPBOARD_NO_RELEASE_ON_REGRAB, \
    CAP_CLIPBOARD_GRAB_SERIAL = range(18)
CAP_NAMES = {
    CAP_MOUSE_STATE: "mouse-state", CAP_MONITORS_CONFIG: "monitors-config", CAP_REPLY: "reply",
    CAP_CLIPBOARD: "clipboard", CAP_DISPLAY_CONFIG: "display-config", CAP_CLIPBOARD_BY_DEMAND: "clipboard-by-demand",
    CAP_CLIPBOARD_SELECTION: "clipboard-selection", CAP_SPARSE_MONITORS_CONFIG: "sparse-monitors-config",
    CAP_GUEST_LINEEND_LF: "guest-lineend-lf", CAP_GUEST_LINEEND_CRLF: "guest-lineend-crlf",
    CAP_MAX_CLIPBOARD: "max-clipboard", CAP_AUDIO_VOLUME_SYNC: "audio-volume-sync",
    CAP_MONITORS_CONFIG_POSITION: "monitors-config-position", CAP_FILE_XFER_DISABLED: "file-xfer-disabled",
    CAP_FILE_XFER_DETAILED_ERRORS: "file-xfer-detailed-errors", CAP_GRAPHICS_DEVICE_INFO: "graphics-device-info",
    CAP_CLIPBOARD_NO_RELEASE_ON_REGRAB: "clipboard-no-release-on-regrab",
    CAP_CLIPBOARD_GRAB_SERIAL: "clipboard-grab-serial",
}
# what this client speaks: monitor configs (resize), replies, the on-demand clipboard with selections,
# and file transfers whose errors say why
CLIENT_CAPS = (CAP_MONITORS_CONFIG, CAP_REPLY, CAP_CLIPBOARD_BY_DEMAND, CAP_CLIPBOARD_SELECTION,
               CAP_SPARSE_MONITORS_CONFIG, CAP_GUEST_LINEEND_LF, CAP_FILE_XFER_DETAILED_ERRORS)
CLIPBOARD_NONE, CLIPBOARD_UTF8_TEXT = 0, 1
SELECTION_CLIPBOARD = 0
RESULT_SUCCESS = 1

MESSAGE = Layout("VDAgentMessage", [("protocol", "I"), ("type", "I"), ("opaque", "Q"), ("size", "I")])
ANNOUNCE = Layout("VDAgentAnnounceCapabilities", [("request", "I")])  # then caps words
MONITORS = Layout("VDAgentMonitorsConfig", [("num_of_monitors", "I"), ("flags", "I")])
MON_CONFIG = Layout("VDAgentMonConfig", [("height", "I"), ("width", "I"), ("depth", "I"), ("x", "i"), ("y", "i")])
REPLY_BODY = Layout("VDAgentReply", [("type", "I"), ("error", "I")])
SELECTION = Layout("VDAgentClipboardSelection", [("selection", "B"), ("reserved", "3s")])  # with the cap
CLIPBOARD_TYPE = Layout("VDAgentClipboardType", [("type", "I")])
XFER_START = Layout("VDAgentFileXferStartMessage", [("id", "I")])  # then a key file, NUL-terminated
XFER_STATUS = Layout("VDAgentFileXferStatusMessage", [("id", "I"), ("result", "I")])  # then details
XFER_DATA = Layout("VDAgentFileXferDataMessage", [("id", "I"), ("size", "Q")])  # then `size` bytes
XFER_ERROR_DETAIL = Layout("VDAgentFileXferStatusError", [("error_type", "I"), ("error_code", "I")])
XFER_SPACE = Layout("VDAgentFileXferStatusNotEnoughSpace", [("disk_free_space", "Q")])
XFER_CHUNK = 32 * MAX_CHUNK  # file bytes per DATA message, as spice-gtk sends them

XFER_CAN_SEND_DATA, XFER_CANCELLED, XFER_ERROR_STATUS, XFER_SUCCESS, XFER_NOT_ENOUGH_SPACE, \
    XFER_SESSION_LOCKED, XFER_AGENT_NOT_CONNECTED, XFER_DISABLED = range(8)
XFER_ERROR_GLIB_IO = 0
XFER_STATUS_TEXT = {
    XFER_CANCELLED: "the guest cancelled the transfer",
    XFER_ERROR_STATUS: "the guest's agent could not write the file",
    XFER_NOT_ENOUGH_SPACE: "the guest has not enough free space",
    XFER_SESSION_LOCKED: "the guest's session is locked",
    XFER_AGENT_NOT_CONNECTED: "no session agent runs in the guest's desktop session",
    XFER_DISABLED: "file transfer is disabled in the guest's agent",
}


class AgentStream:
    """Agent messages in (from chunks) and out (as chunks)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def receive_chunk(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        self._buffer += chunk
        while len(self._buffer) >= MESSAGE.size:
            head = MESSAGE.unpack(self._buffer)
            if head["protocol"] != PROTOCOL:
                raise ProtocolError(f"agent: protocol {head['protocol']} is not {PROTOCOL}")
            if head["size"] > MAX_MESSAGE:
                raise ProtocolError(f"agent: a message of {head['size']} bytes is over the limit")
            end = MESSAGE.size + head["size"]
            if len(self._buffer) < end:
                return
            body = bytes(self._buffer[MESSAGE.size:end])
            del self._buffer[:end]
            yield head["type"], body

    @staticmethod
    def chunks(msg_type: int, body: bytes = b"") -> list[bytes]:
        data = MESSAGE.pack(protocol=PROTOCOL, type=msg_type, opaque=0, size=len(body)) + body
        return [data[i:i + MAX_CHUNK] for i in range(0, len(data), MAX_CHUNK)]


def announce(request: bool) -> bytes:
    return ANNOUNCE.pack(request=int(request)) + b"".join(w.to_bytes(4, "little") for w in caps_words(CLIENT_CAPS))


def read_caps(body: bytes) -> tuple[bool, set[int]]:
    """(whether the agent asks for ours, the agent's capabilities)."""
    request = ANNOUNCE.unpack(body)["request"]
    words = [int.from_bytes(body[i:i + 4], "little") for i in range(ANNOUNCE.size, len(body) - 3, 4)]
    return bool(request), caps_bits(words[:16])


def monitors_config(sizes: Sequence[tuple[int, int]]) -> bytes:
    """Monitors of the given (width, height), side by side from the left, tops aligned."""
    body = MONITORS.pack(num_of_monitors=len(sizes), flags=0)
    x = 0
    for width, height in sizes:
        body += MON_CONFIG.pack(height=height, width=width, depth=32, x=x, y=0)
        x += width
    return body


def with_selection(agent_caps: set[int], body: bytes) -> bytes:
    """Clipboard messages carry a selection byte (and padding) when the agent has the capability."""
    if CAP_CLIPBOARD_SELECTION in agent_caps:
        return SELECTION.pack(selection=SELECTION_CLIPBOARD, reserved=b"\0\0\0") + body
    return body


def without_selection(agent_caps: set[int], body: bytes) -> tuple[int, bytes]:
    if CAP_CLIPBOARD_SELECTION in agent_caps:
        return SELECTION.unpack(body)["selection"], body[SELECTION.size:]
    return SELECTION_CLIPBOARD, body


def xfer_start(xfer_id: int, name: str, size: int) -> bytes:
    """START: the file's name and size as a GLib key file, which the agent parses."""
    if name in ("", ".", "..") or any(ord(c) < 0x20 or c in "/\x7f" for c in name):
        raise ValueError(f"{name!r} cannot be a file name in the guest")
    # GLib key-file escapes: a backslash, and leading blanks, which it would otherwise strip
    value = name.replace("\\", "\\\\")
    value = "\\s" + value[1:] if value.startswith(" ") else value
    keyfile = f"[vdagent-file-xfer]\nname={value}\nsize={size}\n"
    return XFER_START.pack(id=xfer_id) + keyfile.encode() + b"\0"


def xfer_data(xfer_id: int, data: bytes) -> bytes:
    return XFER_DATA.pack(id=xfer_id, size=len(data)) + data


def xfer_status(body: bytes) -> tuple[int, int, str]:
    """(transfer id, result, what went wrong in words; '' for CAN_SEND_DATA and SUCCESS)."""
    if len(body) < XFER_STATUS.size:
        raise ProtocolError("agent: a file transfer status is too short")
    status = XFER_STATUS.unpack(body)
    result, detail = status["result"], body[XFER_STATUS.size:]
    if result in (XFER_CAN_SEND_DATA, XFER_SUCCESS):
        return status["id"], result, ""
    text = XFER_STATUS_TEXT.get(result, f"the guest's agent ended the transfer (status {result})")
    if result == XFER_NOT_ENOUGH_SPACE and len(detail) >= XFER_SPACE.size:
        text += f" ({XFER_SPACE.unpack(detail)['disk_free_space']} bytes free)"
    elif result == XFER_ERROR_STATUS and len(detail) >= XFER_ERROR_DETAIL.size:
        error = XFER_ERROR_DETAIL.unpack(detail)
        if error["error_type"] == XFER_ERROR_GLIB_IO:
            text += f" (GLib I/O error {error['error_code']})"
    return status["id"], result, text
