"""The SPICE link stage: header, SpiceLinkMess, SpiceLinkReply, ticket auth.

Facts: spice-protocol `spice/protocol.h` and `spice/enums.h`; see
shared/spice-protocol.md for what was verified against QEMU here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from spicectl.errors import AuthError, ProtocolError
from spicectl.spice.sasl import SaslLogin
from spicectl.spice.wire import AUTH_MECHANISM, LINK_HEADER, LINK_MESS, LINK_REPLY, LINK_RESULT, caps_bits, caps_words

MAGIC = int.from_bytes(b"REDQ", "little")
VERSION_MAJOR = 2
VERSION_MINOR = 2
MAX_PASSWORD = 60
MAX_LINK_BODY = 64 * 1024  # a reply is ~200 bytes; anything near this is hostile

# Channel types
MAIN, DISPLAY, INPUTS, CURSOR, PLAYBACK, RECORD, TUNNEL, SMARTCARD, USBREDIR, PORT, WEBDAV = range(1, 12)
CHANNEL_NAMES = {MAIN: "main", DISPLAY: "display", INPUTS: "inputs", CURSOR: "cursor", PLAYBACK: "playback",
                 RECORD: "record", TUNNEL: "tunnel", SMARTCARD: "smartcard", USBREDIR: "usbredir",
                 PORT: "port", WEBDAV: "webdav"}

# Common capabilities
CAP_AUTH_SELECTION, CAP_AUTH_SPICE, CAP_AUTH_SASL, CAP_MINI_HEADER = range(4)
AUTH_MECHANISM_SPICE = 1

LINK_ERR_PERMISSION_DENIED = 7
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
    if code == LINK_ERR_PERMISSION_DENIED:
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
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return key.encrypt(password + b"\0", oaep)




class Handshake:
    """The link stage as a state machine: feed it the server's bytes, send what it returns.

        hs = Handshake(MAIN, password=b"...")
        send(hs.start())
        while not hs.done:
            send(hs.receive_data(recv()))
        channel = Channel(MAIN, hs.reply, leftover=hs.leftover)

    Raises AuthError for a refused ticket and ProtocolError for every other failure.
    """

    def __init__(self, channel_type: int, channel_id: int = 0, connection_id: int = 0, *,
                 password: bytes | None = None, channel_caps: tuple[int, ...] = (), sasl_user: str | None = None,
                 tls: bool = False) -> None:
        self.channel_type = channel_type
        self.channel_id = channel_id
        self.connection_id = connection_id
        self.password = password or b""
        self.channel_caps = channel_caps
        self.sasl_user = sasl_user   # log in with SASL as this user, `password` being theirs
        self.tls = tls
        self.sasl: SaslLogin | None = None
        self.reply: LinkReply | None = None
        self.done = False
        self.leftover = b""  # bytes after the auth result belong to the channel
        self._buffer = bytearray()
        self._need = LINK_HEADER.size
        self._stage = "header"

    @property
    def name(self) -> str:
        return CHANNEL_NAMES.get(self.channel_type, str(self.channel_type))

    def start(self) -> bytes:
        auth = CAP_AUTH_SASL if self.sasl_user is not None else CAP_AUTH_SPICE
        return encode_link(self.channel_type, self.channel_id, self.connection_id,
                           common_caps=(CAP_AUTH_SELECTION, auth, CAP_MINI_HEADER), channel_caps=self.channel_caps)

    def receive_data(self, data: bytes) -> bytes:
        """Take bytes from the server; return bytes to send (possibly none)."""
        if self.done:
            raise ProtocolError(f"{self.name} channel: link data after the link finished")
        if self._stage == "sasl":
            assert self.sasl is not None
            out, data = self.sasl.receive_data(data)
            if not self.sasl.done:
                return out
            # spice-server says how the SASL login went, then how the link went (spice-gtk reads both)
            self._stage, self._need = "sasl-result", LINK_RESULT.size
        else:
            out = b""
        self._buffer += data
        while not self.done and self._stage != "sasl" and len(self._buffer) >= self._need:
            chunk = bytes(self._buffer[:self._need])
            del self._buffer[:self._need]
            out += self._step(chunk)
        if self._stage == "sasl" and self._buffer:   # the server's first SASL bytes came with the reply
            data, self._buffer = bytes(self._buffer), bytearray()
            return out + self.receive_data(data)
        if self.done:
            self.leftover = bytes(self._buffer)
            self._buffer.clear()
        return out

    def receive_eof(self) -> None:
        if self._stage == "sasl" and self.sasl is not None:
            self.sasl.receive_eof()
        where = "server closed before the auth result" if self._stage == "result" else "server closed the link"
        raise ProtocolError(f"{self.name} channel: {where}")

    def _step(self, chunk: bytes) -> bytes:
        if self._stage == "header":
            self._need, self._stage = decode_link_header(chunk), "reply"
            return b""
        if self._stage == "reply":
            reply = decode_link_reply(chunk)
            if reply.error:
                raise link_error(reply.error, self.channel_type)
            self.reply = reply
            if self.sasl_user is not None:
                if CAP_AUTH_SASL not in reply.common_caps or CAP_AUTH_SELECTION not in reply.common_caps:
                    raise AuthError(f"{self.name} channel: the server does not offer SASL login",
                                    hint="log in with a ticket instead (drop --sasl-user)")
                self.sasl = SaslLogin(self.sasl_user, self.password, tls=self.tls, channel=self.name)
                self._stage = "sasl"
                return AUTH_MECHANISM.pack(auth_mechanism=CAP_AUTH_SASL)
            if CAP_AUTH_SELECTION in reply.common_caps and CAP_AUTH_SPICE not in reply.common_caps \
                    and CAP_AUTH_SASL in reply.common_caps:
                raise AuthError(f"{self.name} channel: the server requires a SASL login",
                                hint="give --sasl-user NAME and the password (--password-file)")
            self._need, self._stage = LINK_RESULT.size, "result"
            mechanism = AUTH_MECHANISM.pack(auth_mechanism=AUTH_MECHANISM_SPICE) \
                if CAP_AUTH_SELECTION in reply.common_caps else b""
            return mechanism + encrypt_ticket(reply.pub_key, self.password)
        result = LINK_RESULT.unpack(chunk)["error"]
        if result:
            raise link_error(result, self.channel_type)
        if self._stage == "sasl-result":
            self._stage = "result"
            return b""
        self.done = True
        return b""
