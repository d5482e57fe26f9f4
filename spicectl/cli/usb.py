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


@usb.command("share")
@click.argument("name", metavar="GUEST")
@click.option("--cd", "cds", metavar="ISO", multiple=True, type=click.Path(dir_okay=False),
              help="Plug ISO in as a USB CD-ROM drive (read-only). Repeatable.")
@click.option("--disk", "disks", metavar="IMG", multiple=True, type=click.Path(dir_okay=False),
              help="Plug the raw disk image IMG in as a USB stick. Repeatable.")
@click.option("--writable", is_flag=True, help="Let the guest write to the --disk images (read-only by default: "
              "the guest sees a write-protected stick).")
@click.option("--seconds", type=TIMEOUT, default=None,
              help="Unplug after this long (default: until Ctrl-C, SIGTERM, or the guest ejects every device).")
@click.option("--attach-timeout", type=TIMEOUT, default=120, show_default=True,
              help="Seconds the guest has to take each device (set a configuration) before this fails (exit 9).")
@server_options
@json_option
@pass_app
def share(app: App, name: str, cds: tuple[str, ...], disks: tuple[str, ...], writable: bool,
          seconds: float | None, attach_timeout: float, **opts) -> None:
    """Plug emulated USB devices into guest GUEST over its usbredir channels, until Ctrl-C.

    Each --cd or --disk takes one of the guest's usbredir channels (spicectl vm create --usb-redir N)
    and is answered by spicectl itself: no host USB device is involved. The guest's USB filter
    (--usb-filter) is law: a device it blocks is not plugged in (exit 5). A write the guest was
    told is done is in IMG, even if spicectl is killed; IMG is synced when the guest flushes its
    cache and when the device is unplugged. A device the guest ejects (eject in the guest) is
    unplugged; when every device is gone the command ends.

    With --json, one line when the guest has taken each device ("attached") and one when it is
    let go ("released", with the reason).

    \b
      spicectl usb share web --cd debian.iso
      spicectl usb share web --disk stick.img --writable --seconds 600 --json
    """
    from spicectl.errors import AuthError, InvalidInput
    from spicectl.spice.usb_storage import open_device

    if not cds and not disks:
        raise InvalidInput("nothing to plug in: give --cd ISO or --disk IMG")
    if writable and not disks:
        raise InvalidInput("--writable applies to --disk images")
    plugged = [("cd", p) for p in cds] + [("disk", p) for p in disks]
    out = app.session_output()
    rejected: list[str] = []

    def describe(index: int) -> dict:
        kind, path = plugged[index]
        from pathlib import Path

        return {"name": name, "device": kind, "file": str(Path(path).resolve()),
                "writable": kind == "disk" and writable}

    def on_event(index: int, event) -> None:
        kind, path = plugged[index]
        if event.kind == "attached":
            out.announce({"event": "attached", **describe(index)}, f"{name} took the USB {kind} {path}")
        elif event.kind == "released":
            out.announce({"event": "released", **describe(index), "reason": event.detail},
                         f"USB {kind} {path} unplugged ({event.detail})")
        elif event.kind == "rejected":
            rejected.append(f"USB {kind} {path}: {event.detail}")

    async def work(client):
        from spicectl.cli.screen import stopped_by_signals
        from spicectl.spice.usbredir_link import share_devices

        return await share_devices(client, devices, seconds=seconds, stop=stopped_by_signals(),
                                   attach_timeout=attach_timeout, on_event=on_event)

    devices = []   # opened first: a wrong file is said before connecting
    try:
        for number, (kind, path) in enumerate(plugged, 1):
            devices.append(open_device(kind, path, writable=writable, number=number))
        run_client(app, name, opts, work, timeout=None, display=False, inputs=False)
    finally:
        for d in devices:
            d.unit.medium.close()
    if rejected:
        raise AuthError(rejected[0], hint="the guest's filter is set by vm create --usb-filter")
