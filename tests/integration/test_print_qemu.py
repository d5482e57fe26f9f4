"""`vm create --print-qemu` is a script that really runs: QEMU boots, serves SPICE over TLS, and our client reads it."""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from tests.conftest import free_port, require_binary
from tests.integration.conftest import differs_only_in_one_text_cell
from tests.integration.qemu import wait_listening

pytestmark = pytest.mark.integration


def monitor(proc: subprocess.Popen, command: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()


def read_ppm(path):
    """The screendump as RGB, or None while QEMU has not written all of it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (FileNotFoundError, OSError, SyntaxError):
        return None


def test_the_printed_qemu_script_boots_and_serves_tls_our_client_reads(spicectl, tmp_path):
    require_binary("qemu-system-x86_64")
    spicectl("host", "setup")  # spicectl's CA and the 127.0.0.1 server certificate the script points QEMU at
    port = free_port()
    script = spicectl("vm", "create", "bare", "-t", "headless-ci", "--virt-type", "qemu", "--tls-port", str(port),
                      "--boot-menu-timeout", "60000", "--print-qemu").stdout
    (tmp_path / "run.sh").write_text(script)
    # the script runs QEMU with its monitor on stdio: the test sets the ticket there, as a user would
    proc = subprocess.Popen(["sh", "run.sh"], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_listening(port, proc)
        password = secrets.token_urlsafe(24)
        monitor(proc, f"set_password spice {password}")
        monitor(proc, "expire_password spice never")
        pw = tmp_path / "pw"
        pw.write_text(password)
        pw.chmod(0o600)
        uri = f"spice://127.0.0.1?tls-port={port}"
        ca = str(spicectl.state_dir / "ca" / "ca-cert.pem")
        ours = tmp_path / "ours.png"
        dump = tmp_path / "screendump.ppm"
        deadline = time.monotonic() + 60
        while True:  # compare with QEMU's own screendump, taken between two of ours (SeaBIOS may be mid-line)
            spicectl("screenshot", uri, "--password-file", str(pw), "--ca-file", ca, "-o", str(ours))
            before = np.asarray(Image.open(ours).convert("RGB"))
            dump.unlink(missing_ok=True)
            monitor(proc, f"screendump {dump}")
            while (oracle := read_ppm(dump)) is None:
                assert time.monotonic() < deadline and proc.poll() is None, "QEMU wrote no screendump"
                time.sleep(0.1)
            if oracle.any() and differs_only_in_one_text_cell(before, oracle):
                break
            assert time.monotonic() < deadline, "our screenshot never matched QEMU's screendump"
        assert before.shape == (400, 720, 3)
        bad = tmp_path / "bad"
        bad.write_text("not-the-ticket")
        r = spicectl("screenshot", uri, "--password-file", str(bad), "--ca-file", ca, "-o", str(ours), check=False)
        assert r.exit_code == 5 and "permission denied" in r.stderr
    finally:
        if proc.poll() is None:
            monitor(proc, "quit")
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()

