"""Which decoder loops run: the compiled ones (`_accel.c`, built when spicectl was installed, see
hatch_build.py) or the pure-Python reference in quic.py and lz.py. Both give the same pixels and the
same errors; the compiled ones are 4-150x faster (bench/codecs.py). SPICECTL_DECODERS=python picks the reference."""

from __future__ import annotations

import os
from types import ModuleType

from spicectl.errors import ProtocolError, TimeoutExpired

ENV = "SPICECTL_DECODERS"


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get(ENV) == "python":
        return None, f"{ENV}=python"
    try:
        import spicectl.spice.codecs._accel as _accel
    except ImportError:
        return None, "not built: there was no C compiler when spicectl was installed"
    return _accel, ""


native, why_not = _load()


def describe() -> str:
    """One line for `host check`."""
    if native is not None:
        return "compiled (QUIC, LZ and GLZ in C)"
    return f"pure Python ({why_not}); QUIC and GLZ decode 20-150x slower (bench/codecs.py)"


FAILURES = (ValueError, TimeoutError)


def failure(e: Exception) -> Exception:
    """A compiled loop's failure (one of FAILURES) as the reference raises it. Callers catch FAILURES
    themselves rather than through a context manager: a small GLZ image decodes in about a microsecond."""
    return TimeoutExpired(str(e)) if isinstance(e, TimeoutError) else ProtocolError(str(e))
