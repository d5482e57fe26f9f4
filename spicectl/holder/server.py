"""The holder process: accepts served commands on STATE/holder.sock and runs them in-process,
with libvirt connections and SPICE sessions kept open in a `Runtime` that each command's `App` gets."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from spicectl.holder import LOCK, SOCKET, wire

if TYPE_CHECKING:
    from spicectl.holder.runtime import Runtime

ACCEPT_POLL = 1.0    # seconds between idle checks
FRAME_TIMEOUT = 5.0  # seconds a command may take to send its request, or to take its answer


class _Streams:
    """sys.stdout or sys.stderr for the thread that writes: each served command's output is its own."""

    def __init__(self, fallback) -> None:
        self._fallback = fallback
        self._local = threading.local()

    def redirect(self, stream) -> None:
        self._local.stream = stream

    def __getattr__(self, name: str):
        return getattr(getattr(self._local, "stream", None) or self._fallback, name)


class _Context:
    """The process-wide part of a command's surroundings: environment, folder and umask. Commands that
    share them run at once; one that needs others waits until the running ones end."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._current: tuple | None = None
        self.running = 0
        self.last = time.monotonic()

    @contextlib.contextmanager
    def entered(self, env: dict[str, str], cwd: str, umask: int):
        key = (tuple(sorted(env.items())), cwd, umask)
        with self._cond:
            self._cond.wait_for(lambda: self.running == 0 or self._current == key)
            if self.running == 0:
                saved = dict(os.environ), os.getcwd(), os.umask(umask)
                try:
                    os.chdir(cwd)
                    os.environ.clear()
                    os.environ.update(env)
                except BaseException:
                    self._restore(saved)
                    raise
                self._saved = saved
                self._current = key
            self.running += 1
        try:
            yield
        finally:
            with self._cond:
                self.running -= 1
                self.last = time.monotonic()
                if self.running == 0:
                    self._restore(self._saved)
                    self._current = None
                    self._cond.notify_all()

    @staticmethod
    def _restore(saved: tuple) -> None:
        env, cwd, umask = saved
        os.environ.clear()
        os.environ.update(env)
        os.umask(umask)
        with contextlib.suppress(OSError):
            os.chdir(cwd)


def serve(state: Path, persist: float) -> int:
    from spicectl.errors import SpicectlError
    from spicectl.locks import try_lock

    try:
        if try_lock(state / LOCK) is None:   # kept open (and locked) for the holder's life
            return 0   # another holder serves this state dir
    except SpicectlError as exc:
        print(f"spicectl holder: {exc.message}", file=sys.stderr)
        return 1
    path = state / SOCKET
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(64)
    os.chdir("/")   # not the starting command's folder: each command brings its own
    listener.settimeout(ACCEPT_POLL)

    from spicectl.holder.runtime import Runtime

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="spice-sessions", daemon=True).start()
    runtime = Runtime(loop)
    sys.stdout, sys.stderr = _Streams(sys.stdout), _Streams(sys.stderr)
    context = _Context()
    limits = {"persist": persist}
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if context.running == 0:
                    runtime.warm.expire(limits["persist"])
                    # a background recording keeps the holder (and its session) alive until stopped
                    if time.monotonic() - context.last > limits["persist"] and not runtime.warm.running():
                        return 0
                continue
            if not _same_user(conn):
                conn.close()
                continue
            # each connection in a thread of its own: a client that stalls, or a command that waits
            # for minutes, holds up no other command
            threading.Thread(target=_serve_one, args=(conn, path, context, limits, runtime), daemon=True).start()
    finally:
        path.unlink(missing_ok=True)


def _serve_one(conn: socket.socket, path: Path, context: _Context, limits: dict, runtime: Runtime) -> None:
    with conn:
        conn.settimeout(FRAME_TIMEOUT)
        try:
            request = wire.receive(conn)
        except (OSError, ValueError):
            return
        if request.get("op") == "exit":
            # the private libvirt is released when this process ends (libvirt's embedded
            # driver holds its root until then): say so, then end at once, after background
            # recordings have written their index
            path.unlink(missing_ok=True)
            runtime.warm.stop_all(timeout=5)
            with contextlib.suppress(OSError):
                wire.send(conn, {"exit": 0})
            os._exit(0)
        if request.get("op") != "run":
            return
        try:
            argv, env, cwd, umask, persist = _checked(request)
        except ValueError as exc:
            reply = {"exit": 2, "stdout": b"", "stderr": f"spicectl: error: the session holder refused a malformed "
                                                         f"request ({exc})\n".encode()}
        else:
            limits["persist"] = persist
            try:
                with context.entered(env, cwd, umask):
                    reply = run(argv, runtime)
            except OSError as exc:   # the folder the command was started in is gone, say
                reply = {"exit": 1, "stdout": b"", "stderr": f"spicectl: error: {cwd}: {exc.strerror}\n".encode()}
        with contextlib.suppress(OSError):
            wire.send(conn, reply)


def _checked(request: dict) -> tuple[list[str], dict[str, str], str, int, float]:
    """A run request's parts, each of the type and range it must have (ValueError otherwise)."""
    argv, env, cwd = request.get("argv"), request.get("env"), request.get("cwd")
    umask, persist = request.get("umask"), request.get("persist")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and "=" not in k
                                            and "\0" not in k + v for k, v in env.items()):
        raise ValueError("environment")
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise ValueError("folder")
    if not isinstance(umask, int) or isinstance(umask, bool) or not 0 <= umask <= 0o777:
        raise ValueError("umask")
    if not isinstance(persist, (int, float)) or isinstance(persist, bool) or not 0 < persist <= 86400 * 366:
        raise ValueError("persist")
    return argv, env, cwd, umask, float(persist)


def _same_user(conn: socket.socket) -> bool:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def run(argv: list[str], runtime: Runtime | None = None) -> dict:
    """One command line, as the console script would run it (in the surroundings `_Context` set up),
    lent the holder's `runtime`."""
    from spicectl.cli.app import App
    from spicectl.cli.main import cli

    app = App()
    app.runtime = runtime

    out, err = io.BytesIO(), io.BytesIO()
    # kept in locals: a wrapper that is collected closes the buffer under it
    wout = io.TextIOWrapper(out, encoding="utf-8", errors="backslashreplace", write_through=True)
    werr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    streams = sys.stdout, sys.stderr
    for stream, target in zip(streams, (wout, werr), strict=True):
        if isinstance(stream, _Streams):
            stream.redirect(target)
    code: int = 0
    try:
        try:
            cli.main(args=list(argv), prog_name="spicectl", obj=app)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception as exc:  # a bug: the holder lives on, the command fails as it would have
            import traceback

            traceback.print_exc()
            print(f"spicectl: internal error in the session holder: {exc!r}", file=sys.stderr)
            code = 70
    finally:
        wout.flush()
        werr.flush()
        for stream in streams:
            if isinstance(stream, _Streams):
                stream.redirect(None)
    return {"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
