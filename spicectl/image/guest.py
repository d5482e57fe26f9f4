"""A guest booted from a built image: a copy-on-write overlay on its disk, its kernel booted directly."""

from __future__ import annotations

from pathlib import Path

from spicectl.domain.spec import DiskSpec, VMSpec
from spicectl.errors import InvalidInput, NotFound
from spicectl.image import store
from spicectl.image.recipe import Recipe


def image_dir(recipe: Recipe, cache: Path) -> Path:
    """Where the build of this recipe is (or will be) cached."""
    return cache / recipe.name / store.version_of(recipe.digest())


def require_built(recipe: Recipe, cache: Path) -> store.BuiltImage:
    built = store.find(cache, recipe.name, recipe.digest())
    if built is None:
        stale = bool(store.versions(cache, recipe.name))
        raise NotFound(f"image {recipe.name} is {'built from an older recipe' if stale else 'not built'}",
                       hint=f"spicectl image build {recipe.name}")
    return built


def overlay_path(spec_name: str, images_dir: Path) -> Path:
    return images_dir / f"{spec_name}-root.qcow2"


def apply_image(spec: VMSpec, recipe: Recipe, cache: Path, images_dir: Path, kernel_args: tuple[str, ...] = ()) -> None:
    """Boot `spec` from the recipe's image: root disk first (/dev/vda), kernel, initrd, command line, serial console."""
    for arg in kernel_args:
        if not arg or any(ord(c) < 32 for c in arg) or " " in arg:
            raise InvalidInput(f"--kernel-arg {arg!r} must be one non-empty word without control characters")
    base = image_dir(recipe, cache)
    spec.disks.insert(0, DiskSpec(path=str(overlay_path(spec.name, images_dir)), format="qcow2", bus="virtio",
                                  backing=str(base / store.DISK)))
    spec.kernel, spec.initrd = str(base / store.KERNEL), str(base / store.INITRD)
    spec.cmdline = " ".join([recipe.cmdline, *kernel_args])
    spec.serial_console = True
    spec.image = recipe.name
