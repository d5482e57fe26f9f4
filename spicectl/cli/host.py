"""`spicectl host`: is this host ready for SPICE guests, and spicectl's private libvirt."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT, passphrase_options, read_passphrase


@click.group()
def host() -> None:
    """Check and set up this host (and spicectl's private libvirt)."""


def run_checks(app: App) -> list:
    from pathlib import Path

    from spicectl.errors import SpicectlError
    from spicectl.pki.verify import verify_directory
    from spicectl.virt import host as H
    from spicectl.virt.connection import open_hypervisor, resolve

    s = app.settings
    checks: list[H.HostCheck] = []
    qemu = H.find_qemu()
    checks.append(H.HostCheck("qemu", qemu is not None, qemu or "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"))
    if qemu:
        spice = H.qemu_has_spice(qemu)
        checks.append(H.HostCheck("qemu_spice", spice, "QEMU is built with SPICE" if spice else f"{qemu} has no -spice option"))
    from spicectl.virt.kvm import probe

    kvm = probe(s.state_dir, s.image_cache)
    checks.append(H.HostCheck("accel", True, f"KVM: {kvm.detail}" if kvm.usable else
                              f"TCG: {kvm.detail}; guests run under TCG (slower; --virt-type kvm forces KVM)",
                              severity="error" if kvm.usable else "warning"))
    from spicectl.errors import EnvironmentProblem
    from spicectl.image.build import check_host

    try:
        check_host()
        checks.append(H.HostCheck("images", True, "mmdebstrap and mkfs.ext4 present: spicectl image build works"))
    except EnvironmentProblem as exc:
        checks.append(H.HostCheck("images", True, f"{exc.message} ({exc.hint})", severity="warning"))
    target = resolve(s.connect, s.state_dir)
    user_needed = "libvirt-qemu"
    has_user = H.user_exists(user_needed)
    checks.append(H.HostCheck("users", has_user, f"user {user_needed} present" if has_user else
                              f"user {user_needed} missing; libvirt's QEMU driver requires it (apt-get install libvirt-daemon-system)"))
    try:
        # prepare=False: a check reports what is there; it must not repair it on the way
        with open_hypervisor(s.connect, s.state_dir, pki_dir=s.pki_dir, prepare=False) as hv:
            ver = hv.conn.getLibVersion()
            checks.append(H.HostCheck("libvirt", True, f"{target.uri} reachable (libvirt {ver // 1000000}.{ver // 1000 % 1000}.{ver % 1000})"))
            if target.embedded and target.root is not None:
                orphans = H.find_orphans(target.root)
                checks.append(H.HostCheck("orphans", not orphans, "no stray QEMU processes under the private root"
                                          if not orphans else "stray QEMU under the private root: " +
                                          ", ".join(f"pid {o.pid} ({o.what})" for o in orphans) +
                                          "; spicectl host stop ends them"))
    except SpicectlError as exc:
        checks.append(H.HostCheck("libvirt", False, exc.message))
    if target.embedded and target.root is not None:
        conf = H.read_qemu_conf(target.root / "etc" / "qemu.conf")
        cert_dir = conf.get("spice_tls_x509_cert_dir")
    elif target.local:
        conf = H.read_qemu_conf(Path("/etc/libvirt/qemu.conf"))
        cert_dir = conf.get("spice_tls_x509_cert_dir", "/etc/pki/libvirt-spice")
    else:
        conf, cert_dir = None, None
    if conf is None:
        checks.append(H.HostCheck("spice_tls", True, f"cannot read qemu.conf on a remote host ({target.uri}); "
                                  "check spice_tls there", severity="warning"))
    else:
        tls_on = conf.get("spice_tls") == "1"
        checks.append(H.HostCheck("spice_tls", tls_on, "spice_tls = 1 in qemu.conf" if tls_on else
                                  "spice_tls is off in qemu.conf: guests cannot serve TLS"))
        if tls_on and cert_dir:
            listen = conf.get("spice_listen", "127.0.0.1")
            # the private default serves spicectl's own certificate: it must chain to spicectl's current CA
            from spicectl.pki.ca import CA_CERT

            ours = s.ca_dir / CA_CERT if target.embedded else None
            results = verify_directory(Path(cert_dir), host=listen if listen not in ("0.0.0.0", "::") else None,
                                       trusted_ca=ours)
            bad = [c for c in results if not c.ok]
            checks.append(H.HostCheck("spice_cert", not bad, f"{cert_dir} valid for {listen}" if not bad else
                                      f"{cert_dir}: " + "; ".join(c.detail for c in bad)))
    return checks


@host.command("check")
@json_option
@pass_app
def check_cmd(app: App) -> None:
    """Check QEMU (with SPICE), libvirt, KVM or TCG, SPICE TLS and its certificate, required users.

    Exits 8 when an error-level check fails.
    """
    from spicectl.errors import VerificationFailed

    checks = run_checks(app)
    failed = [c for c in checks if not c.ok and c.severity == "error"]

    def human() -> None:
        for c in checks:
            mark = click.style("ok  ", fg="green") if c.ok and c.severity == "error" else \
                click.style("warn", fg="yellow") if c.severity == "warning" else click.style("FAIL", fg="red")
            click.echo(f"{mark} {c.name:<11} {c.detail}")

    app.emit({"ok": not failed, "checks": [c.as_dict() for c in checks]}, human)
    if failed:
        raise VerificationFailed(f"host check failed: {', '.join(c.name for c in failed)}")


@host.command("setup")
@passphrase_options
@json_option
@pass_app
def setup_cmd(app: App, passphrase_file, passphrase_fd, passphrase_env) -> None:
    """Set up spicectl's private libvirt: CA, SPICE TLS server certificate, qemu.conf.

    Safe to repeat. For a system libvirt (--connect qemu:///system) it says what to do by hand.
    """
    from spicectl.virt import host as H
    from spicectl.virt.connection import lock_root, resolve

    s = app.settings
    target = resolve(s.connect, s.state_dir)
    if not target.embedded or target.root is None:
        cert = s.certs_dir / "server" / "HOSTNAME"
        steps = [
            f"spicectl cert issue server --host HOSTNAME --out {cert}",
            f"in /etc/libvirt/qemu.conf: spice_tls = 1 and spice_tls_x509_cert_dir = \"{cert}\"",
            "make the key readable by the QEMU user (group libvirt-qemu, mode 0640), then restart libvirtd",
        ]
        app.emit({"uri": target.uri, "manual_steps": steps},
                 lambda: [click.echo(f"{target.uri} is not spicectl's private libvirt; by hand:")] +
                 [click.echo(f"  {i}. {step}") for i, step in enumerate(steps, 1)])
        return
    import os

    fd = lock_root(target.root)
    try:
        report = H.prepare_embedded(s.state_dir, target.root, pki_dir=s.pki_dir,
                                    passphrase=read_passphrase(passphrase_file, passphrase_fd, passphrase_env))
    finally:
        os.close(fd)
    data = {"uri": target.uri, "root": str(report.root), "cert_dir": str(report.cert_dir),
            "created_ca": report.created_ca, "issued_server_cert": report.issued_server_cert,
            "wrote_qemu_conf": report.wrote_qemu_conf}

    def human() -> None:
        click.echo(f"private libvirt ready: {target.uri}")
        click.echo(f"  CA {'created' if report.created_ca else 'present'}; server certificate "
                   f"{'issued' if report.issued_server_cert else 'valid'} in {report.cert_dir}")

    app.emit(data, human)


@host.command("stop")
@click.option("--timeout", type=TIMEOUT, default=10, show_default=True, help="Seconds each guest gets to shut down before power-off.")
@json_option
@pass_app
def stop_cmd(app: App, timeout: float) -> None:
    """Shut down every guest of spicectl's private libvirt (powering off those that do not respond)."""
    from spicectl.errors import InvalidInput
    from spicectl.virt import lifecycle

    with app.hypervisor() as hv, app.progress() as progress:
        if not hv.target.embedded:
            raise InvalidInput(f"host stop applies to spicectl's private libvirt, not {hv.target.uri}")
        stopped = {}
        for d in lifecycle.list_domains(hv):
            if d["state"] == "running":
                stopped[d["name"]] = lifecycle.stop(hv, d["name"], timeout=timeout, force=True, progress=progress)
        from spicectl.virt.host import end_orphans, find_orphans

        # QEMU that a killed spicectl left (a capability probe, a guest libvirt lost): ours to end
        ended = end_orphans(hv.target.root, find_orphans(hv.target.root)) if hv.target.root else []

    def human() -> None:
        click.echo("\n".join(f"{n}: {'shut down' if how == 'shutdown' else 'powered off'}"
                              for n, how in stopped.items()) or "no guests were running")
        for orphan in ended:
            click.echo(f"ended stray pid {orphan.pid} ({orphan.what})")

    app.emit({"stopped": stopped, "orphans_ended": [{"pid": o.pid, "what": o.what} for o in ended]}, human)
