"""SASL login in the link stage, sans-I/O: our Handshake against a server played here with scramp's server
side, framed as spice-server frames it; and the hostile twins (lengths, early ends, forged proofs)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spicectl.errors import AuthError, ProtocolError
from spicectl.spice import link
from spicectl.spice import wire as W

SASL_CAPS = (link.CAP_AUTH_SELECTION, link.CAP_AUTH_SASL, link.CAP_MINI_HEADER)


def reply(caps=SASL_CAPS) -> bytes:
    words = W.caps_words(list(caps))
    body = W.LINK_REPLY.pack(error=0, pub_key=bytes(162), num_common_caps=len(words), num_channel_caps=0,
                             caps_offset=W.LINK_REPLY.size) + struct.pack(f"<{len(words)}I", *words)
    return W.LINK_HEADER.pack(magic=link.MAGIC, major=2, minor=2, size=len(body)) + body


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def server_data(data: bytes, complete: bool) -> bytes:
    return (u32(len(data) + 1) + data + b"\0" if data else u32(0)) + bytes([complete])


def client_frames(out: bytes) -> list[bytes]:
    """The length-prefixed pieces a client message holds (a NUL-terminated piece without its NUL)."""
    pieces = []
    while out:
        n = struct.unpack("<I", out[:4])[0]
        pieces.append(out[4:4 + n].rstrip(b"\0"))
        out = out[4 + n:]
    return pieces


class ScramServer:
    """spice-server's side of a SCRAM-SHA-256 login, with scramp's server and a user of its own."""

    def __init__(self, user="alice", password="s3cret", mechlist=b",SCRAM-SHA-256,"):
        from scramp import ScramMechanism

        mech = ScramMechanism("SCRAM-SHA-256")
        info = mech.make_auth_info(password)
        self.user = user
        self.server = mech.make_server(lambda name: info if name == user else (_ for _ in ()).throw(KeyError(name)))
        self.mechlist = mechlist


def login(hs: link.Handshake, server: ScramServer) -> link.Handshake:
    out = hs.receive_data(reply())
    assert out == W.AUTH_MECHANISM.pack(auth_mechanism=link.CAP_AUTH_SASL)
    out = hs.receive_data(u32(len(server.mechlist)) + server.mechlist)
    mech, first = client_frames(out)
    assert mech == b"SCRAM-SHA-256"
    server.server.set_client_first(first.decode())
    out = hs.receive_data(server_data(server.server.get_server_first().encode(), False))
    (final,) = client_frames(out)
    server.server.set_client_final(final.decode())
    assert hs.receive_data(server_data(server.server.get_server_final().encode(), True)) == b""
    return hs


def test_a_scram_login_then_the_two_results_link_the_channel():
    hs = login(link.Handshake(link.MAIN, password=b"s3cret", sasl_user="alice", tls=True), ScramServer())
    assert hs.start()[:4] == b"REDQ" and not hs.done
    message = W.MINI_HEADER.pack(type=103, size=2) + b"hi"
    hs.receive_data(W.LINK_RESULT.pack(error=0) + W.LINK_RESULT.pack(error=0) + message)
    assert hs.done and hs.leftover == message


def test_the_link_announces_sasl_not_the_ticket_when_logging_in():
    from spicectl.spice.wire import LINK_MESS

    start = link.Handshake(link.MAIN, password=b"x", sasl_user="alice").start()
    mess = LINK_MESS.unpack(start, W.LINK_HEADER.size)
    caps = W.caps_bits(list(struct.unpack_from("<I", start, W.LINK_HEADER.size + mess["caps_offset"])))
    assert link.CAP_AUTH_SASL in caps and link.CAP_AUTH_SPICE not in caps


def test_a_server_that_refuses_the_password_closes_and_that_is_exit_5():
    server = ScramServer(password="other")
    hs = link.Handshake(link.MAIN, password=b"s3cret", sasl_user="alice", tls=True)
    hs.receive_data(reply())
    hs.receive_data(u32(len(server.mechlist)) + server.mechlist)
    with pytest.raises(AuthError, match="SASL login refused for 'alice'"):
        hs.receive_eof()


def test_a_server_that_does_not_know_the_password_cannot_forge_its_proof():
    impostor = ScramServer(password="not-the-users")
    hs = link.Handshake(link.MAIN, password=b"s3cret", sasl_user="alice", tls=True)
    hs.receive_data(reply())
    mech, first = client_frames(hs.receive_data(u32(len(impostor.mechlist)) + impostor.mechlist))
    impostor.server.set_client_first(first.decode())
    (final,) = client_frames(hs.receive_data(server_data(impostor.server.get_server_first().encode(), False)))
    forged = b"v=" + b"A" * 43 + b"="
    with pytest.raises(ProtocolError, match="SCRAM-SHA-256"):
        hs.receive_data(server_data(forged, True))


def test_a_server_that_needs_sasl_says_so_to_a_ticket_client():
    hs = link.Handshake(link.MAIN, password=b"ticket")
    with pytest.raises(AuthError, match="requires a SASL login"):
        hs.receive_data(reply())


def test_a_server_without_sasl_says_so_to_a_sasl_client():
    hs = link.Handshake(link.MAIN, password=b"pw", sasl_user="alice")
    with pytest.raises(AuthError, match="does not offer SASL"):
        hs.receive_data(reply((link.CAP_AUTH_SELECTION, link.CAP_AUTH_SPICE)))


def test_over_plain_tcp_only_mechanisms_with_a_security_layer_are_offered_and_we_say_so():
    hs = link.Handshake(link.MAIN, password=b"pw", sasl_user="alice", tls=False)
    hs.receive_data(reply())
    with pytest.raises(AuthError, match="over this plain connection.*GSSAPI"):
        hs.receive_data(u32(8) + b",GSSAPI,")


def test_plain_is_used_only_inside_tls():
    hs = link.Handshake(link.MAIN, password=b"pw", sasl_user="alice", tls=False)
    hs.receive_data(reply())
    with pytest.raises(AuthError, match="no SASL mechanism"):
        hs.receive_data(u32(7) + b",PLAIN,")
    hs = link.Handshake(link.MAIN, password=b"pw", sasl_user="alice", tls=True)
    hs.receive_data(reply())
    mech, data = client_frames(hs.receive_data(u32(7) + b",PLAIN,"))
    assert mech == b"PLAIN" and data == b"\0alice\0pw"
    hs.receive_data(server_data(b"", True) + W.LINK_RESULT.pack(error=0) + W.LINK_RESULT.pack(error=0))
    assert hs.done


# --- hostile twins ---

@pytest.mark.parametrize("bytes_after_mechanism,match", [
    (u32(1 << 30), "SASL message of 1073741824"),                     # a gigantic mechlist
    (u32(15) + b",SCRAM-SHA-256," + u32(5 << 20), "SASL message"),   # a gigantic server-first
    (u32(15) + b",SCRAM-SHA-256," + server_data(b"r=x,s=y,i=1", True), "after one message"),   # done too early
    (u32(15) + b",SCRAM-SHA-256," + server_data(b"garbage", False), "SCRAM-SHA-256"),       # unreadable
    (u32(15) + b",SCRAM-SHA-256," + u32(3) + b"abc" + b"\0", "without its NUL"),
])
def test_a_hostile_sasl_server_is_a_protocol_error(bytes_after_mechanism, match):
    hs = link.Handshake(link.MAIN, password=b"s3cret", sasl_user="alice", tls=True)
    hs.receive_data(reply())
    with pytest.raises(ProtocolError, match=match):
        hs.receive_data(bytes_after_mechanism)


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_any_bytes_from_a_sasl_server_end_in_an_error_or_a_wait(data):
    hs = link.Handshake(link.MAIN, password=b"s3cret", sasl_user="alice", tls=True)
    hs.receive_data(reply())
    try:
        hs.receive_data(data)
    except (AuthError, ProtocolError):
        pass


@pytest.mark.parametrize("sent,code", [
    (u32(1 << 31), 7),                                    # a mechlist of 2 GB
    (u32(15) + b",SCRAM-SHA-256," + u32(9 << 20), 7),     # a server-first of 9 MB
    (u32(15) + b",SCRAM-SHA-256,", 9),                    # then silence: the link's deadline
    (u32(100) + b",SCRAM", 9),                            # half a mechlist, then silence
])
def test_a_hostile_sasl_server_ends_the_command_with_7_or_9_not_a_hang(sent, code, tmp_path):
    from tests.hostile_server import HostileServer, Script, run_cli

    pw = tmp_path / "pw"
    pw.write_text("secret")
    with HostileServer(Script(sasl=sent)) as server:
        run = run_cli(["channels", f"spice://127.0.0.1:{server.port}", "--plain-port", "--sasl-user", "alice",
                       "--password-file", str(pw), "--timeout", "3"], seconds=60)
    assert run.how == "exit" and run.code == code, str(run)
    assert "Traceback" not in run.stderr
