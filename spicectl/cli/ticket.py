"""`spicectl ticket`: a fresh one-time SPICE password for a running guest."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import Integer


@click.command()
@click.argument("name")
@click.option("--ttl", type=Integer(), default=30, show_default=True, help="Seconds the ticket stays valid.")
@click.option("--output", "-o", metavar="FILE", help="Write the ticket to FILE (mode 0600) instead of stdout.")
@json_option
@pass_app
def ticket(app: App, name: str, ttl: int, output: str | None) -> None:
    """Set a fresh random SPICE ticket on guest NAME, valid for --ttl seconds.

    The ticket is printed to stdout (or written to --output), never logged,
    and set only on the running guest, not in its stored definition.
    """
    from pathlib import Path

    from spicectl.pki.store import check_output_path
    from spicectl.virt import lifecycle
    from spicectl.virt.tickets import set_ticket

    if output:
        check_output_path(Path(output))  # before the guest's ticket changes, not after
    with app.hypervisor() as hv:
        t = set_ticket(lifecycle.lookup(hv, name), ttl)
    data = {"name": name, **t.as_dict()}
    if output:
        from spicectl.pki.store import atomic_write

        atomic_write(Path(output), (t.password + "\n").encode(), 0o600)
        data.pop("ticket")
        data["output"] = output
        app.emit(data, lambda: app.info(f"ticket for {name} written to {output}, valid until {data['valid_to']}"))
        return
    app.emit(data, lambda: click.echo(t.password))
