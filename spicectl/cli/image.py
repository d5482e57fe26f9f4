"""`spicectl image`: build, list, show and delete guest OS images made from recipes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from spicectl.cli.app import App, json_option, pass_app

if TYPE_CHECKING:
    from spicectl.image.store import BuiltImage


@click.group()
def image() -> None:
    """Guest OS images built from recipes (images/*.toml, plus ~/.config/spicectl/images/*.toml).

    An image is built once from Debian's packages through this host's apt
    sources (mmdebstrap, no loop devices) and cached; guests made with
    `spicectl vm create NAME --image IMAGE` get a copy-on-write overlay on it
    and boot its kernel directly.
    """


def _status(app: App, recipe) -> tuple[str, BuiltImage | None]:
    from spicectl.image import store

    built = store.find(app.settings.image_cache, recipe.name, recipe.digest())
    if built is not None:
        return "built", built
    return ("stale" if store.versions(app.settings.image_cache, recipe.name) else "not built"), None


@image.command("build")
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even if a build of the same recipe is cached.")
@json_option
@pass_app
def build_cmd(app: App, name: str, force: bool) -> None:
    """Build image NAME from its recipe (a cache hit when the recipe has not changed).

    Needs mmdebstrap and e2fsprogs (apt-get install mmdebstrap) and takes one
    to three minutes. A failed or interrupted build leaves nothing behind but
    its log (last-build.log in the image's cache folder).
    """
    from spicectl.image.build import build
    from spicectl.image.recipe import load_recipe

    s = app.settings
    recipe = load_recipe(name, s.recipes_dir)
    with app.progress() as progress:
        result = build(recipe, s.image_cache, s.images_dir, force=force, progress=progress)
    data = {**result.image.as_dict(), "cached": result.cached, "pruned": result.pruned}

    def human() -> None:
        meta = result.image.meta
        how = "cached, recipe unchanged" if result.cached else f"built in {meta['build_seconds']:.0f}s"
        click.echo(f"{recipe.name}: {how}; {meta['used_bytes'] / 2**20:.0f} MiB used of "
                   f"{meta['size_bytes'] / 2**20:.0f} MiB, kernel {meta['kernel_release']}")
        click.echo(f"  {result.image.dir}")
        click.echo(f"  use it: spicectl vm create NAME --image {recipe.name}")

    app.emit(data, human)


@image.command("list")
@json_option
@pass_app
def list_cmd(app: App) -> None:
    """List the recipes and whether each is built (stale: built from an older recipe)."""
    from spicectl.errors import SpicectlError
    from spicectl.image.recipe import list_recipes

    rows: list[dict[str, Any]] = []
    problems: list[SpicectlError] = []
    for recipe in list_recipes(app.settings.recipes_dir, problems):
        try:
            status, built = _status(app, recipe)
        except SpicectlError as exc:
            problems.append(exc)
            continue
        rows.append({"name": recipe.name, "status": status, "builtin": recipe.builtin, "recipe": str(recipe.path),
                     "description": recipe.description,
                     "used_bytes": built.meta["used_bytes"] if built else None,
                     "built_at": built.meta["built_at"] if built else None})
    app.emit(rows, lambda: app.table(
        ["NAME", "STATUS", "SIZE", "BUILT", "DESCRIPTION"],
        [[r["name"], r["status"], f"{r['used_bytes'] / 2**20:.0f} MiB" if r["used_bytes"] else "-",
          r["built_at"] or "-", r["description"]] for r in rows]))
    for problem in problems:   # the good ones are listed; each bad one is said, and the exit is not 0
        app.warn(f"left out: {problem.message}")
    if problems:
        from spicectl.errors import InvalidInput

        raise InvalidInput(f"{len(problems)} image recipe{'s' if len(problems) > 1 else ''} left out (above)")


@image.command("show")
@click.argument("name")
@json_option
@pass_app
def show_cmd(app: App, name: str) -> None:
    """Show a recipe, its build (if any) and the guests whose disks are based on it."""
    from spicectl.image import store
    from spicectl.image.recipe import load_recipe

    s = app.settings
    recipe = load_recipe(name, s.recipes_dir)
    status, built = _status(app, recipe)
    data = {"name": recipe.name, "status": status, "recipe": str(recipe.path), "digest": recipe.digest(),
            "description": recipe.description, "suite": recipe.suite, "packages": list(recipe.packages),
            "overlays": [str(p) for p in recipe.overlays], "enable": list(recipe.enable),
            "cmdline": recipe.cmdline, "template": recipe.template,
            "build": built.as_dict() if built else None,
            "used_by": [str(p) for p in store.users_of(built, s.images_dir)] if built else []}

    def human() -> None:
        pairs = [("Name", recipe.name), ("Status", status), ("Description", recipe.description),
                 ("Recipe", recipe.path), ("Suite", recipe.suite), ("Packages", list(recipe.packages)),
                 ("Overlays", [p.name for p in recipe.overlays]), ("Kernel args", recipe.cmdline),
                 ("Template", recipe.template or "-")]
        if built:
            pairs += [("Built", built.meta["built_at"]), ("Build time", f"{built.meta['build_seconds']:.0f}s"),
                      ("Disk", f"{built.disk} ({built.meta['used_bytes'] / 2**20:.0f} MiB used)"),
                      ("Kernel", built.meta["kernel_release"]), ("Guest disks on it", data["used_by"] or "-")]
        app.fields(pairs)

    app.emit(data, human)


@image.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete even if guests' disks are based on it (they stop working).")
@json_option
@pass_app
def delete_cmd(app: App, name: str, force: bool) -> None:
    """Delete every cached build of image NAME (the recipe stays)."""
    from spicectl.image import store
    from spicectl.image.recipe import check_name

    s = app.settings
    removed = store.delete(s.image_cache, check_name(name), s.images_dir, force=force)
    app.emit({"name": name, "deleted": [b.version for b in removed]},
             lambda: click.echo(f"{name}: deleted {len(removed)} build(s)"))
