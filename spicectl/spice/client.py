"""A minimal headless SPICE client (asyncio): the session (link, the main channel, the channel list,
`open_channel` for any other). Each channel's work lives in a module of its own beside its sans-I/O
state: `screen_link` (`client.screen`: the display and cursor), `inputs_link` (`client.inputs`:
keys, pointer), `agent_link` (`client.agent`: the guest agent over the main channel), and functions
that take the session: `audio_link` (playback, record), `webdav_link` (folder sharing), `port_link`,
`usbredir_link`.

    async with Client("127.0.0.1", tls_port=5901, password=b"...", ca_file="ca-cert.pem") as c:
        image = await c.screen.screenshot()
        await c.inputs.key_down(0x01)
        await c.screen.wait_for(lambda frame: ..., timeout=30)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence

from spicectl.errors import ProtocolError, TimeoutExpired
from spicectl.spice import link
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.agent_link import AGENT_MESSAGES, AgentLink
from spicectl.spice.budget import Budget
from spicectl.spice.channel import Message
from spicectl.spice.inputs_link import INPUTS_CAP_KEY_SCANCODE, InputsLink
from spicectl.spice.screen_link import ScreenLink
from spicectl.spice.transport import Connection, Transport, open_stream
from spicectl.spice.transport import link as link_over
from spicectl.spice.wire import caps_bits

Opener = Callable[[int], Awaitable[Transport]]

log = logging.getLogger("spicectl.spice")

CONNECT_TIMEOUT = 15.0


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Trusts only `ca_file` (or the system's CAs) and checks the host name: never unverified."""
    return ssl.create_default_context(cafile=ca_file)


class Client:
    def __init__(self, host: str, *, port: int | None = None, tls_port: int | None = None,
                 password: bytes | None = None, ca_file: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 host_subject: str | None = None, opener: Opener | None = None,
                 allow_partial: bool = False, display_observer: Callable[[Message], None] | None = None,
                 prefer_video: Sequence[str] = (), sasl_user: str | None = None) -> None:
        if port is None and tls_port is None:
            raise ValueError("give port or tls_port")
        self.host = host
        self.port = port
        self.tls_port = tls_port
        self.password = password
        self.sasl_user = sasl_user   # log in with SASL as this user (`password` is theirs), not a ticket
        self.ssl_context = ssl_context or (tls_context(ca_file) if tls_port else None)
        self.server_hostname = server_hostname or host
        self.host_subject = host_subject
        self.opener = opener  # for proxies: async (channel_type) -> Transport
        self.budget = Budget()   # the memory all of this session's channels may hold (--max-memory)
        self.session_id = 0
        self.channels_available: set[tuple[int, int]] = set()
        self.main: Connection | None = None
        self.inputs = InputsLink(self)   # keys and the pointer, on the inputs channel
        self._tasks: list[asyncio.Task] = []
        self._error: BaseException | None = None
        self._init = asyncio.Event()
        self._channels_listed = asyncio.Event()
        self._inputs_ready = asyncio.Event()
        self.agent = AgentLink(self)   # the guest agent, over the main channel
        # the display and cursor channels: what the guest shows
        self.screen = ScreenLink(self, self.budget, allow_partial=allow_partial, observer=display_observer,
                                 prefer_video=prefer_video)

    # --- connection -----------------------------------------------------------------
    async def _open_transport(self, channel_type: int) -> Transport:
        if self.opener is not None:
            return await self.opener(channel_type)
        if self.tls_port:
            return await open_stream(self.host, self.tls_port, ssl_context=self.ssl_context,
                                     server_hostname=self.server_hostname)
        assert self.port is not None
        return await open_stream(self.host, self.port)

    async def open_channel(self, channel_type: int, channel_id: int = 0, caps: tuple[int, ...] = ()) -> Connection:
        """Link one more channel of this session (its connection id, the same server and ticket)."""
        try:
            transport = await asyncio.wait_for(self._open_transport(channel_type), CONNECT_TIMEOUT)
        except TimeoutError:
            raise TimeoutExpired(f"connecting to {self.host} timed out") from None
        except ssl.SSLCertVerificationError as exc:
            raise ProtocolError(f"the server's TLS certificate was refused: {exc.verify_message}") from None
        except OSError as exc:
            raise ProtocolError(f"cannot connect to {self.host}:{self.tls_port or self.port}: {exc.strerror or exc}") \
                from None
        der = transport.peer_certificate()
        if self.host_subject and der is not None:
            # (through the WebSocket proxy there is no TLS here: the proxy verifies the guest)
            self._check_subject(der, self.host_subject)
        handshake = link.Handshake(channel_type, channel_id, self.session_id, password=self.password,
                                   channel_caps=caps, sasl_user=self.sasl_user, tls=der is not None)
        try:
            conn = await asyncio.wait_for(link_over(transport, handshake), CONNECT_TIMEOUT)
        except TimeoutError:
            transport.close()
            raise TimeoutExpired(f"{handshake.name} channel: link timed out") from None
        except BaseException:
            transport.close()
            raise
        return conn

    @staticmethod
    def _check_subject(der: bytes, expected: str) -> None:
        from spicectl.pki.names import host_subject_of

        subject = host_subject_of(der)
        if subject.replace(" ", "") != expected.replace(" ", ""):
            raise ProtocolError(f"server certificate subject {subject!r} is not {expected!r}")

    async def connect(self, *, display: bool = True, inputs: bool = True, cursor: bool = False) -> Client:
        self.main = await self.open_channel(link.MAIN)
        self._spawn(self._main_loop())
        await self.wait_event(self._init, "the main channel's init message")
        self.main.send(M.MSGC_MAIN_ATTACH_CHANNELS)
        await self.main.flush()
        await self.wait_event(self._channels_listed, "the channel list")
        if display:
            for loop in await self.screen.open(cursor=cursor):
                self._spawn(loop)
        if inputs and (link.INPUTS, 0) in self.channels_available:
            self.inputs.channel = await self.open_channel(link.INPUTS, 0, (INPUTS_CAP_KEY_SCANCODE,))
            self._spawn(self.inputs.run(self._inputs_ready))
            await self.wait_event(self._inputs_ready, "the inputs channel")
        return self

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.screen.close()
        for ch in (self.inputs.channel, self.main):
            if ch is not None:
                ch.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _spawn(self, coro) -> None:
        # a task of its own (not a wrapper coroutine): one cancelled before it ran leaves no coroutine
        # that was never awaited
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._task_ended)
        self._tasks.append(task)

    def _task_ended(self, task: asyncio.Future) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._error = task.exception()  # surfaced to whoever waits next
        self.screen.wake()
        for ev in (self._init, self._channels_listed, self._inputs_ready):
            ev.set()
        self.agent.wake()
        self.inputs.wake()

    @property
    def failed(self) -> bool:
        """A channel task of this session ended with an error: the session is no use any more."""
        return self._error is not None

    def raise_if_failed(self) -> None:
        """Raise what ended a channel task of this session, if one ended so."""
        if self._error is not None:
            raise self._error

    async def wait_event(self, event: asyncio.Event, what: str, timeout: float = CONNECT_TIMEOUT) -> None:
        """Wait for `event` (TimeoutExpired naming `what` after `timeout`), then raise what ended the session."""
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            raise TimeoutExpired(f"timed out waiting for {what}") from None
        self.raise_if_failed()

    # --- channel loops ------------------------------------------------------------------
    async def _main_loop(self) -> None:
        assert self.main is not None
        while True:
            msg_type, body = await self.main.read()
            if msg_type == M.MSG_MAIN_INIT:
                init = W.MAIN_INIT.unpack(body)
                self.agent.init(bool(init["agent_connected"]), init["agent_tokens"])
                self.session_id = init["session_id"]
                self.inputs.mouse_mode_is(init["supported_mouse_modes"], init["current_mouse_mode"])
                self._init.set()
            elif msg_type == M.MSG_MAIN_CHANNELS_LIST:
                listed = W.CHANNELS_LIST.unpack(body)["channels"]
                self.channels_available = {(c["type"], c["id"]) for c in listed}
                self._channels_listed.set()
            elif msg_type in AGENT_MESSAGES:
                await self.agent.handle(msg_type, body)
            elif msg_type == M.MSG_MAIN_MOUSE_MODE:
                mode = W.MAIN_MOUSE_MODE.unpack(body)
                self.inputs.mouse_mode_is(mode["supported_modes"], mode["current_mode"])


__all__ = ["Client", "tls_context", "caps_bits"]
