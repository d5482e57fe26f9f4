"""The holder process: accepts served commands on STATE/holder.sock and runs them in-process,
with libvirt connections (connection.POOL) and SPICE sessions (warm.WarmSessions) kept open."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import socket
import sys
import threading
import time
from pathlib import Path

from spicectl.holder import LOCK, SOCKET, wire

ACCEPT_POLL = 1.0   # seconds between idle checks


def serve(state: Path, persist: float) -> int:
    lock = os.open(state / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0   # another holder serves this state dir
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

    from spicectl.holder import warm
    from spicectl.virt import connection

    connection.POOL = {}
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="spice-sessions", daemon=True).start()
    warm.ACTIVE = warm.WarmSessions(loop)
    last = time.monotonic()
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                warm.ACTIVE.expire(persist)
                if time.monotonic() - last > persist:
                    return 0
                continue
            with conn:
                conn.settimeout(None)
                if not _same_user(conn):
                    continue
                try:
                    request = wire.receive(conn)
                except (OSError, ValueError):
                    continue
                if request.get("op") == "exit":
                    # the private libvirt is released when this process ends (libvirt's embedded
                    # driver holds its root until then): say so, then end at once
                    path.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        wire.send(conn, {"exit": 0})
                    os._exit(0)
                if request.get("op") != "run":
                    continue
                persist = float(request.get("persist", persist))
                reply = run(request)
                with contextlib.suppress(OSError):
                    wire.send(conn, reply)
            last = time.monotonic()
    finally:
        path.unlink(missing_ok=True)


def _same_user(conn: socket.socket) -> bool:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def run(request: dict) -> dict:
    """One command line, as the console script would run it in the caller's cwd, umask and environment."""
    from spicectl.cli.main import cli

    out, err = io.BytesIO(), io.BytesIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_streams = sys.stdout, sys.stderr
    saved_umask = os.umask(int(request.get("umask", 0o022)))
    # kept in locals: a wrapper that is collected closes the buffer under it
    wout = io.TextIOWrapper(out, encoding="utf-8", errors="backslashreplace", write_through=True)
    werr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    sys.stdout, sys.stderr = wout, werr
    code: int = 0
    try:
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request.get("env", {})).items()})
        os.chdir(str(request.get("cwd", "/")))
        try:
            cli.main(args=list(request["argv"]), prog_name="spicectl")
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
        sys.stdout, sys.stderr = saved_streams
        os.umask(saved_umask)
        os.environ.clear()
        os.environ.update(saved_env)
        with contextlib.suppress(OSError):
            os.chdir(saved_cwd)
    return {"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
