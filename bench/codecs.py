"""LZ, GLZ and QUIC decoder throughput on frames recorded from a real guest (tests/data), in MB of output pixels/s:
the compiled loops (spicectl/spice/codecs/_accel.c) side by side with the pure-Python reference they must equal.

    .venv/bin/python bench/codecs.py [--seconds 3]

Issue #24's floor for the compiled decoders: QUIC >= 200 MB/s, GLZ small updates >= 300 MB/s. Profile with
`python -m cProfile -s tottime bench/codecs.py`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from spicectl.spice import messages as M
from spicectl.spice import recording
from spicectl.spice.codecs import accel
from spicectl.spice.codecs.lz import GlzWindow, decode_glz, decode_lz
from spicectl.spice.codecs.quic import decode_quic
from spicectl.spice.display import copy_source

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def images(path: Path):
    for msg in recording.read(path):
        if msg.type == M.MSG_DISPLAY_DRAW_COPY:
            descriptor, payload = copy_source(msg.body)
            yield descriptor["type"], payload, descriptor["width"] * descriptor["height"]


def measure(name: str, frames: list, seconds: float) -> None:
    pixels = sum(n for _, _, n in frames)
    compiled, accel.native = accel.native, None
    try:
        reference = rate(frames, seconds)
    finally:
        accel.native = compiled
    ours = rate(frames, seconds) if compiled is not None else float("nan")
    print(f"{name:<28} {len(frames):>4} images {pixels:>8} px  {ours:8.1f} {reference:8.1f}  {ours / reference:6.1f}x")


def rate(frames: list, seconds: float) -> float:
    """MB of BGRX output a second."""
    pixels = sum(n for _, _, n in frames)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        window = GlzWindow(1 << 24)
        for kind, payload, _ in frames:
            if kind == M.IMAGE_GLZ_RGB:
                decode_glz(payload, window)
            elif kind == M.IMAGE_QUIC:
                decode_quic(payload)
            else:
                decode_lz(payload)
        runs += 1
    return pixels * 4 * runs / (time.perf_counter() - start) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3)
    args = ap.parse_args()
    if accel.native is None:
        print(f"the compiled decoders are not loaded: {accel.why_not}")
    print(f"{'MB/s of BGRX output':<53} {'compiled':>8} {'Python':>8}  ratio")
    lz = list(images(DATA / "display-lz.bin"))
    glz = list(images(DATA / "display-glz.bin"))
    measure("LZ (display-lz.bin)", lz, args.seconds)
    measure("LZ full frame only", [f for f in lz if f[2] > 100000], args.seconds)
    measure("GLZ + LZ (display-glz.bin)", glz, args.seconds)
    measure("GLZ small updates only", [f for f in glz if f[0] == M.IMAGE_GLZ_RGB], args.seconds)
    quic = [f for f in images(DATA / "scene-quic.bin") if f[0] == M.IMAGE_QUIC]
    measure("QUIC desktop scene 1024x768", quic, args.seconds)


if __name__ == "__main__":
    main()
