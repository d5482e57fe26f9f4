"""`spicectl template`: the VM profiles `vm create --template` starts from."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app


@click.group()
def template() -> None:
    """List and show VM profiles (built-in ones, plus ~/.config/spicectl/templates/*.toml)."""


@template.command("list")
@json_option
@pass_app
def list_cmd(app: App) -> None:
    """List the VM profiles."""
    from spicectl.domain.templates import list_templates

    items = [{"name": t.name, "builtin": t.builtin, "path": str(t.path), "description": t.description}
             for t in list_templates(app.settings.templates_dir)]
    app.emit(items, lambda: app.table(["NAME", "SOURCE", "DESCRIPTION"],
                                      [[t["name"], "built-in" if t["builtin"] else t["path"], t["description"]]
                                       for t in items]))


@template.command("show")
@click.argument("name")
@json_option
@pass_app
def show_cmd(app: App, name: str) -> None:
    """Show a profile's values (the keys match `vm create` options)."""
    from spicectl.domain.templates import load_template

    t = load_template(name, app.settings.templates_dir)
    data = {"name": t.name, "builtin": t.builtin, "path": str(t.path), "values": t.values}

    def human() -> None:
        click.echo(f"# {t.name} ({'built-in' if t.builtin else t.path})")
        click.echo(t.path.read_text().rstrip())

    app.emit(data, human)
