"""`spicectl host`: is this host ready for SPICE guests, and spicectl's private libvirt."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT, passphrase_options, read_passphrase


@click.group()
def host() -> None:
    """Check and set up this host (and spicectl's private libvirt)."""


@host.command("check")
@json_option
@pass_app
def check_cmd(app: App) -> None:
    """Check QEMU (with SPICE), libvirt, KVM or TCG, SPICE TLS and its certificate, required users.

    Exits 8 when an error-level check fails.
    """
    from spicectl.errors import VerificationFailed
    from spicectl.virt.checks import run_checks

    checks = run_checks(app.settings, on_busy=app.release_holder())
    checks.append(_xspice_check())
    failed = [c for c in checks if not c.ok and c.severity == "error"]

    def human() -> None:
        for c in checks:
            mark = click.style("ok  ", fg="green") if c.ok and c.severity == "error" else \
                click.style("warn", fg="yellow") if c.severity == "warning" else click.style("FAIL", fg="red")
            click.echo(f"{mark} {c.name:<11} {c.detail}")

    app.emit({"ok": not failed, "checks": [c.as_dict() for c in checks]}, human)
    if failed:
        raise VerificationFailed(f"host check failed: {', '.join(c.name for c in failed)}")


def _xspice_check():
    """Xspice is optional: what it lacks is a warning that says what to install."""
    from spicectl.virt.host import HostCheck
    from spicectl.xspice import displays as D

    missing = D.missing_parts()
    if missing:
        return HostCheck("xspice", True, "spicectl xspice needs " + ", ".join(missing) + " (apt-get install "
                         + " ".join(missing) + ")", severity="warning")
    agent = "with spice-vdagent (clipboard, resize)" if D.agent_available() else \
        "without an agent (apt-get install spice-vdagent for clipboard and resize)"
    return HostCheck("xspice", True, f"Xorg and its spiceqxl driver present: spicectl xspice works, {agent}")


@host.command("setup")
@click.option("--apply", "apply_", is_flag=True,
              help="For a libvirt named by --connect qemu+ssh://… or this host's qemu:///system (as root): "
              "install a SPICE server certificate from spicectl's CA for the URI's host (127.0.0.1 for this "
              "host) into its SPICE certificate directory and set spice_tls in its qemu.conf, over the URI's "
              "own SSH or in place; backs up what it replaces.")
@click.option("--sasl/--no-sasl", "sasl", default=None,
              help="Turn SASL logins (SCRAM-SHA-256, users from `spicectl sasl user add`) on or off for the private "
              "libvirt's SPICE servers; with them on, clients log in with --sasl-user instead of a ticket. Guests "
              "started before keep what they had until restarted.")
@passphrase_options
@json_option
@pass_app
def setup_cmd(app: App, apply_: bool, sasl: bool | None, passphrase_file, passphrase_fd, passphrase_env) -> None:
    """Set up spicectl's private libvirt: CA, SPICE TLS server certificate, qemu.conf (and SASL with --sasl).

    Safe to repeat. For another libvirt (--connect qemu:///system, qemu+ssh://…) it lists what to
    do by hand, or does it with --apply and says what it changed and what to restart.
    """
    from spicectl.virt import host as H
    from spicectl.virt.connection import resolve

    s = app.settings
    target = resolve(s.connect, s.state_dir)
    passphrase = read_passphrase(passphrase_file, passphrase_fd, passphrase_env)
    foreign = not target.embedded or target.root is None   # a libvirt not spicectl's private one
    if sasl is not None and foreign and apply_:
        _apply_remote(app, target.uri, passphrase, sasl=sasl)
        return
    if sasl is not None and foreign:
        from spicectl.virt.sasl import manual_steps

        sasl_steps = manual_steps() if sasl else [
            "in /etc/libvirt/qemu.conf: spice_sasl = 0, then restart libvirtd (and the guests)"]

        def said() -> None:
            click.echo(f"{target.uri} reads its own qemu.conf; for SASL logins there, by hand:")
            for i, step in enumerate(sasl_steps, 1):
                click.echo(f"  {i}. {step}")
            click.echo("or let spicectl do it (over the URI's SSH, or in place as root): "
                       f"spicectl host setup --{'' if sasl else 'no-'}sasl --apply")

        app.emit({"uri": target.uri, "sasl": sasl, "manual_steps": sasl_steps}, said)
        return
    if target.uri == H.SESSION_URI:
        _setup_session(app, passphrase)
        return
    if foreign and apply_:
        _apply_remote(app, target.uri, passphrase)
        return
    if foreign:
        steps = H.manual_setup_steps(s.certs_dir)
        def human() -> None:
            click.echo(f"{target.uri} is not spicectl's private libvirt; by hand:")
            for i, step in enumerate(steps, 1):
                click.echo(f"  {i}. {step}")
            click.echo("or let spicectl do it over the URI's SSH: spicectl host setup --apply")

        app.emit({"uri": target.uri, "manual_steps": steps}, human)
        return
    from spicectl.virt import sasl as S

    assert target.root is not None   # not foreign: spicectl's private libvirt, which has a root
    if sasl:
        S.enable(s.state_dir)
    elif sasl is False:
        S.disable(s.state_dir)
    report = H.setup_private(s.state_dir, target.root, pki_dir=s.pki_dir, passphrase=passphrase,
                             on_busy=app.release_holder())
    sasl_on = S.enabled(s.state_dir)
    data = {"uri": target.uri, "root": str(report.root), "cert_dir": str(report.cert_dir),
            "created_ca": report.created_ca, "issued_server_cert": report.issued_server_cert,
            "wrote_qemu_conf": report.wrote_qemu_conf, "sasl": sasl_on,
            "sasl_dir": str(S.sasl_dir(s.state_dir)) if sasl_on else None}

    def ready() -> None:
        click.echo(f"private libvirt ready: {target.uri}")
        click.echo(f"  CA {'created' if report.created_ca else 'present'}; server certificate "
                   f"{'issued' if report.issued_server_cert else 'valid'} in {report.cert_dir}")
        if sasl_on:
            click.echo(f"  SASL logins on (SCRAM-SHA-256, {S.sasl_dir(s.state_dir)}): add users with "
                       "spicectl sasl user add NAME; clients log in with --sasl-user NAME")
        if sasl is not None and report.wrote_qemu_conf:
            click.echo("  guests started before keep their old setting until restarted (spicectl vm restart NAME)")

    app.emit(data, ready)


def _setup_session(app: App, passphrase: bytes | None) -> None:
    from spicectl.virt import host as H

    s = app.settings
    report = H.setup_session(s.state_dir, pki_dir=s.pki_dir, passphrase=passphrase)
    data = {"uri": H.SESSION_URI, "qemu_conf": str(report.qemu_conf), "changed": report.changed,
            "created_ca": report.created_ca, "issued_server_cert": report.issued_server_cert,
            "restarted_daemons": report.restarted}

    def human() -> None:
        click.echo(f"{H.SESSION_URI}: SPICE TLS with spicectl's CA in {report.qemu_conf}"
                   + ("" if report.changed else " (already set up)"))
        if report.restarted:
            click.echo(f"  ended the session daemon (pid {', '.join(map(str, report.restarted))}): libvirt starts it "
                       "again with the new settings; running guests keep running")

    app.emit(data, human)


def _apply_remote(app: App, uri: str, passphrase: bytes | None, *, sasl: bool | None = None) -> None:
    """--apply: SPICE TLS (made or checked), then SASL logins on or off when --sasl/--no-sasl asks."""
    from spicectl.virt.remote import apply_sasl, host_of, setup_remote

    s = app.settings
    done = setup_remote(uri, ca_dir=s.ca_dir, certs_dir=s.certs_dir, pki_dir=s.pki_dir, passphrase=passphrase)
    report = done.report
    changed, restart = list(report.changed), report.restart
    if sasl is not None:
        sasl_report = apply_sasl(host_of(uri), on=sasl)
        changed += sasl_report.changed
        restart = restart or sasl_report.restart
    data = {"uri": uri, "host": report.host, "cert_dir": report.cert_dir, "created_ca": done.created_ca,
            "issued_server_cert": done.issued, "local_copy": str(done.local_copy), "changed": changed,
            "restart": restart or None}
    if sasl is not None:
        from spicectl.virt.sasl import SYSTEM_DIR

        data.update({"sasl": sasl, "sasl_dir": SYSTEM_DIR if sasl else None})

    def human() -> None:
        click.echo(f"{uri}: SPICE TLS with spicectl's CA{' (created)' if done.created_ca else ''} for {report.host}"
                   + ("" if sasl is None else f"; SASL logins {'on' if sasl else 'off'}"))
        for line in changed or ["nothing to change: already set up"]:
            click.echo(f"  {line}")
        if restart:
            click.echo(f"next: {restart}")
        if sasl:
            click.echo(f"users: spicectl --connect {uri} sasl user add NAME")

    app.emit(data, human)


@host.command("stop")
@click.option(
    "--timeout",
    type=TIMEOUT,
    default=10,
    show_default=True,
    help="Seconds each guest gets to shut down before power-off.",
)
@json_option
@pass_app
def stop_cmd(app: App, timeout: float) -> None:
    """Shut down every guest of spicectl's private libvirt (powering off those that do not respond)."""
    from spicectl.errors import InvalidInput
    from spicectl.virt import lifecycle

    with app.hypervisor() as hv, app.progress() as progress:
        if not hv.location.embedded:
            raise InvalidInput(f"host stop applies to spicectl's private libvirt, not {hv.location.uri}")
        stopped = {}
        for d in lifecycle.list_domains(hv):
            if d["state"] == "running":
                stopped[d["name"]] = lifecycle.stop(hv, d["name"], timeout=timeout, force=True, progress=progress)
        from spicectl.virt.host import end_orphans, find_orphans

        # QEMU that a killed spicectl left (a capability probe, a guest libvirt lost): ours to end
        ended = end_orphans(hv.location.root, find_orphans(hv.location.root)) if hv.location.root else []

    def human() -> None:
        click.echo("\n".join(f"{n}: {'shut down' if how == 'shutdown' else 'powered off'}"
                              for n, how in stopped.items()) or "no guests were running")
        for orphan in ended:
            click.echo(f"ended stray pid {orphan.pid} ({orphan.what})")

    app.emit({"stopped": stopped, "orphans_ended": [{"pid": o.pid, "what": o.what} for o in ended]}, human)
