"""The same desktop served two ways: by an Xspice display (`spicectl xspice`, no VM) and by the desktop
image's QEMU guest (TCG). Screenshot latency, and `spicectl view`'s CPU and the server side's CPU while
the desktop animates.

    .venv/bin/python bench/xspice.py [--shots 10] [--seconds 20]

Both show the desktop image's test scene (its own script, animated: a 240x180 region redrawn 25 times a
second, streamed as video under --streaming all) with xeyes, at 1024x768. Screenshot latency is the
wall time of a whole `spicectl screenshot` command (a cold start each: SPICECTL_PERSIST=0), alternating
between the two. Then `spicectl view` shows each for --seconds under Xvfb: the view process's CPU, and
the server side's over the same seconds, from /proc: the QEMU process for the guest (the whole VM: its
X server, scene and agent run inside), and for Xspice the X server with the scene and xeyes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SPICECTL, boot_desktop, cpu_seconds, ensure_apt  # noqa: E402

GUEST = "bench-xspice"
SCENE = ROOT / "images" / "files" / "desktop" / "usr" / "local" / "bin" / "spicectl-scene"




def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of the processes in `roots` and all their descendants (a --run program runs under sh)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
    wanted, grew = set(roots) & parents.keys(), True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in wanted} - wanted
        wanted |= more
        grew = bool(more)
    total = 0.0
    for pid in wanted:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def qemu_pid(name: str) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"qemu-system-x86_64") and f"guest={name}".encode() in b" ".join(cmd):
                return int(entry.name)
    raise SystemExit(f"no QEMU process for {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, default=10, help="screenshots of each")
    ap.add_argument("--seconds", type=float, default=20, help="seconds of view on each")
    args = ap.parse_args()
    ensure_apt("xvfb", "xserver-xspice", "x11-apps", "x11-xserver-utils", "python3-tk", "fonts-dejavu-core",
               "mmdebstrap")
    state = tempfile.mkdtemp(prefix="spicectl-bench-xspice-")
    env = {**os.environ, "SPICECTL_STATE_DIR": state, "SPICECTL_PERSIST": "0",
           "SPICECTL_CONFIG": str(Path(state) / "none.toml"),
           "SPICECTL_IMAGE_CACHE": os.environ.get("SPICECTL_IMAGE_CACHE", "/var/cache/spicectl-test/images")}

    def spicectl(*a: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([SPICECTL, *a], env=env, check=True, capture_output=True, text=True, **kw)

    # the scene's own script, its control files moved from /run into the bench's folder
    scene = Path(state) / "spicectl-scene"
    scene.write_text(SCENE.read_text().replace("/run/spicectl-scene", str(Path(state) / "scene")))
    number = next(n for n in range(50, 90) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    display = f":{number}"
    xvfb = subprocess.Popen(["Xvfb", ":92", "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        boot_desktop(spicectl, GUEST, "--kernel-arg", "spicectl.scene=animated", "--streaming", "all")
        started = json.loads(spicectl(
            "xspice", "start", display, "--streaming-video", "all", "--json",
            "--run", "xsetroot -solid '#30475e' -cursor_name left_ptr",
            "--run", "xeyes -geometry 200x150+800+40 -bg white",
            "--run", f"/usr/bin/python3 {scene} animated").stdout)
        deadline = time.monotonic() + 60
        while not (Path(state) / "scene-ready").exists():
            if time.monotonic() > deadline:
                raise SystemExit("the scene did not start on the Xspice display")
            time.sleep(0.2)
        desktop_pids = [p["pid"] for p in started["processes"] if p["what"] != "agent daemon"]

        shots: dict[str, list[float]] = {GUEST: [], display: []}
        for _ in range(args.shots):
            for target in shots:
                begin = time.perf_counter()
                spicectl("screenshot", target, "-o", str(Path(state) / "shot.png"))
                shots[target].append(time.perf_counter() - begin)

        view: dict[str, tuple[float, float, dict]] = {}
        for target, server in ((GUEST, [qemu_pid(GUEST)]), (display, desktop_pids)):
            proc = subprocess.Popen([SPICECTL, "view", target, "--close-after", str(args.seconds + 4), "--json"],
                                    env={**env, "DISPLAY": ":92"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            time.sleep(3)   # connected and drawing
            before = cpu_seconds(proc.pid), tree_cpu(server)
            time.sleep(args.seconds)
            after = cpu_seconds(proc.pid), tree_cpu(server)
            out, err = proc.communicate(timeout=60)
            if proc.returncode:
                raise SystemExit(f"spicectl view {target} failed: {err}")
            view[target] = ((after[0] - before[0]) / args.seconds, (after[1] - before[1]) / args.seconds,
                            json.loads(out))

        names = {GUEST: "QEMU guest (TCG)", display: "Xspice display"}
        print(f"the desktop image's animated scene at 1024x768; {args.shots} cold screenshots each, "
              f"{args.seconds:g} s of view each")
        print(f"{'served by':<18} {'screenshot ms (median)':>22} {'view CPU':>9} {'server CPU':>11} "
              f"{'frames drawn/s':>15}")
        for target in shots:
            client, server_cpu, o = view[target]
            print(f"{names[target]:<18} {1000 * statistics.median(shots[target]):>22.0f} {client:>9.0%} "
                  f"{server_cpu:>11.0%} {o['frames_drawn'] / o['seconds']:>15.1f}")
        ratio = statistics.median(shots[GUEST]) / statistics.median(shots[display])
        print(f"screenshot latency, guest / Xspice: {ratio:.2f}x; server CPU, guest / Xspice: "
              f"{view[GUEST][1] / max(view[display][1], 1e-3):.1f}x")
    finally:
        subprocess.run([SPICECTL, "xspice", "stop", display], env=env, capture_output=True)
        subprocess.run([SPICECTL, "vm", "delete", GUEST], env=env, capture_output=True)
        subprocess.run([SPICECTL, "host", "stop"], env=env, capture_output=True)
        xvfb.terminate()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
