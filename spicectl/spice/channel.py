"""One SPICE channel after the link, as a state machine: bytes in, messages out, replies queued.

No I/O happens here (in the way of h11 and `websockets`): the caller feeds
what the server sent to `receive_data`, takes messages from `next_message`,
and writes whatever `data_to_send` returns. Base-channel chores — the ack
window, ping/pong, notices — are answered inside, so a caller only ever sees
its channel's own messages. `spice/transport.py` runs this over asyncio.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from spicectl.errors import ProtocolError
from spicectl.spice import link
from spicectl.spice import messages as M
from spicectl.spice import wire as W

log = logging.getLogger("spicectl.spice")

MAX_MESSAGE = 64 * 1024 * 1024  # a full-screen uncompressed 4K frame is 32 MiB
BASE_IGNORED = (M.MSG_WAIT_FOR_CHANNELS, M.MSG_MIGRATE, M.MSG_MIGRATE_DATA, M.MSG_LIST)


class Message(NamedTuple):
    type: int
    body: bytes


class Channel:
    """Framing and base-channel state of one linked channel."""

    def __init__(self, channel_type: int, reply: link.LinkReply, *, leftover: bytes = b"") -> None:
        self.type = channel_type
        self.reply = reply
        self.name = link.CHANNEL_NAMES.get(channel_type, str(channel_type))
        self.mini = link.CAP_MINI_HEADER in reply.common_caps
        self.header = W.MINI_HEADER if self.mini else W.FULL_HEADER
        self.channel_caps = reply.channel_caps
        self.serial = 0
        self.ack_window = 0
        self.ack_generation = 0
        self.received_since_ack = 0
        self.closed = False
        self._in = bytearray(leftover)
        self._out: list[bytes] = []
        self._pending: dict | None = None  # a header whose body has not all arrived

    # --- outgoing --------------------------------------------------------------------------
    def send(self, msg_type: int, body: bytes = b"") -> None:
        if self.mini:
            head = W.MINI_HEADER.pack(type=msg_type, size=len(body))
        else:
            self.serial += 1
            head = W.FULL_HEADER.pack(serial=self.serial, type=msg_type, size=len(body), sub_list=0)
        self._out.append(head + body)

    def data_to_send(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    # --- incoming --------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._in += data

    def receive_eof(self) -> None:
        """The server closed its side: a message still cut short is then an error."""
        self.closed = True

    def next_message(self) -> Message | None:
        """The next message that is not a base-channel chore, or None until more bytes arrive."""
        while True:
            raw = self._next_raw()
            if raw is None:
                if self.closed:
                    raise ProtocolError(f"{self.name} channel: the server closed the connection")
                return None
            self._count_for_ack()
            if not self._chore(raw):
                return raw

    def _next_raw(self) -> Message | None:
        if self._pending is None:
            if len(self._in) < self.header.size:
                return None
            head = self.header.unpack(self._in)
            if head["size"] > MAX_MESSAGE:
                raise ProtocolError(f"{self.name} channel: message of {head['size']} bytes is over the "
                                    f"{MAX_MESSAGE}-byte limit")
            del self._in[:self.header.size]
            self._pending = head
        size = self._pending["size"]
        if len(self._in) < size:
            return None
        body = bytes(self._in[:size])
        del self._in[:size]
        head, self._pending = self._pending, None
        if head.get("sub_list"):
            # sub-messages only exist with the full header; spicectl asks for the mini header
            log.debug("%s: ignoring sub-message list", self.name)
        return Message(head["type"], body)

    def _chore(self, msg: Message) -> bool:
        """Answer a base-channel message; False if the message is the caller's."""
        if msg.type == M.MSG_SET_ACK:
            ack = W.SET_ACK.unpack(msg.body)
            self.ack_generation, self.ack_window = ack["generation"], ack["window"]
            self.received_since_ack = 0
            self.send(M.MSGC_ACK_SYNC, W.ACK_SYNC.pack(generation=ack["generation"]))
        elif msg.type == M.MSG_PING:
            ping = W.PING.unpack(msg.body)
            self.send(M.MSGC_PONG, W.PING.pack(id=ping["id"], timestamp=ping["timestamp"]))
        elif msg.type == M.MSG_NOTIFY:
            note = W.NOTIFY.unpack(msg.body)
            text = msg.body[W.NOTIFY.size:W.NOTIFY.size + note["message_len"]].rstrip(b"\0")
            log.info("%s: server notice: %s", self.name, text.decode(errors="replace"))
        elif msg.type == M.MSG_DISCONNECTING:
            raise ProtocolError(f"{self.name} channel: the server is disconnecting")
        elif msg.type in BASE_IGNORED:
            log.debug("%s: ignoring base message %d", self.name, msg.type)
        else:
            return False
        return True

    def _count_for_ack(self) -> None:
        # The server stops sending after `window` unacknowledged messages.
        if self.ack_window:
            self.received_since_ack += 1
            if self.received_since_ack >= self.ack_window:
                self.received_since_ack = 0
                self.send(M.MSGC_ACK)
