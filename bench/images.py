"""Guest images, side by side with doing the same by hand:

  * build, cold: `spicectl image build --force` vs the same `mmdebstrap` + `mkfs.ext4 -d` run by hand
  * build, cached: `spicectl image build` (recipe unchanged) vs `spicectl --help` (start-up alone)
  * image size: blocks the built disk uses, and the kernel and initrd beside it
  * boot to desktop under TCG (and KVM where the probe says it runs a guest): `spicectl vm create --image
    --wait` + the guest's "desktop=ready" on its serial console, vs bare QEMU with the same disk and kernel
  * ten guests from one base: the overlays' blocks vs ten sparse copies of the base

    .venv/bin/python bench/images.py [--image debian-desktop] [--skip-build]

Uses a state dir and image cache of its own under /tmp (a cold build takes about three minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import SPICECTL, ensure_apt


def run(env: dict, *args: str, timeout: float = 1800) -> str:
    return subprocess.run([SPICECTL, *args], env=env, check=True, capture_output=True, text=True,
                          timeout=timeout).stdout


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def by_hand(env: dict, image: str, work: Path) -> float:
    """The build's two steps run directly, with the arguments spicectl would pass."""
    script = ("import sys; from pathlib import Path; from spicectl.image.recipe import load_recipe;"
              "from spicectl.image.build import mmdebstrap_argv, check_host;"
              f"r = load_recipe({image!r}); "
              f"print('\\0'.join(mmdebstrap_argv(r, check_host()[0], Path({str(work / 'root')!r}))));"
              "print(r.size_bytes)")
    out = subprocess.run([str(Path(SPICECTL).parent / "python"), "-c", script], env=env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    argv, size = out[0].split("\0"), int(out[1])

    def steps() -> None:
        subprocess.run(argv, check=True, capture_output=True)
        disk = work / "disk.raw"
        with open(disk, "wb") as fh:
            fh.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(work / "root"), str(disk)], check=True)

    seconds = timed(steps)
    subprocess.run(["rm", "-rf", str(work / "root")], check=True)
    return seconds


def blocks(path: Path) -> int:
    return path.stat().st_blocks * 512


def boot_with_spicectl(env: dict, image: str, virt: str, name: str) -> float:
    def go() -> None:
        run(env, "vm", "create", name, "--image", image, "--virt-type", virt, "--wait")
        run(env, "console", name, "--send", "\\n", "--expect", r"root@spicectl-guest:\S*# ", "--retry-every", "3",
            "--timeout", "900")
        run(env, "console", name, "--send", "until [ -e /run/spicectl-desktop-ready ]; do sleep 1; done; "
            "spicectl-report\\n", "--expect", "SPICECTL done=1", "--timeout", "900")
    seconds = timed(go)
    run(env, "vm", "delete", name)
    return seconds


def boot_bare_qemu(built: dict, virt: str, work: Path) -> float:
    serial = work / "serial.log"
    serial.unlink(missing_ok=True)
    accel = ["-accel", "kvm"] if virt == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    argv = ["qemu-system-x86_64", "-machine", "q35", *accel, "-m", "2048", "-smp", "2", "-nodefaults",
            "-display", "none", "-vga", "qxl", "-spice", "port=5999,addr=127.0.0.1,disable-ticketing=on",
            "-device", "virtio-serial", "-chardev", "spicevmc,id=vdagent,name=vdagent",
            "-device", "virtserialport,chardev=vdagent,name=com.redhat.spice.0",
            "-device", "ich9-intel-hda", "-device", "hda-duplex", "-device", "ich9-usb-ehci1",
            "-drive", f"file={built['disk']},format=raw,if=virtio,snapshot=on",
            "-kernel", built["kernel"], "-initrd", built["initrd"], "-append", built["cmdline"],
            "-serial", f"file:{serial}"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the ready service writes its report to the console by itself once X is drawn
        while not (serial.exists() and re.search(r"SPICECTL desktop=(ready|none)", serial.read_text(errors="replace"))):
            if proc.poll() is not None or time.perf_counter() - start > 900:
                raise RuntimeError("bare QEMU guest never got ready")
            time.sleep(0.2)
        return time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="debian-desktop")
    parser.add_argument("--skip-build", action="store_true", help="use a build already in the bench cache")
    args = parser.parse_args()
    ensure_apt("mmdebstrap", "e2fsprogs", "qemu-system-x86", "qemu-utils")
    base = Path(tempfile.gettempdir()) / "spicectl-bench-images"
    base.mkdir(exist_ok=True)
    env = {**os.environ, "SPICECTL_STATE_DIR": str(base / "state"), "SPICECTL_IMAGE_CACHE": str(base / "cache"),
           "SPICECTL_CONFIG": str(base / "none.toml")}
    print(f"image {args.image}")
    if not args.skip_build:
        cold = timed(lambda: run(env, "image", "build", args.image, "--force"))
        work = base / "by-hand"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        hand = by_hand(env, args.image, work)
        shutil.rmtree(work, ignore_errors=True)
        print(f"build, cold        spicectl {cold:7.1f} s   by hand (mmdebstrap + mkfs.ext4) {hand:7.1f} s   "
              f"ratio {cold / hand:.2f}")
    built = json.loads(run(env, "image", "build", args.image, "--json"))
    cached = min(timed(lambda: run(env, "image", "build", args.image)) for _ in range(5))
    startup = min(timed(lambda: run(env, "--help")) for _ in range(5))
    print(f"build, cached      spicectl {cached * 1000:7.0f} ms  spicectl --help {startup * 1000:7.0f} ms   "
          f"ratio {cached / startup:.2f}")
    disk, kernel, initrd = (Path(built[k]) for k in ("disk", "kernel", "initrd"))
    print(f"image size         disk {blocks(disk) / 2**20:.0f} MiB used of {disk.stat().st_size / 2**20:.0f} MiB; "
          f"kernel {kernel.stat().st_size / 2**20:.1f} MiB, initrd {initrd.stat().st_size / 2**20:.1f} MiB")

    kvm = json.loads(subprocess.run([SPICECTL, "host", "check", "--json"], env=env, capture_output=True,
                                    text=True).stdout)
    accel = next(c for c in kvm["checks"] if c["check"] == "accel")
    kinds = ["qemu"] + (["kvm"] if accel["detail"].startswith("KVM") else [])
    if "kvm" not in kinds:
        print(f"boot, KVM          not measured: {accel['detail']}")
    for virt in kinds:
        ours = boot_with_spicectl(env, args.image, virt, f"bench-{virt}")
        bare = boot_bare_qemu(built, virt, base)
        label = "TCG" if virt == "qemu" else "KVM"
        print(f"boot to desktop {label}  spicectl {ours:7.1f} s   bare QEMU {bare:7.1f} s   ratio {ours / bare:.2f}")

    names = [f"bench-ten-{i}" for i in range(10)]
    for name in names:
        run(env, "vm", "create", name, "--image", args.image, "--virt-type", "qemu", "--no-start")
    images = base / "state" / "images"
    overlays = sum(blocks(images / f"{n}-root.qcow2") for n in names)
    copies = blocks(disk) * 10  # a sparse copy takes what the base takes
    print(f"ten guests         overlays {overlays / 2**20:7.1f} MiB + one base {blocks(disk) / 2**20:.0f} MiB   "
          f"ten sparse copies {copies / 2**20:.0f} MiB   ratio {(overlays + blocks(disk)) / copies:.3f}")
    for name in names:
        run(env, "vm", "delete", name)


if __name__ == "__main__":
    main()
