"""What we issue is accepted by QEMU's SPICE server and by a strict TLS client."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from spicectl.spice import link, transport
from tests.conftest import free_port
from tests.integration.qemu import qemu_spice, x509_opts

pytestmark = pytest.mark.integration


async def tls_link(port: int, cafile: str, server_hostname: str) -> link.LinkReply:
    ctx = ssl.create_default_context(cafile=cafile)  # trusts only our CA, checks the name
    stream = await transport.open_stream("127.0.0.1", port, ssl_context=ctx, server_hostname=server_hostname)
    try:
        return (await transport.link(stream, link.Handshake(link.MAIN))).channel.reply
    finally:
        stream.close()


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_qemu_serves_tls_with_our_certificate_and_the_link_completes(run, tmp_path, key_type):
    assert run("ca", "init").exit_code == 0
    out = tmp_path / "x509"
    r = run("cert", "issue", "server", "--host", "localhost", "--ip", "127.0.0.1",
            "--key-type", key_type, "--out", str(out))
    assert r.exit_code == 0, r.stderr
    port = free_port()
    with qemu_spice(x509_opts(out, port), port):
        for name in ("localhost", "127.0.0.1"):
            reply = asyncio.run(tls_link(port, str(out / "ca-cert.pem"), name))
            assert reply.error == 0
            assert link.CAP_AUTH_SPICE in reply.common_caps
        # A client that checks the name refuses a name outside the SANs.
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(tls_link(port, str(out / "ca-cert.pem"), "other.example.org"))


def test_a_client_trusting_another_ca_refuses_the_server(run, tmp_path):
    run("ca", "init")
    out = tmp_path / "x509"
    run("cert", "issue", "server", "--host", "localhost", "--out", str(out))
    other = tmp_path / "other"
    run("--state-dir", str(other), "ca", "init")
    port = free_port()
    with qemu_spice(x509_opts(out, port), port):
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(tls_link(port, str(other / "ca" / "ca-cert.pem"), "localhost"))
