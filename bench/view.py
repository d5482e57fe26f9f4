"""`spicectl view` against a guest redrawing continuously: frames drawn per second against the video
frames the server sent, and CPU, side by side with remote-viewer on the same guest.

    .venv/bin/python bench/view.py [--seconds 20] [--runs 2]

Boots the desktop image's animated scene (a 240x180 animation at the scene's rate, sent as an MJPEG
stream under `--streaming all`) in a private state dir, under Xvfb. Each run shows the guest for
--seconds in `spicectl view` (which reports the server's stream frames and the frames it drew) and
then in remote-viewer (it does not report frames). Both CPU figures come from /proc the same way:
the viewer's process over --seconds, starting 3 s after it was started (connected and drawing).
Runs alternate so a slow stretch of the machine hits both. --profile FILE adds one run of `spicectl view`
under cProfile (saved to FILE) and prints where its time went, by own time, and the frames it drew
then (the profiler slows it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SPICECTL, boot_desktop, cpu_seconds, ensure_apt  # noqa: E402

GUEST = "bench-view"




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--profile", metavar="FILE", help="Also profile one run of spicectl view into FILE.")
    args = ap.parse_args()
    ensure_apt("xvfb", "virt-viewer", "python3-tk", "mmdebstrap")
    state = tempfile.mkdtemp(prefix="spicectl-bench-view-")
    env = {**os.environ, "SPICECTL_STATE_DIR": state,
           "SPICECTL_IMAGE_CACHE": os.environ.get("SPICECTL_IMAGE_CACHE", "/var/cache/spicectl-test/images")}

    def spicectl(*a: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([SPICECTL, *a], env=env, check=True, capture_output=True, text=True, **kw)

    xvfb = subprocess.Popen(["Xvfb", ":93", "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    display = {**env, "DISPLAY": ":93"}
    try:
        boot_desktop(spicectl, GUEST, "--kernel-arg", "spicectl.scene=animated", "--streaming", "all")
        ours, theirs = [], []
        cpu_ours = []
        for _ in range(args.runs):
            view = subprocess.Popen([SPICECTL, "view", GUEST, "--close-after", str(args.seconds + 4), "--json"],
                                    env=display, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(3)
            before = cpu_seconds(view.pid)
            time.sleep(args.seconds)
            cpu_ours.append(cpu_seconds(view.pid) - before)
            out, err = view.communicate(timeout=60)
            if view.returncode:
                raise SystemExit(f"spicectl view failed: {err}")
            ours.append(json.loads(out))
            vv = Path(state) / "bench.vv"
            spicectl("connect", GUEST, "--vv", str(vv), "--ttl", "60")
            viewer = subprocess.Popen(["remote-viewer", str(vv)], env=display, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            time.sleep(3)  # connected and drawing
            before = cpu_seconds(viewer.pid)
            time.sleep(args.seconds)
            theirs.append(cpu_seconds(viewer.pid) - before)
            viewer.terminate()
            viewer.wait(10)
        print(f"{'run':>3}  {'server frames/s':>15}  {'drawn/s':>8}  {'spicectl view CPU':>17}  "
              f"{'remote-viewer CPU':>17}  ratio")
        for n, (o, c, t) in enumerate(zip(ours, cpu_ours, theirs, strict=True), 1):
            sent, drawn = o["stream_frames"] / o["seconds"], o["frames_drawn"] / o["seconds"]
            mine, other = c / args.seconds, t / args.seconds
            print(f"{n:>3}  {sent:>15.1f}  {drawn:>8.1f}  {mine:>16.1%}  {other:>16.1%}  "
                  f"{mine / max(other, 1e-3):.1f}x")
        if args.profile:
            profile(args.profile, args.seconds, display)
    finally:
        subprocess.run([SPICECTL, "vm", "delete", GUEST], env=env, capture_output=True)
        subprocess.run([SPICECTL, "host", "stop"], env=env, capture_output=True)
        xvfb.terminate()
        shutil.rmtree(state, ignore_errors=True)


def profile(path: str, seconds: float, env: dict) -> None:
    import io
    import pstats

    r = subprocess.run([sys.executable, "-m", "cProfile", "-o", path, "-m", "spicectl", "view", GUEST,
                        "--close-after", str(seconds), "--json"], env=env, check=True, capture_output=True,
                       text=True)
    o = json.loads(r.stdout)
    print(f"\nunder cProfile: server {o['stream_frames'] / o['seconds']:.1f} frames/s, drew "
          f"{o['frames_drawn'] / o['seconds']:.1f}/s, {o['cpu_seconds'] / o['seconds']:.0%} of a core; "
          f"own time of the top functions (profile in {path}):")
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(15)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()
                    and not line.lstrip().startswith(("Ordered", "List reduced"))))


if __name__ == "__main__":
    main()
