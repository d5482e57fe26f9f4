"""Files a user (or an attacker) hands spicectl: binary, huge, endless, directories, wrong types.

Each is one `spicectl: error:` line with a usage exit code, never an internal error."""

from __future__ import annotations

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
    one_error(run("cert", "show", "/dev/zero"), 2, "larger than")
    one_error(run("ca", "init", "--passphrase-fd", "99999999999999999999"), 2, "--passphrase-fd")


def test_a_directory_where_a_file_is_expected(run, tmp_path):
    one_error(run("ca", "init", "--passphrase-file", str(tmp_path)), 2, "cannot read CA passphrase file")
    (tmp_path / "t.toml").mkdir()
    one_error(run("vm", "create", "x", "-t", str(tmp_path / "t.toml"), "--print-xml"), 2, "is a directory")
