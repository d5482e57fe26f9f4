"""The proxy listener: HTTP CONNECT (remote-viewer's proxy=) and WebSocket + spice-html5 (browsers).

One port serves both: the request head is parsed with h11, then
  CONNECT host:port      → a raw tunnel, only to the endpoint the token names
                           (token in Proxy-Authorization: Basic, any user name);
  GET with Upgrade       → a WebSocket (framed by `websockets`), relayed to the
                           guest over TLS verified against spicectl's CA;
                           Origin must be this proxy; token from ?token= or the
                           `token` cookie spice-html5 sets;
  GET /spice_auto.html … → the spice-html5 client files (only with a usable token
                           for the page itself).
Connections that have not sent a complete, valid request within
HANDSHAKE_TIMEOUT seconds are closed. One log line per session, never a ticket.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import ssl
import time
from collections import deque
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from spicectl.errors import AuthError, Conflict, EnvironmentProblem, InvalidInput, NotFound
from spicectl.pki.issue import SERVER_CERT, SERVER_KEY
from spicectl.proxy.relay import Counts, SocketEndpoint, StreamEndpoint, WebSocketEndpoint, relay
from spicectl.proxy.tokens import Grant, MemorySpent, Session, Sessions, Signer, SqliteSpent

log = logging.getLogger("spicectl.proxy")

HANDSHAKE_TIMEOUT = 5.0
MAX_HEAD = 16 * 1024
# A browser's WebSocket message (SPICE messages from a client are small): beyond this the session is
# closed with 1009, before the parser buffers the frame, so one session cannot fill the proxy's memory.
MAX_BROWSER_MESSAGE = 16 * 1024 * 1024
HTML5_DIRS = ("/usr/share/spice-html5",)


def find_html5_dir(extra: list[str] | None = None) -> Path | None:
    for d in [*(extra or []), *HTML5_DIRS]:
        if d and (Path(d) / "spice_auto.html").is_file():
            return Path(d)
    return None


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def listener_tls(cert_dir: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """The TLS context of a proxy's listener: the server pair in `cert_dir`; with `client_ca`, clients
    must present a certificate that CA issued."""
    cert, key = cert_dir / SERVER_CERT, cert_dir / SERVER_KEY
    if not cert.exists() or not key.exists():
        raise NotFound(f"no server certificate in {cert_dir}",
                       hint=f"spicectl cert issue server --host HOST --out {cert_dir}")

    def no_passphrase() -> bytes:
        raise InvalidInput(f"{key} is encrypted; the proxy needs an unencrypted key (mode 0600)")

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key, password=no_passphrase)
        if client_ca is not None:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInput(f"cannot use the certificate and key in {cert_dir}: {exc}") from None
    return ctx


class ProxyServer:
    def __init__(self, signer: Signer, *, ca_file: str | None, html5_dir: Path | None = None,
                 tls: ssl.SSLContext | None = None, single: bool = False,
                 spent: MemorySpent | SqliteSpent | None = None) -> None:
        self.signer = signer
        self.ca_file = ca_file
        self.html5_dir = html5_dir
        self.tls = tls
        self.single = single
        self.sessions = Sessions(spent)
        self.finished = asyncio.Event()   # single mode: the one session has ended
        self.ended = 0                    # sessions that have ended since the start
        self._ended = asyncio.Condition()
        self.server: asyncio.base_events.Server | None = None
        self.refusals: deque[str] = deque(maxlen=1000)  # recent reasons, for tests and diagnostics
        self._conns: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        import errno

        try:
            self.server = await asyncio.start_server(self._handle, host, port, ssl=self.tls,
                                                     reuse_port=reuse_port or None,
                                                     ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self.tls else None)
        except OSError as exc:
            where = f"{host}:{port}"
            if exc.errno == errno.EADDRINUSE:
                raise Conflict(f"{where} is already in use", hint="choose another port with --listen"
                               + ("" if reuse_port else " (proxies sharing a port each need --reuse-port)")) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidInput(f"cannot listen on {where}: no interface of this host has that address") from None
            if exc.errno == errno.EACCES:
                raise EnvironmentProblem(f"not allowed to listen on {where}",
                                         hint="ports below 1024 need root (or CAP_NET_BIND_SERVICE)") from None
            raise EnvironmentProblem(f"cannot listen on {where}: {exc.strerror or exc}") from None
        sock = self.server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    # --- one connection ---------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a handler always runs in a task
        self._conns.add(task)
        peer = writer.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if peer else "?"
        try:
            try:
                raw = await asyncio.wait_for(self._read_head(reader), HANDSHAKE_TIMEOUT)
            except TimeoutError:
                self._refuse(who, "no complete request within the handshake timeout")
                return
            except Refused as exc:
                self._refuse(who, exc.reason)
                await self._respond(writer, exc.status, exc.reason)
                return
            await self._dispatch(raw, reader, writer, who)
        except Refused as exc:
            self._refuse(who, exc.reason)
            await self._respond(writer, exc.status, exc.reason)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() ends the sessions it holds: asyncio's stream callback would log a cancelled
            # handler as an error, with a traceback, on a proxy that stopped as asked
            pass
        finally:
            self._conns.discard(task)
            try:
                writer.close()
            except Exception:
                pass

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await reader.read(4096)
            if not chunk:
                raise Refused(400, "connection closed before a complete request")
            data += chunk
            if len(data) > MAX_HEAD:
                raise Refused(431, "request head too large")
        return data

    def _refuse(self, who: str, reason: str) -> None:
        self.refusals.append(reason)
        log.warning("refused %s: %s", who, reason)

    async def _respond(self, writer: asyncio.StreamWriter, status: int, reason: str, body: bytes | None = None,
                       headers: list[tuple[str, str]] | None = None, head_only: bool = False) -> None:
        text = body if body is not None else (reason + "\n").encode()
        fields = [("Content-Length", str(len(text))), ("Connection", "close"), ("Cache-Control", "no-store"),
                  ("Referrer-Policy", "no-referrer"), ("X-Content-Type-Options", "nosniff"), *(headers or [])]
        # every reply ends the connection, so each is serialised on its own
        http = h11.Connection(h11.SERVER)
        head = http.send(h11.Response(status_code=status, headers=fields, reason=HTTPStatus(status).phrase))
        try:
            # a reply to HEAD says how long the body would be, and sends none
            writer.write(head + (b"" if head_only else text))
            await writer.drain()
        except (ConnectionError, OSError):
            pass

    async def _dispatch(self, raw: bytes, reader, writer, who: str) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(raw)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise Refused(400, f"malformed request ({exc})") from None
        if not isinstance(event, h11.Request):
            raise Refused(400, "malformed request")
        method = event.method.decode("latin-1")
        target = event.target.decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        if method == "CONNECT":
            await self._connect(conn, target, headers, reader, writer, who)
        elif method == "GET" and headers.get("upgrade", "").lower() == "websocket":
            await self._websocket(raw, target, headers, reader, writer, who)
        elif method in ("GET", "HEAD"):
            try:
                await self._static(target, headers, writer, head_only=method == "HEAD")
            except Refused as exc:
                self._refuse(who, exc.reason)
                await self._respond(writer, exc.status, exc.reason, head_only=method == "HEAD")
        else:
            raise Refused(405, f"method {method} not allowed")

    def _grant(self, token: str | None, kind: str) -> Grant:
        try:
            grant = self.signer.verify(token)
            if grant.kind != kind:
                raise AuthError(f"token is for a {grant.kind} session, not {kind}")
            self.sessions.check(grant)
        except AuthError as exc:
            raise Refused(407 if kind == "connect" else 403, exc.message) from None
        return grant

    # --- HTTP CONNECT -----------------------------------------------------------------
    async def _connect(self, conn: h11.Connection, target: str, headers: dict, reader, writer, who: str) -> None:
        try:
            conn.next_event()  # the request's end: h11 then lets a 2xx switch the connection to the tunnel
        except h11.RemoteProtocolError as exc:
            raise Refused(400, f"malformed CONNECT request ({exc})") from None
        if conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
            raise Refused(400, "a CONNECT request carries no body")
        auth = headers.get("proxy-authorization", "")
        token = None
        if auth.lower().startswith("basic "):
            try:
                user_pass = base64.b64decode(auth[6:].strip()).decode()
                token = user_pass.split(":", 1)[1] if ":" in user_pass else user_pass
            except (ValueError, UnicodeDecodeError):
                token = None
        if token is None:
            raise Refused(407, "CONNECT without a token")
        grant = self._grant(token, "connect")
        if _norm_target(target) != _norm_target(grant.target):
            raise Refused(403, f"CONNECT to {target} but the token names {grant.target}")
        try:
            guest = await asyncio.wait_for(SocketEndpoint.open(grant.host, grant.port), HANDSHAKE_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            raise Refused(502, f"cannot reach {grant.target}: {exc}") from None
        writer.write(conn.send(h11.Response(status_code=200, headers=[], reason=b"Connection established")))
        await writer.drain()
        leftover = conn.trailing_data[0]  # what the client sent after the request head (a TLS hello, early)
        await self._run_session(grant, who, "http-connect", StreamEndpoint(reader, writer, leftover), guest)

    # --- WebSocket --------------------------------------------------------------------
    async def _websocket(self, raw: bytes, target: str, headers: dict, reader, writer, who: str) -> None:
        from websockets.http11 import Request
        from websockets.server import ServerProtocol
        from websockets.typing import Subprotocol

        origin = headers.get("origin")
        host = headers.get("host", "")
        scheme = "https" if self.tls else "http"
        if origin is not None and origin.rstrip("/") != f"{scheme}://{host}":
            raise Refused(403, f"WebSocket from foreign origin {origin}")
        token = _query(target).get("token") or _cookie(headers.get("cookie", ""), "token")
        grant = self._grant(token, "ws")
        # spice-html5 asks for the "binary" subprotocol (as websockify offers it); clients that ask
        # for none are served too
        binary = Subprotocol("binary")
        protocol = ServerProtocol(select_subprotocol=lambda _p, offered: binary if binary in offered else None,
                                  max_size=MAX_BROWSER_MESSAGE)
        protocol.receive_data(raw)
        requests = [e for e in protocol.events_received() if isinstance(e, Request)]
        if not requests or protocol.handshake_exc is not None:  # e.g. more headers than websockets takes
            raise Refused(400, f"bad WebSocket handshake: {protocol.handshake_exc or 'incomplete request'}")
        response = protocol.accept(requests[0])
        if response.status_code != 101:
            raise Refused(400, f"bad WebSocket handshake: {protocol.handshake_exc or response.reason_phrase}")
        try:
            guest = await asyncio.wait_for(self._open_guest(grant), HANDSHAKE_TIMEOUT * 2)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise Refused(502, f"cannot reach {grant.guest} at {grant.target}: {exc}") from None
        protocol.send_response(response)
        writer.write(b"".join(protocol.data_to_send()))
        await writer.drain()
        client = await WebSocketEndpoint.take_over(protocol, reader, writer)
        await self._run_session(grant, who, "websocket", client, guest)

    async def _open_guest(self, grant: Grant) -> SocketEndpoint:
        ctx = ssl.create_default_context(cafile=self.ca_file) if grant.tls else None
        return await SocketEndpoint.open(grant.host, grant.port, tls=ctx)

    # --- sessions ---------------------------------------------------------------------
    async def _run_session(self, grant: Grant, who: str, via: str, client, guest) -> None:
        session = self.sessions.join(grant, who, via)
        counts = Counts()
        try:
            await relay(client, guest, counts, on_end=lambda: self.sessions.close(session))
        finally:
            session.up += counts.up
            session.down += counts.down
            if self.sessions.leave(session):
                self._log_session(session)
                if self.single:
                    self.finished.set()
                async with self._ended:
                    self.ended += 1
                    self._ended.notify_all()

    async def wait_ended(self, count: int = 1, timeout: float = 30) -> None:
        """Until `count` sessions have ended (and been logged) since the proxy started."""
        async with self._ended:
            await asyncio.wait_for(self._ended.wait_for(lambda: self.ended >= count), timeout)

    def _log_session(self, s: Session) -> None:
        log.info("session guest=%s from=%s via=%s channels=%d up=%d down=%d duration=%.1fs",
                 s.grant.guest, s.peer, s.via, s.channels, s.up, s.down, time.monotonic() - s.started)

    # --- static files -----------------------------------------------------------------
    async def _static(self, target: str, headers: dict, writer, head_only: bool = False) -> None:
        if self.html5_dir is None:
            raise Refused(404, "no spice-html5 client installed on this proxy")
        parts = urlsplit(target)
        if parts.path == "/favicon.ico":
            await self._respond(writer, 204, "No Content", b"", head_only=head_only)
            return
        rel = unquote(parts.path).lstrip("/") or "spice_auto.html"
        if any(ord(c) < 32 for c in rel):  # a NUL (or any control byte) names no file of ours
            raise Refused(404, "not found")
        path = (self.html5_dir / rel).resolve()
        if self.html5_dir.resolve() not in path.parents or not path.is_file():
            raise Refused(404, "not found")
        if path.suffix == ".html":
            # the page itself is for token holders only
            self._grant(_query(target).get("token"), "ws")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".js":
            ctype = "text/javascript"
        await self._respond(writer, 200, "OK", path.read_bytes(), [("Content-Type", ctype)], head_only=head_only)


def _query(target: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}


def _cookie(header: str, name: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    return unquote(jar[name].value) if name in jar else None


def _norm_target(target: str) -> str:
    host, _, port = target.rpartition(":")
    return f"{host.strip('[]').lower()}:{port}"


