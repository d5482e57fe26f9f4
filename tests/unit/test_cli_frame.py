"""The root command: help, version, global options, the error → exit code table."""

from __future__ import annotations

import re
import subprocess
import sys

from spicectl import __version__, errors
from spicectl.cli.errors import EXIT_CODES, exit_code_for


def test_version_prints_the_package_version(run):
    r = run("--version")
    assert r.exit_code == 0
    assert __version__ in r.stdout


def test_help_lists_commands_and_documents_exit_codes(run):
    r = run("--help")
    assert r.exit_code == 0
    for word in ("ca", "cert", "completion", "--connect", "--json", "--state-dir", "Exit codes"):
        assert word in r.stdout
    documented = dict(re.findall(r"^\s+(\d+)\s+(\S.*)$", r.stdout.split("Exit codes:", 1)[1], re.M))
    for _, code, meaning in EXIT_CODES:
        assert documented.get(str(code)) == meaning, f"exit {code} is not documented as {meaning!r}"


def test_each_error_class_has_a_distinct_exit_code():
    codes = [code for _, code, _ in EXIT_CODES]
    assert len(codes) == len(set(codes))
    assert exit_code_for(errors.InvalidInput("x")) == 2
    assert exit_code_for(errors.NotFound("x")) == 3
    assert exit_code_for(errors.SpicectlError("x")) == 1


def test_unknown_command_is_a_usage_error(run):
    r = run("frobnicate")
    assert r.exit_code == 2
    assert "No such command" in r.stderr


def test_library_error_is_one_line_with_hint_and_no_traceback(run):
    r = run("ca", "show")
    assert r.exit_code == 3
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("spicectl: error: no CA in")
    assert lines[1].startswith("hint:")
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_debug_shows_the_traceback(run):
    r = run("--debug", "ca", "show")
    assert r.exit_code == 3
    assert "Traceback" in r.stderr


def test_config_file_typo_is_a_clear_error(run, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('stat_dir = "/tmp/x"\n')
    r = run("ca", "show", env={"SPICECTL_CONFIG": str(cfg)})
    assert r.exit_code == 2
    assert "unknown key 'stat_dir'" in r.stderr


def test_state_dir_option_beats_environment(run, tmp_path):
    other = tmp_path / "other"
    r = run("--state-dir", str(other), "ca", "init", "--json")
    assert r.exit_code == 0
    assert r.json()["path"].startswith(str(other))


def test_connect_falls_back_to_libvirt_default_uri(monkeypatch, tmp_path):
    from spicectl.settings import Settings

    monkeypatch.setenv("SPICECTL_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "test:///default")
    assert Settings.resolve().connect == "test:///default"
    assert Settings.resolve(connect="qemu:///system").connect == "qemu:///system"


HEAVY = ("libvirt", "lxml", "cryptography", "PIL", "rich")


def _modules_after(args: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from spicectl.cli.main import cli\n"
        f"try:\n    cli.main({args!r}, prog_name='spicectl')\n"
        "except SystemExit:\n    pass\n"
        "print(' '.join(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split("\n")[-2].split())


def test_help_imports_no_heavy_module():
    for args in (["--help"], ["vm", "--help"], ["cert", "--help"], ["ca", "--help"], ["connect", "--help"]):
        loaded = _modules_after(args)
        heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
        assert heavy == [], f"{args} imported {heavy[:5]}"
