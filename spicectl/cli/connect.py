"""`spicectl connect`: one safe session to one guest (remote-viewer, a .vv file, a proxy, or the builtin client)."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import CA_FILE_HELP, Integer
from spicectl.cli.screen import sasl_credentials, sasl_options
from spicectl.cli.usb import UsbPlugs, usb_plug_options


@click.command()
@click.argument("name")
@click.option("--viewer", "mode", flag_value="viewer", help="Start remote-viewer on a 0600 .vv file (default when "
              "remote-viewer and a display are available).")
@click.option("--vv", "vv_path", metavar="FILE", help="Write the .vv file to FILE ('-' for stdout) for use elsewhere.")
@click.option("--builtin", "mode", flag_value="builtin", help="Use spicectl's own client for this session.")
@click.option("--proxy", type=click.Choice(["ws", "http-connect"]),
              help="Run a per-session proxy: ws (browsers, spice-html5) or http-connect (remote-viewer's proxy=).")
@click.option("--proxy-url", metavar="URL", help="Mint a one-time token for a running `spicectl proxy serve` at URL "
              "instead of starting a proxy here.")
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="ADDR:PORT",
              help="Where the per-session proxy listens (port 0: any free port).")
@click.option("--ttl", type=Integer(), default=30, show_default=True, help="Seconds the SPICE ticket stays valid "
              "(through a proxy: at least as long as the token, 30 s more by default).")
@click.option(
    "--token-ttl", type=Integer(), default=60, show_default=True, help="Seconds the proxy token may start a session."
)
@click.option("--screenshot", metavar="PNG", help="With --builtin: save a screenshot taken through the session.")
@click.option("--view", is_flag=True, help="With --builtin: show the session in spicectl's viewer window "
              "(as `spicectl view`).")
@click.option("--ca-file", metavar="PEM", help=CA_FILE_HELP)
@click.option("--html5-dir", metavar="DIR", help="spice-html5 files to serve (default: /usr/share/spice-html5).")
@usb_plug_options
@sasl_options
@json_option
@pass_app
def connect(app: App, name: str, mode: str | None, vv_path: str | None, proxy: str | None, proxy_url: str | None,
            listen: str, ttl: int, token_ttl: int, screenshot: str | None, view: bool, ca_file: str | None,
            html5_dir: str | None, usb_cds: tuple[str, ...], usb_disks: tuple[str, ...], usb_writable: bool,
            **sasl) -> None:
    """Open a session to guest NAME with a fresh one-time ticket (default TTL 30 s).

    \b
    spicectl connect web                         # remote-viewer on a .vv file that deletes itself
    spicectl connect web --vv web.vv             # a .vv file for another machine (mode 0600)
    spicectl connect web --proxy ws              # prints a one-time URL for a browser (spice-html5)
    spicectl connect web --proxy http-connect --vv web.vv   # remote-viewer through an HTTP CONNECT proxy
    spicectl connect web --proxy-url http://gw:3128 --proxy http-connect --vv web.vv  # via `proxy serve`
    spicectl connect web --builtin --screenshot web.png [--proxy ws]
    spicectl connect web --builtin --view --proxy http-connect   # spicectl's window, through a proxy
    spicectl connect web --builtin --view --proxy ws --usb-cd debian.iso   # and a USB CD meanwhile
    spicectl connect web --sasl-user alice [--password-file pw]   # a SASL login (remote-viewer asks without one)
    """
    import os
    import shutil

    from spicectl.errors import InvalidInput
    from spicectl.pki.ca import CA_CERT
    from spicectl.session.handoff import parse_listen
    from spicectl.session.server import from_access

    if (screenshot or view) and mode != "builtin":
        raise click.UsageError("--screenshot and --view go with --builtin")
    if screenshot and view:
        raise click.UsageError("--screenshot or --view, not both")
    if (usb_cds or usb_disks) and not view:
        raise click.UsageError("--usb-cd and --usb-disk go with --builtin --view")
    if mode is None and not vv_path and not proxy:
        has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        if shutil.which("remote-viewer") and has_display:
            mode = "viewer"
        else:
            raise InvalidInput("no remote-viewer with a display here",
                               hint="use --vv FILE, --proxy ws, or --builtin --screenshot FILE")
    if mode is None and proxy == "http-connect" and not vv_path:
        raise InvalidInput("--proxy http-connect needs --viewer or --vv FILE to hand remote-viewer its proxy")
    if proxy_url and not proxy:
        raise click.UsageError("--proxy-url needs --proxy ws or --proxy http-connect")
    listen_addr = parse_listen(listen)
    from spicectl.session.runner import ticket_ttl

    explicit = click.get_current_context().get_parameter_source("ttl") == click.core.ParameterSource.COMMANDLINE
    ttl = ticket_ttl(ttl, token_ttl if proxy else None, explicit=explicit)

    s = app.settings
    access = app.guest_access(name, ttl=ttl)
    server = from_access(access, ca_file=ca_file, own_ca=str(s.ca_dir / CA_CERT))
    sasl_user, sasl_password = sasl_credentials(sasl, required=mode == "builtin")
    if sasl_user is not None:
        server.sasl_user, server.password = sasl_user, sasl_password or b""

    from spicectl.session import runner

    with UsbPlugs(app, name, usb_cds, usb_disks, usb_writable) as plugs:
        request = runner.SessionRequest(mode=mode, vv_path=vv_path, proxy=proxy, proxy_url=proxy_url,
                                        listen=listen_addr, token_ttl=token_ttl, screenshot=screenshot, view=view,
                                        html5_dir=html5_dir, usbredir=access.usbredir, usb_devices=plugs.devices,
                                        on_usb=plugs.on_event)
        if proxy:
            app.proxy_logging()
        result = runner.run(server, request, state_dir=s.state_dir, out=app.session_output())
    if result is not None:
        app.emit(result, lambda: None)

