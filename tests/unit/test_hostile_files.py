"""Files a user (or an attacker) hands spicectl: binary, huge, endless, directories, wrong types.

Each is one `spicectl: error:` line with a usage exit code, never an internal error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def config(tmp_path, text: str) -> dict[str, str]:
    path = tmp_path / "spicectl.toml"
    path.write_text(text)
    return {"SPICECTL_CONFIG": str(path)}


def one_error(r, code: int, needle: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.stderr)
    assert needle in r.stderr
    assert r.stderr.startswith(("spicectl: error:", "Usage:", "Error:")) and "internal error" not in r.stderr


def test_a_binary_template_in_the_users_folder(run, tmp_path):
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "bin.toml").write_bytes(b"\xff\xfe\x00bad")
    env = config(tmp_path, f'templates_dir = "{folder}"\n')
    one_error(run("template", "list", env=env), 2, "is not UTF-8 text")
    one_error(run("vm", "create", "x", "-t", "bin", "--print-xml", env=env), 2, "is not UTF-8 text")


def test_a_binary_certificate_profile(run, tmp_path):
    folder = tmp_path / "pki"
    folder.mkdir()
    (folder / "ca.toml").write_bytes(b"\xff\xfe")
    one_error(run("ca", "init", env=config(tmp_path, f'pki_dir = "{folder}"\n')), 2, "is not UTF-8 text")


@pytest.mark.parametrize("text, needle", [
    ("state_dir = 5\n", "state_dir must be a non-empty string"),
    ('templates_dir = ["a"]\n', "templates_dir must be a non-empty string"),
    ('connect = ""\n', "connect must be a non-empty string"),
    ("hosts = 5\n", "[hosts] must map names"),
])
def test_wrong_types_in_the_config_file(run, tmp_path, text, needle):
    one_error(run("template", "list", env=config(tmp_path, text)), 2, needle)


def test_endless_and_oversized_inputs_are_refused_quickly(run, tmp_path):
    one_error(run("ca", "init", "--passphrase-file", "/dev/zero"), 2, "longer than")
    one_error(run("cert", "show", "/dev/zero"), 2, "is not a regular file")
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (2 << 20))
    one_error(run("cert", "show", str(big)), 2, "larger than")
    one_error(run("ca", "init", "--passphrase-fd", "99999999999999999999"), 2, "--passphrase-fd")


def test_a_directory_where_a_file_is_expected(run, tmp_path):
    one_error(run("ca", "init", "--passphrase-file", str(tmp_path)), 2, "cannot read CA passphrase file")
    (tmp_path / "t.toml").mkdir()
    one_error(run("vm", "create", "x", "-t", str(tmp_path / "t.toml"), "--print-xml"), 2, "is a directory")


def test_damaged_records_of_issued_certificates_are_skipped_with_a_warning(run, state_dir):
    assert run("ca", "init").exit_code == 0
    assert run("cert", "issue", "client", "alice").exit_code == 0
    issued = state_dir / "ca" / "issued"
    (issued / "garbage.json").write_text("not json")
    (issued / "binary.json").write_bytes(b"\xff\xfe")
    (issued / "shape.json").write_text('{"serial": 1}')
    (issued / "pem.json").write_text('{"serial": "1", "kind": "server", "subject": "CN=x", "path": "/x", '
                                     '"not_after": "2030", "pem": "garbage"}')
    (issued / "dir.json").mkdir()
    r = run("cert", "list", "--json")
    assert r.exit_code == 0, r.stderr
    assert [row["subject"] for row in r.json()] == ["CN=alice,O=spicectl"]
    for name in ("garbage", "binary", "shape", "pem", "dir"):
        assert f"skipped the damaged record {issued / name}.json" in r.stderr


def test_a_dns_name_longer_than_a_common_name_may_be_goes_into_the_sans(run, tmp_path):
    assert run("ca", "init").exit_code == 0
    host = "a" * 60 + ".example.org"
    r = run("cert", "issue", "server", "--host", host, "--out", str(tmp_path / "long"), "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["subject"] == "CN=" + "a" * 60 + ",O=spicectl"
    assert run("cert", "verify", str(tmp_path / "long"), "--host", host).exit_code == 0


@pytest.mark.parametrize("listen, code, needle", [
    ("nonsense", 2, "is not an IP address"), ("", 2, "is empty"), ("127.0.0.1:99999", 2, "out of range"),
    ("192.0.2.77:3128", 2, "no interface of this host has that address"),
])
def test_proxy_serve_listen_errors(run, listen, code, needle):
    one_error(run("proxy", "serve", "--listen", listen), code, needle)


def test_proxy_serve_on_a_port_in_use(run):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        one_error(run("proxy", "serve", "--listen", f"127.0.0.1:{busy.getsockname()[1]}"), 4, "already in use")


def test_proxy_serve_tls_with_an_encrypted_key_or_a_bad_certificate(run, tmp_path):
    import subprocess

    assert run("ca", "init").exit_code == 0
    out = tmp_path / "srv"
    assert run("cert", "issue", "server", "--host", "127.0.0.1", "--out", str(out)).exit_code == 0
    key = out / "server-key.pem"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:x", "-out", str(tmp_path / "k")],
                   check=True)
    key.write_bytes((tmp_path / "k").read_bytes())
    args = ("proxy", "serve", "--tls", "--cert-dir", str(out), "--listen", "127.0.0.1:0")
    one_error(run(*args), 2, "is encrypted")
    (out / "server-cert.pem").write_text("garbage")
    one_error(run(*args), 2, "cannot use the certificate and key")


@pytest.fixture
def full_disk(tmp_path):
    """A tiny tmpfs to fill up (mounting needs root, which CI has)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory) -> None:
    try:
        with open(directory / "filler", "wb", buffering=0) as fh:
            while True:
                fh.write(b"\0" * 4096)
    except OSError:
        pass  # full


@pytest.mark.parametrize("command", [["ca", "init", "--force"], ["cert", "renew", "SRV"]])
def test_a_full_disk_is_exit_10_and_loses_nothing(run, full_disk, tmp_path, command):
    env = {"SPICECTL_STATE_DIR": str(full_disk / "state")}
    assert run("ca", "init", env=env).exit_code == 0
    srv = full_disk / "srv"
    assert run("cert", "issue", "server", "--host", "127.0.0.1", "--out", str(srv), env=env).exit_code == 0
    before = {p: p.read_bytes() for p in full_disk.rglob("*.pem")}
    fill(full_disk)
    r = run(*[str(srv) if a == "SRV" else a for a in command], env=env)
    assert r.exit_code == 10, r.stderr
    assert "cannot write" in r.stderr and "No space left" in r.stderr
    assert {p: p.read_bytes() for p in full_disk.rglob("*.pem")} == before
    assert not list(full_disk.rglob("*.tmp"))


@pytest.mark.parametrize("argv", [["ca", "init", "--subject", ""], ["cert", "issue", "client", "bob", "--out", ""],
                                  ["cert", "issue", "server", "--host", "a.example.org", "--out", ""],
                                  ["--state-dir", "", "template", "list"], ["vm", "create", "x", "--video", ""]])
def test_an_empty_value_is_refused_not_read_as_the_default(run, argv):
    one_error(run(*argv), 2, "is empty")


@pytest.mark.parametrize("text, needle", [("organization = 5\n", "organization must be a str"),
                                          ('key_usage = "x"\n', "key_usage must be a list of strings"),
                                          ("is_ca = 1\n", "is_ca must be a bool"),
                                          ('organization = ""\n', "non-empty")])
def test_wrong_types_in_a_certificate_profile(run, tmp_path, text, needle):
    folder = tmp_path / "pki"
    folder.mkdir()
    (folder / "ca.toml").write_text(text)
    one_error(run("ca", "init", env=config(tmp_path, f'pki_dir = "{folder}"\n')), 2, needle)


def test_a_passphrase_longer_than_key_encryption_takes_changes_no_file(run, state_dir, tmp_path):
    run("ca", "init")
    run("ca", "init", "--force")  # a .bak of the first CA
    ca = state_dir / "ca"
    before = {p.name: p.read_bytes() for p in ca.iterdir() if p.is_file()}
    long = tmp_path / "long"
    long.write_bytes(b"p" * 1024)
    r = run("ca", "init", "--force", "--passphrase-file", str(long))
    assert r.exit_code == 2 and "at most 1023" in r.stderr
    assert {p.name: p.read_bytes() for p in ca.iterdir() if p.is_file()} == before


def test_arguments_that_are_not_utf8_are_refused_but_paths_may_hold_any_bytes(run, state_dir, tmp_path):
    raw = os.fsdecode(b"\xffname")  # how Python hands over argv bytes that are not UTF-8
    r = run("cert", "issue", "client", raw)
    assert r.exit_code == 2 and "'\\xffname' is not valid UTF-8" in r.stderr
    run("ca", "init")
    out = tmp_path / raw
    r = run("cert", "issue", "server", "--host", "h", "--out", str(out))
    assert r.exit_code == 0 and (out / "server-cert.pem").exists()
    listed = run("cert", "list")  # the path printed escaped, not a crash on strict UTF-8 output
    assert listed.exit_code == 0 and "\\udcffname" in listed.stdout


def test_writing_an_output_to_dev_null_leaves_dev_null_a_device():
    # a rename over it (as root) had made /dev/null a regular file: every later guest failed to start
    import os
    import stat

    from spicectl.pki.store import atomic_write

    atomic_write(Path(os.devnull), b"a picture", 0o644)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_an_output_into_a_fifo_is_written_through_it(tmp_path):
    import os
    import threading

    from spicectl.pki.store import atomic_write

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write(fifo, b"through the pipe", 0o644)
    reader.join(10)
    assert got == [b"through the pipe"] and fifo.is_fifo()


def test_an_output_onto_a_socket_is_refused(tmp_path):
    import socket

    from spicectl.errors import InvalidInput
    from spicectl.pki.store import atomic_write

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s"))
    try:
        with pytest.raises(InvalidInput, match="not a regular file"):
            atomic_write(tmp_path / "s", b"x", 0o644)
    finally:
        sock.close()


def test_a_profiles_key_table_names_every_field_of_a_profile():
    from dataclasses import fields

    from spicectl.pki.profiles import KINDS, Profile

    assert set(KINDS) == {f.name for f in fields(Profile)} - {"name"}
