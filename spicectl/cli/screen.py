"""Screen and input commands through spicectl's own SPICE client: screenshot, send-keys, type, mouse, wait-screen."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import CA_FILE_HELP, DELAY, TIMEOUT, Fraction, Integer


def server_options(func):
    """GUEST is a managed guest's name or a spice:// URI; these say how to reach and trust it, and how
    much memory its server may make this client hold."""
    func = click.option("--max-memory", metavar="SIZE", envvar="SPICECTL_MAX_MEMORY",
                        help="Memory the guest's SPICE server may make this client hold (surfaces, caches, "
                        "video, audio), e.g. 512M; past it the server is refused (exit 7). Default 1G, or "
                        "max_memory in the config file.")(func)
    func = click.option("--plain-port", is_flag=True, help="Use the guest's plain (unencrypted) SPICE port; "
                        "the guest must allow plain channels.")(func)
    func = click.option("--host-subject", metavar="SUBJECT", help="With a spice:// URI: the server certificate's "
                        "subject, as remote-viewer's host-subject (e.g. 'O=Org,CN=host').")(func)
    func = click.option("--ca-file", metavar="PEM", help=CA_FILE_HELP)(func)
    return sasl_options(func, password_help="With a spice:// URI: read the SPICE password from PATH ('-' for "
                        "stdin); with --sasl-user, the user's password.")


def sasl_options(func, *, password_help: str = "With --sasl-user: read the user's password from PATH ('-' for "
                 "stdin)."):
    """--sasl-user NAME and where its password comes from (never the command line)."""
    func = click.option("--password-env", metavar="VAR", help="With --sasl-user: the password is in environment "
                        "variable VAR.")(func)
    func = click.option("--sasl-user", metavar="NAME", envvar="SPICECTL_SASL_USER", help="Log in with SASL as NAME "
                        "(a server with SASL on: QEMU's spice sasl=on, libvirt's spice_sasl), the password from "
                        "--password-file or --password-env, instead of a ticket.")(func)
    return click.option("--password-file", metavar="PATH", help=password_help)(func)


def sasl_credentials(opts: dict, *, required: bool = True) -> tuple[str | None, bytes | None]:
    """The SASL user and password the options name (the password may be left to a viewer that asks)."""
    from spicectl.secrets import read_secret

    user = opts.get("sasl_user")
    if opts.get("password_env") and not user:
        raise click.UsageError("--password-env goes with --sasl-user")
    if user is None:
        return None, None
    if not user or len(user) > 255:
        raise click.BadParameter("a user name of 1 to 255 characters", param_hint="--sasl-user")
    password = read_secret(file=opts.get("password_file"), env=opts.get("password_env"), what="SASL password")
    if password is None and required:
        raise click.UsageError("--sasl-user needs the password: --password-file PATH ('-' for stdin) or "
                               "--password-env VAR")
    return user, password


def _server(app: App, guest: str, opts: dict):
    from spicectl.pki.ca import CA_CERT
    from spicectl.secrets import read_secret
    from spicectl.session.server import from_access, from_uri, is_spice_uri

    sasl_user, password = sasl_credentials(opts)
    if is_spice_uri(guest):
        if sasl_user is None:
            password_file = opts["password_file"]
            password = read_secret(file=password_file, what="SPICE password") if password_file else None
        server = from_uri(guest, password=password, ca_file=opts["ca_file"], host_subject=opts["host_subject"],
                          plain=opts["plain_port"])
    else:
        for option in (("host_subject",) if sasl_user else ("password_file", "host_subject")):
            if opts[option]:
                raise click.UsageError(f"--{option.replace('_', '-')} goes with a spice:// URI, not a guest name")
        access = app.guest_access(guest, plain=opts["plain_port"])
        server = from_access(access, ca_file=opts["ca_file"], own_ca=str(app.settings.ca_dir / CA_CERT))
        if sasl_user is not None:
            server.password = password
    server.sasl_user = sasl_user
    return server


CONNECT_ALLOWANCE = 30.0  # what a command with a --timeout for its wait adds for connecting (TLS, link, channels)


def command_timeout(default: float):
    """One --timeout for a command that talks to a guest: connecting, the work and any decoding in it."""
    return click.option("--timeout", type=TIMEOUT, default=default, show_default=True,
                        help="Seconds the whole command may take (exit 9 past them).")


def _memory_limit(app: App, opts: dict) -> int:
    from spicectl.domain.units import parse_size_kib
    from spicectl.spice.budget import DEFAULT_BUDGET, MIN_BUDGET, mib

    text = opts.get("max_memory") or app.settings.max_memory
    if not text:
        return DEFAULT_BUDGET
    limit = parse_size_kib(text, what="--max-memory") * 1024
    if limit < MIN_BUDGET:
        raise click.BadParameter(f"{text!r} is less than {mib(MIN_BUDGET)}", param_hint="--max-memory")
    return limit


def _import_client() -> None:
    import PIL.Image  # noqa: F401

    import spicectl.spice.client  # noqa: F401


def run_client(app: App, name: str, opts: dict, work, *, timeout: float | None, display: bool = True,
               inputs: bool = True, allow_partial: bool = False, cursor: bool = False,
               prefer_video: tuple[str, ...] = ()):
    """Connect to NAME, run `work(client)` (a coroutine function), return its result. `timeout` bounds
    the whole of it, decoding included (exit 9); None for a command that runs until it is stopped."""
    import asyncio
    import threading
    import time

    from spicectl.errors import TimeoutExpired
    from spicectl.session.server import is_spice_uri

    limit = _memory_limit(app, opts)
    deadline = None if timeout is None else time.monotonic() + timeout

    async def bounded(client, coro):
        # a warm session (the holder's) keeps its budget's accounting and takes this command's limit
        client.budget.limit = limit
        client.screen.display.deadline = deadline
        try:
            if deadline is None:
                return await coro
            return await asyncio.wait_for(coro, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise TimeoutExpired(f"{name}: the command did not finish within {timeout:g}s",
                                 hint="a longer --timeout") from None
        finally:
            client.screen.display.deadline = None

    if app.runtime is not None and not is_spice_uri(name):
        return app.runtime.warm.run(warm_key(app, name, opts), lambda: _server(app, name, opts),
                                    lambda c: bounded(c, work(c)), cursor=cursor, allow_partial=allow_partial)

    # The client's imports (numpy, Pillow, cryptography: ~100 ms) overlap with the libvirt work,
    # which mostly waits on a child process or on libvirt's socket.
    warm = threading.Thread(target=_import_client, daemon=True)
    warm.start()
    server = _server(app, name, opts)
    warm.join()

    async def go():
        client = server.client(allow_partial=allow_partial, prefer_video=prefer_video)

        async def connected():
            await client.connect(display=display, inputs=inputs, cursor=cursor)
            return await work(client)

        try:
            return await bounded(client, connected())
        finally:
            await client.close()

    return asyncio.run(go())


def stopped_by_signals():
    """An asyncio.Event that Ctrl-C or SIGTERM sets (call it in the running loop): how a command that
    runs until stopped ends cleanly."""
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def warm_key(app: App, name: str, opts: dict) -> tuple:
    """Which of the holder's sessions a command on guest NAME uses."""
    s = app.settings
    return s.connect, str(s.state_dir), name, opts["plain_port"], opts["ca_file"]


def warm_server(app: App, name: str, opts: dict):
    """How the holder links a session to guest NAME (when it has none)."""
    return _server(app, name, opts)


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
@click.argument("name", metavar="GUEST")
@click.option("-o", "--output", required=True, metavar="FILE", help="PNG file to write ('-' for stdout).")
@click.option(
    "--settle",
    type=DELAY,
    default=0.0,
    show_default=True,
    help="Seconds without screen updates before the picture is taken.",
)
@click.option("--allow-partial", is_flag=True, help="Save the picture even if the server sent drawing this client "
              "cannot do yet (otherwise exit 7, naming what was missing).")
@click.option("--cursor", "with_cursor", is_flag=True,
              help="Draw the guest's pointer into the picture, where it is, as a viewer shows it.")
@click.option("--monitor", type=Integer(0, 63), metavar="N",
              help="Only monitor N (0 is the first) of a guest that shows several (default: the whole screen).")
@click.option("--ocr", is_flag=True, help="Also read the text on it (Tesseract): printed on stdout, or with "
              "--json as text and word boxes.")
@command_timeout(30)
@server_options
@json_option
@pass_app
def screenshot(app: App, name: str, output: str, settle: float, allow_partial: bool, with_cursor: bool,
               monitor: int | None, ocr: bool, timeout: float, **opts) -> None:
    """Save a PNG of guest NAME's screen, taken through spicectl's SPICE client.

    A screen the client could not draw completely is an error (exit 7), never a plausible-looking picture.
    """
    if ocr:
        from spicectl.errors import EnvironmentProblem
        from spicectl.session.ocr import problem

        if output == "-":
            raise click.UsageError("--ocr prints the text on stdout: give -o FILE")
        why = problem()
        if why is not None:
            raise EnvironmentProblem(f"cannot read text on the screen: {why}")

    if output != "-":
        from pathlib import Path

        from spicectl.pki.store import check_output_path

        check_output_path(Path(output))  # before connecting, not after the picture was taken

    async def work(client):
        image = await client.screen.screenshot(settle=settle, monitor=monitor, timeout=timeout, cursor=with_cursor)
        if with_cursor and not (client.screen.cursor and client.screen.cursor.drawn):
            app.warn(f"{name} shows no pointer on its screen (its cursor channel has no shape, or it is hidden "
                     "or off screen): the picture has none")
        return image

    image = run_client(app, name, opts, work, timeout=timeout, inputs=False, allow_partial=allow_partial,
                       cursor=with_cursor)
    reading = None
    if ocr:
        import numpy as np

        from spicectl.session.ocr import read

        reading = read(np.asarray(image))
    _save_png(image, output)
    if output != "-":
        def human() -> None:
            app.info(f"{name}: {image.width}x{image.height} screenshot saved to {output}")
            if reading is not None:
                click.echo(reading.text.rstrip("\n"))

        app.emit({"name": name, "output": output, "width": image.width, "height": image.height,
                  **({"monitor": monitor} if monitor is not None else {}),
                  **({"ocr": reading.as_dict()} if reading is not None else {})}, human)


@click.command("send-keys")
@click.argument("name", metavar="GUEST")
@click.argument("keys", nargs=-1, required=True)
@click.option("--hold", type=DELAY, default=0.05, show_default=True, help="Seconds each combination is held.")
@command_timeout(30)
@server_options
@json_option
@pass_app
def send_keys(app: App, name: str, keys: tuple[str, ...], hold: float, timeout: float, **opts) -> None:
    """Press KEYS on guest NAME: names like esc, enter, f12, up, or combinations like ctrl-alt-delete."""
    from spicectl.spice.keys import parse_combo

    for combo in keys:
        parse_combo(combo)  # reject unknown keys before connecting

    async def work(client):
        await client.inputs.send_keys(*keys, hold=hold)

    run_client(app, name, opts, work, timeout=timeout, display=False)
    app.emit({"name": name, "keys": list(keys)}, lambda: None)


@click.command("type")
@click.argument("name", metavar="GUEST")
@click.argument("text")
@click.option(
    "--no-escapes", is_flag=True, help="Type backslashes literally instead of reading \\n and \\t as Enter and Tab."
)
@command_timeout(30)
@server_options
@json_option
@pass_app
def type_cmd(app: App, name: str, text: str, no_escapes: bool, timeout: float, **opts) -> None:
    """Type TEXT on guest NAME (US keyboard layout); "\\n" presses Enter."""
    from spicectl.spice.keys import text_to_strokes

    if not no_escapes:
        text = text.replace("\\n", "\n").replace("\\t", "\t")
    strokes = len(text_to_strokes(text))

    async def work(client):
        await client.inputs.type_text(text)

    # the keys go at a typist's pace (two 20 ms pauses a key): a long text gets that time on top
    run_client(app, name, opts, work, timeout=timeout + strokes * 0.04, display=False)
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
@click.argument("name", metavar="GUEST")
@click.option("--move", metavar="X,Y", help="Move the pointer to X,Y.")
@click.option("--click", "button", type=click.Choice(["left", "middle", "right", "up", "down"]),
              help="Click a button (up/down: the wheel).")
@click.option("--needle", metavar="PATH", help="Move to this openQA needle's click point (or the middle of its "
              "last area) once it is on screen, waiting up to --timeout.")
@click.option("--tag", metavar="TAG", help="As --needle, for the best needle under --needles DIR carrying TAG.")
@click.option("--needles", "needles_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="The needle directory --tag searches.")
@command_timeout(30)
@server_options
@json_option
@pass_app
def mouse(app: App, name: str, move: str | None, button: str | None, needle: str | None, tag: str | None,
          needles_dir: str | None, timeout: float, **opts) -> None:
    """Move the pointer and/or click on guest NAME (at X,Y, or where a needle is found)."""
    pos = _xy(move)
    by_needle = bool(needle or tag)
    if pos is not None and by_needle:
        raise click.UsageError("give --move X,Y or a needle, not both")
    if pos is None and button is None and not by_needle:
        raise click.UsageError("give --move X,Y (or --needle PATH) and/or --click BUTTON")
    if bool(tag) != bool(needles_dir) or (needle and tag):
        raise click.UsageError("give --needle PATH, or --tag TAG with --needles DIR")
    wait = None
    if by_needle:
        from spicectl.session.screen_wait import NeedleWait

        wait = NeedleWait(_needles(needle, tag, needles_dir))

    async def work(client):
        target = pos
        if wait is not None:
            found, _frame = await wait.run(client, timeout)
            if found is None:
                return None, None
            target = found.click()
        if target is not None:
            await client.inputs.mouse_move(*target)
        if button:
            await client.inputs.click(button)
        return target, client.inputs.mouse_mode

    from spicectl.spice.messages import MOUSE_MODE_CLIENT

    target, mode = run_client(app, name, opts, work, timeout=timeout + (CONNECT_ALLOWANCE if wait else 0),
                              display=wait is not None)
    if wait is not None and target is None:
        from spicectl.errors import TimeoutExpired

        closest = wait.closest
        raise TimeoutExpired(f"{name}: no needle matched within {timeout:g}s" + (
            f"; closest: {closest.needle.name} at {closest.similarity:.3f}" if closest else ""))
    app.emit({"name": name, "moved": list(target) if target else None, "clicked": button,
              "needle": wait.closest.needle.name if wait and wait.closest else None,
              "mouse_mode": "client" if mode == MOUSE_MODE_CLIENT else "server"}, lambda: None)


def _needles(needle: str | None, tag: str | None, directory: str | None) -> list:
    from spicectl.errors import NotFound
    from spicectl.session import needles as N

    if needle:
        return [N.Needle.load(needle)]
    assert tag is not None and directory is not None
    found = N.tagged(N.load_dir(directory), tag)
    if not found:
        raise NotFound(f"no needle under {directory} carries the tag {tag!r}")
    return found


def _save_last_frame(app: App, name: str, frame, given: str | None, what: str | None = None) -> str | None:
    """Save a timed-out wait's last frame (if one came): as given, else STATE_DIR/last-frames/GUEST[-WHAT].png.
    Where it went, or None."""
    if frame is None:
        return None
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from spicectl.pki.store import ensure_dir

    stem = Path(name).name + (f"-{Path(what).name}" if what else "")
    saved = given or str(ensure_dir(app.settings.state_dir / "last-frames") / f"{stem}.png")
    _save_png(Image.fromarray(np.ascontiguousarray(frame), "RGB"), saved)
    return saved


def _wait_needles(app: App, name: str, needles: list, what: str, timeout: float, last_frame: str | None,
                  allow_partial: bool, opts: dict) -> None:
    import time

    from spicectl.errors import TimeoutExpired
    from spicectl.session.screen_wait import NeedleWait

    condition = NeedleWait(needles)

    async def work(client):
        return await condition.run(client, timeout)

    started = time.monotonic()
    found, frame = run_client(app, name, opts, work, timeout=timeout + CONNECT_ALLOWANCE, allow_partial=allow_partial)
    elapsed = time.monotonic() - started
    if found is not None:
        x, y = found.areas[0].x, found.areas[0].y
        # as os-autoinst: a matched needle's ocr areas are read where the needle puts them
        texts = [_read_area(frame, a) for a in found.needle.areas if a.type == "ocr"] if frame is not None else []
        app.emit({"name": name, "matched": True, "seconds": round(elapsed, 2), **found.as_dict(),
                  "click": list(found.click()), **({"ocr": texts} if texts else {})},
                 lambda: app.info(f"{name}: needle {found.needle.name} matched after {elapsed:.1f}s "
                                  f"(similarity {found.similarity:.3f} at {x},{y})"))
        return
    saved = _save_last_frame(app, name, frame, last_frame, what)
    closest = condition.closest
    app.emit({"name": name, "matched": False, "seconds": round(elapsed, 2),
              "closest": closest.as_dict() if closest else None, "last_frame": saved}, lambda: None)
    said = ""
    if closest is not None:
        level = max(a.match for a in closest.needle.areas if a.type == "match")
        said = f"; closest: {closest.needle.name} at {closest.similarity:.3f} (needs {level:.2f})"
    raise TimeoutExpired(f"{name}: no needle matched within {timeout:g}s{said}"
                         + (f"; last frame saved to {saved}" if saved else ""))


def _read_area(frame, area) -> str | None:
    """The text in a needle's ocr area, or None where text cannot be read here."""
    from spicectl.session.ocr import problem, read

    if problem() is not None or area.x + area.width > frame.shape[1] or area.y + area.height > frame.shape[0]:
        return None
    return read(frame, (area.x, area.y, area.width, area.height)).text.strip()


def _wait_text(app: App, name: str, pattern: str, region, timeout: float, last_frame: str | None,
               allow_partial: bool, opts: dict) -> None:
    import re
    import time

    from spicectl.errors import EnvironmentProblem, InvalidInput, TimeoutExpired
    from spicectl.session.ocr import problem
    from spicectl.session.screen_wait import TextWait

    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise InvalidInput(f"--text {pattern!r} is not a regular expression: {exc}") from None
    why = problem()
    if why is not None:   # before connecting: a wait that could never see text is no wait
        raise EnvironmentProblem(f"cannot read text on the screen: {why}")
    condition = TextWait(compiled, region)

    async def work(client):
        return await condition.run(client, timeout)

    started = time.monotonic()
    hit, frame = run_client(app, name, opts, work, timeout=timeout + CONNECT_ALLOWANCE, allow_partial=allow_partial)
    elapsed = time.monotonic() - started
    words = condition.last.words if condition.last else []
    if hit is not None:
        app.emit({"name": name, "matched": True, "seconds": round(elapsed, 2), "found": hit.group(0),
                  "text": condition.last.text if condition.last else "", "words": [w.as_dict() for w in words]},
                 lambda: app.info(f"{name}: {hit.group(0)!r} on the screen after {elapsed:.1f}s"))
        return
    saved = _save_last_frame(app, name, frame, last_frame)
    seen = " ".join((condition.last.text if condition.last else "").split())
    app.emit({"name": name, "matched": False, "seconds": round(elapsed, 2), "text": seen, "last_frame": saved},
             lambda: None)
    raise TimeoutExpired(f"{name}: no text matching {pattern!r} within {timeout:g}s; the screen read "
                         f"{seen[:200]!r}" + (f"; last frame saved to {saved}" if saved else ""))


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
@click.argument("name", metavar="GUEST")
@click.option("--changed", is_flag=True, help="Wait until the screen differs from when the command started.")
@click.option("--match", "reference", metavar="PNG", help="Wait until the screen matches this reference image.")
@click.option("--needle", metavar="PATH", help="Wait until this openQA needle matches (PATH: DIR/NAME, beside "
              "NAME.json and NAME.png).")
@click.option("--tag", metavar="TAG", help="Wait until any needle under --needles DIR carrying TAG matches.")
@click.option("--needles", "needles_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="The needle directory --tag searches (subdirectories too).")
@click.option("--text", "text", metavar="REGEX", help="Wait until text matching REGEX is on the screen (or in "
              "--region), read by Tesseract (the [ocr] extra and Debian's tesseract-ocr).")
@click.option("--threshold", type=Fraction(), default=0.99, show_default=True,
              help="Share of pixels that must be equal for --match (and differ for nothing else).")
@click.option("--region", metavar="X,Y,W,H", help="Compare only this rectangle.")
@click.option("--timeout", type=TIMEOUT, default=60, show_default=True, help="Seconds to wait.")
@click.option("--last-frame", metavar="PNG", help="Where to save the last frame on timeout "
              "(default STATE_DIR/last-frames/NAME.png, not the current directory).")
@click.option("--allow-partial", is_flag=True, help="Compare frames even if the server sent drawing this client "
              "cannot do yet (otherwise exit 7).")
@server_options
@json_option
@pass_app
def wait_screen(app: App, name: str, changed: bool, reference: str | None, needle: str | None, tag: str | None,
                needles_dir: str | None, text: str | None, threshold: float, region, timeout: float,
                last_frame: str | None, allow_partial: bool, **opts) -> None:
    """Wait until guest NAME's screen changes (--changed), matches a reference (--match), or shows an
    openQA needle (--needle DIR/NAME, or --tag TAG --needles DIR: the best of the needles carrying TAG),
    or shows text matching a regular expression (--text REGEX, optionally in --region).

    Needles follow os-autoinst's format and rules: each match area is searched for within its margin
    (50 px by default) of its place and must reach its match level (96% by default); exclude areas
    are ignored. --json says which needle matched, each area's similarity and where it was found.

    Exits 0 when it happens and 9 on timeout, saving the last frame for the log (and naming the
    closest needle with its score).
    """
    import time

    from spicectl.errors import TimeoutExpired

    if sum((changed, bool(reference), bool(needle), bool(tag), text is not None)) != 1:
        raise click.UsageError("give exactly one of --changed, --match PNG, --needle PATH, --tag TAG and --text REGEX")
    if bool(tag) != bool(needles_dir):
        raise click.UsageError("--tag TAG needs --needles DIR (and --needles DIR a --tag)")
    if needle or tag:
        _wait_needles(app, name, _needles(needle, tag, needles_dir), needle or tag or "", timeout, last_frame,
                      allow_partial, opts)
        return
    if text is not None:
        _wait_text(app, name, text, _region(region), timeout, last_frame, allow_partial, opts)
        return
    from spicectl.session.screen_wait import ScreenWait

    condition = ScreenWait(threshold, _load_reference(reference) if reference else None, _region(region))

    async def work(client):
        return await condition.run(client, timeout)

    started = time.monotonic()
    ok, frame = run_client(app, name, opts, work, timeout=timeout + CONNECT_ALLOWANCE, allow_partial=allow_partial)
    elapsed = time.monotonic() - started
    if ok:
        app.emit({"name": name, "matched": True, "seconds": round(elapsed, 2)},
                 lambda: app.info(f"{name}: screen {'changed' if changed else 'matches'} after {elapsed:.1f}s"))
        return
    saved = _save_last_frame(app, name, frame, last_frame)
    app.emit({"name": name, "matched": False, "seconds": round(elapsed, 2), "last_frame": saved}, lambda: None)
    raise TimeoutExpired(f"{name}: the screen did not {'change' if changed else 'match'} within {timeout:g}s"
                         + (f"; last frame saved to {saved}" if saved else ""))
