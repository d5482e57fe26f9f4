"""`spicectl proxy serve`: one long-running proxy for many sessions, each admitted by a one-time token."""

from __future__ import annotations

import click

from spicectl.cli.app import App, pass_app


@click.group()
def proxy() -> None:
    """Run a long-lived session proxy (WebSocket for browsers, HTTP CONNECT for remote-viewer)."""


@proxy.command("serve")
@click.option("--listen", default="127.0.0.1:3128", show_default=True, metavar="ADDR:PORT", help="Where to listen.")
@click.option("--tls", is_flag=True, help="Serve TLS (https/wss) with a certificate from spicectl's CA.")
@click.option("--cert-dir", metavar="DIR", help="With --tls: directory with server-cert.pem and server-key.pem "
              "(default STATE_DIR/certs/server/ADDR).")
@click.option("--require-client-cert", is_flag=True, help="With --tls: admit only clients presenting a certificate "
              "from spicectl's CA (spicectl cert issue client NAME).")
@click.option("--html5-dir", metavar="DIR", help="spice-html5 files to serve (default: /usr/share/spice-html5).")
@click.option("--reuse-port", is_flag=True, help="Share ADDR:PORT with other `proxy serve --reuse-port` processes "
              "of this state dir (SO_REUSEPORT): the kernel spreads connections among them, and a token is "
              "still good for one session across all.")
@pass_app
def serve(app: App, listen: str, tls: bool, cert_dir: str | None, require_client_cert: bool,
          html5_dir: str | None, reuse_port: bool) -> None:
    """Serve sessions minted by `spicectl connect NAME --proxy ws|http-connect --proxy-url URL`.

    Tokens are signed with STATE_DIR/proxy/secret, so the proxy and `connect` share a state dir.
    Each token opens one session, for the guest endpoint it names, before it expires. One log
    line per session on stderr. Stops on Ctrl-C or SIGTERM.

    Several proxies (on one port with --reuse-port, or on several behind a TCP balancer) share
    spent tokens through STATE_DIR/proxy/spent.db; a session whose channels land on different
    proxies is one session.
    """
    import asyncio
    from pathlib import Path

    from spicectl.cli.screen import stopped_by_signals
    from spicectl.errors import InvalidInput
    from spicectl.pki.ca import CA_CERT
    from spicectl.proxy.server import ProxyServer, find_html5_dir
    from spicectl.proxy.tokens import Signer, load_secret, spent_store
    from spicectl.session.handoff import parse_listen

    host, port = parse_listen(listen, 3128)
    if require_client_cert and not tls:
        raise InvalidInput("--require-client-cert needs --tls")
    ctx = None
    if tls:
        from spicectl.proxy.server import listener_tls

        d = Path(cert_dir) if cert_dir else app.settings.certs_dir / "server" / host
        ctx = listener_tls(d, app.settings.ca_dir / CA_CERT if require_client_cert else None)
    app.proxy_logging()
    server = ProxyServer(Signer(load_secret(app.settings.state_dir)), ca_file=str(app.settings.ca_dir / CA_CERT),
                         html5_dir=find_html5_dir([html5_dir] if html5_dir else None), tls=ctx,
                         spent=spent_store(app.settings.state_dir))

    async def main() -> None:
        bound = await server.start(host, port, reuse_port=reuse_port)
        app.info(f"spicectl proxy listening on {'https' if tls else 'http'}://{bound[0]}:{bound[1]}")
        stop = stopped_by_signals()
        await stop.wait()
        await server.close()

    asyncio.run(main())
