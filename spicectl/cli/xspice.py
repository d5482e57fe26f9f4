"""`spicectl xspice`: X displays served over SPICE with no VM (Xorg with the spiceqxl driver).

A running display is a guest to every other command: `spicectl screenshot :1`, `type :1 ...`,
`view :1`, `connect :1`.
"""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import Integer


def _display(text: str) -> int:
    from spicectl.xspice.config import parse_display

    return parse_display(text)


@click.group()
def xspice() -> None:
    """X displays served over SPICE, no VM: start, list, stop, connect.

    \b
      spicectl xspice start :1 --run xterm        # TLS on a free port, a fresh password
      spicectl screenshot :1 -o shot.png          # any guest command takes :N
      spicectl xspice connect :1                  # remote-viewer on it
      spicectl xspice stop :1
    """


@xspice.command()
@click.argument("display")
@click.option("--listen", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address the SPICE server listens on. Anything but loopback needs --cert-dir.")
@click.option("--tls-port", type=Integer(), metavar="N", help="TLS port (default: the first free one from 5950).")
@click.option("--port", "plain_port", type=Integer(), metavar="N",
              help="Also serve unencrypted SPICE on port N (guest commands use it with --plain-port).")
@click.option("--cert-dir", metavar="DIR", help="The server's ca-cert.pem, server-cert.pem and server-key.pem "
              "(QEMU's names; `spicectl cert issue server` writes them). Default: spicectl's certificate for "
              "127.0.0.1, issued by spicectl's CA.")
@click.option("--password-file", metavar="PATH", help="The SPICE password, from PATH ('-' for stdin). Default: a "
              "random one, kept 0600 in the state dir for spicectl's own commands.")
@click.option("--insecure", is_flag=True, help="No password at all, and no TLS; only on a loopback address.")
@click.option("--run", "run", multiple=True, metavar="COMMAND",
              help="A program for the display, run with sh -c and DISPLAY set once the server is up "
                   "(repeatable: --run xterm --run 'xeyes -geometry 200x200').")
@click.option("--agent/--no-agent", default=None, help="Run spice-vdagent for the display (clipboard, resize). "
              "Default: when spice-vdagent is installed.")
@click.option("--audio/--no-audio", default=True, show_default=True,
              help="A playback folder: PCM (s16le, stereo, the server's rate) written into a FIFO there is "
                   "played to clients (PulseAudio: module-pipe-sink file=DIR/NAME).")
@click.option("--image-compression", type=click.Choice(["auto_glz", "auto_lz", "quic", "glz", "lz", "lz4", "off"]),
              default="auto_glz", show_default=True, help="How the server compresses images.")
@click.option("--streaming-video", type=click.Choice(["off", "all", "filter"]), default="filter", show_default=True,
              help="Which screen regions the server sends as a video stream.")
@click.option("--timeout", type=float, default=30, show_default=True, help="Seconds the X server may take to start.")
@json_option
@pass_app
def start(app: App, display: str, listen: str, tls_port: int | None, plain_port: int | None, cert_dir: str | None,
          password_file: str | None, insecure: bool, run: tuple[str, ...], agent: bool | None, audio: bool,
          image_compression: str, streaming_video: str, timeout: float) -> None:
    """Start Xorg with the spiceqxl driver on DISPLAY (:N), serving it over SPICE.

    It listens on loopback with TLS by default (spicectl's CA issued the certificate) and asks for a
    password; the X server's log, the session's output and the password (0600) are in
    STATE_DIR/xspice/N. The display stays up until `spicectl xspice stop`.
    """
    from pathlib import Path

    from spicectl.errors import InvalidInput
    from spicectl.secrets import read_secret
    from spicectl.xspice import displays as D
    from spicectl.xspice.config import XspiceSpec

    number = _display(display)
    loopback = listen in D.LOOPBACKS
    if insecure:
        if not loopback:
            raise InvalidInput(f"--insecure serves SPICE with no password and no TLS: only on loopback, not {listen}",
                               hint="drop --insecure (TLS and a password are the default)")
        if password_file or cert_dir or tls_port:
            raise click.UsageError("--insecure goes without --password-file, --cert-dir and --tls-port")
    if not loopback and cert_dir is None:
        raise InvalidInput(f"listening on {listen} needs a certificate for that name: --cert-dir DIR",
                           hint=f"spicectl cert issue server --host {listen} --out DIR")
    state = app.settings.state_dir
    x509_dir = None
    if not insecure:
        if cert_dir is not None:
            x509_dir = Path(cert_dir).resolve()
            for name in ("ca-cert.pem", "server-cert.pem", "server-key.pem"):
                if not (x509_dir / name).is_file():
                    raise InvalidInput(f"{x509_dir} has no {name}", hint="it needs QEMU's three file names")
        else:
            from spicectl.virt.host import ensure_server_cert

            _, _, x509_dir = ensure_server_cert(state, pki_dir=app.settings.pki_dir)
        tls_port = tls_port or D.free_port(listen, avoid=(plain_port,) if plain_port else ())
    password = None
    if not insecure:
        password = read_secret(file=password_file, what="SPICE password") if password_file else D.new_password()
        if not password:
            raise InvalidInput("the password is empty")
    if insecure and plain_port is None:
        plain_port = D.free_port(listen)
    if agent is None:
        agent = D.agent_available()
    here = D.folder(state, number)
    spec = XspiceSpec(number, listen=listen, tls_port=tls_port, port=plain_port, x509_dir=x509_dir,
                      ticketing=not insecure, image_compression=image_compression, streaming_video=streaming_video,
                      playback_dir=here / "audio" if audio else None,
                      agent_virtio=here / "agent.virtio" if agent else None,
                      agent_uinput=here / "agent.uinput" if agent else None)
    with app.progress() as progress:
        record = D.start(state, spec, password=password, run=list(run), agent=agent, timeout=timeout,
                         progress=progress)
    app.emit(_describe(state, record), lambda: _print_started(record))


def _describe(state, record) -> dict:
    from spicectl.xspice import displays as D

    here = D.folder(state, record.display)
    return {"display": f":{record.display}", "running": D.alive(record.xorg), "listen": record.listen,
            "tls_port": record.tls_port, "port": record.port, "password": not record.insecure,
            "agent": record.agent, "audio_dir": str(here / "audio") if record.audio else None,
            "log": str(here / D.XLOG),
            "processes": [{"pid": p.pid, "what": p.what, "running": D.alive(p)} for p in record.procs]}


def _print_started(record) -> None:
    where = (f"tls-port {record.tls_port}" if record.tls_port else "") + \
            (f"{', ' if record.tls_port else ''}plain port {record.port}" if record.port else "")
    click.echo(f":{record.display}: Xspice running, SPICE on {record.listen}: {where}"
               + ("" if not record.insecure else " (no password: --insecure)"))
    click.echo(f"  use it: spicectl screenshot :{record.display} -o shot.png, spicectl xspice connect "
               f":{record.display}")


@xspice.command("list")
@json_option
@pass_app
def list_cmd(app: App) -> None:
    """The displays spicectl started, running or not."""
    from spicectl.xspice import displays as D

    state = app.settings.state_dir
    records = D.running(state)
    rows = [_describe(state, r) for r in records]

    def human() -> None:
        if not rows:
            click.echo("no Xspice displays")
            return
        click.echo(f"{'DISPLAY':<8} {'STATE':<8} {'LISTEN':<16} {'TLS':>6} {'PLAIN':>6}  AGENT  PROGRAMS")
        for row in rows:
            programs = ", ".join(p["what"] for p in row["processes"]
                                 if p["what"] not in ("xorg", "agent", "agent daemon") and p["running"])
            click.echo(f"{row['display']:<8} {'running' if row['running'] else 'dead':<8} {row['listen']:<16} "
                       f"{row['tls_port'] or '-':>6} {row['port'] or '-':>6}  {'yes' if row['agent'] else 'no':<5}  "
                       f"{programs or '-'}")

    app.emit({"displays": rows}, human)


@xspice.command()
@click.argument("display")
@json_option
@pass_app
def stop(app: App, display: str) -> None:
    """Stop DISPLAY's programs and its X server (SIGTERM, then SIGKILL after 10 s); its logs stay."""
    from spicectl.xspice import displays as D

    record, killed = D.stop(app.settings.state_dir, _display(display))
    app.emit({"display": f":{record.display}", "stopped": True, "killed": killed},
             lambda: click.echo(f":{record.display}: stopped"
                                + (f" ({', '.join(killed)} had to be killed)" if killed else "")))


def _connect() -> click.Command:
    from spicectl.cli.connect import connect

    return connect


xspice.add_command(_connect(), "connect")
