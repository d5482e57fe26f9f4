"""`spicectl host check`: is this host ready for SPICE guests? Each check reports; none repairs."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from spicectl.virt.host import QEMU_USER, HostCheck

if TYPE_CHECKING:
    from spicectl.settings import Settings


def run_checks(s: Settings, *, on_busy: Callable[[], None] | None = None) -> list[HostCheck]:
    """Every check `spicectl host check` reports, in order; none of them changes anything."""
    from spicectl.errors import EnvironmentProblem, SpicectlError
    from spicectl.image.build import check_host, unprivileged_problem
    from spicectl.pki.ca import CA_CERT
    from spicectl.pki.verify import verify_directory
    from spicectl.spice.codecs import accel
    from spicectl.virt import host as H
    from spicectl.virt.connection import open_hypervisor, resolve
    from spicectl.virt.kvm import probe

    checks: list[HostCheck] = []
    qemu = H.find_qemu()
    checks.append(
        HostCheck("qemu", qemu is not None, qemu or "qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    )
    if qemu:
        spice = H.qemu_has_spice(qemu)
        checks.append(
            HostCheck("qemu_spice", spice, "QEMU is built with SPICE" if spice else f"{qemu} has no -spice option")
        )
    kvm = probe(s.state_dir, s.image_cache)
    checks.append(HostCheck("accel", True, f"KVM: {kvm.detail}" if kvm.usable else
                              f"TCG: {kvm.detail}; guests run under TCG (slower; --virt-type kvm forces KVM)",
                              severity="error" if kvm.usable else "warning"))
    try:
        check_host()
        problem = unprivileged_problem()
        checks.append(HostCheck("images", True, "mmdebstrap and mkfs.ext4 present: spicectl image build works"
                                  if problem is None else f"as you, spicectl image build cannot work: {problem}; "
                                  "or build as root once and share the cache (SPICECTL_IMAGE_CACHE)",
                                  severity="error" if problem is None else "warning"))
    except EnvironmentProblem as exc:
        checks.append(HostCheck("images", True, f"{exc.message} ({exc.hint})", severity="warning"))
    checks.append(HostCheck("decoders", True, f"image decoders: {accel.describe()}",
                            severity="error" if accel.native is not None else "warning"))
    target = resolve(s.connect, s.state_dir)
    session = target.uri == H.SESSION_URI
    if (target.embedded or session) and os.getuid() != 0:
        # the unprivileged embedded driver runs QEMU as the user who runs spicectl: no QEMU user needed
        checks.append(HostCheck("users", True, f"QEMU runs as you ({pwd.getpwuid(os.getuid()).pw_name})"))
    else:
        user_needed = QEMU_USER
        has_user = H.user_exists(user_needed)
        checks.append(
            HostCheck(
                "users",
                has_user,
                f"user {user_needed} present"
                if has_user
                else f"user {user_needed} missing; libvirt's QEMU driver requires it "
                "(apt-get install libvirt-daemon-system)",
            )
        )
    try:
        # prepare=False: a check reports what is there; it must not repair it on the way
        with open_hypervisor(s.connect, s.state_dir, pki_dir=s.pki_dir, prepare=False,
                             on_busy=on_busy) as hv:
            ver = hv.conn.getLibVersion()
            checks.append(
                HostCheck(
                    "libvirt",
                    True,
                    f"{target.uri} reachable (libvirt {ver // 1000000}.{ver // 1000 % 1000}.{ver % 1000})",
                )
            )
            if target.embedded and target.root is not None:
                orphans = H.find_orphans(target.root)
                checks.append(HostCheck("orphans", not orphans, "no stray QEMU processes under the private root"
                                          if not orphans else "stray QEMU under the private root: " +
                                          ", ".join(f"pid {o.pid} ({o.what})" for o in orphans) +
                                          "; spicectl host stop ends them"))
    except SpicectlError as exc:
        checks.append(HostCheck("libvirt", False, exc.message))
    if not target.embedded and not target.local and "+ssh" in target.uri.split("://", 1)[0]:
        checks += _remote_checks(target.uri, s.ca_dir / CA_CERT)
        return checks
    if not target.embedded and target.local and not session:
        checks.append(_kvm_for_qemu_user(_local_kvm_facts()))
    if session and Path("/dev/kvm").exists() and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        # the session daemon probes QEMU as this user: a /dev/kvm it cannot open makes every call re-probe
        checks.append(HostCheck("kvm_user", True, "/dev/kvm is closed to you: the session libvirt probes QEMU "
                                  "again on every call (seconds each); as root: usermod -aG kvm "
                                  f"{pwd.getpwuid(os.getuid()).pw_name}, then log in again", severity="warning"))
    if target.embedded and target.root is not None:
        conf = H.read_qemu_conf(target.root / "etc" / "qemu.conf")
        cert_dir = conf.get("spice_tls_x509_cert_dir")
        checks.append(_sasl_check(s.state_dir, conf))
    elif session:   # the user's own daemon reads the user's own qemu.conf
        conf = H.read_qemu_conf(H.session_qemu_conf())
        cert_dir = conf.get("spice_tls_x509_cert_dir")
    elif target.local and not os.access(H.QEMU_CONF, os.R_OK):
        return checks + _system_checks_unprivileged()
    elif target.local:
        conf = H.read_qemu_conf(Path(H.QEMU_CONF))
        cert_dir = conf.get("spice_tls_x509_cert_dir", H.DEFAULT_CERT_DIR)
    else:
        conf, cert_dir = None, None
    if conf is None:
        checks.append(HostCheck("spice_tls", True, f"cannot read qemu.conf on a remote host ({target.uri}); "
                                  "check spice_tls there", severity="warning"))
    elif target.embedded and target.root is not None and not (target.root / "etc" / "qemu.conf").exists():
        checks.append(HostCheck("spice_tls", True, "the private libvirt is not set up yet: the first vm create "
                                  "(or spicectl host setup) sets it up with SPICE TLS", severity="warning"))
    else:
        tls_on = conf.get("spice_tls") == "1"
        checks.append(HostCheck("spice_tls", tls_on, "spice_tls = 1 in qemu.conf" if tls_on else
                                  "spice_tls is off in qemu.conf: guests cannot serve TLS" +
                                  (f" (spicectl --connect {H.SESSION_URI} host setup turns it on)" if session else "")))
        if tls_on and cert_dir:
            listen = conf.get("spice_listen", "127.0.0.1")
            # the private default serves spicectl's own certificate: it must chain to spicectl's current CA
            ours = s.ca_dir / CA_CERT if target.embedded or session else None
            results = verify_directory(Path(cert_dir), host=listen if listen not in ("0.0.0.0", "::") else None,
                                       trusted_ca=ours)
            bad = [c for c in results if not c.ok]
            checks.append(HostCheck("spice_cert", not bad, f"{cert_dir} valid for {listen}" if not bad else
                                      f"{cert_dir}: " + "; ".join(c.detail for c in bad)))
    return checks


def _system_checks_unprivileged() -> list[HostCheck]:
    """A system libvirt seen by a user in its group: qemu.conf is root's alone, its SPICE folder is
    readable (its key only by QEMU's group)."""
    from spicectl.pki.ca import CA_CERT
    from spicectl.pki.issue import SERVER_CERT, key_name
    from spicectl.virt import host as H
    from spicectl.virt.remote import RemoteTls, verify_remote

    d = H.system_cert_dir()

    def read(name: str) -> bytes | None:
        try:
            return (d / name).read_bytes()
        except OSError:
            return None

    try:
        mode: str | None = f"{stat.S_IMODE(os.stat(d / key_name('server')).st_mode):o}"
    except OSError:
        mode = None
    tls = RemoteTls(False, str(d), read(CA_CERT), read(SERVER_CERT), mode)
    bad = [c for c in verify_remote(tls, host=H.TLS_HOST, trusted_ca=None) if not c.ok]
    trusted = H.system_spice_ca() is not None
    problems = [c.detail for c in bad] + ([] if trusted else [f"{CA_CERT} is not root's alone: not trusted"])
    return [HostCheck("spice_tls", True, f"{H.QEMU_CONF} is root's alone: whether spice_tls is on, root's "
                      "spicectl --connect qemu:///system host check says", severity="warning"),
            HostCheck("spice_cert", not problems,
                      f"{d} valid for {H.TLS_HOST}; its CA ({CA_CERT}) is the one spicectl trusts for this host"
                      if not problems else f"{d}: " + "; ".join(problems))]


def _remote_checks(uri: str, our_ca: Path) -> list[HostCheck]:
    """SPICE TLS on a qemu+ssh host, read through the URI's SSH: qemu.conf, the certificate, /dev/kvm."""
    from spicectl.errors import SpicectlError
    from spicectl.virt.remote import SshHost, kvm_facts, read_spice_tls, verify_remote

    ssh = SshHost.from_uri(uri)
    try:
        tls = read_spice_tls(ssh)
        kvm = kvm_facts(ssh)
    except SpicectlError as exc:
        return [HostCheck("spice_tls", False, exc.message)]
    checks = [HostCheck("spice_tls", tls.tls_on, f"spice_tls = 1 in {ssh.host}'s qemu.conf" if tls.tls_on else
                        f"spice_tls is off in {ssh.host}'s qemu.conf: guests cannot serve TLS "
                        "(spicectl host setup --apply turns it on)")]
    if tls.tls_on:
        bad = [c for c in verify_remote(tls, host=ssh.host, trusted_ca=our_ca) if not c.ok]
        checks.append(HostCheck("spice_cert", not bad,
                                f"{ssh.host}:{tls.cert_dir} valid for {ssh.host} and issued by spicectl's CA"
                                if not bad else f"{ssh.host}:{tls.cert_dir}: " + "; ".join(c.detail for c in bad)))
    checks.append(_kvm_for_qemu_user(kvm))
    return checks


def _local_kvm_facts() -> tuple[str, str, str, list[str]] | None:
    import grp
    import os
    import pwd
    import stat


    try:
        st = os.stat("/dev/kvm")
        user = pwd.getpwnam(QEMU_USER)
    except (OSError, KeyError):
        return None
    groups = [g.gr_name for g in grp.getgrall() if QEMU_USER in g.gr_mem]
    groups.append(grp.getgrgid(user.pw_gid).gr_name)
    owner = pwd.getpwuid(st.st_uid).pw_name
    return f"{stat.S_IMODE(st.st_mode):o}", owner, grp.getgrgid(st.st_gid).gr_name, groups


def _kvm_for_qemu_user(facts: tuple[str, str, str, list[str]] | None) -> HostCheck:
    """libvirt caches QEMU's capabilities with KVM on, then finds that its QEMU user cannot open
    /dev/kvm, calls the cache stale and probes QEMU again: on every define (about 50 s each here)."""
    from spicectl.virt.remote import kvm_open_to

    if facts is None:
        return HostCheck("kvm_user", True, f"no /dev/kvm (or no {QEMU_USER} user): nothing to re-probe")
    mode, owner, group, groups = facts
    ok = kvm_open_to(QEMU_USER, groups, mode=mode, owner=owner, group=group)
    return HostCheck("kvm_user", ok, f"{QEMU_USER} can open /dev/kvm" if ok else
                     f"/dev/kvm ({owner}:{group} {mode}) is closed to {QEMU_USER}: libvirt probes QEMU again on "
                     f"every call (a define takes about a minute); chgrp kvm /dev/kvm; chmod 660 /dev/kvm",
                     severity="error" if ok else "warning")


def _sasl_check(state_dir: Path, conf: dict[str, str]) -> HostCheck:
    """Whether the private libvirt's SPICE servers take SASL logins, and from how many users."""
    from spicectl.errors import SpicectlError
    from spicectl.virt import sasl as S

    if not S.enabled(state_dir):
        return HostCheck("sasl", True, "SASL logins off: clients log in with one-time tickets "
                                       "(spicectl host setup --sasl turns them on)")
    if conf.get("spice_sasl") != "1":
        return HostCheck("sasl", False, "SASL is set up but not in qemu.conf yet: run spicectl host setup")
    try:
        users = S.list_users(state_dir)
    except SpicectlError as exc:
        return HostCheck("sasl", False, f"SASL logins on, but its users cannot be read: {exc.message}")
    return HostCheck("sasl", bool(users), f"SASL logins on (SCRAM-SHA-256): {len(users)} user"
                     f"{'' if len(users) == 1 else 's'}" + ("" if users else "; add one: spicectl sasl user add NAME"))
