"""`spicectl vm`: define, start, stop and inspect SPICE guests."""

from __future__ import annotations

import click

from spicectl.cli.app import App, json_option, pass_app
from spicectl.cli.options import TIMEOUT, Integer
from spicectl.cli.vm_options import collect, vm_options


@click.group()
def vm() -> None:
    """Create, start, stop, list and inspect SPICE guests."""


def make_spec(app: App, name: str, template: str | None, params: dict, image: str | None = None,
              kernel_args: tuple[str, ...] = ()):
    """Template values, overridden by the options given, as a checked VMSpec (booting `image` if named),
    its recipe, and whether its virt type is auto (built with the cached KVM probe's answer)."""
    from spicectl.domain.build import build_spec
    from spicectl.domain.templates import load_template

    s = app.settings
    recipe = None
    if image:
        from spicectl.image.recipe import load_recipe

        recipe = load_recipe(image, s.recipes_dir)
        template = template or recipe.template
    elif kernel_args:
        raise click.UsageError("--kernel-arg needs --image")
    values = {}
    tname = None
    if template:
        t = load_template(template, s.templates_dir)
        values.update({k: v for k, v in t.values.items() if k != "description"})
        tname = t.name
    values.update(collect(params))
    if values.get("sasl") is None and _host_sasl(app):
        values["sasl"] = True
    from spicectl.virt.kvm import cached

    spec = build_spec(name, values, images_dir=s.images_dir, template=tname, host_has_kvm=cached(s.state_dir))
    if recipe is not None:
        from spicectl.image.guest import apply_image

        apply_image(spec, recipe, s.image_cache, s.images_dir, kernel_args)
    return spec, recipe, values.get("virt_type") in (None, "auto")


def _host_sasl(app: App) -> bool:
    """Whether the private libvirt's SPICE servers take SASL logins (spicectl host setup --sasl)."""
    from spicectl.virt.connection import resolve
    from spicectl.virt.sasl import enabled

    s = app.settings
    return resolve(s.connect, s.state_dir).embedded and enabled(s.state_dir)


def _host_has_kvm(app: App, hv, arch: str, progress) -> bool:
    """KVM that really runs a guest: probed on this host (cached), or the remote host's capabilities."""
    from spicectl.virt import lifecycle
    from spicectl.virt.kvm import probe

    offered = lifecycle.host_has_kvm(hv, arch)
    if not offered or not hv.location.local:
        return offered

    return probe(app.settings.state_dir, app.settings.image_cache, progress=progress).usable


READY_TIMEOUT = 300   # an image guest's desktop under TCG takes about a minute; on a loaded host more
PORTS_TIMEOUT = 60


def wait_options(func):
    """--wait, --wait-for and --timeout, the same on vm create, start and restart."""
    func = click.option("--timeout", type=TIMEOUT, default=None,
                        help=f"Seconds the wait may take (default {PORTS_TIMEOUT} for ports, {READY_TIMEOUT} "
                        "for ready).")(func)
    func = click.option("--wait-for", type=click.Choice(["ready", "ports"]), default=None,
                        help="What --wait waits for: ready (default: for a guest of spicectl's images, its "
                        "console shell and, for a desktop image, its X session; else its SPICE ports) or "
                        "ports (its SPICE ports accept connections). Implies --wait.")(func)
    func = click.option("--wait", is_flag=True, help="Return once the guest is ready to use (see --wait-for).")(func)
    return func


def _wait_level(wait: bool, wait_for: str | None, timeout: float | None) -> tuple[str | bool, float]:
    from spicectl.virt.lifecycle import READY

    level: str | bool = wait_for or (READY if wait else False)
    return level, timeout or (READY_TIMEOUT if level == READY else PORTS_TIMEOUT)


@vm.command("create")
@click.argument("name")
@vm_options
@click.option("--image", metavar="IMAGE", help="Boot a built OS image (spicectl image list): the root disk is a "
              "copy-on-write overlay on it, its kernel boots directly, a serial console is added.")
@click.option("--kernel-arg", multiple=True, metavar="ARG", help="With --image: append ARG to the kernel command "
              "line (repeatable), e.g. spicectl.scene=static.")
@click.option("--print-xml", is_flag=True, help="Print the libvirt domain XML and exit (no hypervisor needed).")
@click.option("--print-qemu", is_flag=True, help="Print an equivalent QEMU command line as a shell script and exit.")
@click.option("--start/--no-start", default=True, help="Start the guest after defining it (default: start).")
@wait_options
@json_option
@pass_app
def create(app: App, name: str, template, image: str | None, kernel_arg: tuple[str, ...], print_xml: bool,
           print_qemu: bool, start: bool, wait: bool, wait_for: str | None, timeout: float | None, **params) -> None:
    """Create a SPICE guest NAME from a template and options.

    Every guest gets TLS on all channels, a listener on 127.0.0.1 and a long
    random SPICE password that has already expired: nobody connects without a
    ticket from `spicectl ticket`.
    """
    from spicectl.domain.validate import validate
    from spicectl.domain.xml import to_element, to_xml

    if print_xml and print_qemu:
        raise click.UsageError("--print-xml and --print-qemu exclude each other")
    spec, recipe, auto_virt = make_spec(app, name, template, params, image=image, kernel_args=kernel_arg)
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
    from spicectl.domain.build import virt_type
    from spicectl.virt import lifecycle

    if recipe is not None:
        from spicectl.image.guest import require_built

        require_built(recipe, app.settings.image_cache)
    with app.hypervisor() as hv, app.progress() as progress:
        if auto_virt:   # built with the cached probe's answer: this host's (or the remote one's) decides
            spec.virt_type = virt_type("auto", _host_has_kvm(app, hv, spec.arch, progress))
        level, seconds = _wait_level(wait, wait_for, timeout)
        dom = lifecycle.create(hv, spec, start=start, wait=level, timeout=seconds, progress=progress,
                               images_dir=app.settings.images_dir, notice=app.warn)
        data = lifecycle.info(dom)
    data["uri"] = hv.location.uri
    data["sasl"] = spec.graphics.password is None   # defined without a ticket: SASL logins (vm create --sasl)
    _print_created(app, data)


def _print_created(app: App, data: dict) -> None:
    def human() -> None:
        click.echo(f"{data['name']}: {data['state']} ({data['template'] or 'no template'}) on {data['uri']}")
        spice = data["spice"]
        if spice:
            ports = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in (("tls_port", spice["tls_port"]),
                                                                        ("port", spice["port"])) if v)
            click.echo(f"  SPICE on {spice['listen']}: {ports or 'no ports assigned'}")
            if data.get("sasl"):
                click.echo(f"  connect: spicectl view {data['name']} --sasl-user NAME --password-file PATH  (SASL)")
            else:
                click.echo(f"  connect: spicectl ticket {data['name']}  (then remote-viewer, or spicectl connect)")

    app.emit(data, human)


def _name_arg(func):
    return click.argument("name")(func)


@vm.command("start")
@_name_arg
@wait_options
@json_option
@pass_app
def start_cmd(app: App, name: str, wait: bool, wait_for: str | None, timeout: float | None) -> None:
    """Start a defined guest."""
    from spicectl.virt import lifecycle

    level, seconds = _wait_level(wait, wait_for, timeout)
    with app.hypervisor() as hv, app.progress() as progress:
        data = lifecycle.info(lifecycle.start(hv, name, wait=level, timeout=seconds, progress=progress))
        data["uri"] = hv.location.uri
    _print_created(app, data)


@vm.command("stop")
@_name_arg
@click.option(
    "--timeout", type=TIMEOUT, default=60, show_default=True, help="Seconds to wait for the guest to shut down."
)
@click.option("--force", is_flag=True, help="Power off if it has not shut down by then.")
@json_option
@pass_app
def stop_cmd(app: App, name: str, timeout: float, force: bool) -> None:
    """Shut a guest down (ACPI), waiting up to --timeout; --force powers it off after that."""
    from spicectl.virt import lifecycle

    with app.hypervisor() as hv, app.progress() as progress:
        how = lifecycle.stop(hv, name, timeout=timeout, force=force, progress=progress)
    app.emit(
        {"name": name, "stopped": how},
        lambda: click.echo(f"{name}: {'shut down' if how == 'shutdown' else 'powered off'}"),
    )


@vm.command("restart")
@_name_arg
@click.option("--force", is_flag=True, help="Power off if it has not shut down by then.")
@wait_options
@json_option
@pass_app
def restart_cmd(app: App, name: str, force: bool, wait: bool, wait_for: str | None, timeout: float | None) -> None:
    """Stop then start a guest: --timeout bounds the shutdown (60 s by default) and the wait."""
    from spicectl.virt import lifecycle

    level, seconds = _wait_level(wait, wait_for, timeout)
    with app.hypervisor() as hv, app.progress() as progress:
        lifecycle.stop(hv, name, timeout=timeout or PORTS_TIMEOUT, force=force, progress=progress)
        data = lifecycle.info(lifecycle.start(hv, name, wait=level, timeout=seconds, progress=progress))
        data["uri"] = hv.location.uri
    _print_created(app, data)


@vm.command("destroy")
@_name_arg
@json_option
@pass_app
def destroy_cmd(app: App, name: str) -> None:
    """Power a guest off at once (it stays defined)."""
    from spicectl.virt import lifecycle

    with app.hypervisor() as hv:
        lifecycle.destroy(hv, name)
    app.emit({"name": name, "state": "shut-off"}, lambda: click.echo(f"{name}: powered off"))


@vm.command("delete")
@_name_arg
@click.option("--keep-disks", is_flag=True, help="Keep the disk images spicectl created for it.")
@json_option
@pass_app
def delete_cmd(app: App, name: str, keep_disks: bool) -> None:
    """Power off (if running) and remove a guest, with the disk images spicectl created for it."""
    from spicectl.virt import lifecycle

    with app.hypervisor() as hv:
        removed = lifecycle.delete(hv, name, images_dir=app.settings.images_dir, keep_disks=keep_disks)
    app.emit({"name": name, "deleted": True, "removed_disks": removed},
             lambda: click.echo(f"{name}: deleted" + (f" (removed {', '.join(removed)})" if removed else "")))


@vm.command("migrate")
@_name_arg
@click.option("--to", "to", required=True, metavar="HOST",
              help="Where to: a [hosts] name from spicectl.toml (\"default\" is spicectl's private libvirt) or a "
              "libvirt URI.")
@click.option("--offline", is_flag=True, help="Move a stopped guest's definition (no live state).")
@click.option("--copy-storage", is_flag=True, help="Copy the guest's disks to the destination as it moves (for disks "
              "the destination cannot reach; shared ones need nothing).")
@click.option("--listen", metavar="ADDR", help="The guest's SPICE address on the destination (default: as it is "
              "now). Its certificate there must name it.")
@click.option("--bandwidth", type=Integer(), metavar="MIB", help="Cap the migration stream at MIB MiB/s (as virsh "
              "migrate --bandwidth).")
@click.option("--timeout", type=TIMEOUT, default=None, help="Abort the migration after this many seconds (the guest "
              "stays on the source).")
@json_option
@pass_app
def migrate_cmd(app: App, name: str, to: str, offline: bool, copy_storage: bool, listen: str | None,
                bandwidth: int | None, timeout: float | None) -> None:
    """Move guest NAME (from --connect's libvirt, or the private default) to HOST, live unless --offline.

    libvirt's own migration carries it; the destination's SPICE address, ports and certificate go to
    the guest's connected clients, which may follow. All or nothing: a failed, timed-out or interrupted
    (Ctrl-C) migration leaves the guest running where it was, and says why.

    \b
      spicectl vm migrate web --to lab
      spicectl --connect lab vm migrate web --to default --json
    """
    import signal
    import threading

    from spicectl.settings import DEFAULT_HOST
    from spicectl.virt import migrate as MG

    s = app.settings
    dest_uri = s.hosts.get(to, to)
    dest_private = dest_uri == DEFAULT_HOST
    source_private = s.connect is None
    if dest_private and source_private:
        from spicectl.errors import InvalidInput

        raise InvalidInput("the guest is on spicectl's private libvirt already", hint="--to another host")
    cancelled = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: cancelled.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # the other libvirt first: once the embedded driver is loaded in a process, qemu:///system and
        # remote URIs no longer open in it
        first_cm = app.hypervisor(uri=dest_uri) if source_private else app.hypervisor()
        with first_cm as first:
            second_cm = app.hypervisor(private=True) if (source_private or dest_private) else \
                app.hypervisor(uri=dest_uri)
            with second_cm as second, app.progress() as progress:
                src, dst = (second, first) if source_private else (first, second)

                def said(p) -> None:
                    done = p.memory_processed + p.disk_processed
                    total = p.memory_total + p.disk_total
                    progress(f"migrating {name}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB, "
                             f"{p.rate / 2**20:.1f} MiB/s, {p.elapsed:.0f}s")

                result = MG.migrate(src, dst, name, offline=offline, copy_storage=copy_storage, listen=listen,
                                    bandwidth=bandwidth, timeout=timeout, on_progress=said, cancelled=cancelled)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    data = {"name": result.name, "from": result.source, "to": result.destination, "live": result.live,
            "seconds": round(result.seconds, 2), "downtime_ms": result.downtime_ms,
            "memory_bytes": result.memory_bytes, "disk_bytes": result.disk_bytes, "spice": result.spice or None}

    def human() -> None:
        how = "live" if result.live else "offline"
        click.echo(f"{name}: moved to {result.destination} ({how}, {result.seconds:.1f}s"
                   + (f", downtime {result.downtime_ms} ms" if result.downtime_ms is not None else "") + ")")
        if result.spice:
            click.echo(f"  SPICE on {result.spice.get('listen')}: tls-port {result.spice.get('tls_port') or '-'}")

    app.emit(data, human)


@vm.command("list")
@click.option("--all-hosts", is_flag=True, help="List guests on every host named in spicectl.toml's [hosts] "
              "(a host = \"default\" is spicectl's private libvirt).")
@json_option
@pass_app
def list_cmd(app: App, all_hosts: bool) -> None:
    """List guests with their state and SPICE endpoint."""
    from spicectl.settings import DEFAULT_HOST
    from spicectl.virt import lifecycle

    rows: list[dict] = []
    if all_hosts:
        s = app.settings
        if not s.hosts:
            from spicectl.errors import InvalidInput

            raise InvalidInput("no [hosts] in the config file", hint=f"add them to {s.config_path}")
        for host, uri in sorted(s.hosts.items()):
            # "default": spicectl's private libvirt (under its lock, as every command opens it)
            with app.hypervisor(uri=uri, private=uri == DEFAULT_HOST) as hv:
                rows += [{**d, "host": host, "uri": hv.location.uri} for d in lifecycle.list_domains(hv)]
    else:
        with app.hypervisor() as hv:
            rows = [{**d, "host": None, "uri": hv.location.uri} for d in lifecycle.list_domains(hv)]

    def human() -> None:
        if not rows:
            click.echo("No guests. Create one: spicectl vm create NAME --template desktop")
            return
        cols = (["HOST"] if all_hosts else []) + ["NAME", "STATE", "SPICE", "TLS-PORT", "PORT", "TEMPLATE"]
        app.table(cols, [([r["host"]] if all_hosts else []) + [
            r["name"], r["state"], (r["spice"] or {}).get("listen", "-"),
            (r["spice"] or {}).get("tls_port") or "-", (r["spice"] or {}).get("port") or "-", r["template"] or "-",
        ] for r in rows])

    app.emit(rows, human)


@vm.command("show")
@_name_arg
@json_option
@pass_app
def show_cmd(app: App, name: str) -> None:
    """Show one guest: state, resources, SPICE endpoint, template."""
    from spicectl.virt import lifecycle

    with app.hypervisor() as hv:
        data = lifecycle.info(lifecycle.lookup(hv, name))
        data["uri"] = hv.location.uri

    def human() -> None:
        spice = data["spice"] or {}
        app.fields([("Name", data["name"]), ("UUID", data["uuid"]), ("State", data["state"]),
                     ("Template", data["template"] or "-"), ("vCPUs", data["vcpus"]),
                     ("Memory", f"{data['memory_kib'] // 1024} MiB"), ("Libvirt", data["uri"]),
                     ("SPICE listen", spice.get("listen", "-")), ("TLS port", spice.get("tls_port") or "-"),
                     ("Plain port", spice.get("port") or "-")])

    app.emit(data, human)


@vm.command("xml")
@_name_arg
@click.option("--inactive", is_flag=True, help="The persistent definition instead of the live one.")
@json_option
@pass_app
def xml_cmd(app: App, name: str, inactive: bool) -> None:
    """Print a guest's libvirt XML (passwords are not included)."""
    import libvirt

    from spicectl.virt import lifecycle

    with app.hypervisor() as hv:
        xml = lifecycle.lookup(hv, name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
    app.emit({"name": name, "xml": xml}, lambda: click.echo(xml, nl=False))
