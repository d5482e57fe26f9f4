"""`spicectl sasl`: the users who may log in with SASL to the SPICE servers of the private libvirt, or
(with --connect) of a system or remote libvirt that `host setup --sasl --apply` set up."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app


@click.group()
def sasl() -> None:
    """SASL logins (spicectl host setup --sasl turns them on; --connect and --apply for another libvirt)."""


@sasl.group()
def user() -> None:
    """The users in spicectl's sasldb."""


class _Where:
    """Whose sasldb: the private libvirt's (in the state dir), or a system or remote libvirt's host (what
    `host setup --sasl --apply` set up there, reached as --apply reaches it)."""

    def __init__(self, app: App) -> None:
        from spicectl.virt.connection import resolve
        from spicectl.virt.remote import SshHost, host_of

        target = resolve(app.settings.connect, app.settings.state_dir)
        local = target.embedded and target.root is not None
        self.state = app.settings.state_dir if local else None
        self.host: SshHost | None = None if local else host_of(target.uri)
        self.label = "" if self.host is None else f" on {self.host.host}"

    def add(self, name: str, password: bytes, replace: bool) -> bool:
        from spicectl.virt import remote as R
        from spicectl.virt import sasl as S

        if self.host is not None:
            return R.remote_add_user(self.host, name, password, replace=replace)
        assert self.state is not None
        return S.add_user(self.state, name, password, replace=replace)

    def users(self) -> list[str]:
        from spicectl.virt import remote as R
        from spicectl.virt import sasl as S

        if self.host is not None:
            return R.remote_users(self.host)
        assert self.state is not None
        return S.list_users(self.state)

    def delete(self, name: str) -> None:
        from spicectl.virt import remote as R
        from spicectl.virt import sasl as S

        if self.host is not None:
            R.remote_delete_user(self.host, name)
            return
        assert self.state is not None
        S.delete_user(self.state, name)


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

    where = _Where(app)
    password = read_secret(file=None if password_env else (password_file or "-"), env=password_env,
                           what="SASL password")
    existed = where.add(name, password or b"", replace)
    app.emit({"user": name, "replaced": existed},
             lambda: click.echo(f"SASL user {name}{where.label} {'has a new password' if existed else 'added'}"))


@user.command("list")
@json_option
@pass_app
def list_cmd(app: App) -> None:
    """The users who may log in."""
    users = _Where(app).users()
    app.emit({"users": users}, lambda: click.echo("\n".join(users) if users else "no SASL users"))


@user.command("delete")
@click.argument("name")
@json_option
@pass_app
def delete(app: App, name: str) -> None:
    """Remove user NAME: their next login is refused (sessions already open go on)."""
    _Where(app).delete(name)
    app.emit({"user": name, "deleted": True}, lambda: click.echo(f"SASL user {name} deleted"))
