"""The application object that click passes down: settings, output mode, console."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from spicectl.holder.runtime import Runtime
    from spicectl.settings import Settings


class App:
    # A plain class, not a dataclass: dataclasses imports inspect, and this
    # module is on the path of `spicectl --help`, which must start fast.
    def __init__(self) -> None:
        self.connect: str | None = None
        self.state_dir_option: str | None = None
        self.json = False
        self.quiet = False
        self.verbose = 0
        self.debug = False
        self._settings: Settings | None = None
        # the session holder's connections and warm sessions, when the holder runs this command
        self.runtime: Runtime | None = None

    @property
    def settings(self) -> Settings:
        # Resolved on first use so `--help` reads no config file.
        if self._settings is None:
            from spicectl.settings import Settings

            self._settings = Settings.resolve(connect=self.connect, state_dir=self.state_dir_option)
        return self._settings

    def hypervisor(self, passphrase: bytes | None = None, *, uri: str | None = None, private: bool = False,
                   prepare: bool = True):
        """Open libvirt: `uri`, else --connect's URI, else (or if `private`) the private embedded default
        (the holder's pooled connection when the holder runs this command)."""
        from spicectl.virt.connection import open_hypervisor

        s = self.settings
        connect = None if private else uri or s.connect
        if self.runtime is not None:
            return self.runtime.hypervisor(connect, s.state_dir, pki_dir=s.pki_dir, passphrase=passphrase,
                                           prepare=prepare)
        return open_hypervisor(connect, s.state_dir, pki_dir=s.pki_dir, passphrase=passphrase, prepare=prepare,
                               on_busy=self.release_holder())

    def release_holder(self) -> Callable[[], None] | None:
        """What to do when the private libvirt is busy: ask this state dir's session holder to exit
        (it owns the private libvirt until it does). None inside the holder: it owns it."""
        if self.runtime is not None:
            return None
        from functools import partial

        from spicectl.holder.client import release

        return partial(release, str(self.settings.state_dir))

    def guest_access(self, name: str, *, ttl: int = 30, plain: bool = False):
        """A running guest's SPICE access with a fresh ticket, the private libvirt left free after. An
        Xspice display (`:N`) is a guest too: its access comes from its record, its password does not
        expire."""
        s = self.settings
        from spicectl.xspice.config import is_display

        if is_display(name):
            return _display_access(s.state_dir, name, plain=plain)
        if self.runtime is not None:
            from spicectl.virt.access import guest_access

            with self.hypervisor() as hv:
                return guest_access(hv, name, ttl=ttl, plain=plain, state_dir=s.state_dir)
        from spicectl.virt.child import fetch_access

        return fetch_access(s.connect, s.state_dir, s.pki_dir, name, ttl=ttl, plain=plain,
                            on_busy=self.release_holder())

    @contextmanager
    def progress(self) -> Iterator[Callable[[str], None]]:
        """A spinner on a terminal; plain lines with -v elsewhere; nothing under --json/--quiet."""
        if self.json or self.quiet:
            yield lambda _m: None
            return
        if sys.stderr.isatty():
            from rich.console import Console

            with Console(stderr=True).status("working") as status:
                yield lambda m: status.update(m)
            return
        yield (lambda m: click.echo(f"spicectl: {m}", err=True)) if self.verbose else (lambda _m: None)

    # --- output -----------------------------------------------------------
    def emit(self, data: Any, human: Callable[[], None] | None = None) -> None:
        """`data` as JSON under --json; otherwise call `human` (or print data)."""
        if self.json:
            import json as _json

            sys.stdout.write(_json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        elif human is not None:
            human()
        elif data is not None:
            click.echo(data)

    def info(self, message: str) -> None:
        """Progress and notes: stderr, never in --json or --quiet mode."""
        if not (self.quiet or self.json):
            click.echo(message, err=True)

    def warn(self, message: str) -> None:
        """Something the user should know even in --json mode (stderr is not the JSON)."""
        if not self.quiet:
            click.echo(f"spicectl: warning: {message}", err=True)

    def table(self, columns: list[str], rows: list[list[Any]], *, title: str | None = None,
              styles: list[str | None] | None = None) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_edge=False, header_style="bold")
        # Off a terminal (a pipe, a log) never wrap or cut cells to 80 columns.
        console = Console() if sys.stdout.isatty() else Console(width=10_000)
        for col in columns:
            table.add_column(col)
        for i, row in enumerate(rows):
            style = styles[i] if styles else None
            table.add_row(*[str(c) for c in row], style=style)
        console.print(table)

    def fields(self, pairs: list[tuple[str, Any]]) -> None:
        width = max(len(k) for k, _ in pairs)
        for key, value in pairs:
            if isinstance(value, (list, tuple)):
                value = ", ".join(str(v) for v in value) or "-"
            click.echo(f"{key + ':':<{width + 1}} {value}")


    def proxy_logging(self) -> None:
        """The proxy's one line per session, on stderr (fewer under --quiet)."""
        import logging

        logger = logging.getLogger("spicectl.proxy")
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("spicectl proxy: %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.WARNING if self.quiet else logging.INFO)

    def session_output(self) -> SessionPrinter:
        return SessionPrinter(self)


class SessionPrinter:
    """A session's messages (`session.runner.SessionOutput`) printed for the user."""

    def __init__(self, app: App) -> None:
        self.app = app

    def info(self, message: str) -> None:
        self.app.info(message)

    def announce(self, data: dict, line: str) -> None:
        # printed at once and flushed: the session runs on in the foreground after this
        if self.app.json:
            import json as _json

            sys.stdout.write(_json.dumps(data) + "\n")
        else:
            click.echo(line)
        sys.stdout.flush()

    def write_vv(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()


pass_app = click.make_pass_decorator(App, ensure=True)


def json_option(func):
    """`--json` after the command as well as before it."""

    def callback(ctx: click.Context, _param, value: bool):
        if value:
            ctx.ensure_object(App).json = True
        return value

    return click.option("--json", "json_", is_flag=True, expose_value=False, callback=callback,
                        help="Print a JSON object for scripts.")(func)


def _display_access(state_dir, name: str, *, plain: bool):
    from pathlib import Path

    from spicectl.pki.ca import load_cert
    from spicectl.pki.names import host_subject
    from spicectl.virt.access import GuestAccess
    from spicectl.xspice.config import parse_display
    from spicectl.xspice.displays import access

    a = access(state_dir, parse_display(name), plain=plain)
    subject = ca_file = None
    if a.tls_port is not None and a.x509_dir is not None:
        subject = host_subject(load_cert(Path(a.x509_dir) / "server-cert.pem").subject)
        ca_file = str(Path(a.x509_dir) / "ca-cert.pem")
    return GuestAccess(a.name, a.host, a.port, a.tls_port, a.password, "", subject, usbredir=False, ca_file=ca_file)
