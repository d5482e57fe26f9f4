"""`spicectl console`: a guest's serial console, interactive or scripted."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT

ESCAPE = b"\x1d"  # Ctrl-], as virsh console


@click.command()
@click.argument("name")
@click.option("--send", "send", metavar="TEXT", help="Type TEXT on the console (\\n is Enter), then read.")
@click.option("--expect", metavar="REGEX", help="Read until REGEX matches what the console printed (exit 9 if it "
              "does not within --timeout).")
@click.option("--timeout", type=TIMEOUT, default=30, show_default=True,
              help="Seconds --expect may wait.")
@click.option("--retry-every", type=TIMEOUT, metavar="SECONDS",
              help="Send TEXT again every SECONDS until REGEX matches (a console opened during boot has no shell yet).")
@json_option
@pass_app
def console(
    app: App, name: str, send: str | None, expect: str | None, timeout: float, retry_every: float | None
) -> None:
    """Open guest NAME's serial console through libvirt (as `virsh console` does).

    On a terminal without --send/--expect it is interactive: Ctrl-] leaves.
    Scripted, it prints what the console showed: for example

    \b
      spicectl console web --send 'spicectl-report\\n' --expect 'done=1'

    Guests made from spicectl's images log root in on the console.
    """
    import re
    import sys

    from spicectl.errors import InvalidInput
    from spicectl.virt import lifecycle
    from spicectl.virt.connection import start_event_loop

    if expect is not None:
        try:
            re.compile(expect)
        except re.error as exc:
            raise InvalidInput(f"--expect {expect!r} is not a regular expression: {exc}") from None
    if retry_every and not (send and expect):
        raise click.UsageError("--retry-every needs --send and --expect")
    scripted = send is not None or expect is not None
    if not scripted and not sys.stdin.isatty():
        raise click.UsageError("the interactive console needs a terminal; script it with --send and --expect")
    start_event_loop()  # console streams are driven by libvirt's event loop
    from spicectl.virt.console import Console

    with app.hypervisor() as hv:
        dom = lifecycle.lookup(hv, name)
        with Console(hv, dom) as con:
            if not scripted:
                _interactive(app, con)
                return
            def echo(data: bytes) -> None:
                if not app.json:
                    sys.stdout.buffer.write(data)
                    sys.stdout.buffer.flush()

            text = (send or "").replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r").encode()
            try:
                result = con.expect(expect, send=text, timeout=timeout, retry_every=retry_every,
                                    on_output=echo)
            except Exception as exc:
                if app.json and hasattr(exc, "output"):
                    app.emit({"name": name, "matched": False, "output": exc.output})
                raise
    if not app.json and result.output and not result.output.endswith("\n"):
        click.echo()
    app.emit({"name": name, "matched": result.match is not None if expect else None, "match": result.match,
              "seconds": round(result.seconds, 2), "output": result.output}, lambda: None)


def _interactive(app: App, con) -> None:
    import os
    import select
    import sys
    import termios
    import tty

    app.info(f"connected to {con.name}'s console; Ctrl-] leaves")
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        while True:
            data = con.read()
            if data:
                os.write(sys.stdout.fileno(), data)
            ready, _, _ = select.select([fd], [], [], 0.02)
            if ready:
                keys = os.read(fd, 1024)
                if ESCAPE in keys:
                    con.send(keys.split(ESCAPE, 1)[0])
                    break
                con.send(keys)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    click.echo()
