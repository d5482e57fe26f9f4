"""One memory budget for everything a SPICE server makes a client hold.

Per-object limits alone let a server multiply them: six large surfaces, hundreds of cached
palettes, a recording that never ends. Every part of a session that keeps what the server sent
(surfaces, the image cache, palettes, the GLZ window, video frames, audio) reports its size here
under its own name, and every large allocation asks first; a server that would take the session
past the budget has broken the protocol (the error names what it asked for).
"""

from __future__ import annotations

from spicectl.errors import ProtocolError

DEFAULT_BUDGET = 1 << 30   # 1 GiB: a 4-monitor 4K desktop with full caches needs about a third of it
MIN_BUDGET = 64 << 20      # below this a plain 1024x768 desktop with its caches does not fit


def mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


class OverBudget(ProtocolError):
    """The server asked for more memory than the session's budget allows."""


class Budget:
    def __init__(self, limit: int = DEFAULT_BUDGET) -> None:
        self.limit = limit
        self.parts: dict[str, int] = {}

    @property
    def used(self) -> int:
        return sum(self.parts.values())

    def set(self, part: str, nbytes: int, what: str) -> None:
        """`part` now holds `nbytes`; refused (nothing changes) if that goes past the budget."""
        if nbytes > self.parts.get(part, 0):
            self.need(nbytes - self.parts.get(part, 0), what)
        self.parts[part] = nbytes

    def need(self, nbytes: int, what: str) -> None:
        """Room for `nbytes` more (a decode about to allocate), on top of what is held."""
        if self.used + nbytes > self.limit:
            held = ", ".join(f"{k} {mib(v)}" for k, v in sorted(self.parts.items()) if v)
            raise OverBudget(f"the server asked for {what} ({mib(nbytes)}), over the session's memory budget of "
                             f"{mib(self.limit)} (holding {held or 'nothing'})",
                             hint="a larger budget: --max-memory SIZE or SPICECTL_MAX_MEMORY")
