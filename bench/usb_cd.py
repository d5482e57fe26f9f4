"""An ISO read by a guest through a USB CD-ROM over SPICE: `spicectl usb share --cd` side by side with
remote-viewer --spice-share-cd (spice-gtk's emulated CD), the same ISO, the same guest.

    .venv/bin/python bench/usb_cd.py [--megabytes 100] [--runs 3]

Boots the desktop image in a private state dir (remote-viewer under Xvfb). Each run plugs the ISO in
with one client, then the other: the guest mounts the new USB CD and reads the file with dd (the time
dd reports, in the guest: a fresh device each time, so nothing is cached), and checks its SHA-256.
Runs alternate so a slow stretch of the machine hits both; MB/s is megabytes (10^6) per second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SPICECTL, ensure_apt  # noqa: E402

GUEST = "bench-usb"
# once udev has named the USB CD: mount it, read the file with dd (its own timing), check it, unmount
READ = ("for i in $(seq 120); do lsblk -dno TRAN | grep -q usb && break; sleep 1; done; udevadm settle; "
        "D=/dev/$(lsblk -dno NAME,TRAN | awk '$2 == \"usb\" {print $1; exit}'); mkdir -p /mnt/cd; "
        "mount -o ro $D /mnt/cd && dd if=/mnt/cd/payload.bin of=/dev/null bs=1M 2>&1 | tail -n1; "
        "sha256sum /mnt/cd/payload.bin; umount /mnt/cd; udevadm settle; echo BENCH-$((6*7))-DONE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megabytes", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ensure_apt("xvfb", "virt-viewer", "xorriso", "mmdebstrap")
    state = tempfile.mkdtemp(prefix="spicectl-bench-usb-")
    env = {**os.environ, "SPICECTL_STATE_DIR": state, "SPICECTL_PERSIST": "0",
           "SPICECTL_IMAGE_CACHE": os.environ.get("SPICECTL_IMAGE_CACHE", "/var/cache/spicectl-test/images")}

    def spicectl(*a: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([SPICECTL, *a], env=env, check=True, capture_output=True, text=True, **kw)

    def guest_read() -> float:
        out = spicectl("console", GUEST, "--send", READ + "\\n", "--expect", r"BENCH-42-DONE",
                       "--timeout", "600", "--json", timeout=700).stdout
        text = json.loads(out)["output"].replace("\r", "")
        if digest not in text:
            raise SystemExit(f"the guest did not read the file whole:\n{text[-2000:]}")
        seconds = re.search(r"copied, ([\d.]+) s", text)
        if not seconds:
            raise SystemExit(f"no dd timing in:\n{text[-2000:]}")
        return float(seconds.group(1))

    tree = Path(state) / "tree"
    tree.mkdir()
    payload = os.urandom(args.megabytes * 1_000_000)
    digest = hashlib.sha256(payload).hexdigest()
    (tree / "payload.bin").write_bytes(payload)
    iso = Path(state) / "payload.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(iso), str(tree)], check=True,
                   capture_output=True)
    xvfb = subprocess.Popen(["Xvfb", ":94", "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    display = {**env, "DISPLAY": ":94"}
    try:
        spicectl("image", "build", "debian-desktop", timeout=1800)
        spicectl("vm", "create", GUEST, "--image", "debian-desktop", "--virt-type", "qemu", "--wait", timeout=300)
        spicectl("console", GUEST, "--send", "spicectl-report\\n", "--expect", "desktop=ready",
                 "--retry-every", "10", "--timeout", "300", timeout=400)
        ours, theirs = [], []
        for _ in range(args.runs):
            share = subprocess.Popen([SPICECTL, "usb", "share", GUEST, "--cd", str(iso), "--json"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # (it takes the private libvirt for its ticket; the console below would hold it meanwhile)
                line = share.stdout.readline() if share.stdout else ""
                if '"attached"' not in line:
                    raise SystemExit(f"usb share did not plug the CD in: {line}")
                ours.append(guest_read())
            except SystemExit:
                share.terminate()
                out, err = share.communicate(timeout=30)
                print(f"usb share said: {out}{err}", file=sys.stderr)
                raise
            finally:
                share.terminate()
                share.wait(30)
            vv = Path(state) / "bench.vv"
            spicectl("connect", GUEST, "--vv", str(vv), "--ttl", "60")
            viewer = subprocess.Popen(["remote-viewer", f"--spice-share-cd={iso}",
                                       "--spice-usbredir-redirect-on-connect=-1,-1,-1,-1,1", str(vv)], env=display,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                theirs.append(guest_read())
            finally:
                viewer.terminate()
                viewer.wait(30)
            time.sleep(2)
        mb = args.megabytes
        print(f"{args.megabytes} MB read by the guest from a USB CD, dd's own timing, {args.runs} runs")
        print(f"{'client':<40} {'median s':>9} {'MB/s':>7}   runs (MB/s)")
        for name, samples in (("spicectl usb share --cd", ours), ("remote-viewer --spice-share-cd", theirs)):
            median = statistics.median(samples)
            print(f"{name:<40} {median:>9.2f} {mb / median:>7.1f}   " + " ".join(f"{mb / s:.1f}" for s in samples))
        print(f"ratio (ours / remote-viewer's throughput): {statistics.median(theirs) / statistics.median(ours):.2f}x")
    finally:
        subprocess.run([SPICECTL, "vm", "delete", GUEST], env=env, capture_output=True)
        subprocess.run([SPICECTL, "host", "stop"], env=env, capture_output=True)
        xvfb.terminate()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
