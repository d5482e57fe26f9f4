"""The one lock helper: a file or a folder, a wait that ends, whoever holds it asked once to let go."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spicectl.errors import EnvironmentProblem, TimeoutExpired
from spicectl.locks import lock, try_lock


def held_elsewhere(path):
    """A child process holding the lock on `path` until its stdin closes."""
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY if os.path.isdir(sys.argv[1]) else "
            "os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_free_lock_is_taken_at_once_and_its_file_is_private(tmp_path):
    fd = lock(tmp_path / "x.lock", wait=0, busy="busy")
    assert oct((tmp_path / "x.lock").stat().st_mode & 0o777) == "0o600"
    assert try_lock(tmp_path / "x.lock") is None   # another open file: held
    os.close(fd)
    again = try_lock(tmp_path / "x.lock")
    assert again is not None
    os.close(again)


def test_whoever_holds_it_is_asked_once_and_the_lock_is_taken_when_it_lets_go(tmp_path):
    path = tmp_path / "x.lock"
    path.touch()
    child = held_elsewhere(path)
    asked = []

    def let_go():
        asked.append(1)
        child.stdin.close()
        child.wait()

    fd = lock(path, wait=30, busy="busy", on_busy=let_go)
    os.close(fd)
    assert asked == [1]


def test_a_lock_held_past_the_wait_is_a_timeout_naming_what_holds_it(tmp_path):
    child = held_elsewhere(tmp_path)   # a folder, locked on its own descriptor
    try:
        asked = []
        with pytest.raises(TimeoutExpired, match="another one has it"):
            lock(tmp_path, wait=0.2, busy="another one has it", on_busy=lambda: asked.append(1), poll=0.01)
        assert asked == [1]
    finally:
        child.stdin.close()
        child.wait()


def test_a_lock_file_is_never_opened_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("theirs")
    (tmp_path / "x.lock").symlink_to(victim)
    with pytest.raises(EnvironmentProblem, match="cannot open"):
        lock(tmp_path / "x.lock", wait=0, busy="busy")
    assert victim.read_text() == "theirs"
