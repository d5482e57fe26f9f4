"""Carrying out `spicectl connect`: viewer, .vv file, builtin client, with or without a proxy."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from spicectl.errors import EnvironmentProblem, InvalidInput, TimeoutExpired
from spicectl.session.handoff import html5_url, make_vv, proxy_url_parts, server_identity
from spicectl.session.server import SpiceServer


@dataclass
class SessionRequest:
    """What `spicectl connect` was asked for."""

    mode: str | None = None            # "viewer", "builtin", or None (a .vv file or a proxy URL only)
    vv_path: str | None = None         # "-" for stdout
    proxy: str | None = None           # "ws" or "http-connect"
    proxy_url: str | None = None       # an external `proxy serve`; else a proxy runs here for this session
    listen: tuple[str, int] = ("127.0.0.1", 0)
    token_ttl: int = 60
    screenshot: str | None = None      # with mode "builtin"
    view: bool = False                 # with mode "builtin": a viewer window instead of a screenshot
    html5_dir: str | None = None
    usbredir: bool = False
    # with `view`: emulated USB devices (usb_storage.MassStorage) plugged in while the window is open
    usb_devices: list = field(default_factory=list)
    on_usb: Callable[[int, int, object], None] = lambda _i, _c, _e: None


class SessionOutput(Protocol):
    """How a session tells its user things; the CLI prints, a library caller may collect."""

    def info(self, message: str) -> None:
        """A note (the CLI prints it on stderr unless --quiet or --json)."""

    def announce(self, data: dict, line: str) -> None:
        """What the user needs now, while the session runs on (a URL, a pid): `data` or `line`."""

    def write_vv(self, text: str) -> None:
        """A .vv file's text for standard output (`--vv -`)."""


LINK_SLACK = 30   # seconds a session's channels may take to link after its token admitted it


def ticket_ttl(ttl: int, token_ttl: int | None, *, explicit: bool) -> int:
    """The SPICE ticket's lifetime for a session: through a proxy, the ticket must outlive every moment
    its token can start a session (and the link that follows), or the guest refuses a session the
    proxy admitted ('Permission denied', and nothing says why). An explicit --ttl shorter than the
    token's is refused; the default is stretched."""
    if token_ttl is None or ttl >= token_ttl + LINK_SLACK:
        return ttl
    if explicit and ttl < token_ttl:
        raise InvalidInput(f"--ttl {ttl} is shorter than --token-ttl {token_ttl}: a session the proxy admits after "
                           f"{ttl}s would be refused by the guest",
                           hint=f"give --ttl of at least {token_ttl} (or leave it out: the ticket then lasts "
                                f"{token_ttl + LINK_SLACK}s)")
    return ttl if explicit else token_ttl + LINK_SLACK


def _launch_viewer(vv: Path) -> int:
    exe = shutil.which("remote-viewer")
    if exe is None:
        raise EnvironmentProblem("remote-viewer is not installed", hint="apt-get install virt-viewer, or use --vv")
    proc = subprocess.Popen([exe, str(vv)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def _write_vv(out: SessionOutput, vvfile, vv_path: str | None) -> Path | None:
    if vv_path == "-":
        out.write_vv(vvfile.render())
        return None
    if vv_path:
        path = Path(vv_path)
    else:
        path = Path(tempfile.mkdtemp(prefix="spicectl-")) / "session.vv"  # 0700 dir, 0600 file
    vvfile.write(path)
    return path


def _signer(state_dir: Path):
    from spicectl.proxy.tokens import Signer, load_secret

    return Signer(load_secret(state_dir))


def run(server: SpiceServer, request: SessionRequest, *, state_dir: Path, out: SessionOutput) -> dict | None:
    """Carry out the session; a result for the caller, or None when it was all announced already."""
    r = request
    valid_to = server.valid_to
    # (an Xspice display's password does not expire: no date)
    until = f"ticket valid until {valid_to}" if valid_to else "the display's password does not expire"
    # Known already for the private default; otherwise read before any event loop runs (the
    # identity check is a TLS handshake of its own).
    identity = None if r.mode == "builtin" else server.host_subject or server_identity(server)
    if r.proxy is None:
        if r.mode == "builtin":
            return _builtin(server, None, r)
        vvfile = make_vv(server, host_subject=identity, usbredir=r.usbredir)
        path = _write_vv(out, vvfile, r.vv_path)  # viewer without --vv: a private temporary file
        if path is None:
            return None
        if r.mode == "viewer":
            pid = _launch_viewer(path)
            out.info(f"remote-viewer started (pid {pid}); {until}")
            return {"name": server.name, "mode": "viewer", "pid": pid, "vv": str(path), "valid_to": valid_to}
        out.info(f"{path} written (mode 0600); {until}")
        return {"name": server.name, "mode": "vv", "vv": str(path), "valid_to": valid_to}

    signer = _signer(state_dir)
    if r.proxy_url:
        return _external(out, signer, server, r, identity)
    return asyncio.run(_local(out, signer, server, r, identity=identity, state_dir=state_dir))


def _mint(signer, server: SpiceServer, proxy: str, ttl: int):
    port = server.tls_port or server.port
    return signer.mint(guest=server.name or "?", host=server.host, port=port,
                       tls=bool(server.tls_port) and proxy == "ws", kind="ws" if proxy == "ws" else "connect",
                       ttl=ttl)


def _external(out: SessionOutput, signer, server: SpiceServer, r: SessionRequest, identity: str | None):
    assert r.proxy_url is not None and r.proxy is not None
    scheme, phost, pport = proxy_url_parts(r.proxy_url)
    token, grant = _mint(signer, server, r.proxy, r.token_ttl)
    if r.proxy == "ws":
        if r.mode == "builtin":
            return _builtin(server, _ws_opener(phost, pport, token, scheme == "https", server), r)
        url = html5_url(r.proxy_url, token, server.password)
        out.announce({"name": server.name, "url": url, "expires": grant.expires, "valid_to": server.valid_to}, url)
        return None
    if scheme != "http":
        raise InvalidInput("remote-viewer's proxy= speaks plain HTTP CONNECT: use an http:// --proxy-url")
    if r.mode == "builtin":
        return _builtin(server, _connect_opener(phost, pport, token, server), r)
    vvfile = make_vv(server, host_subject=identity, proxy=f"http://spicectl:{token}@{phost}:{pport}",
                     usbredir=r.usbredir)
    path = _write_vv(out, vvfile, r.vv_path)
    if path is None:
        return None
    if r.mode == "viewer":
        pid = _launch_viewer(path)
        return {"name": server.name, "mode": "viewer", "pid": pid, "vv": str(path), "proxy": r.proxy_url}
    return {"name": server.name, "mode": "vv", "vv": str(path), "proxy": r.proxy_url}


def _ws_opener(host, port, token, tls: bool, server):
    from spicectl.session.openers import websocket_opener

    scheme = "wss" if tls else "ws"
    ctx = None
    if tls:
        import ssl

        ctx = ssl.create_default_context(cafile=server.ca_file)
    return websocket_opener(f"{scheme}://{host}:{port}/websockify?token={token}",
                            origin=f"{'https' if tls else 'http'}://{host}:{port}", ssl_context=ctx)


def _connect_opener(host, port, token, server):
    from spicectl.session.openers import connect_opener
    from spicectl.spice.client import tls_context

    return connect_opener(host, port, token, server.host, server.tls_port, ssl_context=tls_context(server.ca_file),
                          server_hostname=server.server_hostname)


def _builtin(server: SpiceServer, opener, r: SessionRequest) -> dict:
    return asyncio.run(_builtin_async(server, opener, r))


async def _builtin_async(server: SpiceServer, opener, r: SessionRequest) -> dict:
    # Through a proxy the opener supplies each channel's stream (the WebSocket proxy holds the TLS to
    # the guest; through CONNECT the opener runs TLS end to end).
    client = server.client(opener=opener, allow_partial=r.view)
    await client.connect(inputs=r.view)
    try:
        if r.view:
            from spicectl.session.viewer import view

            stats = await view(client, f"{server.name} (spicectl)", usb_devices=r.usb_devices, on_usb=r.on_usb)
            return {"name": server.name, "mode": "builtin", "view": True, "seconds": round(stats.seconds, 1),
                    "frames_drawn": stats.frames_drawn}
        image = await client.screen.screenshot()
    finally:
        await client.close()
    return _builtin_result(server, image, r.screenshot)


def _builtin_result(server, image, screenshot) -> dict:
    if screenshot:
        import io

        from spicectl.pki.store import atomic_write

        buf = io.BytesIO()
        image.save(buf, "PNG")
        atomic_write(Path(screenshot), buf.getvalue(), 0o644)
    return {"name": server.name, "mode": "builtin", "screenshot": screenshot,
            "width": image.width, "height": image.height}


async def _local(out: SessionOutput, signer, server: SpiceServer, r: SessionRequest, *, identity: str | None,
                 state_dir: Path) -> dict | None:
    from spicectl.proxy.server import ProxyServer, find_html5_dir
    from spicectl.proxy.tokens import spent_store

    assert r.proxy is not None
    html5 = find_html5_dir([r.html5_dir] if r.html5_dir else None) if r.proxy == "ws" else None
    if r.proxy == "ws" and html5 is None and r.mode != "builtin":
        raise EnvironmentProblem("spice-html5 is not installed", hint="apt-get install spice-html5, or --html5-dir")
    # the shared store: the same secret signs tokens for `proxy serve`, where this one must be spent too
    proxy = ProxyServer(signer, ca_file=server.ca_file, html5_dir=html5, single=True, spent=spent_store(state_dir))
    host, port = await proxy.start(*r.listen)
    token, grant = _mint(signer, server, r.proxy, r.token_ttl)
    result: dict | None = None
    try:
        if r.proxy == "ws":
            if r.mode == "builtin":
                result = await _builtin_async(server, _ws_opener(host, port, token, False, server), r)
                await asyncio.sleep(0)  # let the proxy log the session
            else:
                url = html5_url(f"http://{host}:{port}", token, server.password)
                out.announce({"name": server.name, "url": url, "listen": f"{host}:{port}",
                              "expires": grant.expires, "valid_to": server.valid_to}, url)
                await _wait_session(proxy, grant)
        else:
            if r.mode == "builtin":
                result = await _builtin_async(server, _connect_opener(host, port, token, server), r)
            else:
                vvfile = make_vv(server, host_subject=identity, proxy=f"http://spicectl:{token}@{host}:{port}",
                                 usbredir=r.usbredir)
                path = await asyncio.to_thread(_write_vv, out, vvfile, r.vv_path if r.vv_path else None)
                if r.mode == "viewer" and path is not None:
                    pid = _launch_viewer(path)
                    out.announce({"name": server.name, "mode": "viewer", "pid": pid, "vv": str(path),
                                  "listen": f"{host}:{port}"}, f"remote-viewer started (pid {pid}) through "
                                                               f"the proxy on {host}:{port}")
                elif path is not None:
                    out.announce({"name": server.name, "mode": "vv", "vv": str(path), "listen": f"{host}:{port}",
                                  "expires": grant.expires, "valid_to": server.valid_to},
                                 f"{path} written; proxy on {host}:{port} waits for its session")
                await _wait_session(proxy, grant)
    finally:
        await proxy.close()
    return result


async def _wait_session(proxy, grant) -> None:
    """Until the session this token opened ends, or the token expires unused."""
    while not proxy.finished.is_set():
        if time.time() > grant.expires and grant.nonce not in proxy.sessions.live:
            raise TimeoutExpired("nobody used the session before its token expired")
        try:
            await asyncio.wait_for(proxy.finished.wait(), 0.5)
        except TimeoutError:
            pass

