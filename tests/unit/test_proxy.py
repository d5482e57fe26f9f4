"""The session proxy on loopback against a stand-in guest: relaying, and every refusal it promises."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import ssl
import time
from pathlib import Path

import pytest
import websockets
import websockets.exceptions
from websockets.asyncio.client import connect as ws_connect

from spicectl.errors import AuthError
from spicectl.pki.ca import CA_CERT
from spicectl.pki.issue import cert_name, key_name
from spicectl.proxy import server as proxy_server
from spicectl.proxy.server import ProxyServer, listener_tls
from spicectl.proxy.tokens import Sessions, Signer
from tests.conftest import echo_guest


@pytest.fixture
def signer():
    return Signer(b"k" * 32)


def run(coro):
    return asyncio.run(coro)


async def start_proxy(signer, tmp_path=None, **kw):
    proxy = ProxyServer(signer, ca_file=None, **kw)
    host, port = await proxy.start("127.0.0.1", 0)
    return proxy, port


async def connect_via(port, token, target, *, user="spicectl"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = base64.b64encode(f"{user}:{token}".encode()).decode()
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    return head.split("\r\n", 1)[0], reader, writer


def test_tokens_verify_and_refuse_tampering(signer):
    token, grant = signer.mint(guest="g", host="127.0.0.1", port=5901, tls=True, kind="ws", ttl=60)
    assert signer.verify(token) == grant
    body, mac = token.split(".")
    with pytest.raises(AuthError, match="signature"):
        signer.verify(body[:-2] + "AA." + mac)
    with pytest.raises(AuthError, match="signature"):
        Signer(b"x" * 32).verify(token)
    with pytest.raises(AuthError):
        signer.verify("garbage")


def test_a_token_opens_one_session_then_is_spent(signer):
    sessions = Sessions()
    _, grant = signer.mint(guest="g", host="h", port=1, tls=False, kind="connect", ttl=60)
    s = sessions.join(grant, "peer", "x")
    sessions.join(grant, "peer", "x")          # a second channel of the same session
    assert not sessions.leave(s)
    assert sessions.leave(s)                   # last channel gone: session over
    with pytest.raises(AuthError, match="already used"):
        sessions.join(grant, "peer", "x")


def test_spent_tokens_are_forgotten_once_they_expire_and_not_before(signer, monkeypatch):
    sessions, now = Sessions(), [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    for ttl in (30, 10, 20):  # spent out of expiry order
        _, grant = signer.mint(guest="g", host="h", port=1, tls=False, kind="connect", ttl=ttl)
        sessions.leave(sessions.join(grant, "peer", "x"))
    _, fresh = signer.mint(guest="g", host="h", port=1, tls=False, kind="connect", ttl=100)
    now[0] += 15
    sessions.check(fresh)  # any admission prunes
    assert sorted(round(e - 1000) for e in sessions.spent.spent.values()) == [20, 30]
    with pytest.raises(AuthError, match="already used"):
        sessions.check(grant)  # the ttl=20 one: spent, not yet expired
    now[0] += 20
    with pytest.raises(AuthError, match="expired"):
        sessions.check(grant)
    assert sessions.spent.spent == {}


def test_an_expired_token_opens_nothing(signer):
    _, grant = signer.mint(guest="g", host="h", port=1, tls=False, kind="connect", ttl=-1)
    with pytest.raises(AuthError, match="expired"):
        Sessions().join(grant, "peer", "x")


def test_connect_relays_both_ways_and_logs_one_line(signer, caplog):
    async def go():
        guest, gport = await echo_guest()
        proxy, port = await start_proxy(signer)
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="connect", ttl=60)
        status, reader, writer = await connect_via(port, token, f"127.0.0.1:{gport}")
        writer.write(b"hello spice")
        await writer.drain()
        echoed = await reader.readexactly(11)
        writer.close()
        await proxy.wait_ended(1)  # and logged
        await proxy.close()
        guest.close()
        return status, echoed

    with caplog.at_level(logging.INFO, logger="spicectl.proxy"):
        status, echoed = run(go())
    assert status.startswith("HTTP/1.1 200")
    assert echoed == b"HELLO SPICE"
    lines = [r.getMessage() for r in caplog.records if "session" in r.getMessage()]
    assert len(lines) == 1
    assert "guest=g" in lines[0] and "via=http-connect" in lines[0] and "up=11" in lines[0] and "down=11" in lines[0]


async def until(condition, timeout: float = 10) -> None:
    """Wait for a state the code under test reaches by itself (yielding to it), never a fixed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def refused(signer, action):
    """Run `action(port, gport)` against a fresh proxy; return (its result, the reasons the proxy logged)."""
    async def go():
        guest, gport = await echo_guest()
        proxy, port = await start_proxy(signer)
        try:
            return await action(port, gport), proxy.refusals
        finally:
            await proxy.close()
            guest.close()

    return run(go())


def test_connect_to_another_host_port_is_refused(signer):
    async def action(port, gport):
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="connect", ttl=60)
        status, _r, w = await connect_via(port, token, "127.0.0.1:22")
        w.close()
        return status

    status, reasons = refused(signer, action)
    assert status.startswith("HTTP/1.1 403")
    assert any("the token names" in r for r in reasons)


def test_connect_without_or_with_a_bad_token_is_refused(signer):
    async def action(port, gport):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT 127.0.0.1:{gport} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        first = (await reader.readuntil(b"\r\n")).decode()
        writer.close()
        second, _r, w = await connect_via(port, "forged.token", f"127.0.0.1:{gport}")
        w.close()
        return first, second

    (first, second), reasons = refused(signer, action)
    assert first.startswith("HTTP/1.1 407") and second.startswith("HTTP/1.1 407")
    assert "CONNECT without a token" in reasons


def test_a_reused_token_is_refused(signer):
    async def go():
        guest, gport = await echo_guest()
        proxy, port = await start_proxy(signer)
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="connect", ttl=60)
        status, r, w = await connect_via(port, token, f"127.0.0.1:{gport}")
        w.close()
        await proxy.wait_ended(1)  # the session ends with its last connection
        again, _r, w2 = await connect_via(port, token, f"127.0.0.1:{gport}")
        w2.close()
        await proxy.close()
        guest.close()
        return (status, again), proxy.refusals

    (status, again), reasons = run(go())
    assert status.startswith("HTTP/1.1 200") and again.startswith("HTTP/1.1 407")
    assert "token already used" in reasons


def test_an_expired_token_is_refused_by_the_proxy(signer):
    async def action(port, gport):
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="connect", ttl=-5)
        status, _r, w = await connect_via(port, token, f"127.0.0.1:{gport}")
        w.close()
        return status

    status, reasons = refused(signer, action)
    assert status.startswith("HTTP/1.1 407") and "token expired" in reasons


def test_websocket_relays_and_refuses_a_foreign_origin(signer):
    async def action(port, gport):
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="ws", ttl=60)
        url = f"ws://127.0.0.1:{port}/websockify?token={token}"
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            await ws_connect(url, origin="http://evil.example")
        foreign = info.value.response.status_code
        async with ws_connect(url, origin=f"http://127.0.0.1:{port}", subprotocols=["binary"]) as ws:
            await ws.send(b"link me")
            answer = await ws.recv()
        return foreign, answer

    (foreign, answer), reasons = refused(signer, action)
    assert foreign == 403 and answer == b"LINK ME"
    assert any("foreign origin http://evil.example" in r for r in reasons)


def test_a_token_for_connect_does_not_open_a_websocket(signer):
    async def action(port, gport):
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="connect", ttl=60)
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            await ws_connect(f"ws://127.0.0.1:{port}/websockify?token={token}")
        return info.value.response.status_code

    status, reasons = refused(signer, action)
    assert status == 403 and any("not ws" in r for r in reasons)


def test_idle_connections_are_closed_within_seconds(signer, monkeypatch):
    monkeypatch.setattr(proxy_server, "HANDSHAKE_TIMEOUT", 0.3)

    async def action(port, gport):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n")  # and then nothing
        start = time.monotonic()
        data = await asyncio.wait_for(reader.read(), 5)
        return data, time.monotonic() - start

    (data, waited), reasons = refused(signer, action)
    assert data == b"" and waited < 2
    assert any("handshake timeout" in r for r in reasons)


def test_static_files_stay_inside_the_html5_dir(signer, tmp_path):
    (tmp_path / "spice_auto.html").write_text("<html>ok</html>")
    (tmp_path / "main.js").write_text("export {}")

    async def go():
        proxy = ProxyServer(signer, ca_file=None, html5_dir=tmp_path)
        _, port = await proxy.start("127.0.0.1", 0)
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=1, tls=False, kind="ws", ttl=60)
        out = {}
        for name, path in (("page", f"/spice_auto.html?token={token}"), ("nopage", "/spice_auto.html"),
                           ("js", "/main.js"), ("escape", "/../../etc/passwd")):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            out[name] = (await r.read()).decode(errors="replace")
            w.close()
        await proxy.close()
        return out

    out = run(go())
    assert out["page"].startswith("HTTP/1.1 200") and "<html>ok</html>" in out["page"]
    assert out["nopage"].startswith("HTTP/1.1 403")
    assert out["js"].startswith("HTTP/1.1 200") and "text/javascript" in out["js"]
    assert out["escape"].startswith("HTTP/1.1 404")


def test_vv_file_keys_and_mode(tmp_path):
    from spicectl.session.vv import VVFile, parse

    vv = VVFile(host="127.0.0.1", password="t0ken", tls_port=5901, ca_pem="-----BEGIN CERTIFICATE-----\nAAA\n"
                "-----END CERTIFICATE-----\n", host_subject="O=spicectl,CN=127.0.0.1", title="web (spicectl)",
                proxy="http://spicectl:tok@127.0.0.1:3128")
    path = tmp_path / "s.vv"
    vv.write(path)
    assert path.stat().st_mode & 0o777 == 0o600
    keys = parse(path.read_text())
    assert keys["type"] == "spice" and keys["tls-port"] == "5901" and keys["delete-this-file"] == "1"
    assert keys["ca"] == "-----BEGIN CERTIFICATE-----\\nAAA\\n-----END CERTIFICATE-----"
    assert keys["host-subject"] == "O=spicectl,CN=127.0.0.1"
    assert keys["secure-channels"].startswith("main;display;inputs")
    assert keys["proxy"] == "http://spicectl:tok@127.0.0.1:3128"
    assert "port" not in keys


@pytest.fixture
def tls_material(run, state_dir, tmp_path):
    """spicectl's CA, a server certificate for the proxy's listener and a client certificate for alice."""
    assert run("ca", "init").exit_code == 0
    assert run("cert", "issue", "server", "--host", "127.0.0.1", "--out", str(tmp_path / "srv")).exit_code == 0
    assert run("cert", "issue", "client", "alice", "--out", str(tmp_path / "alice")).exit_code == 0
    ca = str(state_dir / "ca" / CA_CERT)
    server_ctx = listener_tls(tmp_path / "srv", Path(ca))  # what `proxy serve --tls --require-client-cert` uses
    alice = ssl.create_default_context(cafile=ca)
    alice.load_cert_chain(tmp_path / "alice" / cert_name("client"), tmp_path / "alice" / key_name("client"))
    return {"ca": ca, "server": server_ctx, "alice": alice}


def test_tls_listener_requires_a_client_certificate_from_our_ca(signer, tls_material):
    ca, server_ctx = tls_material["ca"], tls_material["server"]

    async def go():
        guest, gport = await echo_guest()
        proxy = ProxyServer(signer, ca_file=None, tls=server_ctx)
        _, port = await proxy.start("127.0.0.1", 0)
        results = {}
        for who, ctx in (("anonymous", ssl.create_default_context(cafile=ca)), ("alice", tls_material["alice"])):
            token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="ws", ttl=60)
            try:
                async with ws_connect(f"wss://127.0.0.1:{port}/websockify?token={token}", ssl=ctx,
                                      origin=f"https://127.0.0.1:{port}") as ws:
                    await ws.send(b"tls")
                    results[who] = await ws.recv()
            except (ssl.SSLError, OSError, websockets.exceptions.WebSocketException) as exc:
                results[who] = type(exc).__name__
        await proxy.close()
        guest.close()
        return results

    results = asyncio.run(go())
    assert results["alice"] == b"TLS"
    assert results["anonymous"] != b"TLS"


@pytest.mark.parametrize("tls_on", ["none", "browser", "guest"])
def test_websocket_carries_megabytes_intact_both_ways_among_pings_and_fragments(signer, caplog, tls_on, request):
    """Two sessions at once, each with its own guest, 8 MiB each way. Frames to a plain browser go out on the
    proxy's own socket, to a TLS browser through the transport; the read buffers are shared by all sessions.
    Every byte arrives in order at the right end, and pongs, fragmented messages and slow readers at both
    ends do not disturb the frames."""
    material = request.getfixturevalue("tls_material") if tls_on != "none" else None
    tls = material if tls_on == "browser" else None
    guest_tls = material["server"] if tls_on == "guest" else None
    if guest_tls:  # like QEMU's TLS port: our server certificate; the proxy checks it against our CA
        guest_tls.verify_mode = ssl.CERT_NONE
    scheme = "wss" if tls else "ws"

    async def session(port: int, seed: int):
        down, up = os.urandom(8 << 20), os.urandom(8 << 20)
        got, all_up = bytearray(), asyncio.Event()

        async def guest(reader, writer):
            async def send():
                for i in range(0, len(down), 65536):
                    writer.write(down[i:i + 65536])
                    await writer.drain()
            sender = asyncio.ensure_future(send())
            await asyncio.sleep(0.3)  # a slow start: the proxy's sends to us must wait, and then resume
            while data := await reader.read(1 << 20):
                got.extend(data)
                if len(got) >= len(up):
                    all_up.set()
            await sender
            writer.close()

        gserver = await asyncio.start_server(guest, "127.0.0.1", 0, ssl=guest_tls)
        gport = gserver.sockets[0].getsockname()[1]
        token, _ = signer.mint(guest=f"g{seed}", host="127.0.0.1", port=gport, tls=bool(guest_tls), kind="ws",
                               ttl=60)
        received, pongs = bytearray(), 0
        async with ws_connect(f"{scheme}://127.0.0.1:{port}/websockify?token={token}", max_size=None,
                              origin=f"{scheme.replace('ws', 'http')}://127.0.0.1:{port}", subprotocols=["binary"],
                              ssl=tls and tls["alice"]) as ws:
            async def download():
                await asyncio.sleep(0.3)  # likewise for the browser
                while len(received) < len(down):
                    received.extend(await ws.recv())

            downloading = asyncio.ensure_future(download())
            rng, i = random.Random(seed), 0
            while i < len(up):
                piece = up[i:i + rng.randint(2, 300_000)]
                i += len(piece)
                if rng.random() < 0.2:
                    await ws.send([piece[: len(piece) // 2], piece[len(piece) // 2:]])  # a fragmented message
                else:
                    await ws.send(piece)
                if rng.random() < 0.1:
                    await asyncio.wait_for(await ws.ping(), 10)
                    pongs += 1
            await asyncio.wait_for(downloading, 30)
            await asyncio.wait_for(all_up.wait(), 30)
        gserver.close()
        return received == down, got == up, pongs

    async def go():
        proxy = ProxyServer(signer, ca_file=material and material["ca"], tls=tls and tls["server"])
        _, port = await proxy.start("127.0.0.1", 0)
        results = await asyncio.gather(session(port, 1), session(port, 2))
        await proxy.wait_ended(2)  # and logged
        await proxy.close()
        return results

    with caplog.at_level(logging.INFO, logger="spicectl.proxy"):
        results = run(go())
    assert all(down_ok and up_ok and pongs > 0 for down_ok, up_ok, pongs in results), results
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("session ")]
    assert len(lines) == 2 and all(f"down={8 << 20}" in line and f"up={8 << 20}" in line for line in lines)


@pytest.mark.parametrize("stopped", ["guest", "browser"])
def test_a_reader_that_stops_holds_the_writer_back_instead_of_filling_the_proxy(signer, stopped):
    """With one end not reading, the other end can push only what socket buffers hold (well under the
    256 MiB it tries); once the reader resumes, everything arrives."""
    chunk, total = 1 << 20, 256 << 20

    async def go():
        reading = asyncio.Event()
        pushed = received = 0

        async def guest(reader, writer):
            nonlocal pushed, received
            if stopped == "browser":          # the guest streams; the browser does not read
                while pushed < total:
                    writer.write(b"\x11" * chunk)
                    await writer.drain()
                    pushed += chunk
            else:                               # the browser streams; the guest does not read
                await reading.wait()
                while received < total and (data := await reader.read(1 << 20)):
                    received += len(data)
            writer.close()

        gserver = await asyncio.start_server(guest, "127.0.0.1", 0)
        gport = gserver.sockets[0].getsockname()[1]
        proxy, port = await start_proxy(signer)
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="ws", ttl=60)
        async with ws_connect(f"ws://127.0.0.1:{port}/websockify?token={token}", max_size=None, max_queue=1,
                              subprotocols=["binary"]) as ws:  # the browser buffers one message at most
            if stopped == "browser":
                await asyncio.sleep(1.5)
                held = pushed
                while received < total:
                    received += len(await asyncio.wait_for(ws.recv(), 30))
            else:
                async def push():
                    nonlocal pushed
                    while pushed < total:
                        await ws.send(b"\x22" * chunk)
                        pushed += chunk
                pusher = asyncio.ensure_future(push())
                await asyncio.sleep(1.5)
                held = pushed
                reading.set()
                await asyncio.wait_for(pusher, 60)
                while received < total:
                    await asyncio.sleep(0.05)
        await proxy.close()
        gserver.close()
        return held, received

    held, received = run(go())
    assert held < 32 << 20, f"{held >> 20} MiB went in while nobody read"
    assert received == total


def test_sessions_leave_nothing_behind_once_their_tokens_expire(signer, monkeypatch):
    """Hundreds of sessions open and close: afterwards no descriptor, connection task, live
    session or spent token outlives its token."""
    from spicectl.proxy import tokens

    async def go():
        guest, gport = await echo_guest()
        proxy, port = await start_proxy(signer)

        async def one():
            token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="ws", ttl=60)
            async with ws_connect(f"ws://127.0.0.1:{port}/websockify?token={token}", subprotocols=["binary"]) as ws:
                await ws.send(b"x")
                await ws.recv()

        await one()
        await proxy.wait_ended(1)
        await until(lambda: not proxy._conns)
        fds_before = len(os.listdir("/proc/self/fd"))
        for _ in range(15):
            await asyncio.gather(*(one() for _ in range(20)))
        await proxy.wait_ended(301)
        # two minutes on: every token so far has expired (the clock moves; the test does not sleep)
        real = tokens.wall_clock
        monkeypatch.setattr(tokens, "wall_clock", lambda: real() + 120)
        await one()  # an admission prunes what has expired
        await proxy.wait_ended(302)
        await until(lambda: not proxy._conns)
        state = (len(os.listdir("/proc/self/fd")) - fds_before, len(proxy._conns), len(proxy.sessions.live),
                 len(proxy.sessions.spent), len(proxy.sessions.spent._expiring))
        await proxy.close()
        guest.close()
        return state

    leaked_fds, *rest = run(go())
    # (the count before may still hold the first session's closing sockets: fewer after is fine)
    assert leaked_fds <= 0
    assert rest == [0, 0, 1, 1]


def test_an_oversized_websocket_message_closes_that_session_only(signer):
    """A frame that declares 4 GiB is refused (1009) before the proxy buffers it; other sessions go on."""
    import struct

    async def action(port, gport):
        def url():
            token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="ws", ttl=60)
            return f"ws://127.0.0.1:{port}/websockify?token={token}"

        origin = f"http://127.0.0.1:{port}"
        async with ws_connect(url(), origin=origin) as other, ws_connect(url(), origin=origin) as hostile:
            mask = os.urandom(4)
            hostile.transport.write(b"\x82\xff" + struct.pack(">Q", 4 << 30) + mask)
            sent = 0
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while sent < 64 << 20:  # the proxy must close long before this much arrived
                    hostile.transport.write(bytes(1 << 20))
                    sent += 1 << 20
                    await asyncio.sleep(0.01)
                    if hostile.protocol.state.name != "OPEN":
                        break
                await asyncio.wait_for(hostile.recv(), 5)
            await other.send(b"still here")
            return closed.value.rcvd.code if closed.value.rcvd else None, sent, await other.recv()

    (code, sent, answer), _reasons = refused(signer, action)
    assert code == 1009 and sent <= 32 << 20
    assert answer == b"STILL HERE"


def test_a_spent_token_stays_spent_after_the_proxy_restarts(signer, tmp_path):
    from spicectl.proxy.tokens import SqliteSpent

    db = tmp_path / "proxy" / "spent.db"

    async def go():
        guest, gport = await echo_guest()
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="connect", ttl=60)
        statuses = []
        for _restart in range(2):
            proxy, port = await start_proxy(signer, spent=SqliteSpent(db))
            status, _reader, writer = await connect_via(port, token, f"127.0.0.1:{gport}")
            statuses.append(status)
            writer.close()
            await asyncio.sleep(0.1)
            await proxy.close()
            proxy.sessions.spent.close()
        guest.close()
        return statuses

    first, second = run(go())
    assert first.endswith("200 Connection established") and "407" in second
    assert db.stat().st_mode & 0o777 == 0o600


def test_two_stores_on_one_database_let_a_token_be_claimed_once(tmp_path):
    from spicectl.proxy.tokens import SqliteSpent

    a, b = SqliteSpent(tmp_path / "spent.db"), SqliteSpent(tmp_path / "spent.db")
    later = time.time() + 60
    results = [store.claim(f"nonce-{i}", later) for i in range(50) for store in (a, b)]
    assert results == [True, False] * 50
    assert len(a) == len(b) == 50


def test_expired_rows_are_pruned_from_the_store(tmp_path, monkeypatch):
    from spicectl.proxy.tokens import SqliteSpent

    store = SqliteSpent(tmp_path / "spent.db")
    store.claim("old", time.time() + 1)
    store.claim("new", time.time() + 600)
    now = time.time() + 5
    monkeypatch.setattr(time, "time", lambda: now)
    store.claim("another", now + 600)
    rows = [r[0] for r in store.db.execute("SELECT nonce FROM tokens ORDER BY nonce")]
    assert rows == ["another", "new"]


def test_a_connect_client_that_half_closes_still_gets_the_guests_reply(signer):
    """A client may send its request, then shut its sending side: the guest's answer, sent after
    it saw that end, must still arrive before the tunnel closes."""
    async def go():
        async def guest(reader, writer):
            request = await reader.read()  # until the client's half-close reaches the guest
            await asyncio.sleep(0.2)
            writer.write(b"reply to " + request)
            await writer.drain()
            writer.close()

        gserver = await asyncio.start_server(guest, "127.0.0.1", 0)
        gport = gserver.sockets[0].getsockname()[1]
        proxy, port = await start_proxy(signer)
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="connect", ttl=60)
        status, reader, writer = await connect_via(port, token, f"127.0.0.1:{gport}")
        writer.write(b"question")
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await proxy.close()
        gserver.close()
        return status, answer

    status, answer = run(go())
    assert status.endswith("200 Connection established")
    assert answer == b"reply to question"


def test_odd_requests_get_an_answer_not_a_traceback(signer, tmp_path, caplog):
    (tmp_path / "spice_auto.html").write_text("<html>ok</html>")

    async def go():
        guest, gport = await echo_guest()
        proxy = ProxyServer(signer, ca_file=None, html5_dir=tmp_path)
        _, port = await proxy.start("127.0.0.1", 0)
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="ws", ttl=60)
        many = "".join(f"X-Padding-{i}: y\r\n" for i in range(200))
        requests = {
            "nul": "GET /%00 HTTP/1.1\r\nHost: x\r\n\r\n",
            "head": f"HEAD /spice_auto.html?token={token} HTTP/1.1\r\nHost: x\r\n\r\n",
            "head refused": "HEAD /spice_auto.html HTTP/1.1\r\nHost: x\r\n\r\n",
            "many headers": (f"GET /websockify?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             f"Sec-WebSocket-Version: 13\r\n{many}\r\n"),
        }
        out = {}
        for name, text in requests.items():
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(text.encode())
            out[name] = (await asyncio.wait_for(r.read(), 5)).decode(errors="replace")
            w.close()
        await proxy.close()
        guest.close()
        return out

    with caplog.at_level(logging.DEBUG):
        out = run(go())
    assert out["nul"].startswith("HTTP/1.1 404")
    head, _, body = out["head"].partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and "Content-Length: 15" in head and body == ""
    assert out["head refused"].startswith("HTTP/1.1 403") and out["head refused"].endswith("\r\n\r\n")
    assert out["many headers"].startswith("HTTP/1.1 400")
    # nothing escaped our handler (asyncio would log "Task exception was never retrieved")
    assert not [r for r in caplog.records if r.exc_info and (r.name == "asyncio" or r.name.startswith("spicectl"))]


def test_once_a_sessions_connection_ends_its_token_admits_no_one_else(signer):
    """The guest may keep its side open after the client left (a half-close waits for it): the
    session still takes no new connections, so its token cannot be used again meanwhile."""
    async def go():
        async def lingering_guest(reader, writer):
            await reader.read()        # the client's end arrives...
            await asyncio.sleep(3)     # ...but the guest keeps its side open a while
            writer.close()

        gserver = await asyncio.start_server(lingering_guest, "127.0.0.1", 0)
        gport = gserver.sockets[0].getsockname()[1]
        proxy, port = await start_proxy(signer)
        token, _ = signer.mint(guest="g", host="127.0.0.1", port=gport, tls=False, kind="connect", ttl=60)
        first, _reader, writer = await connect_via(port, token, f"127.0.0.1:{gport}")
        writer.write_eof()
        await asyncio.sleep(0.3)
        again, _r2, w2 = await connect_via(port, token, f"127.0.0.1:{gport}")
        w2.close()
        writer.close()
        await proxy.close()
        gserver.close()
        return first, again

    first, again = run(go())
    assert first.endswith("200 Connection established") and "407" in again


def test_a_session_spread_over_two_proxy_processes_is_joined_while_open_then_spent_in_both(signer, tmp_path):
    """Behind SO_REUSEPORT a client's channels land on either process: the one that did not claim
    the token joins the open session, and once a connection of it ends neither admits it again."""
    from spicectl.proxy.tokens import SqliteSpent

    db = tmp_path / "spent.db"
    a, b = Sessions(SqliteSpent(db)), Sessions(SqliteSpent(db))
    _, grant = signer.mint(guest="g", host="h", port=1, tls=False, kind="connect", ttl=60)
    main = a.join(grant, "peer", "x")        # claims the token
    display = b.join(grant, "peer", "x")     # another channel, through the other process
    a.join(grant, "peer", "x")
    b.close(display)                         # a connection ended (in b)
    for sessions in (a, b):
        with pytest.raises(AuthError, match="already used"):
            sessions.join(grant, "peer", "x")
    assert b.leave(display) and not a.leave(main) and a.leave(main)
    for sessions in (a, b):
        with pytest.raises(AuthError, match="already used"):
            sessions.check(grant)


def test_tokens_spent_in_the_older_store_stay_spent(tmp_path):
    import sqlite3

    from spicectl.proxy.tokens import SqliteSpent

    db = tmp_path / "spent.db"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE spent (nonce TEXT PRIMARY KEY, expires REAL NOT NULL)")
    old.execute("INSERT INTO spent VALUES ('n1', ?)", (time.time() + 60,))
    old.commit()
    old.close()
    store = SqliteSpent(db)
    assert store.is_spent("n1") and not store.claim("n1", time.time() + 60) and not store.join("n1")


def test_a_ticket_outlives_every_moment_its_proxy_token_can_start_a_session():
    from spicectl.session.runner import LINK_SLACK, ticket_ttl

    assert ticket_ttl(30, None, explicit=False) == 30                 # no proxy: as asked
    assert ticket_ttl(30, 60, explicit=False) == 60 + LINK_SLACK      # the default stretched past the token
    assert ticket_ttl(300, 60, explicit=True) == 300
    assert ticket_ttl(60, 60, explicit=True) == 60


def test_a_ticket_shorter_than_its_proxy_token_is_refused_before_anything_runs(run):
    r = run("connect", "no-such-guest", "--proxy", "ws", "--ttl", "10", "--token-ttl", "60")
    assert r.exit_code == 2, r.stderr
    assert "--ttl 10 is shorter than --token-ttl 60" in r.stderr and "hint:" in r.stderr
