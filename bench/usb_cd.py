"""An ISO read by a guest through a USB CD-ROM over SPICE: `spicectl usb share --cd` side by side with
remote-viewer --spice-share-cd (spice-gtk's emulated CD), the same ISO, the same guest.

    .venv/bin/python bench/usb_cd.py [--megabytes 100] [--runs 4] [--reads 3]

Boots the desktop image in a private state dir (remote-viewer under Xvfb). Each run plugs the ISO in
with one client, then the other. The guest waits for the new USB CD, checks the whole device's SHA-256
against the ISO's (untimed), then reads the device `--reads` times with dd and O_DIRECT (nothing
cached; dd's own timing, in the guest). Runs alternate so a slow stretch of the machine hits both.
MB/s is megabytes (10^6) per second; CPU is each client's user+system time per 100 MB read.
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
from _common import SPICECTL, boot_desktop, cpu_seconds, ensure_apt  # noqa: E402

GUEST = "bench-usb"


def guest_script(reads: int) -> str:
    """Once udev has named the USB CD: its checksum, then `reads` timed reads of the whole device."""
    return ("for i in $(seq 120); do lsblk -dno TRAN | grep -q usb && break; sleep 1; done; udevadm settle; "
            "D=/dev/$(lsblk -dno NAME,TRAN | awk '$2 == \"usb\" {print $1; exit}'); "
            "echo SUM $(dd if=$D bs=1M iflag=direct 2>/dev/null | sha256sum); "
            f"for r in $(seq {reads}); do dd if=$D of=/dev/null bs=1M iflag=direct 2>&1 | tail -n1; done; "
            "echo BENCH-$((6*7))-DONE")




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megabytes", type=int, default=100)
    ap.add_argument("--runs", type=int, default=4, help="plugs per client")
    ap.add_argument("--reads", type=int, default=3, help="timed reads of the device per plug")
    args = ap.parse_args()
    ensure_apt("xvfb", "virt-viewer", "xorriso", "mmdebstrap")
    state = tempfile.mkdtemp(prefix="spicectl-bench-usb-")
    env = {**os.environ, "SPICECTL_STATE_DIR": state, "SPICECTL_PERSIST": "0",
           "SPICECTL_IMAGE_CACHE": os.environ.get("SPICECTL_IMAGE_CACHE", "/var/cache/spicectl-test/images")}

    def spicectl(*a: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([SPICECTL, *a], env=env, check=True, capture_output=True, text=True, **kw)

    def guest_reads() -> list[float]:
        out = spicectl("console", GUEST, "--send", guest_script(args.reads) + "\\n", "--expect", r"BENCH-42-DONE",
                       "--timeout", "900", "--json", timeout=1000).stdout
        text = json.loads(out)["output"].replace("\r", "")
        if f"SUM {digest}" not in text:
            raise SystemExit(f"the guest did not read the ISO whole:\n{text[-2000:]}")
        seconds = [float(x) for x in re.findall(r"copied, ([\d.]+) s", text)]
        if len(seconds) != args.reads:
            raise SystemExit(f"not {args.reads} dd timings in:\n{text[-2000:]}")
        return seconds

    def measured(pid: int) -> tuple[list[float], float]:
        """dd's timings, and the client's CPU seconds meanwhile (the checksum pass counts: its
        bytes are in the CPU figure's divisor)."""
        before = cpu_seconds(pid)
        samples = guest_reads()
        return samples, cpu_seconds(pid) - before

    tree = Path(state) / "tree"
    tree.mkdir()
    payload = os.urandom(args.megabytes * 1_000_000)
    (tree / "payload.bin").write_bytes(payload)
    iso = Path(state) / "payload.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(iso), str(tree)], check=True,
                   capture_output=True)
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    xvfb = subprocess.Popen(["Xvfb", ":94", "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    display = {**env, "DISPLAY": ":94"}
    try:
        boot_desktop(spicectl, GUEST)
        ours: list[float] = []
        theirs: list[float] = []
        cpu_ours = cpu_theirs = 0.0
        for _ in range(args.runs):
            share = subprocess.Popen([SPICECTL, "usb", "share", GUEST, "--cd", str(iso), "--json"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # (it takes the private libvirt for its ticket; the console below would hold it meanwhile)
                line = share.stdout.readline() if share.stdout else ""
                if '"attached"' not in line:
                    raise SystemExit(f"usb share did not plug the CD in: {line}")
                samples, seconds = measured(share.pid)
                ours += samples
                cpu_ours += seconds
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
                time.sleep(3)   # (its start-up is not what is measured)
                samples, seconds = measured(viewer.pid)
                theirs += samples
                cpu_theirs += seconds
            finally:
                viewer.terminate()
                viewer.wait(30)
            time.sleep(2)
        mb = iso.stat().st_size / 1e6
        per_100 = 100 / (mb * (args.reads + 1) * args.runs)
        print(f"a {mb:.0f} MB ISO read whole by the guest from a USB CD with dd (O_DIRECT), dd's own timing: "
              f"{args.runs} plugs x {args.reads} reads per client")
        print(f"{'client':<34} {'median MB/s':>11} {'CPU s/100 MB':>13}   reads (MB/s)")
        for name, samples, seconds in (("spicectl usb share --cd", ours, cpu_ours),
                                       ("remote-viewer --spice-share-cd", theirs, cpu_theirs)):
            print(f"{name:<34} {mb / statistics.median(samples):>11.1f} {seconds * per_100:>13.2f}   "
                  + " ".join(f"{mb / s:.1f}" for s in samples))
        print(f"ratio (ours / remote-viewer's throughput): {statistics.median(theirs) / statistics.median(ours):.2f}x")
    finally:
        subprocess.run([SPICECTL, "vm", "delete", GUEST], env=env, capture_output=True)
        subprocess.run([SPICECTL, "host", "stop"], env=env, capture_output=True)
        xvfb.terminate()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
