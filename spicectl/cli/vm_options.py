"""The options of `vm create`, made from `spicectl.domain.settings` (one row per setting).

Each option's dest is its setting's key, so options and template files share
one vocabulary; an option left unset (None) keeps the template's value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from spicectl.cli.options import Integer, Named
from spicectl.domain.settings import SETTINGS, Setting


def _help(s: Setting) -> str:
    """A row's help, with what it declares about its values: its range, and what it needs."""
    said = [f"{s.range[0]}-{s.range[1]}"] if s.range else []
    if s.needs:
        said.append(f"with --{s.needs[0].replace('_', '-')} {' or '.join(s.needs[2])}")
    if not said:
        return s.help
    return f"{s.help.removesuffix('.')} ({'; '.join(said)})."


def _option(s: Setting) -> Callable:
    names = [s.option] + ([s.short] if s.short else [])
    if s.flag == "pair":
        return click.option(f"{s.option}/--no-{s.option[2:]}", s.key, default=None, help=s.help)
    if s.flag == "on":
        return click.option(*names, s.key, is_flag=True, default=None, help=s.help)
    kwargs: dict[str, Any] = {"help": _help(s), "multiple": s.kind == "list"}
    if s.choices:
        kwargs["type"] = Named(s.choices, s.what)
    elif s.kind == "int":
        kwargs["type"] = Integer()
    if s.metavar:
        kwargs["metavar"] = s.metavar
    return click.option(*names, s.key, **kwargs)


TEMPLATE_OPTION = click.option("--template", "-t", metavar="NAME",
                               help="Start from a VM profile (spicectl template list).")
OPTIONS = [TEMPLATE_OPTION] + [_option(s) for s in SETTINGS]


def vm_options(func):
    for option in reversed(OPTIONS):
        func = option(func)
    return func


def collect(params: dict) -> dict:
    """Option values the user actually gave, as setting keys and template types."""
    values = {}
    for s in SETTINGS:
        value = params.get(s.key)
        if value is None or value == ():
            continue
        if s.words is not None:
            value = s.words[value]
        values[s.key] = list(value) if isinstance(value, tuple) else value
    return values
