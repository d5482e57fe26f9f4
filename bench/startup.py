"""`spicectl --help` process time against a bare `python -c 'import click'`, side by side.

Runs the two commands alternately (so machine load hits both alike) and prints
medians and their ratio. Target (issue 2): ratio at most 1.2.

    .venv/bin/python bench/startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    exe = shutil.which("spicectl") or str(__import__("pathlib").Path(sys.executable).parent / "spicectl")
    cases = {
        "python -c 'import click'": [sys.executable, "-c", "import click"],
        "spicectl --help": [exe, "--help"],
        "spicectl cert --help": [exe, "cert", "--help"],
    }
    for cmd in cases.values():  # warm the page cache and .pyc files
        timed(cmd)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, cmd in cases.items():
            samples[name].append(timed(cmd))
    base = statistics.median(samples["python -c 'import click'"])
    print(f"{'command':<28} {'median ms':>10} {'ratio':>7}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:<28} {med * 1000:>10.1f} {med / base:>7.2f}")


if __name__ == "__main__":
    main()
