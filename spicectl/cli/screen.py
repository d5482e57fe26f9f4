"""Screen and input commands through spicectl's own SPICE client: screenshot, send-keys, type, mouse, wait-screen."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import DELAY, TIMEOUT


def target_options(func):
    func = click.option("--insecure", is_flag=True, help="Use the plain SPICE port (the guest must allow it).")(func)
    func = click.option("--host-subject", metavar="SUBJECT", help="With --uri: the server certificate's subject, "
                        "as remote-viewer's host-subject (e.g. 'O=Org,CN=host').")(func)
    func = click.option("--ca-file", metavar="PEM", help="CA that signed the SPICE server's certificate "
                        "(default: spicectl's CA).")(func)
    func = click.option("--password-file", metavar="PATH", help="With --uri: read the SPICE password from PATH ('-' for stdin).")(func)
    func = click.option("--uri", metavar="SPICE_URI", help="spice://HOST[:PORT][?tls-port=N] for a guest spicectl does not manage (then NAME is just a label).")(func)
    return func


def _target(app: App, name: str, uri, password_file, ca_file, insecure, host_subject=None):
    from spicectl.pki.ca import CA_CERT
    from spicectl.session.target import from_access, from_uri
    from spicectl.virt.child import fetch_access

    if uri:
        from spicectl.secrets import read_secret

        password = read_secret(file=password_file, what="SPICE password") if password_file else None
        return from_uri(uri, password=password, ca_file=ca_file, host_subject=host_subject)
    s = app.settings
    access = fetch_access(s.connect, s.state_dir, s.pki_dir, name, plain=insecure)
    return from_access(access, ca_file=ca_file or str(s.ca_dir / CA_CERT))


def _import_client() -> None:
    import PIL.Image  # noqa: F401

    import spicectl.spice.client  # noqa: F401


def run_client(app: App, name: str, opts: dict, work, *, display: bool = True, inputs: bool = True,
               allow_partial: bool = False):
    """Connect to NAME, run `work(client)` (a coroutine function), return its result."""
    import asyncio
    import threading

    # The client's imports (numpy, Pillow, cryptography: ~100 ms) overlap with the libvirt work,
    # which mostly waits on a child process or on libvirt's socket.
    warm = threading.Thread(target=_import_client, daemon=True)
    warm.start()
    target = _target(app, name, opts["uri"], opts["password_file"], opts["ca_file"], opts["insecure"],
                     opts.get("host_subject"))
    warm.join()

    async def go():
        client = target.client(allow_partial=allow_partial)
        try:
            await client.connect(display=display, inputs=inputs)
            return await work(client)
        finally:
            await client.close()

    return asyncio.run(go())


def _save_png(image, output: str) -> None:
    import io
    import sys
    from pathlib import Path

    buf = io.BytesIO()
    image.save(buf, "PNG")
    if output == "-":
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
    else:
        from spicectl.pki.store import atomic_write

        atomic_write(Path(output), buf.getvalue(), 0o644)


@click.command()
@click.argument("name")
@click.option("-o", "--output", required=True, metavar="FILE", help="PNG file to write ('-' for stdout).")
@click.option("--settle", type=DELAY, default=0.0, show_default=True, help="Seconds without screen updates before the picture is taken.")
@click.option("--allow-partial", is_flag=True, help="Save the picture even if the server sent drawing this client "
              "cannot do yet (otherwise exit 7, naming what was missing).")
@target_options
@json_option
@pass_app
def screenshot(app: App, name: str, output: str, settle: float, allow_partial: bool, **opts) -> None:
    """Save a PNG of guest NAME's screen, taken through spicectl's SPICE client.

    A screen the client could not draw completely is an error (exit 7), never a plausible-looking picture.
    """

    if output != "-":
        from pathlib import Path

        from spicectl.pki.store import check_target

        check_target(Path(output))  # before connecting, not after the picture was taken

    async def work(client):
        return await client.screenshot(settle=settle)

    image = run_client(app, name, opts, work, inputs=False, allow_partial=allow_partial)
    _save_png(image, output)
    if output != "-":
        app.emit({"name": name, "output": output, "width": image.width, "height": image.height},
                 lambda: app.info(f"{name}: {image.width}x{image.height} screenshot saved to {output}"))


@click.command("send-keys")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True)
@click.option("--hold", type=DELAY, default=0.05, show_default=True, help="Seconds each combination is held.")
@target_options
@json_option
@pass_app
def send_keys(app: App, name: str, keys: tuple[str, ...], hold: float, **opts) -> None:
    """Press KEYS on guest NAME: names like esc, enter, f12, up, or combinations like ctrl-alt-delete."""
    from spicectl.spice.keys import parse_combo

    for combo in keys:
        parse_combo(combo)  # reject unknown keys before connecting

    async def work(client):
        await client.send_keys(*keys, hold=hold)

    run_client(app, name, opts, work, display=False)
    app.emit({"name": name, "keys": list(keys)}, lambda: None)


@click.command("type")
@click.argument("name")
@click.argument("text")
@click.option("--no-escapes", is_flag=True, help="Type backslashes literally instead of reading \\n and \\t as Enter and Tab.")
@target_options
@json_option
@pass_app
def type_cmd(app: App, name: str, text: str, no_escapes: bool, **opts) -> None:
    """Type TEXT on guest NAME (US keyboard layout); "\\n" presses Enter."""
    from spicectl.spice.keys import text_to_strokes

    if not no_escapes:
        text = text.replace("\\n", "\n").replace("\\t", "\t")
    text_to_strokes(text)

    async def work(client):
        await client.type_text(text)

    run_client(app, name, opts, work, display=False)
    app.emit({"name": name, "typed": len(text)}, lambda: None)


def _xy(value: str | None):
    if value is None:
        return None
    try:
        x, y = (int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("write it as X,Y") from None
    if x < 0 or y < 0:
        raise click.BadParameter("coordinates are not negative")
    return x, y


@click.command()
@click.argument("name")
@click.option("--move", metavar="X,Y", help="Move the pointer to X,Y.")
@click.option("--click", "button", type=click.Choice(["left", "middle", "right", "up", "down"]),
              help="Click a button (up/down: the wheel).")
@target_options
@json_option
@pass_app
def mouse(app: App, name: str, move: str | None, button: str | None, **opts) -> None:
    """Move the pointer and/or click on guest NAME."""
    pos = _xy(move)
    if pos is None and button is None:
        raise click.UsageError("give --move X,Y and/or --click BUTTON")

    async def work(client):
        if pos is not None:
            await client.mouse_move(*pos)
        if button:
            await client.click(button)
        return client.mouse_mode

    from spicectl.spice.messages import MOUSE_MODE_CLIENT

    mode = run_client(app, name, opts, work, display=False)
    app.emit({"name": name, "moved": list(pos) if pos else None, "clicked": button,
              "mouse_mode": "client" if mode == MOUSE_MODE_CLIENT else "server"}, lambda: None)


def _load_reference(path: str):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from spicectl.errors import InvalidInput

    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInput(f"cannot read reference image {path}: {exc}") from None


def _region(value: str | None):
    if value is None:
        return None
    try:
        x, y, w, h = (int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("write it as X,Y,W,H") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise click.BadParameter("the region needs a positive size")
    return x, y, w, h


@click.command("wait-screen")
@click.argument("name")
@click.option("--changed", is_flag=True, help="Wait until the screen differs from when the command started.")
@click.option("--match", "reference", metavar="PNG", help="Wait until the screen matches this reference image.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.99, show_default=True,
              help="Share of pixels that must be equal for --match (and differ for nothing else).")
@click.option("--region", metavar="X,Y,W,H", help="Compare only this rectangle.")
@click.option("--timeout", type=TIMEOUT, default=60, show_default=True, help="Seconds to wait.")
@click.option("--last-frame", metavar="PNG", help="Where to save the last frame on timeout "
              "(default STATE_DIR/last-frames/NAME.png, not the current directory).")
@click.option("--allow-partial", is_flag=True, help="Compare frames even if the server sent drawing this client "
              "cannot do yet (otherwise exit 7).")
@target_options
@json_option
@pass_app
def wait_screen(app: App, name: str, changed: bool, reference: str | None, threshold: float, region, timeout: float,
                last_frame: str | None, allow_partial: bool, **opts) -> None:
    """Wait until guest NAME's screen changes (--changed) or matches a reference (--match).

    Exits 0 when it happens and 9 on timeout, saving the last frame for the log.
    """
    import time

    import numpy as np

    from spicectl.errors import TimeoutExpired

    if changed == bool(reference):
        raise click.UsageError("give exactly one of --changed and --match PNG")
    box = _region(region)
    ref = _load_reference(reference) if reference else None

    def crop(frame):
        if box is None:
            return frame
        x, y, w, h = box
        return frame[y:y + h, x:x + w]

    def similarity(a, b) -> float:
        if a.shape != b.shape:
            return 0.0
        return float((a == b).all(axis=2).mean())

    state = {}

    async def work(client):
        if changed:
            state["start"] = crop(await client.frame())
            predicate = lambda f: crop(f).shape != state["start"].shape or \
                similarity(crop(f), state["start"]) < threshold
        else:
            want = crop(ref)
            predicate = lambda f: similarity(crop(f), want) >= threshold
        try:
            frame = await client.wait_for(predicate, timeout=timeout)
            return True, frame
        except TimeoutExpired as exc:
            last = getattr(exc, "last_frame", None)  # set unless no frame arrived at all
            return False, last if last is not None else client.display.primary_rgb()

    started = time.monotonic()
    ok, frame = run_client(app, name, opts, work, allow_partial=allow_partial)
    elapsed = time.monotonic() - started
    if ok:
        app.emit({"name": name, "matched": True, "seconds": round(elapsed, 2)},
                 lambda: app.info(f"{name}: screen {'changed' if changed else 'matches'} after {elapsed:.1f}s"))
        return
    saved = None
    if frame is not None:
        from PIL import Image

        if last_frame:
            saved = last_frame
        else:
            from pathlib import Path

            from spicectl.pki.store import ensure_dir

            saved = str(ensure_dir(app.settings.state_dir / "last-frames") / f"{Path(name).name}.png")
        _save_png(Image.fromarray(np.ascontiguousarray(frame), "RGB"), saved)
    app.emit({"name": name, "matched": False, "seconds": round(elapsed, 2), "last_frame": saved}, lambda: None)
    raise TimeoutExpired(f"{name}: the screen did not {'change' if changed else 'match'} within {timeout:g}s"
                         + (f"; last frame saved to {saved}" if saved else ""))
