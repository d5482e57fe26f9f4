"""Shared by the benchmarks: timing side by side, and a system libvirt to race peers on."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPICECTL = str(Path(sys.executable).parent / "spicectl")


def ensure_apt(*packages: str) -> None:
    missing = [p for p in packages if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                                                     capture_output=True, text=True).stdout != "install ok installed"]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_pip(*modules: str) -> None:
    """Peers that live on PyPI go into this venv, not into the project's dependencies (MODULE or
    MODULE=PACKAGE where the two names differ)."""
    import importlib.util

    wanted = dict(m.partition("=")[::2] for m in modules)
    missing = [package or module for module, package in wanted.items() if importlib.util.find_spec(module) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)


def timed(cmd: list[str], **kw) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - start


def side_by_side(cases: dict[str, list[str]], runs: int, **kw) -> dict[str, float]:
    """Median seconds per case, running the cases alternately so load hits them alike."""
    for cmd in cases.values():
        timed(cmd, **kw)  # warm caches
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, cmd in cases.items():
            samples[name].append(timed(cmd, **kw))
    return {name: statistics.median(v) for name, v in samples.items()}


def report(medians: dict[str, float], peer: str) -> None:
    base = medians[peer]
    print(f"{'command':<34} {'median ms':>10} {'ratio to ' + peer.split()[0]:>16}")
    for name, value in medians.items():
        print(f"{name:<34} {value * 1000:>10.1f} {value / base:>16.2f}")


@contextmanager
def system_libvirt():
    """qemu:///system for the duration: started here (and stopped after) unless already running."""
    ensure_apt("libvirt-daemon-system", "libvirt-clients", "qemu-system-x86")
    started: list[str] = []
    sock = Path("/run/libvirt/libvirt-sock")
    if not sock.exists():
        for daemon, pidfile in (("virtlogd", "/run/virtlogd.pid"), ("libvirtd", "/run/libvirtd.pid")):
            subprocess.run([shutil.which(daemon) or f"/usr/sbin/{daemon}", "-d"], check=True)
            started.append(pidfile)
        deadline = time.monotonic() + 20
        while not sock.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("libvirtd did not start")
            time.sleep(0.1)
    try:
        yield "qemu:///system"
    finally:
        for pidfile in reversed(started):
            try:
                os.kill(int(Path(pidfile).read_text()), 15)
            except (OSError, ValueError):
                pass


def cpu_seconds(pid: int) -> float:
    """A process's user+system CPU seconds so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def boot_desktop(spicectl, name: str, *create_args: str) -> None:
    """The desktop image built (or cached) and booted as guest `name` under TCG, its desktop drawn."""
    spicectl("image", "build", "debian-desktop", timeout=1800)
    spicectl("vm", "create", name, "--image", "debian-desktop", *create_args, "--virt-type", "qemu", "--wait",
             timeout=300)
    spicectl("console", name, "--send", "spicectl-report\\n", "--expect", "desktop=ready",
             "--retry-every", "10", "--timeout", "300", timeout=400)
