"""Xspice without an X server: the generated configuration (golden files), display names, the
records of what runs, and the refusals that come before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from spicectl.cli.main import cli
from spicectl.errors import InvalidInput
from spicectl.xspice import displays as D
from spicectl.xspice.config import XspiceSpec, environment, is_display, parse_display, xorg_conf
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden"
CASES = {
    "xspice-default": XspiceSpec(1, tls_port=5950, x509_dir=Path("/srv/spicectl/certs/server/127.0.0.1"),
                                 playback_dir=Path("/srv/spicectl/xspice/1/audio"),
                                 agent_virtio=Path("/srv/spicectl/xspice/1/agent.virtio"),
                                 agent_uinput=Path("/srv/spicectl/xspice/1/agent.uinput")),
    "xspice-insecure": XspiceSpec(7, port=5960, ticketing=False, image_compression="off", streaming_video="off"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_x_configuration_matches_its_golden_file(name, request):
    text = xorg_conf(CASES[name])
    path = GOLDEN / f"{name}.conf"
    if request.config.getoption("--regen-golden"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with --regen-golden"
    assert text == path.read_text(), f"{path.name} differs (regenerate with --regen-golden if intended)"


def test_the_password_goes_in_the_environment_never_in_the_file():
    spec = CASES["xspice-default"]
    assert "Password" not in xorg_conf(spec)
    assert environment(spec, b"s3cret")["XSPICE_PASSWORD"] == "s3cret"
    assert "XSPICE_PASSWORD" not in environment(CASES["xspice-insecure"], None)
    with pytest.raises(InvalidInput):
        environment(spec, None)


def test_a_value_that_would_break_the_file_is_refused():
    with pytest.raises(InvalidInput, match="cannot go in an X configuration"):
        xorg_conf(XspiceSpec(1, port=5960, ticketing=False, playback_dir=Path('/tmp/a"b')))


@pytest.mark.parametrize("text, number", [(":1", 1), ("1", 1), (":12.0", 12), (" :3 ", 3)])
def test_a_display_is_written_as_x_writes_it(text, number):
    assert parse_display(text) == number


@pytest.mark.parametrize("text", ["", ":", ":x", ":-1", ":12345", "host:1", ":1.1"])
def test_what_is_not_a_display_is_refused(text):
    with pytest.raises(InvalidInput):
        parse_display(text)


def test_a_vm_name_is_never_a_display():
    assert is_display(":1") and not is_display("web") and not is_display("spice://h:1")


def test_a_spec_needs_a_port_and_tls_needs_certificates():
    with pytest.raises(InvalidInput):
        XspiceSpec(1)
    with pytest.raises(InvalidInput):
        XspiceSpec(1, tls_port=5950)


def invoke(tmp_path, *args):
    env = {"SPICECTL_STATE_DIR": str(tmp_path / "state"), "SPICECTL_CONFIG": str(tmp_path / "none.toml"),
           "SPICECTL_PERSIST": "0"}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_insecure_is_only_for_loopback(tmp_path):
    r = invoke(tmp_path, "xspice", "start", ":3", "--insecure", "--listen", "0.0.0.0")
    assert r.exit_code == 2 and "only on loopback" in r.output
    assert not (tmp_path / "state" / "xspice").exists()


def test_another_address_needs_a_certificate_for_it(tmp_path):
    r = invoke(tmp_path, "xspice", "start", ":3", "--listen", "10.1.2.3")
    assert r.exit_code == 2 and "--cert-dir" in r.output


def test_stopping_a_display_that_was_never_started_says_so(tmp_path):
    r = invoke(tmp_path, "xspice", "stop", ":3")
    assert r.exit_code == 3 and "no Xspice display :3" in r.output


def test_a_guest_command_on_a_display_that_is_not_running_says_so(tmp_path):
    r = invoke(tmp_path, "screenshot", ":3", "-o", str(tmp_path / "x.png"))
    assert r.exit_code == 3 and "Xspice display :3 is not running" in r.output


def test_a_recorded_pid_reused_by_another_process_is_never_signalled(tmp_path):
    """A record outlives its processes (a reboot, a crash): the PIDs in it may belong to anyone now."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = tmp_path / "state"
        here = D.folder(state, 4)
        here.mkdir(parents=True)
        record = {"display": 4, "listen": "127.0.0.1", "tls_port": 5950, "port": None, "insecure": False,
                  "x509_dir": None, "agent": False, "audio": False, "started_at": time.time(),
                  # the PID is the other process's, the start time is not
                  "procs": [{"pid": other.pid, "started": 1, "what": "xorg"}]}
        (here / D.RECORD).write_text(json.dumps(record))
        (here / D.PASSWORD).write_bytes(b"x")
        r = invoke(tmp_path, "xspice", "list", "--json")
        assert r.exit_code == 0 and json.loads(r.output)["displays"][0]["running"] is False
        r = invoke(tmp_path, "xspice", "stop", ":4")
        assert r.exit_code == 0
        time.sleep(0.2)
        assert other.poll() is None, "stop signalled a process that was not the display's"
        assert not (here / D.PASSWORD).exists()
    finally:
        other.kill()
        other.wait()


def test_a_live_process_is_recognised_by_pid_and_start_time():
    me = D.Proc(os.getpid(), D._start_time(os.getpid()) or -1, "xorg")
    assert D.alive(me)
    assert not D.alive(D.Proc(os.getpid(), me.started + 1, "xorg"))
