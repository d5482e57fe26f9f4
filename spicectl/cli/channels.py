"""`spicectl channels`: what a guest's SPICE server offers, seen through spicectl's SPICE client."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT
from spicectl.cli.screen import CONNECT_ALLOWANCE, run_client, server_options


@click.command()
@click.argument("name", metavar="GUEST")
@click.option("--timeout", type=TIMEOUT, default=15, show_default=True,
              help="Seconds to wait for each port channel's init.")
@server_options
@json_option
@pass_app
def channels(app: App, name: str, timeout: float, **opts) -> None:
    """List the SPICE channels guest GUEST's server offers.

    Port channels (named virtio-serial ports, such as the WebDAV folder-sharing port that spice-webdavd
    opens in the guest) are linked to read their name and whether the guest holds them open.
    """
    from spicectl.spice import link

    async def work(client):
        from spicectl.spice.port_link import list_ports

        return client.channels_available, await list_ports(client, timeout=timeout)

    available, ports = run_client(app, name, opts, work, timeout=timeout + CONNECT_ALLOWANCE, display=False,
                                  inputs=False)
    rows = []
    # the server lists the channels besides main, which this command came through
    for kind, cid in sorted(available | {(link.MAIN, 0)}):
        row: dict = {"type": link.CHANNEL_NAMES.get(kind, str(kind)), "id": cid}
        if (kind, cid) in ports:
            row.update(port=ports[kind, cid].name, opened=ports[kind, cid].opened)
        rows.append(row)

    def human() -> None:
        for r in rows:
            extra = f"  {r['port']} ({'open in the guest' if r['opened'] else 'not open in the guest'})" \
                if "port" in r else ""
            click.echo(f"{r['type']} {r['id']}{extra}")

    app.emit({"name": name, "channels": rows}, human)
