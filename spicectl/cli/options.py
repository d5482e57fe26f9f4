"""Options shared by several commands."""

from __future__ import annotations

import click

PASSPHRASE_ENV = "SPICECTL_CA_PASSPHRASE"


class Seconds(click.ParamType):
    """A finite number of seconds: positive (a timeout), or also zero where `zero` allows it."""

    name = "seconds"

    def __init__(self, zero: bool = False) -> None:
        self.zero = zero

    def convert(self, value, param, ctx) -> float:
        import math

        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not self.zero):
            self.fail(f"{value!r} must be a finite number of seconds, more than zero" +
                      (" (or zero)" if self.zero else ""), param, ctx)
        return seconds


TIMEOUT = Seconds()
DELAY = Seconds(zero=True)


def passphrase_options(func):
    """The CA key's passphrase: from a file, an fd or an environment variable — never argv."""
    func = click.option(
        "--passphrase-env",
        metavar="VAR",
        help=f"Read the CA key passphrase from environment variable VAR (default: {PASSPHRASE_ENV} if set).",
    )(func)
    func = click.option("--passphrase-fd", type=click.IntRange(0, 2 ** 31 - 1), metavar="FD",
                        help="Read the CA key passphrase from file descriptor FD.")(func)
    func = click.option("--passphrase-file", metavar="PATH",
                        help="Read the CA key passphrase from PATH ('-' for stdin).")(func)
    return func


def read_passphrase(passphrase_file: str | None, passphrase_fd: int | None,
                    passphrase_env: str | None) -> bytes | None:
    import os

    from spicectl.secrets import read_secret

    if passphrase_file is None and passphrase_fd is None and passphrase_env is None:
        if os.environ.get(PASSPHRASE_ENV):
            passphrase_env = PASSPHRASE_ENV
    return read_secret(file=passphrase_file, fd=passphrase_fd, env=passphrase_env, what="CA passphrase")




def check_text_values(command: click.Command) -> click.Command:
    """Every text option of `command` (and of its subcommands) refuses an empty value: '' would
    otherwise read as "not given" and quietly mean the default. Every option and argument that is
    not a path refuses bytes that are not UTF-8 (Python hands them over as lone surrogates, which
    no name, subject or XML text can carry); a path may hold any bytes."""

    def check(ctx, param, value):
        values = value if isinstance(value, tuple) else (value,)
        texts = [v for v in values if isinstance(v, str)]
        if isinstance(param, click.Option) and not param.is_flag and "" in texts:
            raise click.BadParameter("is empty; leave the option out for its default", ctx=ctx, param=param)
        if not isinstance(param.type, (click.Path, click.File)):
            for text in texts:
                try:
                    text.encode()
                except UnicodeEncodeError:
                    shown = repr(text.encode(errors="surrogateescape"))[1:]  # the bytes as given: '\xff'
                    raise click.BadParameter(f"{shown} is not valid UTF-8", ctx=ctx, param=param) from None
        return value

    def chain(original):
        def callback(ctx, param, value):
            value = check(ctx, param, value)
            return original(ctx, param, value) if original else value
        return callback

    for param in command.params:
        if not (isinstance(param, click.Option) and param.is_flag) and not getattr(param, "_checked_text", False):
            param.callback = chain(param.callback)
            param._checked_text = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            check_text_values(sub)
    return command
