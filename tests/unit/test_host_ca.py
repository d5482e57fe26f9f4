"""The private default's CA and server certificate: never replaced behind the user's back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

SERVER = ("certs", "server", "127.0.0.1")


def test_a_deleted_ca_is_not_silently_remade_while_its_certificate_is_in_use(run, state_dir):
    assert run("host", "setup").exit_code == 0
    cert_dir = state_dir.joinpath(*SERVER)
    served = (cert_dir / "server-cert.pem").read_bytes()
    shutil.rmtree(state_dir / "ca")
    r = run("host", "setup")
    assert r.exit_code == 8, r.stderr
    assert "not making a new CA behind your back" in r.stderr and "cert renew" in r.stderr
    assert not (state_dir / "ca").exists()
    assert (cert_dir / "server-cert.pem").read_bytes() == served


def test_a_certificate_from_another_ca_is_reported_and_renew_repairs_it(run, state_dir):
    assert run("host", "setup").exit_code == 0
    cert_dir = state_dir.joinpath(*SERVER)
    assert run("ca", "init", "--force").exit_code == 0  # the user replaces the CA on purpose
    r = run("host", "setup")
    assert r.exit_code == 8 and "not issued by spicectl's current CA" in r.stderr
    assert f"spicectl cert renew {cert_dir}" in r.stderr
    # host check says so too (in a child: the embedded libvirt it opens stays in its process)
    env = {**os.environ, "SPICECTL_STATE_DIR": str(state_dir), "SPICECTL_CONFIG": str(state_dir / "none.toml")}
    check = subprocess.run([sys.executable, "-m", "spicectl", "host", "check", "--json"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 8
    assert "spice_cert" in check.stderr
    assert run("cert", "renew", str(cert_dir)).exit_code == 0
    assert run("host", "setup").exit_code == 0


def test_sasl_for_a_libvirt_not_ours_is_a_list_of_steps_and_nothing_written(run, state_dir):
    import json

    r = run("--connect", "test:///default", "host", "setup", "--sasl", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["sasl"] is True and any("spice_sasl = 1" in step for step in data["manual_steps"])
    assert not (state_dir / "sasl").exists()


def test_sasl_users_need_sasl_on_and_names_are_checked(run, state_dir, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("secret")
    r = run("sasl", "user", "add", "bob", "--password-file", str(pw))
    assert r.exit_code == 4 and "SASL is off" in r.stderr and "host setup --sasl" in r.stderr
    assert run("host", "setup", "--sasl").exit_code == 0
    bad = run("sasl", "user", "add", "-rf", "--password-file", str(pw))
    assert bad.exit_code != 0
    weird = run("sasl", "user", "add", "a b", "--password-file", str(pw))
    assert weird.exit_code == 2 and "letters, digits" in weird.stderr
    assert run("sasl", "user", "list", "--json").stdout.strip().startswith("{")
    assert run("host", "setup", "--no-sasl").exit_code == 0 and not (state_dir / "sasl" / "qemu.conf").exists()
