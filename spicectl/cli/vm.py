"""`spicectl vm`: define, start, stop and inspect SPICE guests."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.vm_options import collect, vm_options


@click.group()
def vm() -> None:
    """Create, start, stop, list and inspect SPICE guests."""


def make_spec(app: App, name: str, template: str | None, params: dict):
    """Template values, overridden by the options given, as a checked VMSpec."""
    from spicectl.domain.build import build_spec
    from spicectl.domain.templates import load_template

    values = {}
    tname = None
    if template:
        t = load_template(template, app.settings.templates_dir)
        values.update({k: v for k, v in t.values.items() if k != "description"})
        tname = t.name
    values.update(collect(params))
    return build_spec(name, values, images_dir=app.settings.state_dir / "images", template=tname)


@vm.command("create")
@click.argument("name")
@vm_options
@click.option("--print-xml", is_flag=True, help="Print the libvirt domain XML and exit (no hypervisor needed).")
@click.option("--print-qemu", is_flag=True, help="Print an equivalent QEMU command line as a shell script and exit.")
@json_option
@pass_app
def create(app: App, name: str, template, print_xml: bool, print_qemu: bool, **params) -> None:
    """Create a SPICE guest NAME from a template and options.

    Every guest gets TLS on all channels, a listener on 127.0.0.1 and a long
    random SPICE password that has already expired: nobody connects without a
    ticket from `spicectl ticket`.
    """
    from spicectl.domain.validate import validate
    from spicectl.domain.xml import to_element, to_xml

    if print_xml and print_qemu:
        raise click.UsageError("--print-xml and --print-qemu exclude each other")
    spec = make_spec(app, name, template, params)
    validate(to_element(spec))
    if print_xml:
        xml = to_xml(spec)
        app.emit({"name": spec.name, "xml": xml}, lambda: click.echo(xml, nl=False))
        return
    if print_qemu:
        from spicectl.domain.qemu_cmdline import build_command

        cmd = build_command(spec, x509_dir=str(app.settings.certs_dir / "server" / spec.graphics.listen))
        app.emit({"name": spec.name, "argv": cmd.argv, "readconfig": cmd.readconfig,
                  "readconfig_file": cmd.readconfig_name, "password_file": cmd.password_file},
                 lambda: click.echo(cmd.shell(), nl=False))
        return
    raise click.UsageError("defining guests needs the hypervisor layer; use --print-xml or --print-qemu for now")
