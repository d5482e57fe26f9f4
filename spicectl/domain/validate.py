"""Validation against libvirt's own RelaxNG schema (Debian package libvirt0).

spicectl validates every document before handing it to libvirt, so a fault
is reported in terms of our XML (which element, which line) rather than as
an error from deep inside libvirt's parser.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from lxml import etree

from spicectl.errors import EnvironmentProblem, InvalidInput

SCHEMA_DIRS = ("/usr/share/libvirt/schemas",)


def schema_path() -> Path:
    explicit = os.environ.get("SPICECTL_LIBVIRT_SCHEMAS")
    for directory in ([explicit] if explicit else []) + list(SCHEMA_DIRS):
        path = Path(directory) / "domain.rng"
        if path.is_file():
            return path
    raise EnvironmentProblem(
        "libvirt's domain schema (domain.rng) is not installed",
        hint="install the Debian package libvirt0, or set SPICECTL_LIBVIRT_SCHEMAS to its directory",
    )


@lru_cache(maxsize=1)
def _schema(path: str) -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(path))


def validate(doc: etree._Element | str) -> None:
    """Raise InvalidInput naming the first offending element if libvirt's schema rejects `doc`."""
    if isinstance(doc, str):
        doc = etree.fromstring(doc.encode())
    # Re-parse from text so line numbers refer to the document as printed.
    text = etree.tostring(doc, pretty_print=True)
    tree = etree.fromstring(text)
    schema = _schema(str(schema_path()))
    if schema.validate(tree):
        return
    errors = list(schema.error_log)
    # RelaxNG reports the outermost failure last; the first entry is the most specific.
    first = errors[0]
    line = text.decode().splitlines()[first.line - 1].strip() if first.line and first.line > 0 else ""
    element = line.split()[0].lstrip("<").rstrip(">/") if line.startswith("<") else "?"
    where = f" at <{element}> (line {first.line})" if line else ""  # some errors carry no position
    raise InvalidInput(
        f"domain XML fails libvirt's schema{where}: {first.message}",
        hint=f"offending line: {line}" if line else None,
    )
