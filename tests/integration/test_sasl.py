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
