"""`spicectl usb`: the guest's USB redirection channels, seen through spicectl's SPICE client."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT
from spicectl.cli.screen import CONNECT_ALLOWANCE, run_client, server_options


@click.group()
def usb() -> None:
    """USB redirection over SPICE (usbredir)."""


@usb.command("status")
@click.argument("name", metavar="GUEST")
@click.option("--timeout", type=TIMEOUT, default=15, show_default=True, help="Seconds to wait for each hello.")
@server_options
@json_option
@pass_app
def status(app: App, name: str, timeout: float, **opts) -> None:
    """Link every usbredir channel of guest GUEST and report what its usb-redir device says in hello.

    No device is redirected: the usbredir conversation stops after the hello.
    """
    async def work(client):
        from spicectl.spice.usbredir_link import usbredir_hellos

        return await usbredir_hellos(client, timeout=timeout)

    hellos = run_client(app, name, opts, work, timeout=timeout + CONNECT_ALLOWANCE, display=False, inputs=False)
    rows = [{"channel": cid, "peer_version": h.version, "peer_caps": h.cap_names} for cid, h in sorted(hellos.items())]

    def human() -> None:
        if not rows:
            click.echo(f"{name} has no usbredir channels")
        for r in rows:
            click.echo(f"usbredir {r['channel']}: {r['peer_version']} ({', '.join(r['peer_caps']) or 'no caps'})")

    app.emit({"name": name, "channels": rows}, human)
