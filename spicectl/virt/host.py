"""The host: preparing spicectl's private embedded libvirt, and checking any host.

The private default lives under STATE/libvirt (libvirt's embed root) with
its own qemu.conf: QEMU runs as root (no system user juggling), writes its
stdio to a log file (no virtlogd), and serves SPICE over TLS with the server
certificate spicectl issued for 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spicectl.errors import AuthError, VerificationFailed
from spicectl.pki import store
from spicectl.virt import sasl

TLS_HOST = "127.0.0.1"


# a system libvirt's QEMU driver on Debian
QEMU_CONF = "/etc/libvirt/qemu.conf"
DEFAULT_CERT_DIR = "/etc/pki/libvirt-spice"   # its spice_tls_x509_cert_dir when qemu.conf names none
QEMU_USER = QEMU_GROUP = "libvirt-qemu"       # QEMU runs as this user and group


def system_cert_dir() -> Path:
    """Where a system libvirt's QEMU finds its SPICE certificates (qemu.conf is root's alone: a user in
    the libvirt group who cannot read it gets libvirt's default)."""
    return Path(read_qemu_conf(Path(QEMU_CONF)).get("spice_tls_x509_cert_dir") or DEFAULT_CERT_DIR)


def system_spice_ca() -> Path | None:
    """A local system libvirt's SPICE CA certificate, trusted only if root owns it and its folder and
    no one else may change them (it is then the host administrator's word, as /etc is)."""
    from spicectl.pki.ca import CA_CERT

    path = system_cert_dir() / CA_CERT
    try:
        for st in (os.stat(path.parent), os.stat(path)):
            if st.st_uid != 0 or st.st_mode & 0o022:
                return None
    except OSError:
        return None
    return path


def server_cert_dir(state_dir: Path) -> Path:
    return state_dir / "certs" / "server" / TLS_HOST


def qemu_conf_text(cert_dir: Path, uid: int | None = None, sasl_dir: Path | None = None) -> str:
    """The private libvirt's qemu.conf. QEMU runs as the user who runs spicectl: root says so (libvirt
    would pick its QEMU user otherwise); for anyone else libvirt's unprivileged driver already does,
    and naming root there makes it chown its folders to root, which fails ('Failed to create dbus
    state dir ... Operation not permitted')."""
    uid = os.getuid() if uid is None else uid
    return (
        "# written by spicectl for its private embedded libvirt; rewritten by `spicectl host setup`\n"
        + ('user = "root"\ngroup = "root"\n' if uid == 0 else "")
        + 'stdio_handler = "file"\n'
        "spice_tls = 1\n"
        f'spice_tls_x509_cert_dir = "{cert_dir}"\n'
        f'spice_listen = "{TLS_HOST}"\n'
        + (f'spice_sasl = 1\nspice_sasl_dir = "{sasl_dir}"\n' if sasl_dir is not None else "")
    )


@dataclass
class SetupReport:
    created_ca: bool
    issued_server_cert: bool
    wrote_qemu_conf: bool
    root: Path
    cert_dir: Path


def prepare_embedded(state_dir: Path, root: Path, *, pki_dir: Path | None = None,
                     passphrase: bytes | None = None) -> SetupReport:
    """Idempotently make the CA, the 127.0.0.1 server certificate and qemu.conf."""
    created_ca, issued, cert_dir = ensure_server_cert(state_dir, pki_dir=pki_dir, passphrase=passphrase)
    for sub in ("etc", "lib", "log", "run", "cache"):
        store.ensure_dir(root / sub)
    conf = root / "etc" / "qemu.conf"
    # SASL on (host setup --sasl) is the presence of spicectl's SASL configuration
    text = qemu_conf_text(cert_dir, sasl_dir=sasl.sasl_dir(state_dir) if sasl.enabled(state_dir) else None)
    wrote = not conf.exists() or conf.read_text() != text
    if wrote:
        store.atomic_write(conf, text.encode(), 0o600)
    return SetupReport(created_ca, issued, wrote, root, cert_dir)


def ensure_server_cert(state_dir: Path, *, pki_dir: Path | None = None,
                       passphrase: bytes | None = None) -> tuple[bool, bool, Path]:
    """spicectl's CA and its server certificate for 127.0.0.1 (made or renewed as needed): whether the
    CA was created, whether a certificate was issued, and its folder."""
    from spicectl.pki.ca import CA_CERT, ca_exists, init_ca, load_ca
    from spicectl.pki.issue import SERVER_CERT, issue_server
    from spicectl.pki.profiles import load_profile
    from spicectl.pki.verify import verify_directory

    ca_dir = state_dir / "ca"
    created_ca = issued = False
    cert_dir = server_cert_dir(state_dir)
    if not ca_exists(ca_dir):
        if (cert_dir / SERVER_CERT).exists():
            # a new CA now would leave the guests serving a certificate no client trusts
            raise VerificationFailed(
                f"spicectl's CA ({ca_dir}) is missing, but {cert_dir} holds a server certificate it issued; "
                "not making a new CA behind your back",
                hint=f"restore {ca_dir} from a backup, or start over: spicectl ca init, then "
                     f"spicectl cert renew {cert_dir} (and restart running guests)")
        init_ca(ca_dir, load_profile("ca", pki_dir), passphrase=passphrase)
        created_ca = True
    checks = verify_directory(cert_dir, host=TLS_HOST, trusted_ca=ca_dir / CA_CERT) if cert_dir.exists() else []
    foreign = [c for c in checks if c.name == "trusted_ca" and not c.ok]
    if foreign and not created_ca:
        raise VerificationFailed(f"{cert_dir}: {foreign[0].detail}",
                                 hint=f"re-issue it from the current CA: spicectl cert renew {cert_dir} "
                                      "(and restart running guests)")
    if not checks or not all(c.ok for c in checks):
        try:
            authority = load_ca(ca_dir, passphrase)
        except AuthError as exc:
            raise AuthError(f"the private libvirt needs a server certificate, but {exc.message}",
                            hint="run `spicectl host setup` with --passphrase-file once") from None
        issue_server(authority, load_profile("server", pki_dir), cert_dir, host=TLS_HOST,
                     dns=["localhost"], ips=["::1"], force=True)
        issued = True
    return created_ca, issued, cert_dir


SESSION_URI = "qemu:///session"
SESSION_DAEMONS = ("virtqemud", "libvirtd")   # what libvirt spawns for a user's qemu:///session


def session_qemu_conf() -> Path:
    """The qemu.conf a user's qemu:///session daemon reads."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "libvirt" / "qemu.conf"


def set_qemu_conf(text: str, settings: dict[str, str]) -> str:
    """`text` with each key set to its (already quoted) value: a live line is replaced in place,
    a missing key is appended; comments and every other line stay as they were."""
    lines = text.splitlines()
    done: set[str] = set()
    for i, line in enumerate(lines):
        key = line.split("#", 1)[0].partition("=")[0].strip()
        if "=" in line.split("#", 1)[0] and key in settings:
            lines[i] = f"{key} = {settings[key]}" if key not in done else f"# {line}  (spicectl: set above)"
            done.add(key)
    missing = [k for k in settings if k not in done]
    if missing:
        lines += ["", "# SPICE TLS with spicectl's CA (spicectl host setup)"]
        lines += [f"{k} = {settings[k]}" for k in missing]
    return "\n".join(lines) + "\n"


@dataclass
class SessionReport:
    created_ca: bool
    issued_server_cert: bool
    qemu_conf: Path
    changed: bool
    restarted: list[int]   # pids of session daemons ended so that the next connection reads the file


def setup_session(state_dir: Path, *, pki_dir: Path | None = None, passphrase: bytes | None = None) -> SessionReport:
    """SPICE TLS for the user's own qemu:///session: spicectl's certificate for 127.0.0.1 in its
    qemu.conf (other settings kept, a backup of the old file beside it), and the session daemon
    ended if the file changed (libvirt starts it again on the next connection; guests keep running)."""
    created_ca, issued, cert_dir = ensure_server_cert(state_dir, pki_dir=pki_dir, passphrase=passphrase)
    conf = session_qemu_conf()
    old = conf.read_text() if conf.exists() else ""
    text = set_qemu_conf(old, {"spice_tls": "1", "spice_tls_x509_cert_dir": f'"{cert_dir}"',
                                 "spice_listen": f'"{TLS_HOST}"'})
    changed = text != old
    restarted: list[int] = []
    if changed:
        store.ensure_dir(conf.parent)
        if old:
            store.atomic_write(conf.with_name(conf.name + ".spicectl-bak"), old.encode(), 0o600)
        store.atomic_write(conf, text.encode(), 0o600)
        restarted = _end_session_daemons()
    return SessionReport(created_ca, issued, conf, changed, restarted)


def _end_session_daemons(grace: float = 10.0) -> list[int]:
    import signal
    import time

    ended = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or entry.stat().st_uid != os.getuid():
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode(errors="replace")).name in SESSION_DAEMONS:
            try:
                os.kill(int(entry.name), signal.SIGTERM)
                ended.append(int(entry.name))
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    while any(Path(f"/proc/{pid}").exists() for pid in ended) and time.monotonic() < deadline:
        time.sleep(0.05)
    return ended


ROOT_LOCK = "spicectl.lock"
ROOT_LOCK_WAIT = 120.0


def lock_root(root: Path, *, wait: float = ROOT_LOCK_WAIT, on_busy: Callable[[], None] | None = None) -> int:
    """The private root's lock: one process uses the embedded libvirt at a time (two reconnecting
    to a guest at once would fight over its monitor)."""
    from spicectl.locks import lock

    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return lock(root / ROOT_LOCK, wait=wait, on_busy=on_busy,
                busy=f"another spicectl holds {root} for more than {wait:.0f}s")


def setup_private(state_dir: Path, root: Path, *, pki_dir: Path | None = None, passphrase: bytes | None = None,
                  on_busy: Callable[[], None] | None = None) -> SetupReport:
    """`prepare_embedded` under the private root's lock (another spicectl may be using the root)."""
    fd = lock_root(root, on_busy=on_busy)
    try:
        return prepare_embedded(state_dir, root, pki_dir=pki_dir, passphrase=passphrase)
    finally:
        os.close(fd)


def manual_setup_steps(certs_dir: Path) -> list[str]:
    """What a system libvirt needs for SPICE TLS, done by hand (spicectl does not edit its qemu.conf)."""
    from spicectl.pki.issue import key_name

    cert = certs_dir / "server" / "HOSTNAME"
    return [
        f"spicectl cert issue server --host HOSTNAME --out {cert}",
        f"in {QEMU_CONF}: spice_tls = 1 and spice_tls_x509_cert_dir = \"{cert}\"",
        f"make {key_name('server')} readable by the QEMU user (group {QEMU_GROUP}, mode 0640), then restart libvirtd",
    ]


@dataclass
class HostCheck:
    name: str
    ok: bool
    detail: str
    severity: str = "error"   # error | warning

    def as_dict(self) -> dict:
        return {"check": self.name, "ok": self.ok, "severity": self.severity, "detail": self.detail}


def find_qemu(arch: str = "x86_64") -> str | None:
    return shutil.which(f"qemu-system-{arch}") or (
        f"/usr/bin/qemu-system-{arch}" if os.path.exists(f"/usr/bin/qemu-system-{arch}") else None
    )


def qemu_has_spice(binary: str) -> bool:
    try:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "\n-spice " in out


def domcaps_support_spice(domcaps_xml: str) -> bool:
    from lxml import etree

    caps = etree.fromstring(domcaps_xml.encode())
    return "spice" in caps.xpath("devices/graphics[@supported='yes']/enum[@name='type']/value/text()")


def user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def parse_qemu_conf(text: str) -> dict[str, str]:
    """The `key = value` settings of a qemu.conf (comments dropped, quotes stripped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


def read_qemu_conf(path: Path) -> dict[str, str]:
    """The few keys spicectl cares about, from a qemu.conf file (none if it cannot be read)."""
    try:
        return parse_qemu_conf(path.read_text())
    except OSError:
        return {}


PROBE = "capability probe"


@dataclass
class Orphan:
    pid: int
    what: str


def find_orphans(root: Path) -> list[Orphan]:
    """QEMU processes of the private root that no guest accounts for: capability probes and guests
    left behind by a killed libvirt user. Call with the root's lock held and libvirt open, so that
    no probe of our own is under way."""
    guests: set[int] = set()
    for pidfile in (root / "run" / "qemu").glob("*.pid"):
        try:
            guests.add(int(pidfile.read_text().strip()))
        except (OSError, ValueError):
            pass
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in guests or not _our_qemu(int(entry.name), root):
            continue
        try:
            probe = b"/lib/qemu/qmp-" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
        found.append(Orphan(int(entry.name), PROBE if probe else "QEMU no guest accounts for"))
    return found


def _our_qemu(pid: int, root: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    marker = (str(root.resolve()) + "/").encode()
    return bool(argv) and Path(argv[0].decode(errors="replace")).name.startswith("qemu-system") and \
        any(marker in a for a in argv)


def clear_interrupted_starts(root: Path) -> list[str]:
    """Forget guests whose start a killed libvirt user left half-done; return their names.

    A status file that still records libvirt's `start` job means the process that ran it is gone
    (call with the root's lock held, before libvirt opens it). libvirt would then wait on that
    job's lock for every later call, and a guest whose QEMU never got past the start handshake
    is not running anyway. Its QEMU, if any, is still paused before the guest's first instruction,
    and libvirt kills a guest found starting up as well: end it and drop the status files, so
    the guest is simply shut off (a `vm create` then finds its marker and remakes it).
    """
    import signal

    ended = []
    run = root / "run" / "qemu"
    for status in run.glob("*.xml"):
        try:
            text = status.read_text(errors="replace")
        except OSError:
            continue
        if "async='start'" not in text:
            continue
        name = status.stem
        pidfile = run / f"{name}.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and _our_qemu(pid, root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for leftover in (status, run / f"{name}.xml.new", pidfile):
            leftover.unlink(missing_ok=True)
        # its private folder (keys, monitor socket) would be taken up again by the next start
        own = re.compile(r"domain-\d+-" + re.escape(name))
        for folder in (root / "lib" / "qemu").glob("domain-*"):
            if own.fullmatch(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
        ended.append(name)
    return ended


def end_stray_probes(root: Path) -> list[Orphan]:
    """End the capability probes a killed libvirt user left (and their qmp-* folders). Call with the
    root's lock held and before libvirt opens it: then no probe is anyone's own. A stray probe
    otherwise lived on through every later command (it holds no lock libvirt would notice)."""
    probes = [o for o in find_orphans(root) if o.what == PROBE]
    return end_orphans(root, probes, grace=1.0) if probes else []


def end_orphans(root: Path, orphans: list[Orphan], grace: float = 3.0) -> list[Orphan]:
    """SIGTERM, then SIGKILL after `grace`; then remove capability-probe folders nothing uses."""
    import signal
    import time

    for orphan in orphans:
        try:
            os.kill(orphan.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for orphan in orphans:
        while Path(f"/proc/{orphan.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            os.kill(orphan.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for folder in (root / "lib" / "qemu").glob("qmp-*"):
        shutil.rmtree(folder, ignore_errors=True)
    return orphans
