"""SASL login against a real spice-server: QEMU with sasl=on, Cyrus SASL's SCRAM-SHA-256 and a sasldb
made by saslpasswd2, as QEMU's documentation sets them up; our client logs in and reads the screen."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from tests.conftest import free_port, require_binary
from tests.integration.conftest import SPICECTL, differs_only_in_one_text_cell
from tests.integration.qemu import qemu_spice

pytestmark = pytest.mark.integration
USER, PASSWORD = "alice", "s3cret-sasl"


@pytest.fixture(scope="module")
def sasl_guest(spicectl, tmp_path_factory):
    """A SeaBIOS guest whose SPICE server (TLS and plain ports) takes SASL logins only."""
    require_binary("saslpasswd2")
    spicectl("host", "setup")   # spicectl's CA and the 127.0.0.1 server certificate
    conf = tmp_path_factory.mktemp("sasl")
    db = conf / "passwd.db"
    # QEMU names its SASL application "qemu": SASL_CONF_PATH/qemu.conf
    (conf / "qemu.conf").write_text(f"mech_list: scram-sha-256\nsasldb_path: {db}\n")
    subprocess.run(["saslpasswd2", "-p", "-a", "qemu", "-f", str(db), "-c", USER], input=PASSWORD.encode(),
                   check=True)
    tls, plain = free_port(), free_port()
    x509 = spicectl.state_dir / "certs" / "server" / "127.0.0.1"
    opts = f"port={plain},tls-port={tls},addr=127.0.0.1,x509-dir={x509},sasl=on,disable-ticketing=on"
    with qemu_spice(opts, tls, paused=False, monitor=True, env={**os.environ, "SASL_CONF_PATH": str(conf)}) as proc:
        secret = conf / "password"
        secret.write_text(PASSWORD)
        secret.chmod(0o600)
        yield {"proc": proc, "tls": f"spice://127.0.0.1?tls-port={tls}", "plain": f"spice://127.0.0.1:{plain}",
               "password_file": str(secret), "dir": conf}


def login_args(spicectl, sasl_guest, password_file=None) -> list[str]:
    return ["--ca-file", str(spicectl.state_dir / "ca" / "ca-cert.pem"), "--sasl-user", USER,
            "--password-file", password_file or sasl_guest["password_file"]]


def test_our_screenshot_after_a_sasl_login_is_qemus_screen(spicectl, sasl_guest, tmp_path):
    proc = sasl_guest["proc"]
    ours, dump = tmp_path / "ours.png", tmp_path / "dump.ppm"
    deadline = time.monotonic() + 60
    while True:   # QEMU's own screendump, between two of ours (SeaBIOS may be mid-line)
        spicectl("screenshot", sasl_guest["tls"], *login_args(spicectl, sasl_guest), "-o", str(ours))
        before = np.asarray(Image.open(ours).convert("RGB"))
        dump.unlink(missing_ok=True)
        proc.stdin.write(f"screendump {dump}\n")
        proc.stdin.flush()
        while True:
            try:
                with Image.open(dump) as image:
                    oracle = np.asarray(image.convert("RGB"))
                break
            except (FileNotFoundError, OSError, SyntaxError):
                assert time.monotonic() < deadline, "QEMU wrote no screendump"
                time.sleep(0.1)
        if oracle.any() and differs_only_in_one_text_cell(before, oracle):
            break
        assert time.monotonic() < deadline, "our screenshot never matched QEMU's screendump"


def test_a_wrong_sasl_password_is_exit_5(spicectl, sasl_guest, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it")
    r = spicectl("channels", sasl_guest["tls"], *login_args(spicectl, sasl_guest, str(wrong)), check=False)
    assert r.exit_code == 5 and "SASL login refused for 'alice'" in r.stderr


def test_a_ticket_client_is_told_the_server_wants_a_sasl_login(spicectl, sasl_guest):
    r = spicectl("channels", sasl_guest["tls"], "--ca-file", str(spicectl.state_dir / "ca" / "ca-cert.pem"),
                 check=False)
    assert r.exit_code == 5 and "requires a SASL login" in r.stderr and "--sasl-user" in r.stderr


def test_over_the_plain_port_spice_server_offers_scram_nothing_and_we_say_why(spicectl, sasl_guest):
    # spice-server asks a plain connection's mechanism for a security layer (SSF 56): SCRAM has none
    r = spicectl("channels", sasl_guest["plain"], "--plain-port", "--sasl-user", USER, "--password-file",
                 sasl_guest["password_file"], check=False)
    assert r.exit_code == 5 and "no SASL mechanism spicectl speaks over this plain connection" in r.stderr
    assert "use the tls-port" in r.stderr


def test_the_password_never_goes_on_the_command_line(spicectl, sasl_guest):
    r = spicectl("channels", sasl_guest["tls"], "--sasl-user", USER, check=False)
    assert r.exit_code == 2 and "--password-file" in r.stderr
    env_run = spicectl.env.copy()
    env_run["SASL_PW"] = PASSWORD
    done = subprocess.run([*SPICECTL, "channels", sasl_guest["tls"], "--ca-file",
                           str(spicectl.state_dir / "ca" / "ca-cert.pem"), "--sasl-user", USER,
                           "--password-env", "SASL_PW", "--json"],
                          env=env_run, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def viewer_shows_the_guest(sc, xdisplay: str, name: str, login: list[str], tmp_path) -> None:
    """remote-viewer on a .vv from `connect`, until its window shows the guest's first line of text as
    libvirt's own screenshot has it (the search starts on a lit pixel: a black screen has too many)."""
    from tests.integration.conftest import grab_x, libvirt_screenshot

    require_binary("remote-viewer")
    shot = libvirt_screenshot(sc, name)
    ys, xs = np.nonzero(shot.any(axis=2))
    assert len(ys), "the guest shows no text yet"
    y0, x0 = int(ys.min()), int(xs[ys == ys.min()].min())
    patch = shot[y0:y0 + 12, x0:x0 + 160]
    vv = tmp_path / f"{name}.vv"
    sc("connect", name, "--vv", str(vv), "--ttl", "60", *login)
    text = vv.read_text()
    assert "username=bob" in text and (vv.stat().st_mode & 0o777) == 0o600
    viewer = subprocess.Popen(["remote-viewer", str(vv)], env={**sc.env, "DISPLAY": xdisplay},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            screen = grab_x(xdisplay)
            ys2, xs2 = np.nonzero((screen == patch[0, 0]).all(axis=2))
            if any(y + 12 <= screen.shape[0] and x + 160 <= screen.shape[1]
                   and (screen[y:y + 12, x:x + 160] == patch).all() for y, x in zip(ys2, xs2, strict=True)):
                return
            assert viewer.poll() is None, viewer.stderr.read() if viewer.stderr else ""
            assert time.monotonic() < deadline, "remote-viewer never showed the guest after a SASL login"
            time.sleep(1)
    finally:
        viewer.terminate()
        viewer.wait(10)


def test_the_private_libvirt_with_sasl_on_takes_logins_of_its_users_and_no_tickets(tmp_path, xdisplay):
    """host setup --sasl on a private libvirt of its own (SASL is host-wide: the session's guests keep tickets)."""
    import shutil
    import tempfile
    from pathlib import Path

    from tests.integration.conftest import Spicectl

    base = Path(tempfile.mkdtemp(prefix="spicectl-sasl-"))
    sc = Spicectl(base / "state", base / "no-config.toml")
    try:
        setup = sc("host", "setup", "--sasl", "--json").json()
        assert setup["sasl"] is True
        conf = (sc.root / "etc" / "qemu.conf").read_text()
        assert "spice_sasl = 1" in conf and f'spice_sasl_dir = "{setup["sasl_dir"]}"' in conf
        pw = tmp_path / "bob.pw"
        pw.write_text("bob's password")
        sc("sasl", "user", "add", "bob", "--password-file", str(pw))
        assert (Path(setup["sasl_dir"]) / "passwd.db").stat().st_mode & 0o777 == 0o600
        assert sc("sasl", "user", "list", "--json").json()["users"] == ["bob"]
        again = sc("sasl", "user", "add", "bob", "--password-file", str(pw), check=False)
        assert again.exit_code == 4 and "--replace" in again.stderr
        created = sc("vm", "create", "s1", "-t", "headless-ci", "--virt-type", "qemu", "--wait", "--json").json()
        assert created["sasl"] is True   # the host's default: no ticket in the definition
        out = tmp_path / "s1.png"
        shot = sc("screenshot", "s1", "--sasl-user", "bob", "--password-file", str(pw), "-o", str(out), "--json")
        assert shot.json()["width"] == 720 and out.stat().st_size > 0
        refused = sc("screenshot", "s1", "-o", str(out), check=False)
        assert refused.exit_code == 5 and "requires a SASL login" in refused.stderr
        no_ticket = sc("ticket", "s1", check=False)
        assert no_ticket.exit_code == 4 and "takes SASL logins" in no_ticket.stderr
        checks = {c["check"]: c for c in sc("host", "check", "--json", check=False).json()["checks"]}
        assert checks["sasl"]["ok"] and "1 user" in checks["sasl"]["detail"]
        # a .vv with the user name (and here the password): remote-viewer logs in and shows the guest
        viewer_shows_the_guest(sc, xdisplay, "s1", ["--sasl-user", "bob", "--password-file", str(pw)], tmp_path)
        # our client through the per-session WebSocket proxy: the SCRAM exchange rides it end to end
        via = tmp_path / "via-proxy.png"
        sc("connect", "s1", "--builtin", "--proxy", "ws", "--screenshot", str(via), "--sasl-user", "bob",
           "--password-file", str(pw))
        assert Image.open(via).size == (720, 400)
        via_connect = tmp_path / "via-connect.png"   # (TLS end to end through an HTTP CONNECT proxy)
        sc("connect", "s1", "--builtin", "--proxy", "http-connect", "--screenshot", str(via_connect),
           "--sasl-user", "bob", "--password-file", str(pw))
        assert Image.open(via_connect).size == (720, 400)
        # and through a long-lived `proxy serve`, with a token minted for it
        from tests.integration.test_sessions import start_serve

        serve, port = start_serve(sc)
        try:
            via_serve = tmp_path / "via-serve.png"
            sc("connect", "s1", "--proxy-url", f"http://127.0.0.1:{port}", "--proxy", "ws", "--builtin",
               "--screenshot", str(via_serve), "--sasl-user", "bob", "--password-file", str(pw))
            assert Image.open(via_serve).size == (720, 400)
        finally:
            serve.terminate()
            serve.communicate(timeout=30)
        sc("sasl", "user", "delete", "bob")
        gone = sc("screenshot", "s1", "--sasl-user", "bob", "--password-file", str(pw), "-o", str(out), check=False)
        assert gone.exit_code == 5 and "SASL login refused" in gone.stderr
    finally:
        sc("vm", "delete", "s1", check=False)
        sc("host", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)
