"""Options shared by several commands."""

from __future__ import annotations

import click

PASSPHRASE_ENV = "SPICECTL_CA_PASSPHRASE"


MAX_SECONDS = 366 * 86400
CA_FILE_HELP = ("CA that signed the guest's SPICE certificate (default: for a local qemu:///system, the CA in its "
                "SPICE certificate folder while root alone may change it; else spicectl's CA).")


class Seconds(click.ParamType):
    """A finite number of seconds: positive (a timeout), or also zero where `zero` allows it."""

    name = "seconds"

    def __init__(self, zero: bool = False) -> None:
        self.zero = zero

    def convert(self, value, param, ctx) -> float:
        from spicectl.domain.units import parse_number

        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a default
        exact = parse_number(value) if isinstance(value, str) else None
        if exact is None:
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        # at most a year: more is a typo, and a float of a 400-digit number is infinite
        if exact > MAX_SECONDS or (exact == 0 and not self.zero):
            self.fail(f"{value!r} must be a number of seconds, more than zero" + (" (or zero)" if self.zero else "")
                      + f" and at most {MAX_SECONDS}", param, ctx)
        return float(exact)


TIMEOUT = Seconds()
DELAY = Seconds(zero=True)


class Fraction(click.ParamType):
    """A plain decimal number in ASCII digits from 0 to 1 (a share of pixels, say)."""

    name = "fraction"

    def convert(self, value, param, ctx) -> float:
        from spicectl.domain.units import parse_number

        exact = parse_number(str(value)) if isinstance(value, (str, int, float)) else None
        if exact is None or exact > 1:
            self.fail(f"{value!r} is not a number from 0 to 1", param, ctx)
        return float(exact)


class Integer(click.ParamType):
    """A whole number in ASCII digits (click's int takes '٣' and '1_000'), within [low, high]."""

    name = "integer"

    def __init__(self, low: int = -(2 ** 31), high: int = 2 ** 31 - 1) -> None:
        self.low, self.high = low, high

    def convert(self, value, param, ctx) -> int:
        import re

        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,40}\s*", value, re.ASCII):
            number = int(value)
        else:
            self.fail(f"{value!r} is not a whole number", param, ctx)
        if not self.low <= number <= self.high:
            self.fail(f"{value!r} is not in the range {self.low} to {self.high}", param, ctx)
        return number

    def __repr__(self) -> str:
        return f"Integer({self.low}, {self.high})"


def passphrase_options(func):
    """The CA key's passphrase: from a file, an fd or an environment variable — never argv."""
    func = click.option(
        "--passphrase-env",
        metavar="VAR",
        help=f"Read the CA key passphrase from environment variable VAR (default: {PASSPHRASE_ENV} if set).",
    )(func)
    func = click.option("--passphrase-fd", type=Integer(0, 2 ** 31 - 1), metavar="FD",
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




class Named(click.Choice):
    """One of a setting's words, refused as a template's value is: the noun and the valid words."""

    def __init__(self, choices, noun: str) -> None:
        super().__init__(choices)
        self.noun = noun

    def convert(self, value, param, ctx):
        if value in self.choices:
            return value
        if value == "":
            self.fail("is empty; leave the option out for its default", param, ctx)
        self.fail(f"unknown {self.noun} {value!r} (valid {self.noun}s: {', '.join(map(str, self.choices))})",
                  param, ctx)


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
