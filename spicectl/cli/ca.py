"""`spicectl ca`: the certificate authority that signs SPICE TLS certificates."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import Integer, passphrase_options, read_passphrase
from spicectl.pki.profiles import KEY_TYPES

KEY_TYPE_CHOICE = click.Choice(KEY_TYPES)


@click.group()
def ca() -> None:
    """Create and show spicectl's certificate authority.

    The CA lives in STATE_DIR/ca (mode 0700): ca-cert.pem and ca-key.pem (0600).
    """


@ca.command("init")
@click.option("--key-type", type=KEY_TYPE_CHOICE, help="Key type (default from the ca profile: ec-p256).")
@click.option("--days", type=Integer(), help="Lifetime in days (default from the ca profile: 3650).")
@click.option("--subject", metavar="DN", help="Subject as 'CN=My CA,O=Example' (default: CN=spicectl CA on HOST).")
@click.option("--force", is_flag=True, help="Replace an existing CA (the old pair is kept as .bak).")
@passphrase_options
@json_option
@pass_app
def ca_init(app: App, key_type, days, subject, force, passphrase_file, passphrase_fd, passphrase_env) -> None:
    """Create the CA (once). Certificates it signs are trusted by spicectl's clients and proxies."""
    from spicectl.pki.ca import CA_CERT, init_ca
    from spicectl.pki.inspect import describe
    from spicectl.pki.profiles import load_profile

    profile = load_profile("ca", app.settings.pki_dir).with_overrides(key_type=key_type, days=days)
    passphrase = read_passphrase(passphrase_file, passphrase_fd, passphrase_env)
    authority = init_ca(app.settings.ca_dir, profile, subject=subject, passphrase=passphrase, force=force)
    info = describe(authority.cert, authority.directory / CA_CERT)
    info["key_path"] = str(authority.directory / "ca-key.pem")
    info["key_encrypted"] = passphrase is not None

    def human() -> None:
        click.echo(f"Created CA {info['subject']} in {authority.directory}")
        click.echo(f"  {info['key_type']}, valid until {info['not_after'][:10]}, "
                   f"key {'passphrase-protected' if passphrase else 'unencrypted (0600)'}")

    app.emit(info, human)


@ca.command("show")
@json_option
@pass_app
def ca_show(app: App) -> None:
    """Show the CA certificate."""
    from spicectl.pki.ca import CA_CERT, load_ca_cert
    from spicectl.pki.inspect import describe

    cert = load_ca_cert(app.settings.ca_dir)
    info = describe(cert, app.settings.ca_dir / CA_CERT)
    app.emit(info, lambda: show_cert_fields(app, info))


def show_cert_fields(app: App, info: dict) -> None:
    app.fields([
        ("Path", info["path"]),
        ("Subject", info["subject"]),
        ("Issuer", info["issuer"]),
        ("Serial", info["serial"]),
        ("Key", info["key_type"] + (" (CA)" if info["is_ca"] else "")),
        ("SANs", info["sans"]),
        ("Usage", info["extended_key_usage"]),
        ("Not before", info["not_before"]),
        ("Not after", info["not_after"]),
        ("Days left", f"{info['days_left']} ({info['status']})"),
        ("SHA-256", info["fingerprint_sha256"]),
        ("SHA-1", info["fingerprint_sha1"]),
        ("host-subject", info["host_subject"]),
    ])
