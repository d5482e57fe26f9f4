"""The holder's client: hand a served command to the holder (starting it if need be), or ask it to
let go of the private libvirt.

Only modules built into the interpreter are imported here (no socket, pathlib, json, subprocess
or typing: their imports cost more than the holder's answer), so a served command costs an
interpreter start and one round trip; anything unusual about the command line is left to the CLI
(`forward` returns None).
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from spicectl import paths
from spicectl.holder import DEFAULT_PERSIST, LOG, PERSIST_ENV, READ_ONLY, SERVED, SERVED_ONLY_WITH, SOCKET, wire

VALUE_OPTIONS = {"--connect", "-c", "--state-dir", "--persist"}
NOT_TRUSTED = 10   # the exit code for "the host lacks a permission": the CLI's table, not imported here
FLAG_OPTIONS = {"--json", "-q", "--quiet", "--debug", "--verbose", "-v", "-vv", "-vvv"}
START_WAIT = 5.0   # seconds a command waits for a holder it started to listen


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
    if command in SERVED_ONLY_WITH and not SERVED_ONLY_WITH[command] & set(rest):
        return None
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
    whole, _, part = text.partition(".")
    # ASCII digits only, as the CLI takes them (float() reads '٣', '1e3' and 'inf'): else the CLI says
    if not (whole.isascii() and whole.isdigit() and (not part or (part.isascii() and part.isdigit()))):
        return None
    return float(text)


def state_dir(options: dict[str, str]) -> str | None:
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
    problem = untrusted(state)
    if problem is not None:
        sys.stderr.write(f"spicectl: error: {problem}: refusing to hand it this command and its environment\n"
                         "hint: use a state dir of your own (--state-dir), or run the command with --persist 0\n")
        return NOT_TRUSTED
    sock = _connect(path)
    if sock is None:
        if not _start(state, persist):
            return None
        sock = _connect(path)
        if sock is None:
            return None
    if _peer_uid(sock) != os.getuid():
        sock.close()
        sys.stderr.write(f"spicectl: error: the process listening at {path} is not yours: refusing to hand it this "
                         "command and its environment\n")
        return NOT_TRUSTED
    request = {"op": "run", "argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "umask": paths.umask(),
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


def untrusted(state: str) -> str | None:
    """What makes `state`'s holder socket unsafe to talk to, or None: the state dir and the socket must
    be this user's, and nobody else may write to the dir (or they could put their own socket there)."""
    import stat

    uid = os.getuid()
    try:
        info = os.stat(state)   # (a state dir may be a link of the user's own to a folder elsewhere)
    except OSError:
        return None   # no state dir yet: nothing listens there
    if not stat.S_ISDIR(info.st_mode):
        return f"the state dir {state} is not a directory"
    if info.st_uid != uid:
        return f"the state dir {state} belongs to uid {info.st_uid}, not to you"
    if info.st_mode & 0o022:
        return f"others may write to the state dir {state} (mode {stat.S_IMODE(info.st_mode):o})"
    path = socket_path(state)
    try:
        sock_info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(sock_info.st_mode):
        return f"{path} is not the holder's socket (it is a {_kind(sock_info.st_mode)}); remove it"
    if sock_info.st_uid != uid:
        return f"{path} belongs to uid {sock_info.st_uid}, not to you"
    return None


def _kind(mode: int) -> str:
    import stat

    return "directory" if stat.S_ISDIR(mode) else "symbolic link" if stat.S_ISLNK(mode) else \
        "FIFO" if stat.S_ISFIFO(mode) else "regular file" if stat.S_ISREG(mode) else "special file"


def _peer_uid(sock: _socket.socket) -> int:
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)   # struct ucred: pid, uid, gid
    return int.from_bytes(creds[4:8], sys.byteorder)


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
        # never through a link: a link there would make a file of someone else's the holder's log
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        sys.stderr.write(f"spicectl: warning: cannot open {log_path} ({exc.strerror}): running without the holder\n")
        return False
    try:
        os.fchmod(fd, 0o600)
        subprocess.Popen([sys.executable, "-m", "spicectl.holder", state, str(persist)],
                         stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True, close_fds=True)
    except OSError:
        return False
    finally:
        os.close(fd)
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
    if not os.path.exists(path) or untrusted(os.fspath(state)) is not None:
        return
    sock = _connect(path)
    if sock is None:
        return
    if _peer_uid(sock) != os.getuid():
        sock.close()
        return
    try:
        wire.send(sock, {"op": "exit"})
        wire.receive(sock)
    except (OSError, ValueError):
        pass
    finally:
        sock.close()
