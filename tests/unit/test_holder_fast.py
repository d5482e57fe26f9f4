"""Which command lines the console script hands to the session holder, and which it runs itself."""

from __future__ import annotations

import pytest

from spicectl.holder.fast import parse, persist_seconds


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
