"""The guest agent (spice-vdagent) over a session's main channel: the flow of agent data in chunks,
with tokens both ways; the agent's capabilities; and what it says, queued for whoever asks for it
(the clipboard, file transfer). `Client` owns one (`client.agent`) and hands it the main channel's
agent messages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from spicectl.errors import InvalidInput, ProtocolError, TimeoutExpired
from spicectl.spice import agent as A
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.agent import AgentStream

if TYPE_CHECKING:
    from spicectl.spice.channel_io import Session

log = logging.getLogger("spicectl.spice")

AGENT_WINDOW = 10  # agent chunks the server may send before we give tokens back
AGENT_MESSAGES = frozenset({M.MSG_MAIN_AGENT_CONNECTED, M.MSG_MAIN_AGENT_CONNECTED_TOKENS,
                            M.MSG_MAIN_AGENT_DISCONNECTED, M.MSG_MAIN_AGENT_TOKEN, M.MSG_MAIN_AGENT_DATA})


class AgentLink:
    def __init__(self, session: Session) -> None:
        self._session = session
        self.connected = False
        self.caps: set[int] = set()
        self._stream = AgentStream()
        self._tokens = 0
        self._started = False
        self._token = asyncio.Event()
        self._caps_known = asyncio.Event()
        self._inbox: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(maxsize=AGENT_WINDOW * 4)
        self._offered_text: str | None = None

    def init(self, connected: bool, tokens: int) -> None:
        """What the main channel's INIT says of the agent."""
        self.connected, self._tokens = connected, tokens

    def wake(self) -> None:
        """The session failed: whoever waits for the agent finds out now."""
        self._token.set()
        self._caps_known.set()

    async def handle(self, msg_type: int, body: bytes) -> None:
        """One of AGENT_MESSAGES from the main channel."""
        if msg_type in (M.MSG_MAIN_AGENT_CONNECTED, M.MSG_MAIN_AGENT_CONNECTED_TOKENS):
            self.connected = True
            if msg_type == M.MSG_MAIN_AGENT_CONNECTED_TOKENS:
                self._tokens = W.AGENT_TOKENS.unpack(body)["num_tokens"]
                self._token.set()
        elif msg_type == M.MSG_MAIN_AGENT_DISCONNECTED:
            self.connected = False
        elif msg_type == M.MSG_MAIN_AGENT_TOKEN:
            self._tokens += W.AGENT_TOKENS.unpack(body)["num_tokens"]
            self._token.set()
        elif msg_type == M.MSG_MAIN_AGENT_DATA:
            await self._chunk(body)

    async def _chunk(self, chunk: bytes) -> None:
        assert self._session.main is not None
        for msg_type, body in self._stream.receive_chunk(chunk):
            log.debug("agent: message %d (%d bytes) from the guest", msg_type, len(body))
            if msg_type == A.ANNOUNCE_CAPABILITIES:
                request, self.caps = A.read_caps(body)
                if request:
                    await self.send(A.ANNOUNCE_CAPABILITIES, A.announce(request=False))
                self._caps_known.set()
            elif self._inbox.full():
                raise ProtocolError("agent: messages arrive faster than they are read")
            else:
                self._inbox.put_nowait((msg_type, body))
        # each chunk spent one of the tokens we gave; give it back so the agent can go on
        self._session.main.send(M.MSGC_MAIN_AGENT_TOKEN, W.AGENT_TOKENS.pack(num_tokens=1))
        await self._session.main.flush()

    async def send(self, msg_type: int, body: bytes = b"") -> None:
        assert self._session.main is not None
        log.debug("agent: message %d (%d bytes) to the guest", msg_type, len(body))
        for chunk in AgentStream.chunks(msg_type, body):
            while self._tokens <= 0:
                # what is queued must go out first: the server returns tokens as the guest takes chunks
                await self._session.main.flush()
                self._token.clear()
                await self._session.wait_event(self._token, "the agent to take more data", timeout=30)
            self._tokens -= 1
            self._session.main.send(M.MSGC_MAIN_AGENT_DATA, chunk)
        await self._session.main.flush()

    async def start(self, timeout: float = 30) -> set[int]:
        """Open the conversation with the guest agent; its capabilities."""
        self._session.raise_if_failed()
        if self._session.main is None or not self.connected:
            raise ProtocolError("the guest's agent (spice-vdagent) is not connected",
                                hint="install and start spice-vdagent in the guest")
        if not self._started:
            self._started = True
            self._session.main.send(M.MSGC_MAIN_AGENT_START, W.AGENT_TOKENS.pack(num_tokens=AGENT_WINDOW))
            await self.send(A.ANNOUNCE_CAPABILITIES, A.announce(request=True))
        await self._session.wait_event(self._caps_known, "the agent's capabilities", timeout)
        return self.caps

    async def expect(self, wanted: set[int], timeout: float, what: str) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutExpired(f"timed out waiting for {what}")
            try:
                msg_type, body = await asyncio.wait_for(self._inbox.get(), remaining)
            except TimeoutError:
                continue
            if msg_type in wanted:
                return msg_type, body
            log.debug("agent: ignoring message %d", msg_type)

    async def clipboard_get(self, *, timeout: float = 30, on_waiting: Callable[[], None] | None = None) -> str:
        """The guest's clipboard text: what the agent holds now, or else the next text copied in the guest.

        spice-vdagent hands over only a clipboard it has announced to a client (a grab); one taken before
        this client connected is answered with "none", so the wait goes on until the guest copies again.
        """
        caps = await self.start()
        request = A.with_selection(caps, A.CLIPBOARD_TYPE.pack(type=A.CLIPBOARD_UTF8_TEXT))
        await self.send(A.CLIPBOARD_REQUEST, request)
        deadline = time.monotonic() + timeout
        while True:
            msg_type, body = await self.expect({A.CLIPBOARD, A.CLIPBOARD_GRAB},
                                                      max(0.0, deadline - time.monotonic()),
                                                      "text on the guest's clipboard")
            _selection, data = A.without_selection(caps, body)
            if msg_type == A.CLIPBOARD_GRAB:
                offered = {int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data) - 3, 4)}
                if A.CLIPBOARD_UTF8_TEXT in offered:
                    await self.send(A.CLIPBOARD_REQUEST, request)
                continue
            kind = A.CLIPBOARD_TYPE.unpack(data)["type"]
            if kind == A.CLIPBOARD_UTF8_TEXT:
                return data[A.CLIPBOARD_TYPE.size:].decode("utf-8", errors="replace")
            if kind != A.CLIPBOARD_NONE:
                raise ProtocolError(f"the guest's clipboard holds type {kind}, not text")
            if on_waiting is not None:
                on_waiting()

    async def clipboard_set(self, text: str, *, timeout: float = 60,
                            on_offered: Callable[[], None] | None = None) -> None:
        """Offer `text` as the guest's clipboard; return once something in the guest has read it.

        SPICE's clipboard is on demand: the agent takes the clipboard in the guest, and asks for the
        text when a guest application pastes.
        """
        caps = await self.start()
        grab = A.CLIPBOARD_TYPE.pack(type=A.CLIPBOARD_UTF8_TEXT)
        await self.send(A.CLIPBOARD_GRAB, A.with_selection(caps, grab))
        if on_offered is not None:
            on_offered()
        _type, body = await self.expect({A.CLIPBOARD_REQUEST}, timeout,
                                               "something in the guest to paste the clipboard")
        data = A.CLIPBOARD_TYPE.pack(type=A.CLIPBOARD_UTF8_TEXT) + text.encode()
        await self.send(A.CLIPBOARD, A.with_selection(caps, data))

    async def copy_to(self, paths: Sequence[Path], *, timeout: float = 60,
                      on_progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
        """Send files to the guest's agent, one after the other, as a viewer's drag and drop does.

        The agent saves each in its session's save folder (the desktop or downloads folder, or what
        `spice-vdagent -f` names), adding " (1)" to a name that exists. Every file is opened before the
        first byte goes, so a bad path sends nothing. `on_progress(name, sent, size)` follows each file.
        """
        import os

        from spicectl.files import open_regular

        caps = await self.start()
        if A.CAP_FILE_XFER_DISABLED in caps:
            raise ProtocolError("file transfer is disabled in the guest's agent")
        opened = []
        try:
            for path in paths:
                opened.append((Path(path), open_regular(Path(path), "file")))
            done = []
            for xfer_id, (path, fh) in enumerate(opened, start=1):
                size = os.fstat(fh.fileno()).st_size
                try:
                    start = A.xfer_start(xfer_id, path.name, size)
                except ValueError as exc:
                    raise InvalidInput(str(exc)) from None
                await self.send(A.FILE_XFER_START, start)
                await self._xfer_expect(xfer_id, A.XFER_CAN_SEND_DATA, timeout, f"the guest to accept {path.name}")
                sent = 0
                while True:
                    chunk = fh.read(A.XFER_CHUNK)
                    # the agent writes as it receives: an empty file still needs one (empty) DATA message
                    if chunk or sent == 0:
                        self._xfer_check(xfer_id)
                        await self.send(A.FILE_XFER_DATA, A.xfer_data(xfer_id, chunk))
                        sent += len(chunk)
                        if on_progress is not None:
                            on_progress(path.name, sent, size)
                    if not chunk or sent >= size:
                        break
                if sent != size:
                    raise ProtocolError(f"{path} changed size while it was sent ({sent} of {size} bytes)")
                await self._xfer_expect(xfer_id, A.XFER_SUCCESS, timeout, f"the guest to save {path.name}")
                done.append({"file": str(path), "name": path.name, "size": size})
            return done
        finally:
            for _path, fh in opened:
                fh.close()

    def _xfer_check(self, xfer_id: int) -> None:
        """A status the agent sent while data was going out ends the transfer (cancel, error, no space)."""
        while not self._inbox.empty():
            msg_type, body = self._inbox.get_nowait()
            if msg_type == A.FILE_XFER_STATUS:
                got_id, _result, problem = A.xfer_status(body)
                if got_id == xfer_id and problem:
                    raise ProtocolError(f"copying to the guest failed: {problem}")

    async def _xfer_expect(self, xfer_id: int, wanted: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            _type, body = await self.expect({A.FILE_XFER_STATUS}, max(0.0, deadline - time.monotonic()), what)
            got_id, result, problem = A.xfer_status(body)
            if got_id != xfer_id:
                continue
            if result == A.XFER_DISABLED:
                raise ProtocolError(f"copying to the guest failed: {problem}",
                                    hint="spice-vdagent disables it when the guest user has no Downloads or "
                                         "Desktop folder (xdg-user-dirs-update makes them) and no -f FOLDER")
            if problem:
                raise ProtocolError(f"copying to the guest failed: {problem}")
            if result == wanted:
                return
            raise ProtocolError(f"the guest's agent answered status {result} out of turn")

    async def clipboard_sync(self, on_guest_text: Callable[[str], None]) -> None:
        """Run until cancelled, as a viewer does: text copied in the guest goes to `on_guest_text`, and
        the guest's pastes get what `clipboard_offer` offered last."""
        caps = await self.start()
        text_type = A.CLIPBOARD_TYPE.pack(type=A.CLIPBOARD_UTF8_TEXT)
        while True:
            msg_type, body = await self._inbox.get()
            if msg_type not in (A.CLIPBOARD_GRAB, A.CLIPBOARD, A.CLIPBOARD_REQUEST):
                continue
            _selection, data = A.without_selection(caps, body)
            if msg_type == A.CLIPBOARD_GRAB:
                offered = {int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data) - 3, 4)}
                if A.CLIPBOARD_UTF8_TEXT in offered:
                    await self.send(A.CLIPBOARD_REQUEST, A.with_selection(caps, text_type))
            elif msg_type == A.CLIPBOARD:
                if A.CLIPBOARD_TYPE.unpack(data)["type"] == A.CLIPBOARD_UTF8_TEXT:
                    on_guest_text(data[A.CLIPBOARD_TYPE.size:].decode("utf-8", errors="replace"))
            elif self._offered_text is not None:
                await self.send(A.CLIPBOARD, A.with_selection(caps, text_type + self._offered_text.encode()))

    async def clipboard_offer(self, text: str) -> None:
        """Take the guest's clipboard with `text`; clipboard_sync hands it over when the guest pastes."""
        caps = await self.start()
        self._offered_text = text
        await self.send(A.CLIPBOARD_GRAB, A.with_selection(caps, A.CLIPBOARD_TYPE.pack(
            type=A.CLIPBOARD_UTF8_TEXT)))
