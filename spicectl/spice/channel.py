"""One SPICE channel after the link: framing, the ack window, ping/pong, notifications."""

from __future__ import annotations

import asyncio
import logging
import struct

from spicectl.errors import ProtocolError
from spicectl.spice import link
from spicectl.spice import messages as M

log = logging.getLogger("spicectl.spice")

MAX_MESSAGE = 64 * 1024 * 1024  # a full-screen uncompressed 4K frame is 32 MiB


class Channel:
    """Messages in and out of one linked channel; the base-channel chores are handled here."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel_type: int,
                 reply: link.LinkReply) -> None:
        self.reader = reader
        self.writer = writer
        self.type = channel_type
        self.name = link.CHANNEL_NAMES.get(channel_type, str(channel_type))
        self.mini = link.CAP_MINI_HEADER in reply.common_caps
        self.channel_caps = reply.channel_caps
        self.serial = 0
        self.ack_window = 0
        self.ack_generation = 0
        self.received_since_ack = 0

    # --- framing -----------------------------------------------------------
    def send(self, msg_type: int, body: bytes = b"") -> None:
        if self.mini:
            header = M.MINI_HEADER.pack(type=msg_type, size=len(body))
        else:
            self.serial += 1
            header = M.FULL_HEADER.pack(serial=self.serial, type=msg_type, size=len(body), sub_list=0)
        self.writer.write(header + body)

    async def drain(self) -> None:
        await self.writer.drain()

    async def _read_raw(self) -> tuple[int, bytes]:
        layout = M.MINI_HEADER if self.mini else M.FULL_HEADER
        try:
            header = layout.unpack(await self.reader.readexactly(layout.size))
            if header["size"] > MAX_MESSAGE:
                raise ProtocolError(f"{self.name} channel: message of {header['size']} bytes is over the "
                                    f"{MAX_MESSAGE}-byte limit")
            body = await self.reader.readexactly(header["size"])
        except asyncio.IncompleteReadError:
            raise ProtocolError(f"{self.name} channel: the server closed the connection") from None
        except (ConnectionError, OSError) as exc:
            raise ProtocolError(f"{self.name} channel: connection lost ({exc})") from None
        if not self.mini and header["sub_list"]:
            # sub-messages only exist with the full header; spicectl asks for the mini header
            log.debug("%s: ignoring sub-message list", self.name)
        return header["type"], body

    async def read(self) -> tuple[int, bytes]:
        """The next message that is not a base-channel chore (those are answered here)."""
        while True:
            msg_type, body = await self._read_raw()
            self._count_for_ack()
            if msg_type == M.MSG_SET_ACK:
                ack = M.SET_ACK.unpack(body)
                self.ack_generation, self.ack_window = ack["generation"], ack["window"]
                self.received_since_ack = 0
                self.send(M.MSGC_ACK_SYNC, M.ACK_SYNC.pack(generation=ack["generation"]))
            elif msg_type == M.MSG_PING:
                ping = M.PING.unpack(body)
                self.send(M.MSGC_PONG, M.PING.pack(id=ping["id"], timestamp=ping["timestamp"]))
            elif msg_type == M.MSG_NOTIFY:
                note = M.NOTIFY.unpack(body)
                text = body[M.NOTIFY.size:M.NOTIFY.size + note["message_len"]].rstrip(b"\0")
                log.info("%s: server notice: %s", self.name, text.decode(errors="replace"))
            elif msg_type == M.MSG_DISCONNECTING:
                raise ProtocolError(f"{self.name} channel: the server is disconnecting")
            elif msg_type in (M.MSG_WAIT_FOR_CHANNELS, M.MSG_MIGRATE, M.MSG_MIGRATE_DATA, M.MSG_LIST):
                log.debug("%s: ignoring base message %d", self.name, msg_type)
            else:
                return msg_type, body

    def _count_for_ack(self) -> None:
        # The server stops sending after `window` unacknowledged messages.
        if self.ack_window:
            self.received_since_ack += 1
            if self.received_since_ack >= self.ack_window:
                self.received_since_ack = 0
                self.send(M.MSGC_ACK)

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # closing a broken TLS stream may raise; nothing to do
            pass


def u32(body: bytes, offset: int) -> int:
    if offset + 4 > len(body):
        raise ProtocolError("message truncated")
    return struct.unpack_from("<I", body, offset)[0]
