"""Sessions with real clients nobody here wrote: Chromium running spice-html5, and remote-viewer under Xvfb."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spicectl.proxy.relay import HALF_CLOSE_GRACE
from tests.conftest import free_port, require_binary
from tests.integration.conftest import (
    differs_only_in_one_text_cell,
    finish,
    grab_x,
    html5_page,
    kill,
    libvirt_screenshot,
    locate,
    popen,
    read_stderr_until,
)

pytestmark = pytest.mark.integration
GUEST = "sess"


def wait_until_shown(grab, spicectl, timeout=40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shot = grab()
        if shot is not None and locate(shot, libvirt_screenshot(spicectl, GUEST)):
            return
        time.sleep(1)
    pytest.fail("the client never showed the guest's screen")


@pytest.fixture(scope="module")
def guest(spicectl):
    spicectl("vm", "create", GUEST, "-t", "headless-ci", "--virt-type", "qemu", "--wait")
    # SeaBIOS's last line, "No bootable device." (text row 11): until then the screen keeps changing,
    # and a client's picture could be of an earlier stage than libvirt's screenshot it is compared with
    deadline = time.monotonic() + 90
    while not libvirt_screenshot(spicectl, GUEST)[176:192].any():
        assert time.monotonic() < deadline, "SeaBIOS did not reach its last line"
        time.sleep(0.5)
    yield GUEST
    spicectl("vm", "delete", GUEST, check=False)


def test_chromium_runs_spice_html5_through_the_websocket_proxy(spicectl, guest):
    proc = popen(spicectl, "connect", guest, "--proxy", "ws", "--json")
    info = json.loads(proc.stdout.readline())
    assert info["url"].startswith("http://127.0.0.1:")
    # the guest takes the ticket for as long as the proxy takes the token (a session admitted after the
    # ticket's 30 s was refused: 'Permission denied' in spice-html5)
    import datetime as dt

    valid_to = dt.datetime.fromisoformat(info["valid_to"]).timestamp()
    # (valid_to is said in whole seconds, the token's expiry is not: a second for the rounding)
    assert valid_to >= info["expires"] + 29 - 1, (info["valid_to"], info["expires"])
    with html5_page(info["url"]) as canvas:
        wait_until_shown(canvas, spicectl)
    err = finish(proc)
    assert proc.returncode == 0, err
    assert f"session guest={guest}" in err and "via=websocket" in err
    assert info["url"].split("password=")[1].split("&")[0] not in err  # the ticket is never logged


def test_remote_viewer_opens_the_vv_file(spicectl, guest, xdisplay):
    require_binary("remote-viewer")
    proc = popen(spicectl, "connect", guest, "--json", display=xdisplay)  # default: --viewer
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    info = json.loads(out)
    assert info["mode"] == "viewer"
    try:
        wait_until_shown(lambda: grab_x(xdisplay), spicectl)
        assert not Path(info["vv"]).exists(), "delete-this-file=1: remote-viewer removes the .vv file"
    finally:
        kill(info["pid"])
    time.sleep(1)


def test_remote_viewer_through_the_http_connect_proxy(spicectl, guest, xdisplay):
    require_binary("remote-viewer")
    proc = popen(spicectl, "connect", guest, "--proxy", "http-connect", "--viewer", "--json", display=xdisplay)
    info = json.loads(proc.stdout.readline())
    try:
        wait_until_shown(lambda: grab_x(xdisplay), spicectl)
    finally:
        kill(info["pid"])
    err = finish(proc)
    assert proc.returncode == 0, err
    assert f"session guest={guest}" in err and "via=http-connect" in err


@pytest.mark.parametrize("kind", ["ws", "http-connect"])
def test_builtin_client_through_each_proxy(spicectl, guest, kind, tmp_path):
    out = tmp_path / "shot.png"
    r = spicectl("connect", guest, "--builtin", "--proxy", kind, "--screenshot", str(out), "--json")
    assert r.json()["width"] == 720
    ours = np.asarray(Image.open(out).convert("RGB"))
    assert differs_only_in_one_text_cell(ours, libvirt_screenshot(spicectl, guest)) or \
        differs_only_in_one_text_cell(np.asarray(Image.open(out).convert("RGB")),
                                      libvirt_screenshot(spicectl, guest))
    assert f"via={'websocket' if kind == 'ws' else 'http-connect'}" in r.stderr


def start_serve(spicectl, *extra, port=None):
    port = port or free_port()
    serve = popen(spicectl, "proxy", "serve", "--listen", f"127.0.0.1:{port}", *extra)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return serve, port
        except OSError:
            assert time.monotonic() < deadline and serve.poll() is None, serve.stderr.read()
            time.sleep(0.1)


def minted_connect_session(spicectl, guest: str, url: str, tmp_path: Path):
    """Mint a token for `connect --proxy http-connect` at `url`; return a function that runs one
    builtin-client session with it through a proxy port and returns its screenshot."""
    import asyncio

    from spicectl.session.openers import connect_opener
    from spicectl.session.vv import parse
    from spicectl.spice.client import Client, tls_context

    vv = tmp_path / "minted.vv"
    spicectl("connect", guest, "--proxy-url", url, "--proxy", "http-connect", "--vv", str(vv))
    keys = parse(vv.read_text())
    token = keys["proxy"].split("spicectl:", 1)[1].split("@", 1)[0]
    ca = tmp_path / "ca.pem"
    ca.write_text(keys["ca"].replace("\\n", "\n"))

    async def session(proxy_port):
        opener = connect_opener("127.0.0.1", proxy_port, token, keys["host"], int(keys["tls-port"]),
                                ssl_context=tls_context(str(ca)), server_hostname=keys["host"])
        client = Client(keys["host"], tls_port=int(keys["tls-port"]), password=keys["password"].encode(),
                        opener=opener)
        await client.connect(inputs=False)
        try:
            return await client.screen.screenshot()
        finally:
            await client.close()

    return lambda proxy_port: asyncio.run(session(proxy_port))


def test_proxy_serve_admits_minted_tokens_once_even_across_a_restart(spicectl, guest, tmp_path):


    serve, port = start_serve(spicectl)
    try:
        url = f"http://127.0.0.1:{port}"
        shot = tmp_path / "via-serve.png"
        spicectl("connect", guest, "--proxy-url", url, "--proxy", "ws", "--builtin", "--screenshot", str(shot))
        assert Image.open(shot).size == (720, 400)

        session = minted_connect_session(spicectl, guest, url, tmp_path)
        assert session(port).size == (720, 400)
        # the proxy logs a session once it has ended: from then on its token joins nothing (spice-server
        # sometimes keeps its side of a tunnel open after the client left: the half-close grace then ends it)
        logged = read_stderr_until(serve, f"session guest={guest}", before=2, timeout=HALF_CLOSE_GRACE + 20)
        with pytest.raises(Exception, match="407"):
            session(port)  # the same token again: spent
    finally:
        serve.send_signal(signal.SIGTERM)
        err = logged + finish(serve)
    assert serve.returncode == 0
    assert err.count(f"session guest={guest}") == 2
    assert "refused" in err and "token already used" in err

    # a restarted proxy (spent tokens live in STATE/proxy/spent.db) refuses it too
    serve, port = start_serve(spicectl)
    try:
        with pytest.raises(Exception, match="407"):
            session(port)
    finally:
        serve.send_signal(signal.SIGTERM)
        err = finish(serve)
    assert "token already used" in err


def test_two_proxies_on_one_port_share_sessions_and_spend_each_token_once(spicectl, guest, tmp_path):
    """Two gateways behind one address (SO_REUSEPORT): the kernel spreads a client's channel
    connections over both, each session still works, and a token spent through one is spent in both."""


    first, port = start_serve(spicectl, "--reuse-port")
    second, _ = start_serve(spicectl, "--reuse-port", port=port)
    url = f"http://127.0.0.1:{port}"
    try:
        for i in range(4):  # each session opens main, display, inputs, cursor: connections land on both
            shot = tmp_path / f"gw-{i}.png"
            spicectl("connect", guest, "--proxy-url", url, "--proxy", "ws", "--builtin", "--screenshot", str(shot))
            assert Image.open(shot).size == (720, 400)
        session = minted_connect_session(spicectl, guest, url, tmp_path)
        assert session(port).size == (720, 400)
        time.sleep(1)  # its connections' ends reach the proxies
        for _ in range(16):  # replays spread over both proxies: each refuses
            with pytest.raises(Exception, match="407"):
                session(port)
    finally:
        for serve in (first, second):
            serve.send_signal(signal.SIGTERM)
        errs = [finish(serve) for serve in (first, second)]
    assert first.returncode == second.returncode == 0, errs
    for err in errs:
        assert f"session guest={guest}" in err, "the kernel gave one proxy no connection"
        assert "token already used" in err


def test_text_on_the_firmware_screen_is_read_and_waited_for(spicectl, guest):
    found = spicectl("wait-screen", guest, "--text", r"No bootable device\.", "--timeout", "60", "--json").json()
    assert found["matched"] and found["found"] == "No bootable device."
    shot = spicectl("screenshot", guest, "-o", "/dev/null", "--ocr", "--json").json()
    assert "SeaBIOS" in shot["ocr"]["text"] and "No bootable device." in shot["ocr"]["text"]
    bootable = next(w for w in shot["ocr"]["words"] if w["text"] == "bootable")
    assert 176 <= bootable["y"] and bootable["y"] + bootable["height"] <= 194   # text row 11, in screen pixels
    in_row = spicectl("wait-screen", guest, "--text", "bootable", "--region", "0,176,720,16", "--timeout", "20",
                      "--json").json()
    assert in_row["matched"]
    r = spicectl("wait-screen", guest, "--text", "Windows Boot Manager", "--timeout", "3", "--json", check=False)
    assert r.exit_code == 9, r.stderr
    assert "the screen read" in r.stderr and "SeaBIOS" in r.json()["text"]
