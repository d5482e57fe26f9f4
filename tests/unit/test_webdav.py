"""Folder sharing: spice-webdavd's mux framing, and `spicectl share`'s checks before it connects."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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
