"""Carrying out `spicectl connect`: viewer, .vv file, builtin client, with or without a proxy."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from spicectl.errors import EnvironmentProblem, InvalidInput, TimeoutExpired
from spicectl.session.connect import html5_url, make_vv, proxy_url_parts, server_identity
from spicectl.session.target import SpiceTarget


def _proxy_logging(app) -> None:
    logger = logging.getLogger("spicectl.proxy")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("spicectl proxy: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if app.quiet else logging.INFO)


def _signer(app):
    from spicectl.proxy.tokens import Signer, load_secret

    return Signer(load_secret(app.settings.state_dir))


def _launch_viewer(vv: Path) -> int:
    exe = shutil.which("remote-viewer")
    if exe is None:
        raise EnvironmentProblem("remote-viewer is not installed", hint="apt-get install virt-viewer, or use --vv")
    proc = subprocess.Popen([exe, str(vv)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def _write_vv(vvfile, vv_path: str | None) -> Path | None:
    if vv_path == "-":
        sys.stdout.write(vvfile.render())
        sys.stdout.flush()
        return None
    if vv_path:
        path = Path(vv_path)
    else:
        path = Path(tempfile.mkdtemp(prefix="spicectl-")) / "session.vv"  # 0700 dir, 0600 file
    vvfile.write(path)
    return path


def _announce(app, data: dict, line: str) -> None:
    """Print what the user needs now (the session then runs in the foreground)."""
    import json

    if app.json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        click.echo(line)
    sys.stdout.flush()


def run(app, target: SpiceTarget, *, mode, vv_path, proxy, proxy_url, listen, token_ttl, screenshot, html5_dir,
        usbredir) -> dict | None:
    valid_to = target.valid_to
    # Known already for the private default; otherwise read before any event loop runs (the
    # identity check is a TLS handshake of its own).
    identity = None if mode == "builtin" else target.host_subject or server_identity(target)
    if proxy is None:
        if mode == "builtin":
            return _builtin(target, None, screenshot)
        vvfile = make_vv(target, host_subject=identity, usbredir=usbredir)
        path = _write_vv(vvfile, vv_path)  # viewer without --vv: a private temporary file
        if mode == "viewer":
            pid = _launch_viewer(path)
            app.info(f"remote-viewer started (pid {pid}); ticket valid until {valid_to}")
            return {"name": target.name, "mode": "viewer", "pid": pid, "vv": str(path), "valid_to": valid_to}
        if path is None:
            return None
        app.info(f"{path} written (mode 0600); ticket valid until {valid_to}")
        return {"name": target.name, "mode": "vv", "vv": str(path), "valid_to": valid_to}

    signer = _signer(app)
    _proxy_logging(app)
    if proxy_url:
        return _external(app, signer, target, mode, vv_path, proxy, proxy_url, token_ttl, screenshot, usbredir,
                         identity)
    return asyncio.run(_local(app, signer, target, mode=mode, vv_path=vv_path, proxy=proxy, listen=listen,
                              token_ttl=token_ttl, screenshot=screenshot, html5_dir=html5_dir, usbredir=usbredir,
                              identity=identity))


def _mint(signer, target: SpiceTarget, proxy: str, ttl: int):
    port = target.tls_port or target.port
    return signer.mint(guest=target.name or "?", host=target.host, port=port,
                       tls=bool(target.tls_port) and proxy == "ws", kind="ws" if proxy == "ws" else "connect",
                       ttl=ttl)


def _external(app, signer, target, mode, vv_path, proxy, proxy_url, token_ttl, screenshot, usbredir, identity):
    scheme, phost, pport = proxy_url_parts(proxy_url)
    token, grant = _mint(signer, target, proxy, token_ttl)
    if proxy == "ws":
        if mode == "builtin":
            return _builtin(target, _ws_opener(phost, pport, token, scheme == "https", target), screenshot)
        url = html5_url(proxy_url, token, target.password)
        _announce(app, {"name": target.name, "url": url, "expires": grant.expires}, url)
        return None
    if scheme != "http":
        raise InvalidInput("remote-viewer's proxy= speaks plain HTTP CONNECT: use an http:// --proxy-url")
    if mode == "builtin":
        return _builtin(target, _connect_opener(phost, pport, token, target), screenshot)
    vvfile = make_vv(target, host_subject=identity, proxy=f"http://spicectl:{token}@{phost}:{pport}",
                     usbredir=usbredir)
    path = _write_vv(vvfile, vv_path)
    if mode == "viewer" and path is not None:
        pid = _launch_viewer(path)
        return {"name": target.name, "mode": "viewer", "pid": pid, "vv": str(path), "proxy": proxy_url}
    return None if path is None else {"name": target.name, "mode": "vv", "vv": str(path), "proxy": proxy_url}


def _ws_opener(host, port, token, tls: bool, target):
    from spicectl.session.openers import websocket_opener

    scheme = "wss" if tls else "ws"
    ctx = None
    if tls:
        import ssl

        ctx = ssl.create_default_context(cafile=target.ca_file)
    return websocket_opener(f"{scheme}://{host}:{port}/websockify?token={token}",
                            origin=f"{'https' if tls else 'http'}://{host}:{port}", ssl_context=ctx)


def _connect_opener(host, port, token, target):
    from spicectl.session.openers import connect_opener
    from spicectl.spice.client import tls_context

    return connect_opener(host, port, token, target.host, target.tls_port, ssl_context=tls_context(target.ca_file),
                          server_hostname=target.server_hostname)


def _builtin(target: SpiceTarget, opener, screenshot: str | None) -> dict:
    return asyncio.run(_builtin_async(target, opener, screenshot))


async def _builtin_async(target: SpiceTarget, opener, screenshot: str | None) -> dict:
    # Through a proxy the opener supplies each channel's stream (the WebSocket proxy holds the TLS to
    # the guest; through CONNECT the opener runs TLS end to end).
    client = target.client(opener=opener)
    await client.connect(inputs=False)
    try:
        image = await client.screenshot()
    finally:
        await client.close()
    return _builtin_result(target, image, screenshot)


def _builtin_result(target, image, screenshot) -> dict:
    if screenshot:
        import io

        from spicectl.pki.store import atomic_write

        buf = io.BytesIO()
        image.save(buf, "PNG")
        atomic_write(Path(screenshot), buf.getvalue(), 0o644)
    return {"name": target.name, "mode": "builtin", "screenshot": screenshot,
            "width": image.width, "height": image.height}


async def _local(app, signer, target, *, mode, vv_path, proxy, listen, token_ttl, screenshot, html5_dir, usbredir,
                 identity):
    from spicectl.proxy.server import ProxyServer, find_html5_dir
    from spicectl.proxy.tokens import spent_store

    html5 = find_html5_dir([html5_dir] if html5_dir else None) if proxy == "ws" else None
    if proxy == "ws" and html5 is None and mode != "builtin":
        raise EnvironmentProblem("spice-html5 is not installed", hint="apt-get install spice-html5, or --html5-dir")
    # the shared store: the same secret signs tokens for `proxy serve`, where this one must be spent too
    server = ProxyServer(signer, ca_file=target.ca_file, html5_dir=html5, single=True,
                         spent=spent_store(app.settings.state_dir))
    host, port = await server.start(*listen)
    token, grant = _mint(signer, target, proxy, token_ttl)
    result: dict | None = None
    try:
        if proxy == "ws":
            if mode == "builtin":
                result = await _builtin_async(target, _ws_opener(host, port, token, False, target), screenshot)
                await asyncio.sleep(0)  # let the proxy log the session
            else:
                url = html5_url(f"http://{host}:{port}", token, target.password)
                _announce(app, {"name": target.name, "url": url, "listen": f"{host}:{port}",
                                "expires": grant.expires}, url)
                await _wait_session(server, grant)
        else:
            if mode == "builtin":
                result = await _builtin_async(target, _connect_opener(host, port, token, target), screenshot)
            else:
                vvfile = make_vv(target, host_subject=identity, proxy=f"http://spicectl:{token}@{host}:{port}",
                                 usbredir=usbredir)
                path = await asyncio.to_thread(_write_vv, vvfile, vv_path if vv_path else None)
                if mode == "viewer":
                    pid = _launch_viewer(path)
                    _announce(app, {"name": target.name, "mode": "viewer", "pid": pid, "vv": str(path),
                                    "listen": f"{host}:{port}"}, f"remote-viewer started (pid {pid}) through "
                                                                 f"the proxy on {host}:{port}")
                elif path is not None:
                    _announce(app, {"name": target.name, "mode": "vv", "vv": str(path), "listen": f"{host}:{port}",
                                    "expires": grant.expires},
                              f"{path} written; proxy on {host}:{port} waits for its session")
                await _wait_session(server, grant)
    finally:
        await server.close()
    return result


async def _wait_session(server, grant) -> None:
    """Until the session this token opened ends, or the token expires unused."""
    while not server.finished.is_set():
        if time.time() > grant.expires and grant.nonce not in server.sessions.live:
            raise TimeoutExpired("nobody used the session before its token expired")
        try:
            await asyncio.wait_for(server.finished.wait(), 0.5)
        except asyncio.TimeoutError:
            pass

