"""`spicectl usb`: the guest's USB redirection channels, seen through spicectl's SPICE client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT
from spicectl.cli.screen import CONNECT_ALLOWANCE, run_client, server_options

if TYPE_CHECKING:
    from spicectl.session.usb_plugs import ShareRecord

FILTER_HINT = "the guest's filter is set by vm create --usb-filter"


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
    """What is plugged into guest GUEST's usbredir channels, and what each channel's usb-redir says in hello.

    While a `spicectl usb share` of GUEST runs, its devices are listed from what it records, without
    connecting (a SPICE server serves one client: connecting would cut the share off). Otherwise each
    usbredir channel is linked and the usbredir conversation stops after the hello: nothing is plugged.
    """
    from spicectl.session.usb_plugs import running_share

    share = running_share(app.settings.state_dir, name)
    if share is not None:
        pid, plugs = share
        rows = [{"channel": p.channel, "plugged": {"device": p.device, "file": p.file, "writable": p.writable,
                                                   "state": p.state}} for p in sorted(plugs, key=lambda p: p.channel)]

        def shared() -> None:
            for p in sorted(plugs, key=lambda p: p.channel):
                where = f"usbredir {p.channel}" if p.channel >= 0 else "usbredir (not yet linked)"
                click.echo(f"{where}: USB {p.device} {p.file} ({p.state}{', writable' if p.writable else ''})")
            click.echo(f"(usb share, pid {pid})")

        app.emit({"name": name, "shared_by": pid, "channels": rows}, shared)
        return

    async def work(client):
        from spicectl.spice.usbredir_link import usbredir_hellos

        return await usbredir_hellos(client, timeout=timeout)

    hellos = run_client(app, name, opts, work, timeout=timeout + CONNECT_ALLOWANCE, display=False, inputs=False)
    rows = [{"channel": cid, "peer_version": h.version, "peer_caps": h.cap_names, "plugged": None}
            for cid, h in sorted(hellos.items())]

    def human() -> None:
        if not hellos:
            click.echo(f"{name} has no usbredir channels")
        for cid, h in sorted(hellos.items()):
            click.echo(f"usbredir {cid}: nothing plugged; {h.version} ({', '.join(h.cap_names) or 'no caps'})")

    app.emit({"name": name, "shared_by": None, "channels": rows}, human)


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
    from spicectl.errors import AuthError

    async def work(client):
        from spicectl.cli.screen import stopped_by_signals
        from spicectl.spice.usbredir_link import share_devices

        return await share_devices(client, plugs.devices, seconds=seconds, stop=stopped_by_signals(),
                                   attach_timeout=attach_timeout, on_event=plugs.on_event)

    with UsbPlugs(app, name, cds, disks, writable, flags=("--cd", "--disk", "--writable"), required=True) as plugs:
        run_client(app, name, opts, work, timeout=None, display=False, inputs=False)
    if plugs.rejected:
        raise AuthError(plugs.rejected[0], hint=FILTER_HINT)


def usb_plug_options(func):
    """--usb-cd, --usb-disk and --usb-writable: emulated USB devices plugged in while a session lasts."""
    func = click.option("--usb-writable", is_flag=True, help="Let the guest write to the --usb-disk images.")(func)
    func = click.option("--usb-disk", "usb_disks", metavar="IMG", multiple=True, type=click.Path(dir_okay=False),
                        help="Plug IMG in as a USB stick meanwhile, as `spicectl usb share --disk` does. "
                             "Repeatable.")(func)
    return click.option("--usb-cd", "usb_cds", metavar="ISO", multiple=True, type=click.Path(dir_okay=False),
                        help="Plug ISO in as a USB CD-ROM drive meanwhile, as `spicectl usb share --cd` does. "
                             "Repeatable.")(func)


class PlugEvents:
    """What a session's USB devices go through, said to the user (a line each, or JSON) and recorded
    for `usb status` (a SPICE server serves one client: status must not link the channels meanwhile)."""

    def __init__(self, app: App, name: str, labels: list[str], described: list[dict], plugs: list,
                 *, required: bool) -> None:
        self.app, self.name, self.required = app, name, required
        self.labels, self.described, self.plugs = labels, described, plugs   # one each per device
        self.out = app.session_output()
        self.rejected: list[str] = []
        self.record: ShareRecord | None = None

    def on_event(self, index: int, channel: int, event) -> None:
        from spicectl.session.usb_plugs import ShareRecord

        if self.record is None:
            self.record = ShareRecord(self.app.settings.state_dir, self.name, self.plugs)
        label, described, plug = self.labels[index], self.described[index], self.plugs[index]
        plug.channel = channel
        if event.kind == "attached":
            self.out.announce({"event": "attached", "channel": channel, "name": self.name, **described},
                              f"{self.name} took the {label} (usbredir channel {channel})")
        elif event.kind == "released":
            self.out.announce({"event": "released", "channel": channel, "name": self.name, **described,
                               "reason": event.detail}, f"{label} unplugged ({event.detail})")
        elif event.kind == "rejected":
            self.rejected.append(f"{label}: {event.detail}")
            if not self.required:   # (a command that needs its devices fails with this instead)
                self.app.warn(f"{self.name}: {label} not plugged in: {event.detail}")
        plug.state = {"connected": "plugging"}.get(event.kind, event.kind)
        self.record.write()

    def close(self) -> None:
        if self.record is not None:
            self.record.remove()


class UsbPlugs:
    """A session's emulated USB devices: opened from their files before connecting (a wrong file is said
    first), their events said and recorded (`PlugEvents`), closed (synced) at the end."""

    def __init__(self, app: App, name: str, cds: tuple[str, ...], disks: tuple[str, ...], writable: bool, *,
                 flags: tuple[str, str, str] = ("--usb-cd", "--usb-disk", "--usb-writable"),
                 required: bool = False) -> None:
        from pathlib import Path

        from spicectl.errors import InvalidInput
        from spicectl.session.usb_plugs import Plug
        from spicectl.spice.usb_storage import open_device

        cd_flag, disk_flag, writable_flag = flags
        if required and not cds and not disks:
            raise InvalidInput(f"nothing to plug in: give {cd_flag} ISO or {disk_flag} IMG")
        if writable and not disks:
            raise InvalidInput(f"{writable_flag} applies to {disk_flag} images")
        plugged = [("cd", Path(p)) for p in cds] + [("disk", Path(p)) for p in disks]
        plugs = [Plug(-1, kind, str(path.resolve()), kind == "disk" and writable, "plugging")
                 for kind, path in plugged]
        self.events = PlugEvents(app, name, [f"USB {kind} {path}" for kind, path in plugged],
                                 [{"device": p.device, "file": p.file, "writable": p.writable} for p in plugs],
                                 plugs, required=required)
        self.on_event = self.events.on_event
        self.devices: list = []
        try:
            for number, (kind, path) in enumerate(plugged, 1):
                self.devices.append(open_device(kind, str(path), writable=writable, number=number))
        except BaseException:
            self.close()
            raise

    @property
    def rejected(self) -> list[str]:
        return self.events.rejected

    def __enter__(self) -> UsbPlugs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for device in self.devices:
            device.close()
        self.events.close()


def _guest_filter(app: App, name: str):
    """The guest's usbredir filter, from its definition (libvirt's <redirfilter>), as usbredir's rules."""
    from spicectl.domain.xml import from_xml
    from spicectl.spice.usbredir import FilterRule
    from spicectl.virt import lifecycle

    with app.hypervisor() as hv:
        spec = from_xml(lifecycle.lookup(hv, name).XMLDesc(0))

    def any_(value: int | None) -> int:
        return -1 if value is None else value

    return [FilterRule(any_(r.usb_class), any_(r.vendor), any_(r.product), any_(r.version_bcd), r.allow)
            for r in spec.usb_filter]


def _verdict(rules, info) -> str | None:
    """None if the guest's filter lets `info` through, else why not."""
    from spicectl.spice.usbredir import filter_verdict
    from spicectl.spice.usbredir_host import refusal

    if not rules:
        return None
    blocked = filter_verdict(rules, device_class=info.device_class, interfaces=list(info.interfaces),
                             vendor_id=info.vendor_id, product_id=info.product_id, version_bcd=info.version_bcd)
    return None if blocked is None else refusal(rules, blocked)


@usb.command("list")
@click.argument("name", metavar="GUEST", required=False)
@json_option
@pass_app
def list_cmd(app: App, name: str | None) -> None:
    """This host's USB devices (hubs left out), as libusb sees them; with GUEST, whether its filter allows each.

    \b
      spicectl usb list
      spicectl usb list web --json
    """
    from spicectl.session.usb_libusb import Libusb

    backend = Libusb()
    try:
        devices = backend.devices()
    finally:
        backend.close()
    rules = _guest_filter(app, name) if name else None
    rows = []
    for d in devices:
        row = {"bus": d.bus, "address": d.address, "id": d.name, "class": d.device_class,
               "interfaces": [list(i) for i in d.interfaces], "manufacturer": d.manufacturer, "product": d.product}
        if name:
            why = _verdict(rules, d)
            row.update({"allowed": why is None, "refused_because": why})
        rows.append(row)

    def human() -> None:
        if not rows:
            click.echo("no USB devices on this host (libusb sees none)")
        for r in rows:
            verdict = "" if not name else ("  allowed" if r["allowed"] else f"  refused: {r['refused_because']}")
            click.echo(f"{r['bus']}-{r['address']}  {r['id']}  {r['manufacturer']} {r['product']}".rstrip() + verdict)

    app.emit({"devices": rows, "guest": name}, human)


@usb.command("attach")
@click.argument("name", metavar="GUEST")
@click.option("--device", "selector", required=True, metavar="VID:PID|BUS-ADDR",
              help="The host device: its IDs in hex (as lsusb shows them) or where it is (bus-address, e.g. 1-4).")
@click.option("--seconds", type=TIMEOUT, default=None, help="Give it back after this long (default: until Ctrl-C "
              "or SIGTERM).")
@click.option("--attach-timeout", type=TIMEOUT, default=120, show_default=True,
              help="Seconds the guest has to take the device (set a configuration) before this fails (exit 9).")
@server_options
@json_option
@pass_app
def attach(app: App, name: str, selector: str, seconds: float | None, attach_timeout: float, **opts) -> None:
    """Redirect a USB device of this host to guest GUEST over one of its usbredir channels, until Ctrl-C.

    The device's interfaces are taken from this host's drivers (libusb detaches them) and given back
    when it is released. The guest's USB filter is law: a device it blocks is not redirected (exit 5).
    Isochronous endpoints (webcams, sound) are not carried. Needs access to the device node (root,
    or a udev rule) and python-libusb1 over libusb-1.0.

    \b
      spicectl usb attach web --device 0781:5581
      spicectl usb attach web --device 1-4 --seconds 600 --json
    """
    from spicectl.errors import AuthError
    from spicectl.session.usb_host import HostDevice, choose
    from spicectl.session.usb_libusb import Libusb
    from spicectl.session.usb_plugs import Plug

    backend = Libusb()
    try:
        info = choose(backend.devices(), selector)
        why = _verdict(_guest_filter(app, name), info) if not name.startswith("spice://") else None
        if why:
            raise AuthError(f"USB device {info.name}: {why}", hint=FILTER_HINT)
        io = backend.open(info)
        try:
            device = HostDevice(io, info)
            io.claim(device.numbers)
        except BaseException:
            io.close()
            raise
        # (recorded as "host" and where it is, for usb status; a line when the guest takes it and lets go)
        where = f"{info.bus}-{info.address}"
        described = {"device": info.name, "bus": info.bus, "address": info.address, "product": info.product}
        events = PlugEvents(app, name, [f"USB device {where} {info.name} {info.product}".rstrip()], [described],
                            [Plug(-1, "host", f"{where} {info.name}", False, "plugging")], required=True)

        async def work(client):
            from spicectl.cli.screen import stopped_by_signals
            from spicectl.spice.usbredir_link import share_devices

            return await share_devices(client, [device], seconds=seconds, stop=stopped_by_signals(),
                                       attach_timeout=attach_timeout, on_event=events.on_event)

        try:
            run_client(app, name, opts, work, timeout=None, display=False, inputs=False)
        finally:
            device.close()
            events.close()
        if events.rejected:
            raise AuthError(events.rejected[0], hint=FILTER_HINT)
    finally:
        backend.close()
