"""The options of `vm create`, made from `spicectl.domain.settings` (one row per setting).

Each option's dest is its setting's key, so options and template files share
one vocabulary; an option left unset (None) keeps the template's value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from spicectl.cli.options import Integer
from spicectl.domain.settings import SETTINGS, Setting


def _option(s: Setting) -> Callable:
    names = [s.option] + ([s.short] if s.short else [])
    if s.flag == "pair":
        return click.option(f"{s.option}/--no-{s.option[2:]}", s.key, default=None, help=s.help)
    if s.flag == "on":
        return click.option(*names, s.key, is_flag=True, default=None, help=s.help)
    kwargs: dict[str, Any] = {"help": s.help, "multiple": s.kind == "list"}
    if s.choices:
        kwargs["type"] = click.Choice(s.choices)
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
