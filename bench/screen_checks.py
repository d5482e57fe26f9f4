"""What a CI run's screen checks and its video cost, each against a named peer run side by side:

- a needle check (`wait-screen --needle`, two areas of the desktop scene, 50 px margins) against
  OpenCV's matchTemplate (TM_SQDIFF, what os-autoinst's tinycv runs) on the same grey images;
- a text check (`wait-screen --text`, Tesseract in-process) against the `tesseract` program on the
  same picture (what pytesseract runs for each check);
- record-video's CPU per second of video of a 1024x768 desktop with a 240x180 moving region at 10 fps
  (VP9, realtime) against `ffmpeg` encoding the same raw frames with the same settings.

    .venv/bin/python bench/screen_checks.py [--seconds 10]

No guest is needed: the screen is the desktop scene (tests/data), with an animation drawn into it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, ensure_apt, ensure_pip  # noqa: E402

SCENE = ROOT / "tests" / "data" / "desktop-scene.png"
NEEDLE = ROOT / "examples" / "needles" / "desktop-scene"
TEXT = (40, 320, 460, 80)
ANIMATION = (400, 40, 240, 180)


def per_call(fn, runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def needles(runs: int) -> None:
    ensure_pip("cv2=opencv-python-headless")
    import cv2

    from spicectl.session import needles as N

    frame = np.asarray(Image.open(SCENE).convert("RGB"))
    needle = N.Needle.load(NEEDLE)
    ours = per_call(lambda: N.best(frame, [needle]), runs)

    def opencv() -> None:   # tinycv's steps: grey, blur, then each area searched within 50 px
        scene = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (3, 3), 0)
        obj = cv2.GaussianBlur(cv2.cvtColor(needle.image(), cv2.COLOR_RGB2GRAY), (3, 3), 0)
        for a in needle.areas:
            x0, y0 = max(0, a.x - 50), max(0, a.y - 50)
            roi = scene[y0:a.y + a.height + 50, x0:a.x + a.width + 50]
            cv2.matchTemplate(roi, obj[a.y:a.y + a.height, a.x:a.x + a.width], cv2.TM_SQDIFF)

    theirs = per_call(opencv, runs)
    print(f"needle check (2 areas)        spicectl {ours * 1e3:7.1f} ms   OpenCV {theirs * 1e3:7.1f} ms   "
          f"{ours / theirs:5.2f}x")


def text(runs: int) -> None:
    ensure_apt("tesseract-ocr", "tesseract-ocr-eng")
    from spicectl.session import ocr

    frame = np.asarray(Image.open(SCENE).convert("RGB"))
    with tempfile.TemporaryDirectory() as d:
        for label, region in (("a region (460x80)", TEXT), ("the whole screen", None)):
            ours = per_call(lambda r=region: ocr.read(frame, r), runs)
            x, y, w, h = region or (0, 0, frame.shape[1], frame.shape[0])
            png = Path(d) / "shot.png"
            Image.fromarray(frame[y:y + h, x:x + w]).save(png)
            theirs = per_call(lambda p=png: subprocess.run(["tesseract", str(p), "-", "-l", "eng"],
                                                           capture_output=True, check=True), runs)
            print(f"text check, {label:<18} spicectl {ours * 1e3:7.1f} ms   tesseract {theirs * 1e3:7.1f} ms   "
                  f"{ours / theirs:5.2f}x")


def frames(seconds: float, fps: int):
    scene = np.asarray(Image.open(SCENE).convert("RGB"))
    x, y, w, h = ANIMATION
    yy, xx = np.mgrid[0:h, 0:w]
    for n in range(int(seconds * fps)):
        frame = scene.copy()
        phase = n * 6
        frame[y:y + h, x:x + w, 0] = (xx + phase) % 256
        frame[y:y + h, x:x + w, 1] = (yy * 2 + phase) % 256
        frame[y:y + h, x:x + w, 2] = ((xx + yy) // 2 + 3 * phase) % 256
        yield frame


def video(seconds: float) -> None:
    ensure_apt("ffmpeg")
    from spicectl.session.video_record import ENCODER_OPTIONS, VideoWriter

    fps = 10
    shots = list(frames(seconds, fps))
    with tempfile.TemporaryDirectory() as d:
        start = time.process_time()
        writer = VideoWriter(Path(d) / "ours.webm", 1024, 768, fps)
        for tick, frame in enumerate(shots):
            writer.write(frame, tick)
        writer.close()
        ours = time.process_time() - start
        raw = b"".join(f.tobytes() for f in shots)
        opts = [x for k, v in ENCODER_OPTIONS["vp9"].items() for x in (f"-{k}", v)]
        before = _children_cpu()
        ffmpeg = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                                   "-s", "1024x768", "-r", str(fps), "-i", "-", "-c:v", "libvpx-vp9", *opts,
                                   "-pix_fmt", "yuv420p", str(Path(d) / "ffmpeg.webm")], stdin=subprocess.PIPE)
        ffmpeg.communicate(raw)
        theirs = _children_cpu() - before
        sizes = {p.name: p.stat().st_size for p in Path(d).glob("*.webm")}
    print(f"record-video, {seconds:g}s of 1024x768 at {fps} fps (a 240x180 region moving): "
          f"spicectl {ours / seconds:.1%} of a core, ffmpeg {theirs / seconds:.1%} ({ours / theirs:.2f}x); "
          f"files {sizes.get('ours.webm', 0) // 1024} KiB vs {sizes.get('ffmpeg.webm', 0) // 1024} KiB")


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10, help="Seconds of video to encode.")
    ap.add_argument("--runs", type=int, default=20, help="Checks timed (the median is printed).")
    args = ap.parse_args()
    needles(args.runs)
    text(max(3, args.runs // 4))
    video(args.seconds)


if __name__ == "__main__":
    main()
