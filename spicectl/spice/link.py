"""The SPICE link stage: header, SpiceLinkMess, SpiceLinkReply, ticket auth.

Facts: spice-protocol `spice/protocol.h` and `spice/enums.h`; see
shared/spice-protocol.md for what was verified against QEMU here.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from spicectl.errors import AuthError, ProtocolError
from spicectl.spice.wire import Layout, caps_bits, caps_words

MAGIC = int.from_bytes(b"REDQ", "little")
VERSION_MAJOR = 2
VERSION_MINOR = 2
TICKET_PUBKEY_BYTES = 162
MAX_PASSWORD = 60
MAX_LINK_BODY = 64 * 1024  # a reply is ~200 bytes; anything near this is hostile

LINK_HEADER = Layout("SpiceLinkHeader", [("magic", "I"), ("major", "I"), ("minor", "I"), ("size", "I")])
LINK_MESS = Layout("SpiceLinkMess", [
    ("connection_id", "I"), ("channel_type", "B"), ("channel_id", "B"),
    ("num_common_caps", "I"), ("num_channel_caps", "I"), ("caps_offset", "I"),
])
LINK_REPLY = Layout("SpiceLinkReply", [
    ("error", "I"), ("pub_key", f"{TICKET_PUBKEY_BYTES}s"),
    ("num_common_caps", "I"), ("num_channel_caps", "I"), ("caps_offset", "I"),
])

# Channel types
MAIN, DISPLAY, INPUTS, CURSOR, PLAYBACK, RECORD, TUNNEL, SMARTCARD, USBREDIR, PORT, WEBDAV = range(1, 12)
CHANNEL_NAMES = {MAIN: "main", DISPLAY: "display", INPUTS: "inputs", CURSOR: "cursor", PLAYBACK: "playback",
                 RECORD: "record", TUNNEL: "tunnel", SMARTCARD: "smartcard", USBREDIR: "usbredir",
                 PORT: "port", WEBDAV: "webdav"}

# Common capabilities
CAP_AUTH_SELECTION, CAP_AUTH_SPICE, CAP_AUTH_SASL, CAP_MINI_HEADER = range(4)
AUTH_MECHANISM_SPICE = 1

LINK_ERRORS = {
    0: ("OK", None),
    1: ("ERROR", "the server refused the link"),
    2: ("INVALID_MAGIC", "the server did not accept the SPICE magic"),
    3: ("INVALID_DATA", "the server found the link message invalid"),
    4: ("VERSION_MISMATCH", "the server speaks another SPICE protocol version"),
    5: ("NEED_SECURED", "this channel requires TLS: connect to the tls-port"),
    6: ("NEED_UNSECURED", "this channel must not use TLS: connect to the plain port"),
    7: ("PERMISSION_DENIED", "permission denied: the ticket is wrong or expired"),
    8: ("BAD_CONNECTION_ID", "the server does not know this session's connection id"),
    9: ("CHANNEL_NOT_AVAILABLE", "the guest does not offer this channel"),
}


def link_error(code: int, channel_type: int) -> Exception:
    name, text = LINK_ERRORS.get(code, (f"#{code}", f"unknown link error {code}"))
    message = f"{CHANNEL_NAMES.get(channel_type, channel_type)} channel: {text} ({name})"
    if code == 7:
        return AuthError(message, hint="get a fresh ticket with: spicectl ticket NAME")
    return ProtocolError(message)


@dataclass
class LinkReply:
    error: int
    pub_key: bytes
    common_caps: set[int] = field(default_factory=set)
    channel_caps: set[int] = field(default_factory=set)


def encode_link(channel_type: int, channel_id: int = 0, connection_id: int = 0,
                common_caps: tuple[int, ...] = (CAP_AUTH_SELECTION, CAP_AUTH_SPICE, CAP_MINI_HEADER),
                channel_caps: tuple[int, ...] = ()) -> bytes:
    common, chan = caps_words(list(common_caps)), caps_words(list(channel_caps))
    body = LINK_MESS.pack(
        connection_id=connection_id, channel_type=channel_type, channel_id=channel_id,
        num_common_caps=len(common), num_channel_caps=len(chan), caps_offset=LINK_MESS.size,
    ) + struct.pack(f"<{len(common) + len(chan)}I", *common, *chan)
    return LINK_HEADER.pack(magic=MAGIC, major=VERSION_MAJOR, minor=VERSION_MINOR, size=len(body)) + body


def decode_link_header(data: bytes) -> int:
    """Check a link header; return the size of the body that follows."""
    header = LINK_HEADER.unpack(data)
    if header["magic"] != MAGIC:
        raise ProtocolError(f"not a SPICE server: bad magic {data[:4]!r}")
    if header["major"] != VERSION_MAJOR:
        raise ProtocolError(f"server speaks SPICE {header['major']}.{header['minor']}, not {VERSION_MAJOR}.x")
    if not LINK_REPLY.size <= header["size"] <= MAX_LINK_BODY:
        raise ProtocolError(f"link reply of {header['size']} bytes is out of bounds")
    return header["size"]


def decode_link_reply(body: bytes) -> LinkReply:
    fields = LINK_REPLY.unpack(body)
    n_common, n_chan, offset = fields["num_common_caps"], fields["num_channel_caps"], fields["caps_offset"]
    if n_common + n_chan > 1024 or offset + 4 * (n_common + n_chan) > len(body):
        raise ProtocolError("link reply capabilities run past the message")
    words = list(struct.unpack_from(f"<{n_common + n_chan}I", body, offset))
    return LinkReply(fields["error"], fields["pub_key"], caps_bits(words[:n_common]), caps_bits(words[n_common:]))


def encrypt_ticket(pub_key_der: bytes, password: bytes) -> bytes:
    """RSA-OAEP (SHA-1, MGF1-SHA-1) of the password and its NUL, as spice-server expects."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    if len(password) > MAX_PASSWORD:
        raise AuthError(f"SPICE passwords are at most {MAX_PASSWORD} bytes")
    try:
        key = serialization.load_der_public_key(pub_key_der)
    except ValueError:
        raise ProtocolError("server sent an unreadable ticket public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ProtocolError("server's ticket key is not RSA")
    return key.encrypt(password + b"\0", padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))


async def link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, channel_type: int,
               channel_id: int = 0, connection_id: int = 0, password: bytes | None = None,
               channel_caps: tuple[int, ...] = ()) -> LinkReply:
    """Run the link stage on an open stream (plain or TLS); return the server's reply.

    Raises AuthError for a refused ticket and ProtocolError for every other failure.
    """
    writer.write(encode_link(channel_type, channel_id, connection_id, channel_caps=channel_caps))
    await writer.drain()
    try:
        size = decode_link_header(await reader.readexactly(LINK_HEADER.size))
        reply = decode_link_reply(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"{CHANNEL_NAMES.get(channel_type)} channel: server closed the link") from None
    if reply.error:
        raise link_error(reply.error, channel_type)
    if CAP_AUTH_SELECTION in reply.common_caps:
        writer.write(struct.pack("<I", AUTH_MECHANISM_SPICE))
    writer.write(encrypt_ticket(reply.pub_key, password or b""))
    await writer.drain()
    try:
        (result,) = struct.unpack("<I", await reader.readexactly(4))
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"{CHANNEL_NAMES.get(channel_type)} channel: server closed before the auth result") from None
    if result:
        raise link_error(result, channel_type)
    return reply
