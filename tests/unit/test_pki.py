"""The CA and certificate commands, end to end through the CLI, and their safety rules."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import require_binary


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def tree_digest(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def ca(run, state_dir):
    r = run("ca", "init")
    assert r.exit_code == 0, r.stderr
    return state_dir / "ca"


@pytest.fixture
def server_dir(run, ca, tmp_path):
    out = tmp_path / "server"
    r = run("cert", "issue", "server", "--host", "spice.example.org", "--ip", "127.0.0.1",
            "--dns", "localhost", "--out", str(out))
    assert r.exit_code == 0, r.stderr
    return out


# --- ca init ----------------------------------------------------------------

def test_ca_init_writes_key_0600_in_a_0700_directory(ca):
    assert mode(ca) == 0o700
    assert mode(ca / "ca-key.pem") == 0o600
    assert mode(ca / "ca-cert.pem") == 0o644
    cert = load(ca / "ca-cert.pem")
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"


def test_ca_init_json_describes_the_ca(run):
    r = run("ca", "init", "--json", "--subject", "CN=Test CA,O=Example", "--days", "30")
    info = r.json()
    assert info["subject"] == "CN=Test CA,O=Example"
    assert info["is_ca"] is True
    assert 28 <= info["days_left"] <= 30
    assert info["key_encrypted"] is False


@pytest.mark.parametrize("key_type,cls,size", [("rsa-2048", rsa.RSAPublicKey, 2048),
                                               ("ec-p384", ec.EllipticCurvePublicKey, 384)])
def test_ca_init_honours_key_type(run, state_dir, key_type, cls, size):
    assert run("ca", "init", "--key-type", key_type).exit_code == 0
    key = load(state_dir / "ca" / "ca-cert.pem").public_key()
    assert isinstance(key, cls) and key.key_size == size


def test_ca_init_refuses_to_overwrite_and_says_where(run, ca):
    before = tree_digest(ca)
    r = run("ca", "init")
    assert r.exit_code == 4
    assert str(ca) in r.stderr and "--force" in r.stderr
    assert tree_digest(ca) == before


def test_ca_init_force_replaces_and_keeps_a_backup(run, ca):
    old = (ca / "ca-cert.pem").read_bytes()
    assert run("ca", "init", "--force").exit_code == 0
    assert (ca / "ca-cert.pem.bak").read_bytes() == old
    assert (ca / "ca-cert.pem").read_bytes() != old
    assert mode(ca / "ca-key.pem.bak") == 0o600


@pytest.mark.parametrize("args,needle", [
    (["--days", "-5"], "positive"),
    (["--days", "0"], "positive"),
    (["--subject", "not a dn"], "invalid subject"),
    (["--subject", "O=No Common Name"], "no CN"),
    (["--passphrase-file", "/nonexistent/pass"], "cannot read"),
    (["--key-type", "dsa-1024"], "dsa-1024"),
])
def test_ca_init_bad_input_is_one_line_and_writes_nothing(run, state_dir, args, needle):
    r = run("ca", "init", *args)
    assert r.exit_code == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    assert tree_digest(state_dir) == {}


# --- passphrases -------------------------------------------------------------

@pytest.fixture
def locked_ca(run, tmp_path, state_dir):
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    assert run("ca", "init", "--passphrase-file", str(pw)).exit_code == 0
    assert b"ENCRYPTED" in (state_dir / "ca" / "ca-key.pem").read_bytes()
    return pw


def test_issuing_with_a_locked_ca_needs_the_passphrase(run, locked_ca, tmp_path):
    r = run("cert", "issue", "server", "--host", "h", "--out", str(tmp_path / "o"))
    assert r.exit_code == 5
    assert "passphrase" in r.stderr
    assert not (tmp_path / "o").exists()


def test_wrong_passphrase_is_refused_and_nothing_written(run, locked_ca, tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("wrong")
    r = run("cert", "issue", "server", "--host", "h", "--out", str(tmp_path / "o"), "--passphrase-file", str(bad))
    assert r.exit_code == 5
    assert "wrong passphrase" in r.stderr
    assert not (tmp_path / "o").exists()


def test_passphrase_from_file_env_and_fd(run, locked_ca, tmp_path):
    assert run("cert", "issue", "server", "--host", "a", "--out", str(tmp_path / "a"),
               "--passphrase-file", str(locked_ca)).exit_code == 0
    assert run("cert", "issue", "server", "--host", "b", "--out", str(tmp_path / "b"),
               env={"SPICECTL_CA_PASSPHRASE": "correct horse"}).exit_code == 0
    assert run("cert", "issue", "server", "--host", "c", "--out", str(tmp_path / "c"),
               "--passphrase-env", "MY_PW", env={"MY_PW": "correct horse"}).exit_code == 0
    rfd, wfd = os.pipe()
    os.write(wfd, b"correct horse\n")
    os.close(wfd)
    try:
        assert run("cert", "issue", "server", "--host", "d", "--out", str(tmp_path / "d"),
                   "--passphrase-fd", str(rfd)).exit_code == 0
    finally:
        os.close(rfd)


# --- cert issue ----------------------------------------------------------------

def test_server_certificate_layout_names_and_usages(server_dir):
    assert sorted(p.name for p in server_dir.iterdir()) == ["ca-cert.pem", "server-cert.pem", "server-key.pem"]
    assert mode(server_dir) == 0o700
    assert mode(server_dir / "server-key.pem") == 0o600
    cert = load(server_dir / "server-cert.pem")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["spice.example.org", "localhost"]
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_openssl_verifies_what_we_issue(run, server_dir, tmp_path):
    openssl = require_binary("openssl")
    r = subprocess.run([openssl, "verify", "-CAfile", server_dir / "ca-cert.pem", "-purpose", "sslserver",
                        server_dir / "server-cert.pem"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert run("cert", "issue", "client", "alice", "--out", str(tmp_path / "alice")).exit_code == 0
    r = subprocess.run([openssl, "verify", "-CAfile", tmp_path / "alice" / "ca-cert.pem", "-purpose", "sslclient",
                        tmp_path / "alice" / "client-cert.pem"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rsa_server_key_has_key_encipherment(run, ca, tmp_path):
    run("cert", "issue", "server", "--host", "h", "--key-type", "rsa-2048", "--out", str(tmp_path / "r"))
    ku = load(tmp_path / "r" / "server-cert.pem").extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_encipherment


def test_default_out_dir_is_under_the_state_dir(run, ca, state_dir):
    r = run("cert", "issue", "server", "--host", "127.0.0.1", "--json")
    assert r.json()["directory"] == str(state_dir / "certs" / "server" / "127.0.0.1")
    assert r.json()["sans"] == ["IP:127.0.0.1"]


@pytest.mark.parametrize("args,needle", [
    (["--dns", "10.0.0.1"], "is an IP address, not a DNS name"),
    (["--ip", "spice.example.org"], "is not an IP address"),
    (["--dns", "bad_name!"], "not a valid DNS name"),
    (["--days", "-1"], "positive"),
])
def test_issue_bad_input_is_a_usage_error_and_writes_nothing(run, ca, tmp_path, args, needle):
    before = tree_digest(ca)
    r = run("cert", "issue", "server", "--host", "h", "--out", str(tmp_path / "o"), *args)
    assert r.exit_code == 2, r.stderr
    assert needle in r.stderr
    assert not (tmp_path / "o").exists()
    assert tree_digest(ca) == before


def test_issue_without_a_ca_points_to_ca_init(run, tmp_path):
    r = run("cert", "issue", "server", "--host", "h", "--out", str(tmp_path / "o"))
    assert r.exit_code == 3
    assert "spicectl ca init" in r.stderr


def test_issue_refuses_to_overwrite_without_force(run, server_dir):
    before = tree_digest(server_dir)
    r = run("cert", "issue", "server", "--host", "x", "--out", str(server_dir))
    assert r.exit_code == 4
    assert tree_digest(server_dir) == before
    assert run("cert", "issue", "server", "--host", "x", "--out", str(server_dir), "--force").exit_code == 0
    assert tree_digest(server_dir) != before


def test_interrupted_issue_leaves_no_files(run, ca, tmp_path, monkeypatch):
    import spicectl.pki.issue as issue_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(issue_mod, "record_issued", boom)
    r = run("cert", "issue", "server", "--host", "h", "--out", str(tmp_path / "o"))
    assert r.exit_code == 130
    assert list((tmp_path / "o").iterdir()) == []


def test_client_certificate_is_for_client_auth(run, ca, state_dir):
    r = run("cert", "issue", "client", "alice", "--json")
    assert r.exit_code == 0
    d = state_dir / "certs" / "client" / "alice"
    assert sorted(p.name for p in d.iterdir()) == ["ca-cert.pem", "client-cert.pem", "client-key.pem"]
    assert r.json()["extended_key_usage"] == ["client_auth"]
    assert r.json()["subject"] == "CN=alice,O=spicectl"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "tab\there"])
def test_client_names_that_would_write_outside_their_folder_are_refused(run, ca, state_dir, name):
    before = sorted(p for p in state_dir.rglob("*"))
    r = run("cert", "issue", "client", name)
    assert r.exit_code == 2 and "invalid client name" in r.stderr
    assert sorted(p for p in state_dir.rglob("*")) == before


@pytest.mark.parametrize("mode", [0o755, 0o1777])
def test_issuing_into_an_existing_folder_keeps_its_mode(run, ca, tmp_path, mode):
    out = tmp_path / "shared"
    out.mkdir()
    out.chmod(mode)
    assert run("cert", "issue", "server", "--host", "spice.example.org", "--out", str(out)).exit_code == 0
    assert out.stat().st_mode & 0o7777 == mode
    assert (out / "server-key.pem").stat().st_mode & 0o777 == 0o600
    new = tmp_path / "made" / "here"
    assert run("cert", "issue", "server", "--host", "spice.example.org", "--out", str(new)).exit_code == 0
    assert new.stat().st_mode & 0o777 == 0o700  # a folder spicectl makes is private


# --- show, list --------------------------------------------------------------

def test_show_gives_names_validity_fingerprints_and_host_subject(run, server_dir):
    r = run("cert", "show", str(server_dir), "--json")
    info = r.json()
    assert info["subject"] == "CN=spice.example.org,O=spicectl"
    assert info["host_subject"] == "O=spicectl,CN=spice.example.org"
    assert info["sans"] == ["DNS:spice.example.org", "DNS:localhost", "IP:127.0.0.1"]
    assert 363 <= info["days_left"] <= 365
    assert len(info["fingerprint_sha256"].split(":")) == 32
    human = run("cert", "show", str(server_dir / "server-cert.pem"))
    assert "host-subject: O=spicectl,CN=spice.example.org" in human.stdout


def test_host_subject_escapes_commas():
    from cryptography.x509.oid import NameOID

    from spicectl.pki.names import host_subject

    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "IL"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Red Hat, Inc."),
                      x509.NameAttribute(NameOID.COMMON_NAME, "my server")])
    assert host_subject(name) == "C=IL,O=Red Hat\\, Inc.,CN=my server"


def test_show_malformed_pem_is_a_clear_error(run, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    r = run("cert", "show", str(bad))
    assert r.exit_code == 2
    assert "is not a PEM certificate" in r.stderr


def _plant_expired(state_dir: Path, out: Path) -> None:
    """Sign a server certificate whose lifetime ended yesterday, as `issue` would have."""
    from spicectl.pki import issue as issue_mod
    from spicectl.pki.ca import load_ca, utcnow
    from spicectl.pki.profiles import load_profile

    authority = load_ca(state_dir / "ca")
    profile = load_profile("server").with_overrides(days=30)
    real = issue_mod.base_builder
    issue_mod.base_builder = lambda *a, **k: real(*a, **k, not_before=utcnow() - dt.timedelta(days=31))
    try:
        issue_mod.issue_server(authority, profile, out, host="old.example.org", force=True)
    finally:
        issue_mod.base_builder = real


def test_list_marks_expired_and_expiring(run, ca, state_dir, tmp_path):
    run("cert", "issue", "server", "--host", "fresh.example.org", "--out", str(tmp_path / "fresh"))
    run("cert", "issue", "server", "--host", "soon.example.org", "--days", "5", "--out", str(tmp_path / "soon"))
    _plant_expired(state_dir, tmp_path / "old")
    rows = {r["subject"].split(",")[0]: r for r in run("cert", "list", "--json").json()}
    assert rows["CN=fresh.example.org"]["status"] == "valid"
    assert rows["CN=soon.example.org"]["status"] == "expiring"
    assert rows["CN=old.example.org"]["status"] == "expired"
    human = run("cert", "list").stdout
    assert "expired" in human and "expiring" in human


# --- verify ------------------------------------------------------------------

def failed_checks(run, directory: Path, *extra: str) -> set[str]:
    r = run("cert", "verify", str(directory), "--json", *extra)
    data = r.json()
    assert (r.exit_code == 0) == data["ok"]
    if not data["ok"]:
        assert r.exit_code == 8
    return {c["check"] for c in data["checks"] if not c["ok"]}


def test_verify_passes_on_a_fresh_directory(run, server_dir):
    assert failed_checks(run, server_dir, "--host", "localhost") == set()
    assert failed_checks(run, server_dir, "--host", "127.0.0.1") == set()


def test_verify_catches_a_host_outside_the_sans(run, server_dir):
    assert failed_checks(run, server_dir, "--host", "other.example.org") == {"host"}
    assert failed_checks(run, server_dir, "--host", "10.1.1.1") == {"host"}


def test_verify_catches_a_certificate_from_another_ca(run, server_dir, tmp_path):
    other_state = tmp_path / "other-state"
    run("--state-dir", str(other_state), "ca", "init")
    (server_dir / "ca-cert.pem").write_bytes((other_state / "ca" / "ca-cert.pem").read_bytes())
    assert failed_checks(run, server_dir) == {"chain"}


def test_verify_catches_a_key_that_does_not_match(run, server_dir, tmp_path):
    run("cert", "issue", "server", "--host", "z", "--out", str(tmp_path / "z"))
    (server_dir / "server-key.pem").write_bytes((tmp_path / "z" / "server-key.pem").read_bytes())
    assert failed_checks(run, server_dir) == {"key_match"}


def test_verify_catches_an_expired_certificate(run, ca, state_dir, tmp_path):
    _plant_expired(state_dir, tmp_path / "old")
    assert failed_checks(run, tmp_path / "old") == {"server_validity"}


def test_verify_catches_a_world_readable_key(run, server_dir):
    os.chmod(server_dir / "server-key.pem", 0o644)
    r = run("cert", "verify", str(server_dir))
    assert r.exit_code == 8
    assert "chmod 600" in r.stdout
    assert "key_permissions" in r.stderr


def test_verify_catches_a_client_certificate_used_as_server(run, ca, tmp_path):
    run("cert", "issue", "client", "bob", "--out", str(tmp_path / "bob"))
    d = tmp_path / "fake-server"
    d.mkdir()
    for src, dst in (("ca-cert.pem", "ca-cert.pem"), ("client-cert.pem", "server-cert.pem"),
                     ("client-key.pem", "server-key.pem")):
        (d / dst).write_bytes((tmp_path / "bob" / src).read_bytes())
    os.chmod(d / "server-key.pem", 0o600)
    assert failed_checks(run, d) == {"usage"}


def test_verify_catches_a_malformed_and_a_missing_file(run, server_dir):
    (server_dir / "ca-cert.pem").write_text("garbage")
    assert "ca_file" in failed_checks(run, server_dir)
    (server_dir / "server-cert.pem").unlink()
    assert failed_checks(run, server_dir) == {"files"}


# --- renew -------------------------------------------------------------------

def test_renew_keeps_names_replaces_pair_and_keeps_backup(run, server_dir):
    old_cert = load(server_dir / "server-cert.pem")
    old_key = (server_dir / "server-key.pem").read_bytes()
    r = run("cert", "renew", str(server_dir), "--json")
    assert r.exit_code == 0, r.stderr
    new_cert = load(server_dir / "server-cert.pem")
    assert new_cert.subject == old_cert.subject
    assert new_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
        old_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert new_cert.serial_number != old_cert.serial_number
    assert (server_dir / "server-key.pem").read_bytes() != old_key
    assert (server_dir / "server-key.pem.bak").read_bytes() == old_key
    assert mode(server_dir / "server-key.pem.bak") == 0o600
    assert load(server_dir / "server-cert.pem.bak") == old_cert
    assert failed_checks(run, server_dir, "--host", "spice.example.org") == set()


def test_renew_keep_key_reuses_the_key(run, server_dir):
    old_key = (server_dir / "server-key.pem").read_bytes()
    assert run("cert", "renew", str(server_dir), "--keep-key").exit_code == 0
    assert (server_dir / "server-key.pem").read_bytes() == old_key


def test_renew_of_an_empty_directory_is_not_found(run, ca, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("cert", "renew", str(tmp_path / "empty"))
    assert r.exit_code == 3


def test_list_marks_a_renewed_certificate_as_replaced(run, server_dir):
    run("cert", "renew", str(server_dir))
    rows = run("cert", "list", "--json").json()
    assert sorted(r["current"] for r in rows) == [False, True]


# --- profiles ----------------------------------------------------------------

def test_user_profile_overrides_lifetime(run, ca, tmp_path):
    cfg_dir = tmp_path / "cfg"
    (cfg_dir / "pki").mkdir(parents=True)
    (cfg_dir / "pki" / "server.toml").write_text("days = 10\n")
    (cfg_dir / "spicectl.toml").write_text(f'pki_dir = "{cfg_dir / "pki"}"\n')
    r = run("cert", "issue", "server", "--host", "h", "--out", str(tmp_path / "o"), "--json",
            env={"SPICECTL_CONFIG": str(cfg_dir / "spicectl.toml")})
    assert 9 <= r.json()["days_left"] <= 10


def test_profile_with_a_typo_is_a_clear_error(run, ca, tmp_path):
    cfg_dir = tmp_path / "cfg"
    (cfg_dir / "pki").mkdir(parents=True)
    (cfg_dir / "pki" / "server.toml").write_text("dayz = 10\n")
    (cfg_dir / "spicectl.toml").write_text(f'pki_dir = "{cfg_dir / "pki"}"\n')
    r = run("cert", "issue", "server", "--host", "h", "--out", str(tmp_path / "o"),
            env={"SPICECTL_CONFIG": str(cfg_dir / "spicectl.toml")})
    assert r.exit_code == 2
    assert "unknown key 'dayz'" in r.stderr


def parallel(state_dir, tmp_path, argv: list[str], count: int) -> list[int]:
    """Run `count` spicectl processes at once; their exit codes."""
    import subprocess
    import sys

    env = {**os.environ, "SPICECTL_STATE_DIR": str(state_dir), "SPICECTL_CONFIG": str(tmp_path / "none.toml")}
    env.pop("SPICECTL_CA_PASSPHRASE", None)
    procs = [subprocess.Popen([sys.executable, "-m", "spicectl", *argv], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(count)]
    return sorted(p.wait(120) for p in procs)


def test_parallel_ca_inits_make_exactly_one_ca(state_dir, tmp_path):
    assert parallel(state_dir, tmp_path, ["ca", "init"], 10) == [0] + [4] * 9
    assert sorted(p.name for p in (state_dir / "ca").iterdir() if p.is_file()) == ["ca-cert.pem", "ca-key.pem"]


def test_parallel_issues_into_one_folder_let_exactly_one_write(run, ca, state_dir, tmp_path):
    out = tmp_path / "out"
    codes = parallel(state_dir, tmp_path, ["cert", "issue", "server", "--host", "spice.example.org", "--out", str(out)],
                     12)
    assert codes == [0] + [4] * 11
    assert run("cert", "verify", str(out), "--host", "spice.example.org").exit_code == 0


@pytest.mark.parametrize("value", ["-1", "17"])
def test_a_profile_path_length_out_of_range_names_the_file_and_key(run, tmp_path, value):
    cfg_dir = tmp_path / "cfg"
    (cfg_dir / "pki").mkdir(parents=True)
    (cfg_dir / "pki" / "ca.toml").write_text(f"path_length = {value}\n")
    (cfg_dir / "spicectl.toml").write_text(f'pki_dir = "{cfg_dir / "pki"}"\n')
    r = run("ca", "init", env={"SPICECTL_CONFIG": str(cfg_dir / "spicectl.toml")})
    assert r.exit_code == 2, r.stderr
    assert "ca.toml" in r.stderr and "path_length" in r.stderr


def test_a_leaf_certificate_in_place_of_the_ca_signs_nothing(run, ca, tmp_path):
    leaf = tmp_path / "leaf"
    assert run("cert", "issue", "server", "--host", "h", "--out", str(leaf)).exit_code == 0
    (ca / "ca-cert.pem").write_bytes((leaf / "server-cert.pem").read_bytes())
    (ca / "ca-key.pem").write_bytes((leaf / "server-key.pem").read_bytes())
    r = run("cert", "issue", "client", "bob")
    assert r.exit_code == 8, r.stderr
    assert "not a CA certificate" in r.stderr and "hint:" in r.stderr
    assert not any(p.name.startswith("bob") for p in tmp_path.rglob("*"))
