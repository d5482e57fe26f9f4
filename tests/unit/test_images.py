"""Image recipes and the cache of built images (no build here: tests/integration/test_images.py builds)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from spicectl.image import store
from spicectl.image.build import mmdebstrap_argv
from spicectl.image.recipe import list_recipes, load_file, load_recipe
from tests.conftest import REPO, require_binary

TINY = REPO / "tests" / "data" / "images" / "tiny.toml"


def copy_recipe(tmp_path: Path, text: str | None = None) -> Path:
    """tiny.toml and its overlay, copied so a test may change them."""
    root = tmp_path / "recipes"
    shutil.copytree(TINY.parent, root)
    path = root / "tiny.toml"
    if text is not None:
        path.write_text(text)
    return path


def test_shipped_recipes_load_and_name_their_overlays():
    recipes = {r.name: r for r in list_recipes()}
    assert {"debian-desktop", "debian-minimal"} <= set(recipes)
    desktop = recipes["debian-desktop"]
    assert "xserver-xorg-video-qxl" in desktop.packages and "spice-vdagent" in desktop.packages
    assert [p.name for p in desktop.overlays] == ["common", "desktop"]
    assert desktop.template == "desktop" and "console=ttyS0" in desktop.cmdline
    assert "console=tty0" not in desktop.cmdline  # the text console floods SPICE with tiny updates


def test_digest_follows_what_the_image_is_made_of_not_its_description(tmp_path):
    path = copy_recipe(tmp_path)
    first = load_file(path).digest()
    assert load_file(path).digest() == first
    path.write_text(path.read_text().replace('description = "test recipe"', 'description = "another"'))
    assert load_file(path).digest() == first
    path.write_text(path.read_text().replace('"systemd-sysv"]', '"systemd-sysv", "less"]'))
    second = load_file(path).digest()
    assert second != first
    motd = path.parent / "files" / "tiny" / "etc" / "motd"
    motd.write_text("changed\n")
    third = load_file(path).digest()
    assert third != second
    motd.chmod(0o755)
    assert load_file(path).digest() != third


@pytest.mark.parametrize("change, message", [
    (("suite = ", "sweet = "), "unknown key 'sweet'"),
    (('"systemd-sysv"]', '"systemd-sysv,evil"]'), "not a valid name"),
    (('overlays = ["tiny"]', 'overlays = ["absent"]'), "no overlay folder files/absent"),
    (('size = "1G"', 'size = "10M"'), "too small"),
    (('size = "1G"', "size = 1"), "size must be a str"),
    (('enable = ["getty@tty1.service"]', 'enable = ["rm -rf /"]'), "not a valid name"),
    (('cmdline = "root=/dev/vda rw console=ttyS0"', 'cmdline = "a\\u0007b"'), "control character"),
    (('suite = "bookworm"\n', ""), "missing suite"),
])
def test_bad_recipes_are_refused_with_one_line(run, tmp_path, change, message):
    path = copy_recipe(tmp_path)
    path.write_text(path.read_text().replace(*change))
    r = run("image", "show", str(path))
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr and r.stderr.count("\n") <= 2


def test_binary_recipe_is_bad_input(run, tmp_path):
    path = copy_recipe(tmp_path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    r = run("image", "show", str(path))
    assert r.exit_code == 2 and "UTF-8" in r.stderr


def test_unknown_image_names_the_recipes(run):
    r = run("image", "show", "nope")
    assert r.exit_code == 2 and "debian-desktop" in r.stderr
    r = run("vm", "create", "x", "--image", "../etc", "--print-xml")
    assert r.exit_code == 3 and "no image recipe at ../etc" in r.stderr


def test_mmdebstrap_gets_each_setting_as_its_own_argument():
    recipe = load_file(TINY)
    argv = mmdebstrap_argv(recipe, "/usr/bin/mmdebstrap", Path("/cache/root"))
    assert argv[:3] == ["/usr/bin/mmdebstrap", "--variant=essential", "--mode=auto"]
    assert "--include=linux-image-amd64,systemd-sysv" in argv
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    assert f"--customize-hook=sync-in {TINY.parent / 'files' / 'tiny'} /" in argv
    assert '--customize-hook=chroot "$1" systemctl enable getty@tty1.service' in argv
    assert argv[-2:] == ["bookworm", "/cache/root"]


def test_list_and_show_before_any_build(run):
    rows = {r["name"]: r for r in run("image", "list", "--json").json()}
    assert rows["debian-desktop"]["status"] == "not built" and rows["debian-desktop"]["builtin"]
    shown = run("image", "show", "debian-minimal", "--json").json()
    assert shown["status"] == "not built" and shown["build"] is None and len(shown["digest"]) == 64


def test_a_users_recipe_shadows_a_builtin_one(run, tmp_path, state_dir):
    config = tmp_path / "config.toml"
    user = tmp_path / "my-images"
    user.mkdir()
    (user / "debian-minimal.toml").write_text(TINY.read_text().replace('overlays = ["tiny"]', 'overlays = ["common"]')
                                              .replace("test recipe", "mine"))
    config.write_text(f'recipes_dir = "{user}"\n')
    shown = run("image", "show", "debian-minimal", "--json", env={"SPICECTL_CONFIG": str(config)}).json()
    assert shown["description"] == "mine" and shown["recipe"] == str(user / "debian-minimal.toml")
    assert shown["overlays"][0].endswith("images/files/common")  # a shipped overlay serves a user's recipe


def test_build_without_mmdebstrap_says_what_to_install(run, tmp_path):
    if shutil.which("mmdebstrap", path="/usr/sbin:/sbin"):
        pytest.skip("mmdebstrap is in /usr/sbin here, where spicectl also looks")
    r = run("image", "build", str(copy_recipe(tmp_path)), env={"PATH": str(tmp_path / "nothing"),
                                                              "SPICECTL_IMAGE_CACHE": str(tmp_path / "cache")})
    assert r.exit_code == 10, r.stderr
    assert "mmdebstrap is not installed" in r.stderr and "apt-get install mmdebstrap" in r.stderr
    assert not any((tmp_path / "cache").rglob("*.raw"))


def fake_build(cache: Path, recipe, built_at: str = "2026-12-01T00:00:00+00:00") -> store.BuiltImage:
    """The files a build leaves, for tests of the cache's bookkeeping."""
    directory = cache / recipe.name / store.version_of(recipe.digest())
    directory.mkdir(parents=True)
    for name in (store.DISK, store.KERNEL, store.INITRD):
        (directory / name).write_bytes(b"")
    (directory / store.META).write_text(json.dumps({"cmdline": recipe.cmdline, "built_at": built_at,
                                                    "used_bytes": 1 << 20, "size_bytes": 1 << 30}))
    built = store.find(cache, recipe.name, recipe.digest())
    assert built is not None
    return built


def test_a_base_that_a_guest_disk_uses_is_not_deleted_without_force(run, tmp_path, state_dir):
    qemu_img = require_binary("qemu-img")
    cache = state_dir / "os-images"
    built = fake_build(cache, load_file(TINY))
    images = state_dir / "images"
    images.mkdir(parents=True)
    overlay = images / "web-root.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(built.disk), "-F", "raw", str(overlay),
                    "1G"], check=True)
    assert store.users_of(built, images) == [overlay]
    r = run("image", "delete", "tiny")
    assert r.exit_code == 4 and "web-root.qcow2" in r.stderr
    assert built.disk.exists()
    overlay.unlink()
    assert run("image", "delete", "tiny", "--json").json()["deleted"] == [built.version]
    assert not (cache / "tiny").exists()
    assert run("image", "delete", "tiny").exit_code == 3


def test_a_changed_recipe_is_stale_and_create_asks_for_a_build(run, tmp_path, state_dir):
    path = copy_recipe(tmp_path)
    fake_build(state_dir / "os-images", load_file(path))
    assert run("image", "show", str(path), "--json").json()["status"] == "built"
    path.write_text(path.read_text().replace('"systemd-sysv"]', '"systemd-sysv", "less"]'))
    assert run("image", "show", str(path), "--json").json()["status"] == "stale"
    r = run("--connect", "test:///default", "vm", "create", "web", "--image", str(path))
    assert r.exit_code == 3 and "built from an older recipe" in r.stderr and "spicectl image build" in r.stderr


def test_image_guest_boots_its_kernel_from_an_overlay_with_a_serial_console(run, state_dir):
    from lxml import etree

    r = run("vm", "create", "web", "--image", str(TINY), "--kernel-arg", "spicectl.scene=static",
            "--virt-type", "qemu", "--print-xml")
    assert r.exit_code == 0, r.stderr
    dom = etree.fromstring(r.stdout.encode())
    base = state_dir.absolute() / "os-images" / "tiny" / store.version_of(load_file(TINY).digest())
    assert dom.findtext("os/kernel") == str(base / "vmlinuz")
    assert dom.findtext("os/initrd") == str(base / "initrd.img")
    assert dom.findtext("os/cmdline") == "root=/dev/vda rw console=ttyS0 spicectl.scene=static"
    disk = dom.find("devices/disk")
    assert disk.find("target").get("dev") == "vda"
    assert disk.find("source").get("file") == str(state_dir.absolute() / "images" / "web-root.qcow2")
    assert disk.find("backingStore/source").get("file") == str(base / "disk.raw")
    assert dom.find("devices/console[@type='pty']/target").get("type") == "serial"
    # the recipe's template applies unless -t says otherwise
    assert "headless-ci" in r.stdout


def test_print_qemu_for_an_image_creates_the_overlay_and_boots_the_kernel(run):
    r = run("vm", "create", "web", "--image", str(TINY), "--virt-type", "qemu", "--print-qemu")
    assert r.exit_code == 0, r.stderr
    assert "qemu-img create -q -f qcow2 -b" in r.stdout and "-F raw" in r.stdout
    assert "-kernel" in r.stdout and "-append 'root=/dev/vda rw console=ttyS0'" in r.stdout
    assert "-serial pty" in r.stdout


def test_kernel_args_are_single_words(run):
    r = run("vm", "create", "web", "--image", str(TINY), "--kernel-arg", "a b", "--print-xml")
    assert r.exit_code == 2 and "one non-empty word" in r.stderr
    r = run("vm", "create", "web", "--kernel-arg", "quiet", "--print-xml")
    assert r.exit_code == 2 and "--kernel-arg needs --image" in r.stderr


def test_qemu_option_values_escape_commas(run):
    r = run("vm", "create", "web", "--virt-type", "qemu", "--print-qemu",
            "--cdrom", "/tmp/a.iso,format=qcow2,file=/etc/shadow")
    assert r.exit_code == 0, r.stderr
    assert "file=/tmp/a.iso,,format=qcow2,,file=/etc/shadow,format=raw" in r.stdout
    r = run("vm", "create", "web", "--virt-type", "qemu", "--print-qemu", "--video", "virtio", "--gl",
            "--rendernode", "/dev/dri/a,b")
    assert "rendernode=/dev/dri/a,,b" in r.stdout


def test_recipe_by_path_checks_its_name(tmp_path):
    bad = tmp_path / "bad name.toml"
    bad.write_text(TINY.read_text())
    from spicectl.errors import InvalidInput

    with pytest.raises(InvalidInput):
        load_recipe(str(bad))


def test_force_does_not_rebuild_a_base_under_a_guests_disk(run, state_dir):
    qemu_img = require_binary("qemu-img")
    built = fake_build(state_dir / "os-images", load_file(TINY))
    images = state_dir / "images"
    images.mkdir(parents=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(built.disk), "-F", "raw",
                    str(images / "web-root.qcow2"), "1G"], check=True)
    r = run("image", "build", str(TINY), "--force")
    assert r.exit_code == 4 and "not rebuilding it in place" in r.stderr
    assert built.disk.exists()


def test_a_fifo_in_an_overlay_is_bad_input_not_a_hang(run, tmp_path):
    import os

    path = copy_recipe(tmp_path)
    os.mkfifo(path.parent / "files" / "tiny" / "etc" / "pipe")
    r = run("image", "show", str(path))
    assert r.exit_code == 2, r.stderr
    assert "pipe" in r.stderr and "not a regular file" in r.stderr


def test_one_bad_user_recipe_leaves_the_others_listed_and_is_named(run, tmp_path):
    config = tmp_path / "config.toml"
    user = tmp_path / "my-images"
    user.mkdir()
    (user / "broken.toml").write_text("suite = \n")
    config.write_text(f'recipes_dir = "{user}"\n')
    r = run("image", "list", "--json", env={"SPICECTL_CONFIG": str(config)})
    assert r.exit_code == 2
    assert {"debian-desktop", "debian-minimal"} <= {row["name"] for row in json.loads(r.stdout)}
    assert "left out:" in r.stderr and "broken.toml" in r.stderr and "1 image recipe left out" in r.stderr
