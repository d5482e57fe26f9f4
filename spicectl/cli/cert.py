"""`spicectl cert`: TLS certificates for SPICE servers and clients, signed by spicectl's CA."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.ca import KEY_TYPE_CHOICE, show_cert_fields
from spicectl.cli.options import Integer, passphrase_options, read_passphrase


@click.group()
def cert() -> None:
    """Issue, list, show, verify and renew TLS certificates."""


@cert.group("issue")
def issue() -> None:
    """Issue a server or client certificate signed by spicectl's CA."""


def _load(app: App, kind: str, key_type, days, passphrase):
    from spicectl.pki.ca import load_ca
    from spicectl.pki.profiles import load_profile

    profile = load_profile(kind, app.settings.pki_dir).with_overrides(key_type=key_type, days=days)
    return load_ca(app.settings.ca_dir, passphrase), profile


def _report(app: App, issued, verb: str) -> None:
    from spicectl.pki.ca import CA_CERT
    from spicectl.pki.inspect import describe

    info = describe(issued.cert, issued.cert_path)
    info["kind"] = issued.kind
    info["directory"] = str(issued.directory)
    info["files"] = {
        "ca": str(issued.directory / CA_CERT),
        "cert": str(issued.cert_path),
        "key": str(issued.key_path),
    }

    def human() -> None:
        sans = ", ".join(info["sans"]) or "no SANs"
        click.echo(f"{verb} {issued.kind} certificate {info['subject']} ({sans})")
        click.echo(f"  in {issued.directory}, valid until {info['not_after'][:10]}")
        if issued.kind == "server":
            click.echo(f"  host-subject: {info['host_subject']}")

    app.emit(info, human)


@issue.command("server")
@click.option(
    "--host", required=True, metavar="NAME", help="The name (or IP) clients connect to; the CN and first SAN."
)
@click.option("--ip", "ips", multiple=True, metavar="ADDR", help="Another IP address clients may use (repeatable).")
@click.option("--dns", "dns", multiple=True, metavar="NAME", help="Another DNS name clients may use (repeatable).")
@click.option("--days", type=Integer(), help="Lifetime in days (default from the server profile: 365).")
@click.option("--key-type", type=KEY_TYPE_CHOICE, help="Key type (default from the server profile: ec-p256).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Directory to write ca-cert.pem, server-cert.pem, server-key.pem (default STATE_DIR/certs/server/HOST).",
)
@click.option("--force", is_flag=True, help="Replace existing files in DIR.")
@passphrase_options
@json_option
@pass_app
def issue_server_cmd(app: App, host, ips, dns, days, key_type, out, force,
                     passphrase_file, passphrase_fd, passphrase_env) -> None:
    """Issue a SPICE server certificate into the directory layout QEMU and libvirt read.

    Point QEMU's `-spice x509-dir=DIR` or libvirt's `spice_tls_x509_cert_dir` at DIR.
    """
    from pathlib import Path

    from spicectl.pki.issue import issue_server
    from spicectl.pki.names import build_sans

    build_sans(host, list(dns), list(ips))  # reject bad names before touching the CA
    authority, profile = _load(
        app, "server", key_type, days, read_passphrase(passphrase_file, passphrase_fd, passphrase_env)
    )
    out = Path(out) if out else app.settings.certs_dir / "server" / host.strip("[]")
    issued = issue_server(authority, profile, out, host=host, dns=list(dns), ips=list(ips), force=force)
    _report(app, issued, "Issued")


@issue.command("client")
@click.argument("name")
@click.option("--days", type=Integer(), help="Lifetime in days (default from the client profile: 365).")
@click.option("--key-type", type=KEY_TYPE_CHOICE, help="Key type (default from the client profile: ec-p256).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Directory to write ca-cert.pem, client-cert.pem, client-key.pem (default STATE_DIR/certs/client/NAME).",
)
@click.option("--force", is_flag=True, help="Replace existing files in DIR.")
@passphrase_options
@json_option
@pass_app
def issue_client_cmd(
    app: App, name, days, key_type, out, force, passphrase_file, passphrase_fd, passphrase_env
) -> None:
    """Issue a client certificate NAME (for mutual TLS to spicectl's session proxy)."""
    from pathlib import Path

    from spicectl.pki.issue import issue_client

    authority, profile = _load(
        app, "client", key_type, days, read_passphrase(passphrase_file, passphrase_fd, passphrase_env)
    )
    out = Path(out) if out else app.settings.certs_dir / "client" / name
    issued = issue_client(authority, profile, out, name=name, force=force)
    _report(app, issued, "Issued")


@cert.command("show")
@click.argument("path", type=click.Path())
@json_option
@pass_app
def show_cmd(app: App, path: str) -> None:
    """Show a certificate (a file, or a directory holding one): names, validity,
    fingerprints and the host-subject string remote-viewer expects."""
    from pathlib import Path

    from spicectl.pki.inspect import show

    info = show(Path(path))
    app.emit(info, lambda: show_cert_fields(app, info))


@cert.command("list")
@click.option(
    "--warn-days", type=Integer(), default=30, show_default=True,
    help="Mark certificates expiring within this many days."
)
@json_option
@pass_app
def list_cmd(app: App, warn_days: int) -> None:
    """List every certificate spicectl's CA issued; expired and expiring ones are marked."""
    from pathlib import Path

    from spicectl.pki.ca import issued_records
    from spicectl.pki.inspect import status_of

    rows = []
    records, skipped = issued_records(app.settings.ca_dir)
    for name in skipped:
        app.warn(f"skipped the damaged record {app.settings.ca_dir / 'issued' / name}")
    for rec in records:
        status, days_left = status_of(rec["certificate"], warn_days)
        on_disk = Path(rec["path"])
        current = on_disk.exists() and on_disk.read_bytes().strip() == rec["pem"].encode().strip()
        rows.append({
            "serial": rec["serial"], "kind": rec["kind"], "subject": rec["subject"], "path": rec["path"],
            "not_after": rec["not_after"], "days_left": days_left, "status": status,
            "current": current,
        })
    rows.sort(key=lambda r: r["not_after"])

    def human() -> None:
        if not rows:
            click.echo("No certificates issued yet (spicectl cert issue server --host NAME).")
            return
        style = {"expired": "red", "expiring": "yellow", "not-yet-valid": "yellow"}
        app.table(
            ["SERIAL", "KIND", "SUBJECT", "EXPIRES", "DAYS", "STATUS", "PATH"],
            [[r["serial"][:12], r["kind"], r["subject"], r["not_after"][:10], r["days_left"],
              r["status"] + ("" if r["current"] else " (replaced)"), r["path"]] for r in rows],
            styles=[style.get(r["status"]) for r in rows],
        )

    app.emit(rows, human)


@cert.command("verify")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--host", metavar="NAME", help="Also check that the SANs cover NAME (a DNS name or IP).")
@json_option
@pass_app
def verify_cmd(app: App, directory: str, host: str | None) -> None:
    """Check a certificate directory as QEMU and a client will use it: chain to the CA,
    key matches certificate, SANs cover --host, validity, key file permissions.

    Exits 8 when any check fails, explaining each failure.
    """
    from pathlib import Path

    from spicectl.errors import NotFound, VerificationFailed
    from spicectl.pki.verify import verify_directory

    path = Path(directory)
    if not path.is_dir():
        raise NotFound(f"no directory {path}")
    checks = verify_directory(path, host=host)
    failed = [c for c in checks if not c.ok]
    result = {"directory": str(path), "ok": not failed, "checks": [c.as_dict() for c in checks]}

    def human() -> None:
        for c in checks:
            mark = click.style("ok  ", fg="green") if c.ok else click.style("FAIL", fg="red")
            click.echo(f"{mark} {c.name:<16} {c.detail}")

    app.emit(result, human)
    if failed:
        raise VerificationFailed(
            f"{len(failed)} check{'s' if len(failed) > 1 else ''} failed for {directory}: "
            + ", ".join(c.name for c in failed)
        )


@cert.command("renew")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--days", type=Integer(), help="Lifetime in days (default from the profile).")
@click.option("--keep-key", is_flag=True, help="Keep the existing private key instead of generating a new one.")
@passphrase_options
@json_option
@pass_app
def renew_cmd(app: App, directory: str, days, keep_key, passphrase_file, passphrase_fd, passphrase_env) -> None:
    """Re-issue the certificate in DIRECTORY with the same subject and SANs.

    The new pair replaces the old atomically; the old one is kept as *.pem.bak.
    """
    from pathlib import Path

    from spicectl.errors import NotFound
    from spicectl.pki.issue import find_leaf, renew

    path = Path(directory)
    if not path.is_dir():
        raise NotFound(f"no directory {path}")
    kind, _ = find_leaf(path)
    authority, profile = _load(app, kind, None, days, read_passphrase(passphrase_file, passphrase_fd, passphrase_env))
    issued = renew(authority, profile, path, keep_key=keep_key)
    _report(app, issued, "Renewed")
