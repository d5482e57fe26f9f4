"""The console script's first step: hand a served command to the holder, else run the CLI here.

Only modules built into the interpreter are imported on this path (no socket, pathlib, json,
subprocess or typing: their imports cost more than the holder's answer), so a served command costs
an interpreter start and one round trip; anything unusual about the command line runs the CLI as
before.
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from spicectl.holder import DEFAULT_PERSIST, LOG, PERSIST_ENV, READ_ONLY, SERVED, SOCKET, wire

VALUE_OPTIONS = {"--connect", "-c", "--state-dir", "--persist"}
FLAG_OPTIONS = {"--json", "-q", "--quiet", "--debug", "--verbose", "-v", "-vv", "-vvv"}
START_WAIT = 5.0   # seconds a command waits for a holder it started to listen


def main() -> None:
    """Console-script entry point."""
    code = forward(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from spicectl.cli.main import main as cli_main

    cli_main()


def parse(argv: list[str]) -> tuple[dict[str, str], tuple[str, ...]] | None:
    """The global options and the served command of argv; None if it is not one to hand over."""
    options: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg in FLAG_OPTIONS:
            i += 1
        elif name in VALUE_OPTIONS and eq:
            options[name] = value
            i += 1
        elif arg in VALUE_OPTIONS and i + 1 < len(argv):
            options[arg] = argv[i + 1]
            i += 2
        else:
            return None
    words = tuple(argv[i:i + 2])
    command = words if words in SERVED else words[:1] if words[:1] in SERVED else None
    if command is None:
        return None
    rest = argv[i + len(command):]
    for j, arg in enumerate(rest):
        if arg in ("-h", "--help"):
            return None
        # '-' is stdin anywhere but as the output file: the holder has no stdin of ours
        if arg == "-" and (j == 0 or rest[j - 1] not in ("-o", "--output")):
            return None
    return options, command


def persist_seconds(options: dict[str, str]) -> float | None:
    text = options.get("--persist", os.environ.get(PERSIST_ENV, ""))
    if not text:
        return DEFAULT_PERSIST
    try:
        value = float(text)
    except ValueError:
        return None   # the CLI says what is wrong with it
    return value if value >= 0 else None


def state_dir(options: dict[str, str]) -> str | None:
    from spicectl import paths

    explicit = options.get("--state-dir") or os.environ.get("SPICECTL_STATE_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    config = paths.config_file_str()
    if os.path.exists(config):
        import tomllib

        try:
            with open(config, encoding="utf-8") as f:
                value = tomllib.loads(f.read()).get("state_dir")
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if value is not None:
            return os.path.abspath(os.path.expanduser(value)) if isinstance(value, str) and value else None
    return os.path.abspath(paths.state_dir_str())


def socket_path(state: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(state), SOCKET)


def forward(argv: list[str]) -> int | None:
    """Run argv through the holder and return its exit code; None to run it here instead."""
    parsed = parse(argv)
    if parsed is None:
        return None
    options, command = parsed
    persist = persist_seconds(options)
    state = state_dir(options)
    if not persist or state is None:
        return None
    path = socket_path(state)
    if len(path.encode()) > 100:   # sun_path's limit, less a margin
        return None
    sock = _connect(path)
    if sock is None:
        if not _start(state, persist):
            return None
        sock = _connect(path)
        if sock is None:
            return None
    request = {"op": "run", "argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "umask": _umask(),
               "persist": persist}
    try:
        wire.send(sock, request)
        reply = wire.receive(sock)
    except (OSError, ValueError):
        if command in READ_ONLY:
            return None   # nothing was changed: run it here
        sys.stderr.write("spicectl: error: the session holder ended before it answered; the command may or "
                         "may not have run\nhint: rerun it with --persist 0 to run it without the holder\n")
        return 1
    finally:
        sock.close()
    sys.stdout.buffer.write(bytes(reply.get("stdout", b"")))
    sys.stdout.flush()
    sys.stderr.buffer.write(bytes(reply.get("stderr", b"")))
    sys.stderr.flush()
    return int(reply.get("exit", 1))


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _connect(path: str) -> _socket.socket | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return sock
    except OSError:
        sock.close()
        return None


def _start(state: str, persist: float) -> bool:
    """Start a holder for `state` (detached, its own session); True once it listens."""
    import subprocess

    if not os.path.isdir(state):
        return False   # the first command of a new state dir sets it up itself
    log_path = os.path.join(state, LOG)
    try:
        with open(log_path, "ab") as log:
            os.chmod(log_path, 0o600)
            subprocess.Popen([sys.executable, "-m", "spicectl.holder", state, str(persist)],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                             close_fds=True)
    except OSError:
        return False
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        sock = _connect(socket_path(state))
        if sock is not None:
            sock.close()
            return True
        time.sleep(0.01)
    return False


def release(state: str | os.PathLike[str]) -> None:
    """Ask the holder of `state` to exit (and so to let go of the private libvirt); returns once it said so."""
    path = socket_path(state)
    if not os.path.exists(path):
        return
    sock = _connect(path)
    if sock is None:
        return
    try:
        wire.send(sock, {"op": "exit"})
        wire.receive(sock)
    except (OSError, ValueError):
        pass
    finally:
        sock.close()
