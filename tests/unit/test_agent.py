"""The agent's file-transfer messages (spice-protocol vd_agent.h), built and read without a guest."""

from __future__ import annotations

import configparser
import struct

import pytest

from spicectl.errors import ProtocolError
from spicectl.spice import agent as A


def keyfile(body: bytes) -> dict[str, str]:
    assert body.endswith(b"\0")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(body[A.XFER_START.size:-1].decode())
    return dict(parser["vdagent-file-xfer"])


def test_start_carries_the_name_and_size_as_a_key_file():
    body = A.xfer_start(7, "report.pdf", 12345)
    assert struct.unpack_from("<I", body)[0] == 7
    assert keyfile(body) == {"name": "report.pdf", "size": "12345"}


def test_start_escapes_what_glib_would_read_otherwise():
    assert keyfile(A.xfer_start(1, "a\\b", 1))["name"] == "a\\\\b"
    assert keyfile(A.xfer_start(1, " lead", 1))["name"] == "\\slead"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "two\nlines", "tab\there", "del\x7f"])
def test_start_refuses_names_that_are_not_one_file_name(name):
    with pytest.raises(ValueError):
        A.xfer_start(1, name, 0)


def test_data_says_how_many_bytes_follow():
    assert A.xfer_data(3, b"abc") == struct.pack("<IQ", 3, 3) + b"abc"


def test_status_reads_success_and_the_reason_of_a_refusal():
    assert A.xfer_status(struct.pack("<II", 4, A.XFER_SUCCESS)) == (4, A.XFER_SUCCESS, "")
    _, result, text = A.xfer_status(struct.pack("<IIQ", 4, A.XFER_NOT_ENOUGH_SPACE, 4096))
    assert result == A.XFER_NOT_ENOUGH_SPACE and text.endswith("(4096 bytes free)")
    assert "GLib I/O error 24" in A.xfer_status(struct.pack("<IIII", 4, A.XFER_ERROR_STATUS, 0, 24))[2]
    assert "disabled" in A.xfer_status(struct.pack("<II", 4, A.XFER_DISABLED))[2]
    assert "status 99" in A.xfer_status(struct.pack("<II", 4, 99))[2]


def test_a_short_status_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        A.xfer_status(b"\1\0\0")


def test_a_data_message_travels_in_chunks_the_server_takes():
    chunks = A.AgentStream.chunks(A.FILE_XFER_DATA, A.xfer_data(1, bytes(A.XFER_CHUNK)))
    assert all(len(c) <= A.MAX_CHUNK for c in chunks)
    stream = A.AgentStream()
    got = [m for c in chunks for m in stream.receive_chunk(c)]
    assert got == [(A.FILE_XFER_DATA, A.xfer_data(1, bytes(A.XFER_CHUNK)))]


def test_copy_to_refuses_a_bad_path_before_asking_any_guest(run, tmp_path):
    missing = run("copy-to", "no-such-guest", str(tmp_path / "absent"))
    assert missing.exit_code == 3 and "no file at" in missing.stderr
    folder = run("copy-to", "no-such-guest", str(tmp_path))
    assert folder.exit_code == 2 and "is a directory" in folder.stderr


def test_monitors_config_places_monitors_side_by_side_from_the_left():
    body = A.monitors_config([(1024, 768), (800, 600)])
    assert A.MONITORS.unpack(body) == {"num_of_monitors": 2, "flags": 0}
    heads = [A.MON_CONFIG.unpack(body, A.MONITORS.size + i * A.MON_CONFIG.size) for i in range(2)]
    assert [(h["x"], h["y"], h["width"], h["height"]) for h in heads] == [(0, 0, 1024, 768), (1024, 0, 800, 600)]
