"""Folder sharing: spice-webdavd's mux framing, and `spicectl share`'s checks before it connects."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spicectl.session.share import DIR_PREFIX, PART_SUFFIX, FolderServer, clean_stale
from spicectl.spice import webdav


def test_a_large_write_is_split_into_frames_the_guest_reassembles():
    data = bytes(range(256)) * 600  # 153,600 bytes: three frames
    wire = webdav.frames(7, data)
    got = webdav.Demux().feed(wire)
    assert [c for c, _ in got] == [7, 7, 7] and b"".join(d for _, d in got) == data
    assert max(len(d) for _, d in got) == webdav.MAX_FRAME


def test_an_empty_frame_ends_a_connection():
    assert webdav.Demux().feed(webdav.frames(-5, b"")) == [(-5, b"")]


@given(st.lists(st.tuples(st.integers(-2**63, 2**63 - 1), st.binary(max_size=300)), max_size=8),
       st.integers(1, 50))
def test_frames_arrive_whole_however_the_bytes_are_cut(messages, cut):
    wire = b"".join(webdav.frames(c, d) for c, d in messages)
    demux = webdav.Demux()
    got = []
    for i in range(0, len(wire), cut):
        got += demux.feed(wire[i:i + cut])
    assert got == [(c, d) for c, d in messages]


def test_sharing_something_that_is_not_a_folder_is_a_one_line_error(run, tmp_path):
    r = run("share", "web", str(tmp_path / "missing"))
    assert r.exit_code != 0 and "is not a directory" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2


def test_sharing_without_the_share_extra_says_what_to_install(run, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wsgidav.wsgidav_app", None)   # as if WsgiDAV were not installed
    r = run("share", "web", str(tmp_path))
    assert r.exit_code == 10, r.stderr   # the host lacks a program
    assert "folder sharing needs WsgiDAV and cheroot" in r.stderr and "spicectl[share]" in r.stderr
    assert "Traceback" not in r.stderr


# --- what the guest writes lands whole ------------------------------------------------------------


def request(path: str, raw: bytes, *, timeout: float = 10, hang_up: bool = False) -> bytes:
    """Send `raw` to the WebDAV server at the UNIX socket `path` (and hang up, as a dropped connection
    does); its answer's status line and body, read as a kept-alive client reads it (by its length)."""
    import http.client

    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    try:
        s.sendall(raw)
        if hang_up:
            s.shutdown(socket.SHUT_WR)
        answer = http.client.HTTPResponse(s)
        try:
            answer.begin()
        except http.client.RemoteDisconnected:
            return b""
        return f"HTTP/1.1 {answer.status} {answer.reason}\r\n\r\n".encode() + answer.read()
    finally:
        s.close()


def put(path: str, name: str, body: bytes, length: int | None = None) -> bytes:
    head = f"PUT /{name} HTTP/1.1\r\nHost: guest\r\nContent-Length: {len(body) if length is None else length}\r\n" \
           "Connection: close\r\n\r\n"
    return request(path, head.encode() + body, hang_up=length is not None)


@pytest.fixture
def shared(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "big.bin").write_bytes(b"old" * 1000)
    (folder / "big.bin").chmod(0o640)
    return folder


def test_an_upload_replaces_the_file_whole_and_keeps_its_mode(shared):
    with FolderServer(shared, writable=True) as server:
        assert put(server.socket_path, "big.bin", b"new" * 5000).startswith(b"HTTP/1.1 204")
        assert put(server.socket_path, "fresh.txt", b"hello").startswith(b"HTTP/1.1 201")
    assert (shared / "big.bin").read_bytes() == b"new" * 5000
    assert (shared / "big.bin").stat().st_mode & 0o777 == 0o640
    assert (shared / "fresh.txt").read_bytes() == b"hello"
    assert sorted(p.name for p in shared.iterdir()) == ["big.bin", "fresh.txt"]


def test_an_upload_cut_short_leaves_the_old_file_and_no_part(shared):
    with FolderServer(shared, writable=True) as server:
        answer = put(server.socket_path, "big.bin", b"new" * 1000, length=1 << 20)  # then the connection ends
        assert not answer.startswith((b"HTTP/1.1 2",)), answer[:80]
        put(server.socket_path, "other.bin", b"x" * 100, length=1000)
    assert (shared / "big.bin").read_bytes() == b"old" * 1000
    assert sorted(p.name for p in shared.iterdir()) == ["big.bin"]  # no part file, no half-made new file


def test_an_upload_over_the_limit_is_413_and_changes_nothing(shared):
    with FolderServer(shared, writable=True, max_upload=1000) as server:
        assert put(server.socket_path, "big.bin", b"n" * 2000).startswith(b"HTTP/1.1 413")
    assert (shared / "big.bin").read_bytes() == b"old" * 1000
    assert sorted(p.name for p in shared.iterdir()) == ["big.bin"]


@pytest.mark.parametrize("target", ["/../etc/passwd", "/%2e%2e/etc/passwd", "/a/../../etc/passwd"])
def test_a_path_out_of_the_folder_is_answered_at_once(shared, target):
    with FolderServer(shared, writable=True) as server:
        answer = request(server.socket_path, f"GET {target} HTTP/1.1\r\nHost: guest\r\n\r\n".encode())
    assert answer.split(b" ", 2)[1] in (b"400", b"403", b"404"), answer[:80]


SERVE = """import sys, time
from pathlib import Path
from spicectl.session.share import FolderServer
server = FolderServer(Path(sys.argv[1]), writable=True)
print(server.socket_path, flush=True)
time.sleep(600)
"""


def test_a_share_killed_mid_upload_loses_nothing_and_its_folder_is_cleaned_next_time(shared, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(shared)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    try:
        path = proc.stdout.readline().strip()
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(b"PUT /big.bin HTTP/1.1\r\nHost: guest\r\nContent-Length: 10000000\r\n\r\n" + b"n" * 3_000_000)
        deadline = time.monotonic() + 30
        while not any(p.name.endswith(PART_SUFFIX) and p.stat().st_size for p in shared.iterdir()):
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (shared / "big.bin").read_bytes() == b"old" * 1000
    left = list(tmp.glob(DIR_PREFIX + "*"))
    assert len(left) == 1
    assert clean_stale(tmp) == left and not left[0].exists()


def test_a_running_shares_folder_is_not_cleaned(shared, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with FolderServer(shared, writable=False):
        assert clean_stale(tmp_path) == []
        assert len(list(tmp_path.glob(DIR_PREFIX + "*"))) == 1
