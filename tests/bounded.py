"""Run a piece of work in a child process under an address-space limit and a deadline.

A hostile input that makes the client allocate 20 GB must fail a test, not take the test machine
down with it: the child gets RLIMIT_AS, and a child still running at its deadline is killed. The
outcome says how the work ended: "ok", or the exception's class and message, or how the child died.
"""

from __future__ import annotations

import multiprocessing
import resource
import traceback
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Outcome:
    how: str            # "ok", "raised", "killed" (signal, OOM) or "timeout"
    error: str = ""     # the exception's class name, or the signal
    message: str = ""
    peak_kib: int = 0   # the child's maximum resident set

    def __str__(self) -> str:
        return f"{self.how} {self.error}: {self.message[:300]} (peak RSS {self.peak_kib // 1024} MiB)"


def _vm_size() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


def _child(conn, work: Callable[[], object], extra: int) -> None:
    # what the child may map beyond what it inherits (the interpreter, numpy, the test's imports)
    limit = _vm_size() + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        work()
        result = ("ok", "", "")
    except BaseException as exc:  # noqa: BLE001 - every way out is an outcome to report
        result = ("raised", type(exc).__name__, str(exc) + "\n" + traceback.format_exc(limit=-3))
    conn.send((*result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def bounded(work: Callable[[], object], *, extra: int = 1 << 30, seconds: float = 60) -> Outcome:
    """Run `work()` in a forked child that may map `extra` bytes more than it inherits, for at most
    `seconds`."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, work, extra))
    proc.start()
    child.close()
    try:
        if parent.poll(seconds):
            how, error, message, peak = parent.recv()
            proc.join(10)
            return Outcome(how, error, message, peak)
        if proc.is_alive():
            return Outcome("timeout", message=f"still running after {seconds:g}s")
        proc.join()
        return Outcome("killed", f"exit {proc.exitcode}")
    except EOFError:
        proc.join()
        return Outcome("killed", f"exit {proc.exitcode}")
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
