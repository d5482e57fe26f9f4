"""Building an image from its recipe: mmdebstrap into a folder, `mkfs.ext4 -d` into a sparse file.

No loop devices, no network beyond the host's own apt sources. Everything is
built in a hidden folder beside the final one and renamed into place only
when complete: an interrupted or failed build leaves nothing but its log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from spicectl.errors import Conflict, EnvironmentProblem, InvalidInput, SpicectlError
from spicectl.image import store
from spicectl.image.recipe import Recipe

Progress = Callable[[str], None]
LOG = "last-build.log"
LOCK_WAIT_SECONDS = 3600


class BuildFailed(SpicectlError):
    """mmdebstrap or mkfs failed; the message names the log."""


@dataclass(frozen=True)
class BuildResult:
    image: store.BuiltImage
    cached: bool
    pruned: list[str]


def _noop(_message: str) -> None:
    pass


def _program(name: str, package: str) -> str:
    path = shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/sbin") if os.path.exists(f"{d}/{name}")),
                                      None)
    if path is None:
        raise EnvironmentProblem(f"{name} is not installed; it builds guest images",
                                 hint=f"apt-get install {package}")
    return path


def check_host() -> tuple[str, str]:
    """mmdebstrap and mkfs.ext4, and apt sources for mmdebstrap to read."""
    mmdebstrap = _program("mmdebstrap", "mmdebstrap")
    mkfs = _program("mkfs.ext4", "e2fsprogs")
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    if not any(p.is_file() and p.stat().st_size for p in sources):
        raise EnvironmentProblem("this host has no apt sources; images are built from Debian's packages",
                                 hint="add a Debian mirror to /etc/apt/sources.list.d/")
    return mmdebstrap, mkfs


def unprivileged_problem(uid: int | None = None) -> str | None:
    """Why this user cannot build images (mmdebstrap's unshare mode), with the fix; None as root, or when
    newuidmap, this user's subordinate id ranges and unprivileged user namespaces are all there."""
    import os
    import pwd
    import shutil

    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return None
    name = pwd.getpwuid(uid).pw_name
    if not shutil.which("newuidmap", path="/usr/bin:/bin:/usr/sbin:/sbin"):
        return "newuidmap is missing (apt-get install uidmap, as root)"
    for table in ("/etc/subuid", "/etc/subgid"):
        try:
            owners = {line.split(":", 1)[0] for line in Path(table).read_text().splitlines() if ":" in line}
        except OSError:
            owners = set()
        if name not in owners and str(uid) not in owners:
            return f"{table} has no range for {name} (as root: usermod --add-subuids 100000-165535 " \
                   f"--add-subgids 100000-165535 {name})"
    knob = Path("/proc/sys/kernel/unprivileged_userns_clone")
    if knob.exists() and knob.read_text().strip() == "0":
        return "unprivileged user namespaces are off (as root: sysctl kernel.unprivileged_userns_clone=1)"
    return None


def mmdebstrap_argv(recipe: Recipe, mmdebstrap: str, root: Path) -> list[str]:
    argv = [mmdebstrap, "--variant=essential", "--mode=auto", "--include=" + ",".join(recipe.packages)]
    argv += [f"--dpkgopt=path-exclude={glob}" for glob in recipe.exclude]
    # the shell hooks get the root as $1; paths are passed as arguments, never spliced into code
    argv += [f"--customize-hook=sync-in {overlay} /" for overlay in recipe.overlays]
    if recipe.enable:
        argv.append('--customize-hook=chroot "$1" systemctl enable ' + " ".join(recipe.enable))
    argv += [recipe.suite, str(root)]
    return argv


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]
    return sorted((p for p in points if (p + "/").startswith(prefix)), key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rmtree that first unmounts what an interrupted mmdebstrap may have left mounted inside."""
    if not path.exists():
        return
    for point in _mounts_below(path):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if _mounts_below(path):
        raise EnvironmentProblem(f"{path} still has file systems mounted inside; not removing it",
                                 hint=f"unmount them (grep {path} /proc/mounts), then remove it")
    for _attempt in range(3):  # a process that was just stopped may still have been writing into it
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        if os.getuid() != 0:
            # an unprivileged build's root tree belongs to the user's subordinate ids: removed from
            # inside the same user namespace mmdebstrap built it in
            subprocess.run([*userns_prefix(), "rm", "-rf", "--one-file-system", str(path)], capture_output=True)
            if not path.exists():
                return
        time.sleep(0.5)
    raise EnvironmentProblem(f"could not remove {path}", hint="remove it by hand")


def userns_prefix() -> list[str]:
    """For a regular user: run a command as root of a user namespace that maps the user's first
    subordinate id range from 0, as mmdebstrap's unshare mode does (so the tree it built is root's
    there), and the user's own id to 65536 (so the build folder stays writable). Empty for root."""
    if os.getuid() == 0:
        return []
    return ["unshare", "--map-users=auto", "--map-groups=auto", "--map-user=65536", "--map-group=65536",
            "--setuid", "0", "--setgid", "0"]


def _lock(directory: Path, progress: Progress) -> int:
    from spicectl.locks import lock

    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    return lock(directory / ".lock", wait=LOCK_WAIT_SECONDS, on_busy=lambda: progress(
        f"waiting for another build of {directory.name}"),
        busy=f"another build of {directory.name} ran for more than an hour", poll=0.5)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the build is, so that it cleans up as after Ctrl-C."""


def _raise_terminated(_signum, _frame) -> None:
    raise _Terminated()


def _remove_abandoned(name_dir: Path) -> None:
    """Build folders of builds that were killed outright (SIGKILL, power loss): their process is gone."""
    for work in name_dir.glob(".build-*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_tree(work)


def _run_logged(argv: list[str], log, progress: Progress, what: str) -> None:
    log.write(f"$ {' '.join(argv)}\n".encode())
    log.flush()
    # its own process group: an interrupt is passed on by us, once, so mmdebstrap can unmount and clean up
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()  # the log is how a user (or a test) follows a long build
            text = line.decode(errors="replace").strip()
            if text.startswith("I: "):
                progress(f"{what}: {text[3:]}")
        proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if proc.returncode != 0:
        raise BuildFailed(f"{what} failed (exit {proc.returncode})")


def _stop(proc: subprocess.Popen) -> None:
    """Ask the tool's whole process group to stop (SIGTERM: mmdebstrap cleans up), then make sure."""
    for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _single(directory: Path, pattern: str, what: str) -> Path:
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise InvalidInput(f"the image has {len(found)} {what} files in /boot (expected one)",
                           hint="the recipe must install exactly one kernel, e.g. linux-image-amd64")
    return found[0]


def build(recipe: Recipe, cache: Path, images_dir: Path, *, force: bool = False,
          progress: Progress = _noop) -> BuildResult:
    """Build `recipe` into the cache unless a build of the same digest is there (or `force`)."""
    digest = recipe.digest()
    version = store.version_of(digest)
    name_dir = cache / recipe.name
    lock = _lock(name_dir, progress)
    try:
        _remove_abandoned(name_dir)
        existing = store.find(cache, recipe.name, digest)
        if existing is not None and not force:
            return BuildResult(existing, True, [])
        users = store.users_of(existing, images_dir) if existing is not None else []
        if users:
            # replacing a base under a guest's overlay would change the blocks beneath its disk
            raise Conflict(f"image {recipe.name} is the base of guest disks, e.g. {users[0]}; "
                           "not rebuilding it in place",
                           hint="delete those guests first, or change the recipe (a new version is built beside)")
        mmdebstrap, mkfs = check_host()
        work = name_dir / f".build-{version}-{os.getpid()}"
        remove_tree(work)
        work.mkdir(mode=0o755)
        log_path = name_dir / LOG
        started = time.monotonic()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) \
            if threading.current_thread() is threading.main_thread() else None
        try:
            with open(log_path, "wb") as log:
                root = work / "root"
                _run_logged(mmdebstrap_argv(recipe, mmdebstrap, root), log, progress, "mmdebstrap")
                kernel = _single(root / "boot", "vmlinuz-*", "kernel")
                initrd = _single(root / "boot", "initrd.img-*", "initrd")
                shutil.copyfile(kernel, work / store.KERNEL)
                shutil.copyfile(initrd, work / store.INITRD)
                disk = work / store.DISK
                with open(disk, "wb") as fh:
                    fh.truncate(recipe.size_bytes)
                progress(f"making a {recipe.size_bytes >> 20} MiB ext4 file system")
                try:
                    # (for a regular user inside the build's user namespace: the tree's files are root's
                    # there, and the image records them so; the disk file stays the user's)
                    _run_logged([*userns_prefix(), mkfs, "-q", "-F", "-L", "spicectl-root", "-d", str(root),
                                 str(disk)], log, progress, "mkfs.ext4")
                except BuildFailed:
                    raise BuildFailed(f"the root file system does not fit in {recipe.size_bytes >> 20} MiB "
                                      f"(or mkfs.ext4 failed)", hint=f"raise size in {recipe.path}; log: {log_path}") \
                        from None
                remove_tree(root)
                os.chmod(disk, 0o444)  # a base: guests write to their own overlays, never to it
            meta = {
                "name": recipe.name,
                "digest": digest,
                "suite": recipe.suite,
                "cmdline": recipe.cmdline,
                "template": recipe.template,
                "recipe": str(recipe.path),
                "kernel_release": kernel.name[len("vmlinuz-") :],
                "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "build_seconds": round(time.monotonic() - started, 1),
                "size_bytes": recipe.size_bytes,
                "used_bytes": disk.stat().st_blocks * 512,
            }
            (work / store.META).write_text(json.dumps(meta, indent=2) + "\n")
            final = name_dir / version
            remove_tree(final)
            os.replace(work, final)
        except BuildFailed as exc:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
            raise BuildFailed(exc.message + (f": {tail[0].strip()}" if tail else ""),
                              hint=exc.hint or f"full log: {log_path}") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            remove_tree(work)
        pruned = store.delete(cache, recipe.name, images_dir, keep=version)
        image = store.find(cache, recipe.name, digest)
        assert image is not None
        return BuildResult(image, False, [b.version for b in pruned])
    finally:
        os.close(lock)
