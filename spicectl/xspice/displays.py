"""The Xspice displays spicectl runs: start one (Xorg with spiceqxl, then the session's programs),
find them, say how a client reaches one, stop one.

Each display has a folder, STATE_DIR/xspice/N (0700): `xorg.conf`, `xorg.log`, `session.log`, the
password (0600) and `display.json`, the record of what runs (each process with its start time,
so a PID the kernel gave to someone else since is never signalled).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spicectl.errors import Conflict, EnvironmentProblem, InvalidInput, NotFound, SpicectlError, TimeoutExpired
from spicectl.pki.store import atomic_write, ensure_dir
from spicectl.xspice.config import XspiceSpec, environment, xorg_args, xorg_conf

XORG_CANDIDATES = ("/usr/lib/xorg/Xorg", "Xorg")   # the server itself, not Debian's setuid wrapper
DRIVER = "/usr/lib/xorg/modules/drivers/spiceqxl_drv.so"
VDAGENTD, VDAGENT = "spice-vdagentd", "spice-vdagent"
RECORD, PASSWORD, CONF, XLOG, SESSION_LOG = "display.json", "password", "xorg.conf", "xorg.log", "session.log"
FIRST_PORT = 5950
LOOPBACKS = ("127.0.0.1", "::1", "localhost")
STOP_SECONDS = 10.0


@dataclass
class Proc:
    pid: int
    started: int          # /proc/PID/stat's start time: the same PID later is another process
    what: str             # "xorg", "agent daemon", "agent", or the session command


@dataclass
class DisplayRecord:
    display: int
    listen: str
    tls_port: int | None
    port: int | None
    insecure: bool
    x509_dir: str | None
    agent: bool
    audio: bool
    procs: list[Proc] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def xorg(self) -> Proc:
        return next(p for p in self.procs if p.what == "xorg")


def root(state_dir: Path) -> Path:
    return state_dir / "xspice"


def folder(state_dir: Path, display: int) -> Path:
    return root(state_dir) / str(display)


def xorg_binary() -> str | None:
    for candidate in XORG_CANDIDATES:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    return None


def missing_parts() -> list[str]:
    """What this host lacks to run Xspice (Debian package names)."""
    missing = []
    if xorg_binary() is None:
        missing.append("xserver-xorg-core")
    if not Path(DRIVER).exists():
        missing.append("xserver-xspice")
    return missing


def agent_available() -> bool:
    return shutil.which(VDAGENTD) is not None and shutil.which(VDAGENT) is not None


def _start_time(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rpartition(")")[2].split()[19])


def alive(proc: Proc) -> bool:
    return _start_time(proc.pid) == proc.started


def _spawn(args: list[str], *, env: dict[str, str], log: Path, what: str) -> tuple[subprocess.Popen, Proc]:
    with open(log, "ab") as out:
        os.fchmod(out.fileno(), 0o600)
        try:
            child = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True)
        except OSError as exc:
            raise EnvironmentProblem(f"cannot run {args[0]}: {exc.strerror or exc}") from None
    started = _start_time(child.pid)
    return child, Proc(child.pid, started if started is not None else -1, what)


def read_record(state_dir: Path, display: int) -> DisplayRecord | None:
    path = folder(state_dir, display) / RECORD
    try:
        data = json.loads(path.read_text())
        procs = [Proc(**p) for p in data.pop("procs")]
        return DisplayRecord(**data, procs=procs)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise EnvironmentProblem(f"{path} is unreadable ({exc})", hint=f"remove {path.parent}") from None


def _write_record(state_dir: Path, record: DisplayRecord) -> None:
    atomic_write(folder(state_dir, record.display) / RECORD, json.dumps(asdict(record), indent=2).encode(), 0o600)


def running(state_dir: Path) -> list[DisplayRecord]:
    """Every display with a record, lowest number first (dead ones too: `alive(record.xorg)` says)."""
    found = []
    base = root(state_dir)
    if base.is_dir():
        for entry in base.iterdir():
            if entry.name.isdigit():
                record = read_record(state_dir, int(entry.name))
                if record is not None:
                    found.append(record)
    return sorted(found, key=lambda r: r.display)


def _display_taken(display: int) -> bool:
    return Path(f"/tmp/.X11-unix/X{display}").exists() or Path(f"/tmp/.X{display}-lock").exists()


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str, *, avoid: tuple[int, ...] = ()) -> int:
    for port in range(FIRST_PORT, FIRST_PORT + 1000):
        if port not in avoid and _port_free(host, port):
            return port
    raise EnvironmentProblem(f"no free port on {host} from {FIRST_PORT} to {FIRST_PORT + 999}")


def _accepting(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host if host not in ("0.0.0.0", "::") else "127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _log_errors(log: Path, limit: int = 3) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.split("(EE)", 1)[1].strip() for line in lines
              if "(EE)" in line and "Failed to load module" not in line and "dbus" not in line]
    errors = [e for e in errors if e]
    return "; ".join(errors[:limit])


def start(state_dir: Path, spec: XspiceSpec, *, password: bytes | None, run: list[str], agent: bool,
          timeout: float = 30.0, progress: Callable[[str], None] = lambda _m: None) -> DisplayRecord:
    """Start the X server for `spec`, then the agent and the `run` commands (sh -c, DISPLAY set), and
    return the record once the display's SPICE port accepts connections. Anything started is
    stopped again if a later step fails."""
    missing = missing_parts()
    if missing:
        raise EnvironmentProblem("Xspice needs " + ", ".join(missing),
                                 hint="apt-get install " + " ".join(missing))
    if agent and not agent_available():
        raise EnvironmentProblem("--agent needs spice-vdagent (spice-vdagentd and spice-vdagent)",
                                 hint="apt-get install spice-vdagent, or start without --agent")
    old = read_record(state_dir, spec.display)
    if old is not None and alive(old.xorg):
        raise Conflict(f"Xspice display :{spec.display} is already running",
                       hint=f"spicectl xspice stop :{spec.display}")
    if _display_taken(spec.display):
        raise Conflict(f"X display :{spec.display} is taken (/tmp/.X11-unix/X{spec.display} exists)",
                       hint="choose another display number")
    for port in (spec.tls_port, spec.port):
        if port is not None and not _port_free(spec.listen, port):
            raise Conflict(f"port {port} on {spec.listen} is in use", hint="choose another, or leave it to spicectl")
    xorg = xorg_binary()
    assert xorg is not None
    here = folder(state_dir, spec.display)
    if here.exists():
        shutil.rmtree(here)   # what a dead display left
    ensure_dir(here)
    if spec.playback_dir is not None:
        ensure_dir(spec.playback_dir)
    conf = here / CONF
    atomic_write(conf, xorg_conf(spec).encode(), 0o600)
    if password is not None:
        atomic_write(here / PASSWORD, password, 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XSPICE_", "DISPLAY"))}
    try:
        env.update(environment(spec, password))
    except UnicodeDecodeError:
        raise InvalidInput("the password is not UTF-8 text") from None
    record = DisplayRecord(spec.display, spec.listen, spec.tls_port, spec.port, not spec.ticketing,
                           str(spec.x509_dir) if spec.x509_dir else None, agent, spec.playback_dir is not None,
                           started_at=time.time())
    progress(f"starting Xorg on :{spec.display}")
    child, proc = _spawn([xorg, *xorg_args(spec, conf, here / XLOG)], env=env, log=here / "xorg.out", what="xorg")
    record.procs.append(proc)
    _write_record(state_dir, record)
    try:
        _wait_ready(child, spec, here, timeout)
        session_env = {**{k: v for k, v in env.items() if not k.startswith("XSPICE_")},
                       "DISPLAY": f":{spec.display}"}
        if agent:
            progress("starting the agent")
            assert spec.agent_virtio is not None and spec.agent_uinput is not None
            udcs = here / "vdagent.sock"
            _, daemon = _spawn([shutil.which(VDAGENTD) or VDAGENTD, "-f", "-x", "-X", "-S", str(udcs),
                                "-s", str(spec.agent_virtio), "-u", str(spec.agent_uinput)],
                               env=session_env, log=here / "agent.log", what="agent daemon")
            record.procs.append(daemon)
            _wait_path(udcs, timeout, "spice-vdagentd did not open its socket", here / "agent.log")
            _, session_agent = _spawn([shutil.which(VDAGENT) or VDAGENT, "-x", "-s", str(spec.agent_virtio),
                                       "-S", str(udcs)], env=session_env, log=here / "agent.log", what="agent")
            record.procs.append(session_agent)
        for command in run:
            progress(f"running {command}")
            _, p = _spawn(["/bin/sh", "-c", command], env=session_env, log=here / SESSION_LOG, what=command)
            record.procs.append(p)
        _write_record(state_dir, record)
    except BaseException:
        _stop_procs(record)
        _write_record(state_dir, record)
        raise
    return record


def _wait_ready(child: subprocess.Popen, spec: XspiceSpec, here: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    port = spec.tls_port if spec.tls_port is not None else spec.port
    assert port is not None
    while time.monotonic() < deadline:
        if child.poll() is not None:
            why = _log_errors(here / XLOG) or f"exit status {child.returncode}"
            raise EnvironmentProblem(f"Xorg for :{spec.display} stopped at start: {why}",
                                     hint=f"its log: {here / XLOG}")
        if Path(f"/tmp/.X11-unix/X{spec.display}").exists() and _accepting(spec.listen, port):
            return
        time.sleep(0.1)
    raise TimeoutExpired(f"Xorg for :{spec.display} was not serving SPICE on port {port} within {timeout:g}s",
                         hint=f"its log: {here / XLOG}")


def _wait_path(path: Path, timeout: float, message: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutExpired(message, hint=f"its log: {log}")
        time.sleep(0.1)


def _stop_procs(record: DisplayRecord) -> list[str]:
    """SIGTERM each process of the display still alive (the session's first, the X server last),
    SIGKILL what is left after STOP_SECONDS; the names of those that had to be killed."""
    order = [p for p in record.procs if p.what != "xorg"][::-1] + [p for p in record.procs if p.what == "xorg"]
    live = [p for p in order if alive(p)]
    for p in live:
        try:
            if p.what == "xorg":
                os.kill(p.pid, signal.SIGTERM)
            else:
                # each program leads a process group of its own (started under sh): its children go too
                os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline and any(alive(p) for p in live):
        time.sleep(0.1)
    killed = []
    for p in live:
        if alive(p):
            killed.append(p.what)
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return killed


def stop(state_dir: Path, display: int) -> tuple[DisplayRecord, list[str]]:
    """Stop display `display`'s processes and forget its password and record (its logs stay)."""
    record = read_record(state_dir, display)
    if record is None:
        raise NotFound(f"no Xspice display :{display}", hint="spicectl xspice list")
    killed = _stop_procs(record)
    here = folder(state_dir, display)
    for name in (RECORD, PASSWORD):
        try:
            os.unlink(here / name)
        except FileNotFoundError:
            pass
    return record, killed


@dataclass(frozen=True)
class DisplayAccess:
    """How a client reaches a running display (the CLI turns it into a guest's access)."""
    name: str
    host: str
    port: int | None
    tls_port: int | None
    password: str
    x509_dir: str | None


def access(state_dir: Path, display: int, *, plain: bool = False) -> DisplayAccess:
    record = read_record(state_dir, display)
    if record is None or not alive(record.xorg):
        raise NotFound(f"Xspice display :{display} is not running", hint=f"spicectl xspice start :{display}")
    if plain and record.port is None:
        raise InvalidInput(f":{display} has no plain port", hint="start it with --port N, or use TLS")
    password = ""
    if not record.insecure:
        try:
            password = (folder(state_dir, display) / PASSWORD).read_bytes().decode()
        except (OSError, UnicodeDecodeError) as exc:
            raise SpicectlError(f":{display}'s password is unreadable ({exc})",
                                hint=f"restart it: spicectl xspice stop :{display}; spicectl xspice start "
                                     f":{display}") from None
    host = record.listen if record.listen not in ("0.0.0.0", "::") else "127.0.0.1"
    return DisplayAccess(f":{display}", host, record.port, None if plain else record.tls_port, password,
                         record.x509_dir)


def new_password() -> bytes:
    return secrets.token_urlsafe(24).encode()
