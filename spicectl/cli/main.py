"""The root `spicectl` group, global options, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys

import click

from spicectl import __version__
from spicectl.cli.app import App
from spicectl.cli.errors import INTERNAL, INTERRUPTED, exit_code_for, exit_code_help, from_os_error
from spicectl.cli.lazy import LazyGroup
from spicectl.cli.options import DELAY, check_text_values
from spicectl.errors import SpicectlError

COMMANDS = {
    "agent": ("spicectl.cli.agent:agent_status", "Whether a guest's agent is connected, and its capabilities."),
    "ca": ("spicectl.cli.ca:ca", "Create and show spicectl's certificate authority."),
    "cert": ("spicectl.cli.cert:cert", "Issue, list, show, verify and renew TLS certificates."),
    "channels": ("spicectl.cli.channels:channels", "List the SPICE channels a guest offers, with its ports."),
    "clipboard": ("spicectl.cli.agent:clipboard", "Read or set a guest's clipboard through its agent."),
    "completion": ("spicectl.cli.completion:completion", "Print shell completion for bash, zsh or fish."),
    "connect": (
        "spicectl.cli.connect:connect",
        "Open a session to a guest: remote-viewer, .vv file, proxy or builtin client.",
    ),
    "console": (
        "spicectl.cli.console:console",
        "A guest's serial console: interactive, or scripted with --send/--expect.",
    ),
    "copy-to": ("spicectl.cli.agent:copy_to", "Copy files into a guest through its agent."),
    "host": ("spicectl.cli.host:host", "Check and set up this host (and spicectl's private libvirt)."),
    "image": ("spicectl.cli.image:image", "Build, list, show and delete guest OS images made from recipes."),
    "mouse": ("spicectl.cli.screen:mouse", "Move the pointer and click on a guest."),
    "play-audio": ("spicectl.cli.audio:play_audio", "Feed a WAV file to a guest's microphone."),
    "proxy": ("spicectl.cli.proxy:proxy", "Run a long-lived session proxy (WebSocket and HTTP CONNECT)."),
    "record-audio": ("spicectl.cli.audio:record_audio", "Record what a guest plays into a WAV file."),
    "record-video": ("spicectl.cli.video:record_video", "Record a guest's screen into a video file."),
    "resize": ("spicectl.cli.agent:resize", "Change a guest's screen size through its agent."),
    "sasl": ("spicectl.cli.sasl:sasl", "SASL logins for the private libvirt's SPICE servers: their users."),
    "screenshot": ("spicectl.cli.screen:screenshot", "Save a PNG of a guest's screen through spicectl's SPICE client."),
    "share": ("spicectl.cli.share:share", "Share a host folder with a guest (WebDAV over SPICE) until Ctrl-C."),
    "send-keys": ("spicectl.cli.screen:send_keys", "Press keys or combinations (esc, ctrl-alt-delete) on a guest."),
    "template": ("spicectl.cli.template:template", "List and show VM profiles."),
    "type": ("spicectl.cli.screen:type_cmd", "Type text on a guest (US layout)."),
    "wait-screen": ("spicectl.cli.screen:wait_screen", "Wait until a guest's screen changes or matches a reference."),
    "ticket": ("spicectl.cli.ticket:ticket", "Set a fresh one-time SPICE ticket on a running guest."),
    "usb": ("spicectl.cli.usb:usb", "USB over SPICE: plug an ISO or disk image into a guest; what is plugged."),
    "view": ("spicectl.cli.view:view", "Show a guest's screen in a window of spicectl's own."),
    "vm": ("spicectl.cli.vm:vm", "Create, start, stop, list and inspect SPICE guests."),
    "xspice": ("spicectl.cli.xspice:xspice", "X displays served over SPICE with no VM: start, list, stop, connect."),
}

EPILOG = f"""\b
Configuration: option > environment (SPICECTL_*) > config file
(~/.config/spicectl/spicectl.toml, or $SPICECTL_CONFIG) > default.

{exit_code_help()}
"""


class RootGroup(LazyGroup):
    """Maps library errors to one line on stderr and an exit code, for every command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except (SpicectlError, OSError) as exc:
            error = exc if isinstance(exc, SpicectlError) else from_os_error(exc)
            if error is None:
                return self._internal(ctx, exc)
            app = ctx.find_object(App)
            if app is not None and app.debug:
                import traceback

                traceback.print_exc()
            click.echo(f"spicectl: error: {error.message}", err=True)
            if error.hint:
                click.echo(f"hint: {error.hint}", err=True)
            ctx.exit(exit_code_for(error))
        except KeyboardInterrupt:
            click.echo("spicectl: interrupted", err=True)
            ctx.exit(INTERRUPTED)
        except Exception as exc:  # a bug: one line unless asked for detail
            return self._internal(ctx, exc)

    @staticmethod
    def _internal(ctx: click.Context, exc: BaseException):
        app = ctx.find_object(App)
        if app is not None and app.debug:
            raise exc
        click.echo(f"spicectl: internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("hint: rerun with --debug for a traceback, and report it", err=True)
        ctx.exit(INTERNAL)


def _help_width(max_width: int = 100) -> int:
    """Terminal width for help text, as click computes it but without importing
    shutil, which alone costs a noticeable share of `spicectl --help`."""
    try:
        columns = int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(1).columns
    except (OSError, ValueError):
        columns = 80
    return max(min(columns, max_width) - 2, 50)


@click.group(cls=RootGroup, lazy=dict(COMMANDS), epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "terminal_width": _help_width()})
@click.option("--connect", "-c", metavar="URI", envvar="SPICECTL_CONNECT",
              help="libvirt URI, or a host named in the config file's [hosts] (env SPICECTL_CONNECT, then "
              "LIBVIRT_DEFAULT_URI; default: spicectl's private libvirt).")
@click.option("--json", "json_", is_flag=True, help="Print JSON objects for scripts instead of tables.")
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (repeatable).")
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@click.option("--state-dir", metavar="DIR", envvar="SPICECTL_STATE_DIR",
              help="Where spicectl keeps its CA, certificates and private libvirt "
                   "(env SPICECTL_STATE_DIR; default /var/lib/spicectl as root, else ~/.local/share/spicectl).")
@click.option("--persist", type=DELAY, metavar="SECONDS", envvar="SPICECTL_PERSIST",
              help="Keep a session holder (libvirt connection, SPICE sessions) for repeated vm list/show, ticket, "
                   "screenshot, send-keys, type, mouse and wait-screen, and record-video --background; it exits "
                   "after SECONDS without one and no recording (env SPICECTL_PERSIST; default 60; 0: none, each "
                   "command does its own work).")
@click.version_option(__version__, "--version", prog_name="spicectl")
@click.pass_context
def cli(ctx: click.Context, connect, json_, quiet, verbose, debug, state_dir, persist) -> None:
    """Manage SPICE virtual machines end to end: CA and TLS certificates,
    libvirt domain XML, guests, tickets and sessions."""
    # a path may hold bytes that are not UTF-8 (surrogates in Python): shown escaped, never a crash
    # under a UTF-8 locale's strict output
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    app = ctx.ensure_object(App)
    app.connect, app.json, app.quiet, app.verbose, app.debug = connect, json_, quiet, verbose, debug
    app.state_dir_option = state_dir


check_text_values(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="spicectl")
