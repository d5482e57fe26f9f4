"""`spicectl sasl`: the users who may log in with SASL to the private libvirt's SPICE servers."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app


@click.group()
def sasl() -> None:
    """SASL logins (spicectl host setup --sasl turns them on for the private libvirt)."""


@sasl.group()
def user() -> None:
    """The users in spicectl's sasldb."""


def _state_dir(app: App):
    from spicectl.errors import Conflict
    from spicectl.virt.connection import resolve

    target = resolve(app.settings.connect, app.settings.state_dir)
    if not target.embedded:
        raise Conflict(f"spicectl manages SASL users for its private libvirt, not {target.uri}",
                       hint="on that host: saslpasswd2 -a qemu -f <its sasldb> NAME")
    return app.settings.state_dir


@user.command("add")
@click.argument("name")
@click.option("--password-file", metavar="PATH", help="Read the password from PATH ('-' for stdin, the default).")
@click.option("--password-env", metavar="VAR", help="The password is in environment variable VAR.")
@click.option("--replace", is_flag=True, help="Set a new password for a user who exists.")
@json_option
@pass_app
def add(app: App, name: str, password_file: str | None, password_env: str | None, replace: bool) -> None:
    """Add user NAME (or, with --replace, set their password), never taking it from the command line.

    \b
      spicectl sasl user add alice --password-file alice.pw
      printf %s "$PW" | spicectl sasl user add alice
    """
    from spicectl.secrets import read_secret
    from spicectl.virt import sasl as S

    state = _state_dir(app)
    password = read_secret(file=None if password_env else (password_file or "-"), env=password_env,
                           what="SASL password")
    existed = S.add_user(state, name, password or b"", replace=replace)
    app.emit({"user": name, "replaced": existed},
             lambda: click.echo(f"SASL user {name} {'has a new password' if existed else 'added'}"))


@user.command("list")
@json_option
@pass_app
def list_cmd(app: App) -> None:
    """The users who may log in."""
    from spicectl.virt import sasl as S

    users = S.list_users(_state_dir(app))
    app.emit({"users": users}, lambda: click.echo("\n".join(users) if users else "no SASL users"))


@user.command("delete")
@click.argument("name")
@json_option
@pass_app
def delete(app: App, name: str) -> None:
    """Remove user NAME: their next login is refused (sessions already open go on)."""
    from spicectl.virt import sasl as S

    S.delete_user(_state_dir(app), name)
    app.emit({"user": name, "deleted": True}, lambda: click.echo(f"SASL user {name} deleted"))
