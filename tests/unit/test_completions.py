"""The checked-in completion scripts are current and actually complete."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from spicectl.cli.completion import FILES, SHELLS, render
from tests.conftest import REPO


@pytest.mark.parametrize("shell", SHELLS)
def test_checked_in_completion_is_current(shell):
    path = REPO / "completions" / FILES[shell]
    assert path.read_text() == render(shell), (
        f"{path} is stale: regenerate with `spicectl completion {shell} > {path.relative_to(REPO)}`"
    )


def bash_complete(*words: str) -> list[str]:
    script = (
        f"source {REPO / 'completions' / FILES['bash']}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_spicectl; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return [w for w in out.splitlines() if w]


def test_bash_completes_commands_options_and_choices():
    assert {"ca", "cert", "completion", "template", "vm"} <= set(bash_complete("spicectl", ""))
    assert bash_complete("spicectl", "cert", "issue", "") == ["client", "server"]
    assert "--host" in bash_complete("spicectl", "cert", "issue", "server", "--h")
    # an option's value does not derail the command path
    assert bash_complete("spicectl", "--state-dir", "/tmp", "cert", "issue", "server", "--key-type", "ec") == \
        ["ec-p256", "ec-p384"]


@pytest.mark.parametrize("shell,check", [("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])])
def test_other_shell_scripts_parse(shell, check):
    if shutil.which(check[0]) is None:
        pytest.skip(f"{check[0]} is not installed")
    r = subprocess.run([*check, str(REPO / "completions" / FILES[shell])], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
