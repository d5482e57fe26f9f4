"""Where shipped data folders (templates/, pki/) are found.

A wheel carries them in `spicectl/_data/`; a source checkout (and an editable
install) has them at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    packaged = _PKG / "_data" / name
    if packaged.is_dir():
        return packaged
    return _PKG.parent / name
