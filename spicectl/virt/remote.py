"""A libvirt host's SPICE TLS files: a remote one's, reached through the SSH that its qemu+ssh URI
names, or this machine's system libvirt's, in place.

libvirt carries the API; this module only reads and writes a few files on the host
(qemu.conf and the SPICE certificate directory), running the same `ssh` with the same
user, port, key and command as libvirt's own ssh transport does for that URI.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from spicectl.errors import EnvironmentProblem, HypervisorError, InvalidInput
from spicectl.virt.host import (
    DEFAULT_CERT_DIR,
    QEMU_CONF,
    QEMU_GROUP,
    QEMU_USER,
    TLS_HOST,
    parse_qemu_conf,
    set_qemu_conf,
)

BACKUP_SUFFIX = ".spicectl-bak"
SSH_TIMEOUT = 60.0


@dataclass(frozen=True)
class SshHost:
    """How to run a command on the host of a qemu+ssh URI, as libvirt's ssh transport would."""

    uri: str
    host: str
    argv: tuple[str, ...]   # ssh and its options, up to and including the destination

    @classmethod
    def from_uri(cls, uri: str) -> SshHost:
        parts = urlsplit(uri)
        if "+ssh" not in parts.scheme or not parts.hostname:
            raise InvalidInput(f"--apply works over a qemu+ssh:// URI, not {uri}",
                               hint="for other transports, follow the steps `spicectl host setup` lists")
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        argv = [params.get("command") or "ssh", "-T", "-o", "BatchMode=yes"]
        if parts.port:
            argv += ["-p", str(parts.port)]
        if parts.username:
            argv += ["-l", parts.username]
        if params.get("keyfile"):
            argv += ["-i", params["keyfile"]]
        if params.get("no_verify") == "1":
            argv += ["-o", "StrictHostKeyChecking=no"]
        argv += ["--", parts.hostname]
        return cls(uri, parts.hostname, tuple(argv))

    @property
    def label(self) -> str:
        """The folder name of spicectl's copy of the host's certificate."""
        return self.host

    def command(self, script: str) -> list[str]:
        return [*self.argv, "sh -c " + shlex.quote(script)]

    def run(self, script: str, *, stdin: bytes = b"", what: str) -> bytes:
        """Run a POSIX shell script on the host; its stdout, or HypervisorError naming `what` failed."""
        try:
            r = subprocess.run(self.command(script), input=stdin, capture_output=True, timeout=SSH_TIMEOUT)
        except FileNotFoundError:
            raise EnvironmentProblem(f"cannot run {self.argv[0]}", hint="apt-get install openssh-client") from None
        except subprocess.TimeoutExpired:
            raise HypervisorError(f"{what} on {self.host}: ssh gave no answer in {SSH_TIMEOUT:.0f} s") from None
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip().splitlines()
            raise HypervisorError(f"{what} on {self.host} failed: {err[-1] if err else f'exit {r.returncode}'}")
        return r.stdout

    def read(self, path: str) -> bytes | None:
        """A file's bytes, or None if it does not exist."""
        out = self.run(f"if [ -e {shlex.quote(path)} ]; then printf y; cat -- {shlex.quote(path)}; fi",
                       what=f"reading {path}")
        return out[1:] if out[:1] == b"y" else None

    def write(self, path: str, data: bytes, mode: int, *, group: str | None = None) -> None:
        """Replace a file whole (a temporary file renamed over it), keeping the first original as a backup."""
        p, tmp, bak = shlex.quote(path), shlex.quote(path + ".spicectl-new"), shlex.quote(path + BACKUP_SUFFIX)
        chgrp = (f"if getent group {group} >/dev/null; then chgrp {group} {tmp}; "
                 f"else chmod {mode & 0o700:o} {tmp}; fi; ") if group else ""
        # folders as libvirt's own packages make them (QEMU's user must reach the certificates); files private
        self.run(f"set -e; umask 022; mkdir -p -- \"$(dirname -- {p})\"; umask 077; "
                 f"if [ -e {p} ] && [ ! -e {bak} ]; then cp -p -- {p} {bak}; fi; "
                 f"cat > {tmp}; chmod {mode:o} {tmp}; {chgrp}mv -f -- {tmp} {p}",
                 stdin=data, what=f"writing {path}")


class LocalHost(SshHost):
    """This machine's system libvirt, changed in place (as root) the way SshHost changes a remote one."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri, TLS_HOST, ())

    @property
    def label(self) -> str:
        return "system"   # not TLS_HOST: that is the private libvirt's, with a key of its own

    def command(self, script: str) -> list[str]:
        return ["sh", "-c", script]


def host_of(uri: str) -> SshHost:
    """How `host setup --apply` reaches the files of the libvirt a URI names."""
    from spicectl.virt.connection import LibvirtURI

    if LibvirtURI.given(uri).system:
        if os.geteuid() != 0:
            raise EnvironmentProblem(f"setting up {uri} writes {QEMU_CONF} and its SPICE certificates: root's files",
                                   hint=f"as root: spicectl --connect {uri} host setup --apply")
        return LocalHost(uri)
    return SshHost.from_uri(uri)


@dataclass
class ApplyReport:
    host: str
    cert_dir: str
    changed: list[str] = field(default_factory=list)   # what was written, one line each
    restart: str = ""                                  # what the user must restart, if anything


def apply_spice_tls(ssh: SshHost, *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> ApplyReport:
    """Install a SPICE server certificate and turn SPICE TLS on in the host's qemu.conf."""
    from spicectl.pki.ca import CA_CERT
    from spicectl.pki.issue import SERVER_CERT, key_name

    old = ssh.read(QEMU_CONF)
    if old is None:
        raise HypervisorError(f"{ssh.host} has no {QEMU_CONF}", hint="is libvirt's QEMU driver installed there?")
    text = old.decode("utf-8", errors="surrogateescape")
    cert_dir = parse_qemu_conf(text).get("spice_tls_x509_cert_dir") or DEFAULT_CERT_DIR
    report = ApplyReport(ssh.host, cert_dir)
    files = [(CA_CERT, ca_pem, 0o644, None), (SERVER_CERT, cert_pem, 0o644, None),
             (key_name("server"), key_pem, 0o640, QEMU_GROUP)]   # QEMU reads the key as its own user
    for name, data, mode, group in files:
        path = f"{cert_dir}/{name}"
        if ssh.read(path) != data:
            ssh.write(path, data, mode, group=group)
            report.changed.append(f"wrote {path}")
    new = set_qemu_conf(text, {"spice_tls": "1", "spice_tls_x509_cert_dir": f'"{cert_dir}"'})
    if new != text:
        ssh.write(QEMU_CONF, new.encode("utf-8", errors="surrogateescape"), 0o600)
        report.changed.append(f"set spice_tls = 1 and spice_tls_x509_cert_dir = \"{cert_dir}\" in {QEMU_CONF} "
                              f"(the original is {QEMU_CONF}{BACKUP_SUFFIX})")
    if report.changed:
        report.restart = (f"restart libvirt's QEMU driver on {ssh.host} (systemctl restart libvirtd, or "
                          "virtqemud): running guests keep their old settings until they are restarted")
    return report


@dataclass
class RemoteSetup:
    report: ApplyReport
    local_copy: Path        # spicectl's copy of the certificate it installed there
    created_ca: bool
    issued: bool


def setup_remote(uri: str, *, ca_dir: Path, certs_dir: Path, pki_dir: Path | None,
                 passphrase: bytes | None) -> RemoteSetup:
    """`host setup --apply`: spicectl's CA (made if there is none and nothing it issued is lying
    around), a server certificate for the URI's host (issued again unless the copy is valid), and
    both installed on the host with SPICE TLS turned on."""
    from spicectl.errors import VerificationFailed
    from spicectl.pki.ca import CA_CERT, ca_exists, init_ca, load_ca
    from spicectl.pki.issue import SERVER_CERT, SERVER_KEY, issue_server
    from spicectl.pki.profiles import load_profile
    from spicectl.pki.verify import verify_directory

    host = host_of(uri)
    local = certs_dir / "server" / host.label
    issued = created_ca = False
    if not ca_exists(ca_dir):
        if any(certs_dir.glob(f"server/*/{SERVER_CERT}")):
            raise VerificationFailed(f"spicectl's CA ({ca_dir}) is missing, but {certs_dir} holds certificates "
                                     "it issued; not making a new CA behind your back",
                                     hint=f"restore {ca_dir} from a backup, or run spicectl ca init")
        init_ca(ca_dir, load_profile("ca", pki_dir), passphrase=passphrase)
        created_ca = True
    if not local.exists() or not all(c.ok for c in verify_directory(local, host=host.host,
                                                                     trusted_ca=ca_dir / CA_CERT)):
        issue_server(load_ca(ca_dir, passphrase), load_profile("server", pki_dir), local, host=host.host, force=True)
        issued = True
    report = apply_spice_tls(host, ca_pem=(local / CA_CERT).read_bytes(), cert_pem=(local / SERVER_CERT).read_bytes(),
                             key_pem=(local / SERVER_KEY).read_bytes())
    return RemoteSetup(report, local, created_ca, issued)


@dataclass
class RemoteTls:
    """What a remote host's qemu.conf and SPICE certificate directory hold."""

    tls_on: bool
    cert_dir: str
    ca_pem: bytes | None
    cert_pem: bytes | None
    key_mode: str | None      # octal mode of the key, None if it is missing


def read_spice_tls(ssh: SshHost) -> RemoteTls:
    from spicectl.pki.ca import CA_CERT
    from spicectl.pki.issue import SERVER_CERT, key_name

    conf = parse_qemu_conf((ssh.read(QEMU_CONF) or b"").decode("utf-8", errors="replace"))
    cert_dir = conf.get("spice_tls_x509_cert_dir") or DEFAULT_CERT_DIR
    key = shlex.quote(f"{cert_dir}/{key_name('server')}")
    mode = ssh.run(f"if [ -e {key} ]; then stat -c %a -- {key}; fi", what="reading the key's mode").decode().strip()
    return RemoteTls(conf.get("spice_tls") == "1", cert_dir, ssh.read(f"{cert_dir}/{CA_CERT}"),
                     ssh.read(f"{cert_dir}/{SERVER_CERT}"), mode or None)


def verify_remote(tls: RemoteTls, *, host: str, trusted_ca: Path | None) -> list:
    """verify_directory's checks on a remote certificate (the key stays on the host: only its mode is read)."""
    import tempfile

    from spicectl.pki.ca import CA_CERT
    from spicectl.pki.issue import SERVER_CERT
    from spicectl.pki.verify import Check, verify_directory

    if tls.cert_pem is None:
        return [Check("files", False, f"no {SERVER_CERT} in {tls.cert_dir}")]
    with tempfile.TemporaryDirectory(prefix="spicectl-remote-") as d:
        (Path(d) / SERVER_CERT).write_bytes(tls.cert_pem)
        if tls.ca_pem is not None:
            (Path(d) / CA_CERT).write_bytes(tls.ca_pem)
        checks = [c for c in verify_directory(Path(d), host=host, trusted_ca=trusted_ca)
                  if c.name not in ("files", "key_file", "key_permissions")]
    if tls.key_mode is None:
        checks.append(Check("key_file", False, f"no server key in {tls.cert_dir}"))
    else:
        private = int(tls.key_mode, 8) & 0o007 == 0
        checks.append(Check("key_permissions", private, f"key mode {tls.key_mode}" if private else
                            f"the key in {tls.cert_dir} (mode {tls.key_mode}) is readable by any user"))
    return checks


def kvm_open_to(user: str, groups: list[str], *, mode: str, owner: str, group: str) -> bool:
    """Whether `user` (a member of `groups`) may read and write a device of this mode and ownership."""
    bits = int(mode, 8)
    return (owner == user and bits & 0o600 == 0o600) or (group in groups and bits & 0o060 == 0o060) \
        or bits & 0o006 == 0o006


def kvm_facts(ssh: SshHost) -> tuple[str, str, str, list[str]] | None:
    """/dev/kvm's mode, owner and group on the host, and the QEMU user's groups; None without either."""
    out = ssh.run(f"if [ -e /dev/kvm ] && id {QEMU_USER} >/dev/null 2>&1; then stat -c '%a %U %G' /dev/kvm; "
                  f"id -Gn {QEMU_USER}; fi", what="reading /dev/kvm's mode").decode().split("\n")
    if len(out) < 2 or not out[0].strip():
        return None
    mode, owner, group = out[0].split()
    return mode, owner, group, out[1].split()


# --- SASL on such a host (host setup --sasl --apply, sasl user --connect) ---
def _sasl_paths() -> tuple[str, str]:
    from spicectl.virt import sasl as S

    return f"{S.SYSTEM_DIR}/{S.CONFIG}", f"{S.SYSTEM_DIR}/{S.DATABASE}"


# Debian keeps saslpasswd2 in /usr/sbin, which a non-login ssh shell may not have on its PATH
_SASL_PATH = "PATH=$PATH:/usr/sbin:/sbin; "


def apply_sasl(ssh: SshHost, *, on: bool) -> ApplyReport:
    """Turn SPICE SASL logins on (spicectl's SASL configuration and sasldb in SYSTEM_DIR, QEMU's group
    may read them) or off in the host's qemu.conf."""
    from spicectl.virt import sasl as S

    old = ssh.read(QEMU_CONF)
    if old is None:
        raise HypervisorError(f"{ssh.host} has no {QEMU_CONF}", hint="is libvirt's QEMU driver installed there?")
    text = old.decode("utf-8", errors="surrogateescape")
    report = ApplyReport(ssh.host, S.SYSTEM_DIR)
    if on:
        ssh.run(_SASL_PATH + "command -v saslpasswd2 >/dev/null", what="looking for saslpasswd2 (sasl2-bin)")
        config, database = _sasl_paths()
        wanted = S.config_text(Path(database)).encode()
        if ssh.read(config) != wanted:
            ssh.write(config, wanted, 0o640, group=QEMU_GROUP)
            report.changed.append(f"wrote {config}")
        new = set_qemu_conf(text, {"spice_sasl": "1", "spice_sasl_dir": f'"{S.SYSTEM_DIR}"'})
        said = f'spice_sasl = 1 and spice_sasl_dir = "{S.SYSTEM_DIR}"'
    else:
        new = set_qemu_conf(text, {"spice_sasl": "0"})
        said = "spice_sasl = 0"
    if new != text:
        ssh.write(QEMU_CONF, new.encode("utf-8", errors="surrogateescape"), 0o600)
        report.changed.append(f"set {said} in {QEMU_CONF} (the original is {QEMU_CONF}{BACKUP_SUFFIX})")
    if report.changed:
        report.restart = (f"restart libvirt's QEMU driver on {ssh.host} (systemctl restart libvirtd, or "
                          "virtqemud): guests started before keep their old setting until they are restarted")
    return report


def _require_sasl(ssh: SshHost) -> str:
    config, database = _sasl_paths()
    if ssh.read(config) is None:
        raise HypervisorError(f"SASL is not set up on {ssh.host} by spicectl",
                              hint=f"spicectl --connect {ssh.uri} host setup --sasl --apply")
    return database


def remote_users(ssh: SshHost) -> list[str]:
    return _users(ssh, _require_sasl(ssh))


def _users(ssh: SshHost, database: str) -> list[str]:
    q = shlex.quote(database)
    out = ssh.run(_SASL_PATH + f"if [ -e {q} ]; then sasldblistusers2 -f {q}; fi", what="listing SASL users")
    # "alice@host: userPassword" (one line per secret the user has)
    return sorted({line.split("@", 1)[0] for line in out.decode(errors="replace").splitlines() if "@" in line})


def remote_add_user(ssh: SshHost, name: str, password: bytes, *, replace: bool = False) -> bool:
    """Add (or with `replace`, re-password) a user in the host's sasldb, the password on stdin; the
    database stays readable by QEMU's group only."""
    from spicectl.errors import Conflict
    from spicectl.virt import sasl as S

    S.check_name(name)
    S.check_password(password)
    database = _require_sasl(ssh)
    existed = name in _users(ssh, database)
    if existed and not replace:
        raise Conflict(f"SASL user {name!r} exists on {ssh.host}", hint="give --replace to set a new password")
    q = shlex.quote(database)
    ssh.run(_SASL_PATH + f"set -e; umask 077; saslpasswd2 -p -a {S.APPLICATION} -f {q} -c {shlex.quote(name)}; "
            f"if getent group {QEMU_GROUP} >/dev/null; then chgrp {QEMU_GROUP} {q}; chmod 640 {q}; fi",
            stdin=password, what=f"adding SASL user {name}")
    return existed


def remote_delete_user(ssh: SshHost, name: str) -> None:
    from spicectl.errors import NotFound
    from spicectl.virt import sasl as S

    S.check_name(name)
    database = _require_sasl(ssh)
    if name not in _users(ssh, database):
        raise NotFound(f"no SASL user {name!r} on {ssh.host}", hint="see: spicectl sasl user list")
    q = shlex.quote(database)
    ssh.run(_SASL_PATH + f"saslpasswd2 -a {S.APPLICATION} -f {q} -d {shlex.quote(name)}",
            what=f"deleting SASL user {name}")
