"""The session holder trusts no one: a command hands its environment only to its own user's holder,
a stalled or malformed client holds up no other command, and no link in the state dir is followed.

These run the real console script against libvirt's test:///default driver (no guest needed)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spicectl.holder import LOCK, LOG, SOCKET, wire

SECRET = "do-not-leak-this-passphrase"


def spicectl(state: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "SPICECTL_STATE_DIR": str(state), "SPICECTL_CONFIG": str(state.parent / "none.toml"),
            "SPICECTL_CONNECT": "test:///default", "SPICECTL_PERSIST": "20", "SPICECTL_CA_PASSPHRASE": SECRET,
            **env}
    return subprocess.run([sys.executable, "-c", "from spicectl.entry import main; main()", *args],
                          capture_output=True, text=True, env=full, timeout=timeout)


class Listener:
    """A stranger's listener at a path: records what any client sends it, answers nothing."""

    def __init__(self, path: Path, as_uid: int | None = None) -> None:
        self.received = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        if as_uid is not None:
            # SO_PEERCRED reports who called listen(): a child that drops to `as_uid` first
            self.child = os.fork()
            if self.child == 0:
                try:
                    os.setgid(as_uid)
                    os.setuid(as_uid)
                    self.sock.listen(4)
                    self.sock.settimeout(30)
                    conn, _ = self.sock.accept()
                    conn.recv(1 << 20)
                finally:
                    os._exit(0)
            self.sock.close()
            return
        self.child = 0
        self.sock.listen(4)
        self.sock.settimeout(30)
        threading.Thread(target=self._take, daemon=True).start()

    def _take(self) -> None:
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(5)
            while chunk := conn.recv(65536):
                self.received += chunk
        except OSError:
            pass

    def close(self) -> None:
        if self.child:
            os.kill(self.child, 9)
            os.waitpid(self.child, 0)
        self.sock.close()


@pytest.fixture
def state(tmp_path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


def test_a_state_dir_others_may_write_gets_nothing(state):
    state.chmod(0o777)
    stranger = Listener(state / SOCKET)
    try:
        r = spicectl(state, "vm", "list")
    finally:
        stranger.close()
    assert r.returncode == 10, r.stderr
    assert "others may write to the state dir" in r.stderr and "refusing" in r.stderr
    assert stranger.received == b""


@pytest.mark.skipif(os.getuid() != 0, reason="listening as another user needs root")
def test_a_listener_of_another_user_gets_nothing(state):
    stranger = Listener(state / SOCKET, as_uid=65534)
    try:
        r = spicectl(state, "vm", "list")
    finally:
        stranger.close()
    assert r.returncode == 10, r.stderr
    assert "is not yours" in r.stderr
    assert SECRET not in r.stdout


def test_something_else_at_the_socket_is_a_clear_error_at_once(state):
    (state / SOCKET).mkdir()
    r = spicectl(state, "vm", "list")
    assert r.returncode == 10
    assert "is not the holder's socket (it is a directory); remove it" in r.stderr


def test_a_linked_holder_log_is_not_followed(state, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("someone else's\n")
    victim.chmod(0o644)
    (state / LOG).symlink_to(victim)
    r = spicectl(state, "vm", "list", "--json")
    assert r.returncode == 0, r.stderr   # run here instead, with a word about why
    assert "running without the holder" in r.stderr
    assert victim.read_text() == "someone else's\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_a_linked_holder_lock_is_not_followed(state, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("x")
    victim.chmod(0o644)
    (state / LOCK).symlink_to(victim)
    r = subprocess.run([sys.executable, "-m", "spicectl.holder", str(state), "5"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "cannot open" in r.stderr
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


@pytest.fixture
def holder(state):
    """A running holder for `state` (started by a served command), asked to exit afterwards."""
    r = spicectl(state, "vm", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert (state / SOCKET).exists()
    yield state
    from spicectl.holder.client import release

    release(state)


def connect(state: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(state / SOCKET))
    return sock


def test_a_stalled_client_holds_up_no_other_command(holder):
    stalled = connect(holder)
    stalled.sendall(b"\x00\x00")   # half a frame's length, then nothing
    try:
        r = spicectl(holder, "vm", "list", "--json", timeout=30)
    finally:
        stalled.close()
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("change", [
    {"persist": "soon"}, {"umask": "022"}, {"cwd": "relative"}, {"env": {"A\0B": "1"}}, {"argv": "vm list"},
])
def test_a_malformed_request_is_refused_and_the_holder_lives_on(holder, change):
    request = {"op": "run", "argv": ["vm", "list"], "env": dict(os.environ), "cwd": "/", "umask": 0o22,
               "persist": 20.0, **change}
    sock = connect(holder)
    try:
        wire.send(sock, request)
        reply = wire.receive(sock)
    finally:
        sock.close()
    assert reply["exit"] == 2 and b"malformed request" in reply["stderr"]
    assert spicectl(holder, "vm", "list", "--json").returncode == 0


def test_a_folder_that_is_gone_is_an_error_not_a_crash(holder, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    sock = connect(holder)
    try:
        wire.send(sock, {"op": "run", "argv": ["vm", "list"], "env": dict(os.environ), "cwd": str(gone / "x"),
                         "umask": 0o22, "persist": 20.0})
        reply = wire.receive(sock)
    finally:
        sock.close()
    assert reply["exit"] == 1 and b"No such file" in reply["stderr"]
    assert spicectl(holder, "vm", "list", "--json").returncode == 0


def test_commands_sharing_their_surroundings_run_at_once(holder):
    runs = [threading.Thread(target=lambda: results.append(spicectl(holder, "vm", "list", "--json")))
            for _ in range(4)]
    results: list[subprocess.CompletedProcess] = []
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    assert all(r.stdout.strip().startswith("[") for r in results)  # each its own output, whole


def test_a_long_wait_in_the_holder_holds_up_no_other_command(holder):
    """A served wait-screen that waits for 20 s (on a SPICE server that never draws) while another
    command of the same script asks the holder: the other answers while the wait still runs."""
    from tests.hostile_server import HostileServer, Script

    with HostileServer(Script()) as quiet:
        env = {**os.environ, "SPICECTL_STATE_DIR": str(holder), "SPICECTL_CONFIG": str(holder.parent / "none.toml"),
               "SPICECTL_CONNECT": "test:///default", "SPICECTL_PERSIST": "20", "SPICECTL_CA_PASSPHRASE": SECRET}
        waiting = subprocess.Popen([sys.executable, "-c", "from spicectl.entry import main; main()",
                                    "wait-screen", f"spice://127.0.0.1:{quiet.port}", "--plain-port", "--changed",
                                    "--timeout", "20"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        try:
            deadline = time.monotonic() + 15
            while not quiet_linked(quiet) and time.monotonic() < deadline:
                time.sleep(0.05)
            r = spicectl(holder, "vm", "list", "--json", timeout=30)
            assert r.returncode == 0, r.stderr
            assert waiting.poll() is None, "the wait ended before the other command answered"
        finally:
            waiting.kill()
            waiting.wait()


def quiet_linked(server) -> bool:
    return bool(server.linked)


def test_a_state_dir_that_is_a_link_to_the_users_own_folder_is_served(state, tmp_path):
    link = tmp_path / "linked-state"
    link.symlink_to(state)
    r = spicectl(link, "vm", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert (state / SOCKET).exists()   # through the holder
    from spicectl.holder.client import release

    release(state)
