"""A hostile SPICE server for tests: it links any client and then says what a test tells it to.

The link stage and framing are the real protocol, built on spicectl.spice.wire's layouts (the
server's side of them), so the real client and CLI run against it unchanged. It offers a display
and a playback channel; each plays its given list of messages once and then stays open and quiet
(a stall the client must bound), or closes (`hang_up`). `run_cli` runs a spicectl command in a
forked child under an address-space limit and a deadline, as tests/bounded.py does for code.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from spicectl.spice import link
from spicectl.spice import messages as M
from spicectl.spice import wire as W
from spicectl.spice.channel import Message


def _public_key_der() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    assert len(der) == W.TICKET_PUBKEY_BYTES
    return der


_KEY = _public_key_der()


@dataclass
class Script:
    """What the server sends on each channel once it is linked."""

    display: list[Message] = field(default_factory=list)
    playback: list[Message] = field(default_factory=list)
    hang_up: bool = False   # close each channel after its messages (else stay open and quiet)
    # an inputs channel, and the mouse: client mode offered (granted after mode_delay seconds, or never
    # with None), and a motion acknowledgement every ack_every motions (0: none at all)
    inputs: bool = False
    client_mouse: bool = False
    mode_delay: float | None = 0.0
    ack_every: int = M.INPUTS_MOTION_ACK_BUNCH
    # a usbredir channel: the bytes the guest side (QEMU's part) sends on it, then `usbredir_forever`
    # again and again until the client goes; it never reads what the client sends if `usbredir_deaf`
    usbredir: list[bytes] | None = None
    usbredir_forever: bytes = b""
    usbredir_deaf: bool = False
    # a SASL login instead of a ticket: after the client picks SASL, these bytes, then silence
    sasl: bytes | None = None


def _frame(msg_type: int, body: bytes) -> bytes:
    return W.MINI_HEADER.pack(type=msg_type, size=len(body)) + body


class HostileServer:
    """Serves `script` on 127.0.0.1 (in a thread of its own) until closed; `port` is where."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.linked: list[int] = []   # the channel types linked so far
        self.inputs_received: list[Message] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        started.set()
        self._loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            channel = await self._link(reader, writer)
            if channel == link.MAIN:
                await self._main(reader, writer)
            elif channel == link.DISPLAY:
                await self._read_message(reader)   # DISPLAY_INIT (and a codec preference, maybe)
                await self._play(writer, self.script.display)
            elif channel == link.PLAYBACK:
                await self._play(writer, self.script.playback)
            elif channel == link.INPUTS:
                await self._inputs(reader, writer)
            elif channel == link.USBREDIR:
                await self._usbredir(reader, writer)
            if self.script.hang_up:
                return
            await reader.read()   # quiet until the client goes
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        header = W.LINK_HEADER.unpack(await reader.readexactly(W.LINK_HEADER.size))
        mess = W.LINK_MESS.unpack(await reader.readexactly(header["size"]))
        auth = [link.CAP_AUTH_SELECTION, link.CAP_AUTH_SASL] if self.script.sasl is not None else [link.CAP_AUTH_SPICE]
        caps = W.caps_words([*auth, link.CAP_MINI_HEADER])
        body = W.LINK_REPLY.pack(error=0, pub_key=_KEY, num_common_caps=len(caps), num_channel_caps=0,
                                 caps_offset=W.LINK_REPLY.size) + b"".join(c.to_bytes(4, "little") for c in caps)
        writer.write(W.LINK_HEADER.pack(magic=link.MAGIC, major=link.VERSION_MAJOR, minor=link.VERSION_MINOR,
                                        size=len(body)) + body)
        if self.script.sasl is not None:
            await reader.readexactly(4)   # the mechanism: SASL
            writer.write(self.script.sasl)
            await writer.drain()
            await asyncio.sleep(3600)     # and nothing more (closing the server cancels this)
        await reader.readexactly(128)   # the encrypted ticket: any will do
        writer.write(W.LINK_RESULT.pack(error=0))
        await writer.drain()
        self.linked.append(mess["channel_type"])
        return mess["channel_type"]

    @staticmethod
    async def _read_message(reader: asyncio.StreamReader) -> Message:
        head = W.MINI_HEADER.unpack(await reader.readexactly(W.MINI_HEADER.size))
        return Message(head["type"], await reader.readexactly(head["size"]))

    async def _main(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        modes = M.MOUSE_MODE_SERVER | (M.MOUSE_MODE_CLIENT if self.script.client_mouse else 0)
        writer.write(_frame(M.MSG_MAIN_INIT, W.MAIN_INIT.pack(
            session_id=1, display_channels_hint=1, supported_mouse_modes=modes,
            current_mouse_mode=M.MOUSE_MODE_SERVER, agent_connected=0, agent_tokens=0, multi_media_time=0,
            ram_hint=0)))
        await writer.drain()
        while (await self._read_message(reader)).type != M.MSGC_MAIN_ATTACH_CHANNELS:
            pass
        channels = [{"type": link.DISPLAY, "id": 0}, {"type": link.PLAYBACK, "id": 0}]
        if self.script.usbredir is not None:
            channels.append({"type": link.USBREDIR, "id": 0})
        writer.write(_frame(M.MSG_MAIN_CHANNELS_LIST, W.CHANNELS_LIST.pack(
            channels=channels + ([{"type": link.INPUTS, "id": 0}] if self.script.inputs else []))))
        await writer.drain()
        while self.script.inputs:   # a request for client mouse mode: granted after a while, or never answered
            msg = await self._read_message(reader)
            if msg.type == M.MSGC_MAIN_MOUSE_MODE_REQUEST and self.script.mode_delay is not None:
                await asyncio.sleep(self.script.mode_delay)
                writer.write(_frame(M.MSG_MAIN_MOUSE_MODE, W.MAIN_MOUSE_MODE.pack(
                    supported_modes=modes, current_mode=M.MOUSE_MODE_CLIENT)))
                await writer.drain()

    async def _inputs(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_frame(M.MSG_INPUTS_INIT, (0).to_bytes(2, "little")))   # keyboard modifiers
        await writer.drain()
        motions = 0
        while True:
            msg = await self._read_message(reader)
            self.inputs_received.append(msg)
            if msg.type in (M.MSGC_INPUTS_MOUSE_MOTION, M.MSGC_INPUTS_MOUSE_POSITION):
                motions += 1
                if self.script.ack_every and motions % self.script.ack_every == 0:
                    writer.write(_frame(M.MSG_INPUTS_MOUSE_MOTION_ACK, b""))
                    await writer.drain()

    async def _usbredir(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def discard() -> None:   # what the client sends: read and dropped, until it goes
            while await reader.read(1 << 16):
                pass

        reading = None if self.script.usbredir_deaf else asyncio.ensure_future(discard())
        for chunk in self.script.usbredir or []:
            writer.write(_frame(M.MSG_SPICEVMC_DATA, chunk))
            await writer.drain()
        while self.script.usbredir_forever:
            writer.write(_frame(M.MSG_SPICEVMC_DATA, self.script.usbredir_forever))
            await writer.drain()
        if reading is None:
            await asyncio.sleep(3600)   # deaf to the end (closing the server cancels this)
        else:
            await reading

    @staticmethod
    async def _play(writer: asyncio.StreamWriter, messages: list[Message]) -> None:
        for msg in messages:
            writer.write(_frame(msg.type, msg.body))
            await writer.drain()


@dataclass
class Run:
    how: str          # "exit" or "killed" (by a signal: the address-space limit, say) or "timeout"
    code: int | None
    stderr: str
    peak_kib: int

    def __str__(self) -> str:
        return f"{self.how} {self.code}, peak RSS {self.peak_kib // 1024} MiB: {self.stderr[-600:]}"


def run_cli(argv: list[str], *, extra: int = 768 << 20, seconds: float = 30) -> Run:
    """`spicectl ARGV` in a forked child that may map `extra` bytes more than it inherits, killed after
    `seconds`: how it ended, its exit code and its stderr."""
    err = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:   # the child: the CLI as the console script runs it, under the limit
        code = 70
        try:
            os.dup2(err.fileno(), 2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            # the streams the CLI writes to are these descriptors (not a test runner's capture)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            with open("/proc/self/statm") as fh:
                limit = int(fh.read().split()[0]) * resource.getpagesize() + extra
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            from spicectl.cli.main import cli

            try:
                cli.main(args=argv, prog_name="spicectl", standalone_mode=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + seconds
    how = "timeout"
    status = 0
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            how = "exit" if os.WIFEXITED(status) else "killed"
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    err.seek(0)
    text = err.read().decode(errors="replace")
    err.close()
    code = os.WEXITSTATUS(status) if how == "exit" else None
    return Run(how, code, text, usage.ru_maxrss)
