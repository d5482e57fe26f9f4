"""Which command lines the console script hands to the session holder, and which it runs itself."""

from __future__ import annotations

import pytest

from spicectl.holder.client import parse, persist_seconds


@pytest.mark.parametrize("argv, command", [
    (["vm", "list"], ("vm", "list")),
    (["--json", "-c", "qemu:///system", "screenshot", "g", "-o", "-"], ("screenshot",)),
    (["--state-dir=/s", "-v", "send-keys", "g", "ctrl+alt+f2"], ("send-keys",)),
])
def test_served_commands_are_handed_over(argv, command):
    parsed = parse(argv)
    assert parsed is not None and parsed[1] == command


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["vm", "create", "x"], ["vm", "list", "--help"], ["screenshot", "-h"],
    ["type", "g", "-"],                      # stdin: only this process has it
    ["--unknown", "vm", "list"], ["-c"], ["completion", "bash"], ["vm"],
])
def test_everything_else_runs_here(argv):
    assert parse(argv) is None


def test_persist_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.setenv("SPICECTL_PERSIST", "5")
    assert persist_seconds({}) == 5
    assert persist_seconds({"--persist": "0"}) == 0
    assert persist_seconds({"--persist": "x"}) is None and persist_seconds({"--persist": "-1"}) is None


def test_the_fast_path_imports_nothing_heavier_than_the_interpreter_builtins():
    # a served command's cost is an interpreter start and one round trip: these imports each cost
    # more than the holder's answer (typing 11 ms, pathlib, json and socket with re and enum ~4 ms)
    import os
    import subprocess
    import sys

    probe = ("import sys, spicectl.holder.client as f; f.state_dir({}); "
             "print(' '.join(m for m in ('typing', 'pathlib', 'json', 're', 'socket', 'subprocess', 'enum', "
             "'base64') if m in sys.modules))")
    env = {**os.environ, "SPICECTL_CONFIG": "/nonexistent/spicectl.toml"}   # no config file to parse
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env=env).stdout
    assert out.strip() == ""


@pytest.mark.parametrize("text", ["1e3", "inf", "nan", "\u0663", "1_0"])
def test_persist_takes_ascii_decimals_only_as_the_cli_does(text, run):
    assert persist_seconds({"--persist": text}) is None   # not handed over: the CLI says what is wrong
    r = run("--persist", text, "vm", "list")
    assert r.exit_code == 2


def test_a_threshold_takes_ascii_decimals_from_0_to_1(run):
    for bad in ("\u0660.\u0669", "1.5", "nan"):
        r = run("wait-screen", "g", "--changed", "--threshold", bad)
        assert r.exit_code == 2 and "not a number from 0 to 1" in r.stderr, (bad, r.stderr)


def test_the_fast_paths_root_options_are_clicks():
    import click

    from spicectl.cli.main import cli
    from spicectl.holder.client import FLAG_OPTIONS, VALUE_OPTIONS

    values, flags = set(), set()
    for param in cli.params:
        if not isinstance(param, click.Option) or param.name in ("help", "version") or param.is_eager:
            continue
        names = set(param.opts) | set(param.secondary_opts)
        (flags if param.is_flag or param.count else values).update(names)
    assert values == VALUE_OPTIONS
    assert flags == FLAG_OPTIONS - {"-vv", "-vvv"}   # (-vv: click's count option, spelt short)


def test_every_served_command_is_a_command_of_the_cli_and_named_in_persists_help():
    import click

    from spicectl.cli.main import cli
    from spicectl.holder import READ_ONLY, SERVED

    assert READ_ONLY <= SERVED
    ctx = click.Context(cli)
    persist = next(p for p in cli.params if p.name == "persist")
    for words in SERVED:
        command: click.Command | None = cli
        for word in words:
            assert isinstance(command, click.Group)
            command = command.get_command(ctx, word)
            assert command is not None, words
        assert not isinstance(command, click.Group), words
        assert " ".join(words) in persist.help.replace("vm list/show", "vm list, vm show"), words


@pytest.mark.parametrize("option, env, config", [
    ("/opt/a", "/opt/b", "/opt/c"), (None, "/opt/b", "/opt/c"), (None, None, "/opt/c"), (None, None, None),
    ("~/rel", None, None), (None, None, "")])
def test_the_fast_path_finds_the_state_dir_as_settings_do(tmp_path, monkeypatch, option, env, config):
    from spicectl.holder.client import state_dir
    from spicectl.settings import Settings

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = tmp_path / "spicectl.toml"
    monkeypatch.setenv("SPICECTL_CONFIG", str(cfg))
    if config is not None:
        cfg.write_text(f'state_dir = "{config}"\n' if config else "")
    if env is None:
        monkeypatch.delenv("SPICECTL_STATE_DIR", raising=False)
    else:
        monkeypatch.setenv("SPICECTL_STATE_DIR", env)
    # the CLI takes SPICECTL_STATE_DIR through click's envvar: the option's value when set
    resolved = Settings.resolve(connect=None, state_dir=option or env).state_dir
    fast = state_dir({"--state-dir": option} if option else {})
    assert fast == str(resolved.absolute())


def test_record_video_goes_to_the_holder_only_to_start_or_stop_a_background_recording():
    from spicectl.holder.client import parse

    assert parse(["record-video", "web", "-o", "run.webm"]) is None   # the foreground: Ctrl-C is the terminal's
    assert parse(["record-video", "web", "-o", "run.webm", "--background"]) == ({}, ("record-video",))
    assert parse(["--json", "record-video", "web", "--stop"]) == ({}, ("record-video",))
