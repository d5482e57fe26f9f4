"""Commands through the guest agent (spice-vdagent): `resize` and `clipboard`."""

from __future__ import annotations

import re

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT
from spicectl.cli.screen import CONNECT_ALLOWANCE, command_timeout, run_client, server_options

MAX_SIDE = 8192
MAX_MONITORS = 16  # what spice-vdagent takes in one configuration
MAX_CLIPBOARD_TEXT = 1 << 20


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT (e.g. 1280x800)")
    width, height = int(match.group(1)), int(match.group(2))
    if not (320 <= width <= MAX_SIDE and 200 <= height <= MAX_SIDE):
        raise click.BadParameter(f"{width}x{height} is out of range (320x200 to {MAX_SIDE}x{MAX_SIDE})")
    return width, height


@click.command()
@click.argument("name", metavar="GUEST")
@click.argument("sizes", metavar="WIDTHxHEIGHT...", nargs=-1, required=True)
@click.option("--timeout", type=TIMEOUT, default=60, show_default=True,
              help="Seconds to wait until the guest's screen has the new size.")
@server_options
@json_option
@pass_app
def resize(app: App, name: str, sizes: tuple[str, ...], timeout: float, **opts) -> None:
    """Change guest GUEST's screen to WIDTHxHEIGHT through its agent, as a viewer window's resize does.

    Several sizes ask for that many monitors, side by side from the left (the guest's video device
    needs as many heads: vm create --heads N). Returns once the guest's display shows them (exit 9
    if it does not within --timeout). `spicectl screenshot --monitor N` takes one of them.
    """
    wanted = [_size(size) for size in sizes]
    if len(wanted) > MAX_MONITORS:
        raise click.BadParameter(f"{len(wanted)} monitors is more than a guest takes ({MAX_MONITORS})",
                                 param_hint="WIDTHxHEIGHT...")

    async def work(client):
        return await client.screen.set_monitors(wanted, timeout=timeout)

    monitors = run_client(app, name, opts, work, timeout=timeout + CONNECT_ALLOWANCE, inputs=False)
    width, height = sum(w for w, _h in wanted), max(h for _w, h in wanted)
    placed = ", ".join(f"{m.width}x{m.height}+{m.x}+{m.y}" for m in monitors)
    app.emit({"name": name, "width": width, "height": height, "monitors": [m.as_dict() for m in monitors]},
             lambda: app.info(f"{name}: screen is now {width}x{height}"
                              + (f" (monitors {placed})" if len(monitors) > 1 else "")))


@click.group()
def clipboard() -> None:
    """Read or set a guest's clipboard through its agent (UTF-8 text)."""


@clipboard.command("get")
@click.argument("name", metavar="GUEST")
@click.option("--timeout", type=TIMEOUT, default=30, show_default=True,
              help="Seconds to wait for text on the guest's clipboard.")
@server_options
@json_option
@pass_app
def clipboard_get(app: App, name: str, timeout: float, **opts) -> None:
    """Print guest GUEST's clipboard text.

    The guest's agent hands over a clipboard it has offered to a client: if it holds none (the text was
    copied before this command connected), the command waits for the next text copied in the guest.
    """
    def waiting() -> None:
        app.info(f"{name}: the agent holds no clipboard text; waiting up to {timeout:g}s for text copied in the guest")

    async def work(client):
        return await client.agent.clipboard_get(timeout=timeout, on_waiting=waiting)

    text = run_client(app, name, opts, work, timeout=timeout + CONNECT_ALLOWANCE, display=False, inputs=False)
    app.emit({"name": name, "text": text}, lambda: click.echo(text, nl=not text.endswith("\n")))


@clipboard.command("set")
@click.argument("name", metavar="GUEST")
@click.argument("text")
@click.option("--timeout", type=TIMEOUT, default=60, show_default=True,
              help="Seconds to wait for something in the guest to paste it.")
@server_options
@json_option
@pass_app
def clipboard_set(app: App, name: str, text: str, timeout: float, **opts) -> None:
    """Offer TEXT as guest GUEST's clipboard, until something in the guest pastes it.

    SPICE's clipboard is on demand: the guest's agent takes the clipboard and asks for the text when an
    application pastes; the command returns then (exit 9 if nothing pasted within --timeout).
    """
    from spicectl.errors import InvalidInput

    if len(text.encode()) > MAX_CLIPBOARD_TEXT:
        raise InvalidInput(f"the text is over the {MAX_CLIPBOARD_TEXT}-byte limit")

    def offered() -> None:
        app.info(f"{name}: the clipboard is offered; waiting up to {timeout:g}s for a paste in the guest")

    async def work(client):
        await client.agent.clipboard_set(text, timeout=timeout, on_offered=offered)

    run_client(app, name, opts, work, timeout=timeout + CONNECT_ALLOWANCE, display=False, inputs=False)
    app.emit({"name": name, "pasted": True}, lambda: app.info(f"{name}: the guest pasted the clipboard"))


@click.command("agent")
@click.argument("name", metavar="GUEST")
@command_timeout(30)
@server_options
@json_option
@pass_app
def agent_status(app: App, name: str, timeout: float, **opts) -> None:
    """Whether guest GUEST's agent (spice-vdagent) is connected, and what it can do."""
    from spicectl.spice import agent as A

    async def work(client):
        if not client.agent.connected:
            return None
        return await client.agent.start(timeout=timeout)

    caps = run_client(app, name, opts, work, timeout=timeout, display=False, inputs=False)
    names = [A.CAP_NAMES.get(c, str(c)) for c in sorted(caps)] if caps is not None else []
    data = {"name": name, "connected": caps is not None, "capabilities": names}
    app.emit(data, lambda: click.echo(f"{name}: agent " + (f"connected ({', '.join(names)})" if caps is not None
                                                           else "not connected")))


@click.command("copy-to")
@click.argument("name", metavar="GUEST")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option("--timeout", type=TIMEOUT, default=60, show_default=True,
              help="Seconds to wait for the guest to accept, and then to save, each file.")
@server_options
@json_option
@pass_app
def copy_to(app: App, name: str, files: tuple[str, ...], timeout: float, **opts) -> None:
    """Copy FILEs into guest GUEST through its agent, as dropping them on a viewer window does.

    The guest's agent (spice-vdagent) saves them in its session's save folder: the desktop or the
    downloads folder, or the folder its `-f` option names; a name that exists there gets " (1)".
    Returns once the agent has saved every file (exit 7 with its reason if it refuses one).
    """
    from pathlib import Path

    from spicectl.files import open_regular

    for file in files:  # a bad path is an error before any guest is asked
        open_regular(Path(file), "file").close()
    with app.progress() as progress:
        def step(file: str, sent: int, size: int) -> None:
            progress(f"{name}: {file} {sent * 100 // max(size, 1)}% ({sent >> 10} of {size >> 10} KiB)")

        async def work(client):
            return await client.agent.copy_to([Path(f) for f in files], timeout=timeout, on_progress=step)

        # no one deadline: the files flow at the agent's pace, and every wait for the guest is bounded
        copied = run_client(app, name, opts, work, timeout=None, display=False, inputs=False)

    def human() -> None:
        for c in copied:
            app.info(f"{name}: copied {c['file']} ({c['size']} bytes)")

    app.emit({"name": name, "files": copied}, human)
