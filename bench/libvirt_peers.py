"""spicectl against libvirt's own tools on one system libvirt (started here if not running), side by side:

  * `spicectl screenshot` (own SPICE client) vs `virsh screenshot`      — aim: at most 1.5x
  * `spicectl vm create --start --wait` vs `virt-install --import --noautoconsole` + a wait for the port
  * `spicectl vm list` vs `virsh list --all` with 50 defined guests

    .venv/bin/python bench/libvirt_peers.py [--runs 7]

Guests here listen on 127.0.0.1 without TLS (a stock qemu.conf has spice_tls off), so spicectl's
client uses the plain port (--plain-port); everything else is the same path as on the private default.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

from _common import SPICECTL, ensure_apt, report, side_by_side, system_libvirt, timed

PREFIX = "spbench"


def sh(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout


def wait_port(uri: str, name: str, timeout: float = 60) -> None:
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        xml = sh("virsh", "-c", uri, "dumpxml", name, check=False)
        m = re.search(r"<graphics type='spice' port='(\d+)'", xml)
        if m and int(m.group(1)) > 0:
            try:
                socket.create_connection(("127.0.0.1", int(m.group(1))), 1).close()
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} never opened its SPICE port")


def cleanup(uri: str) -> None:
    for name in sh("virsh", "-c", uri, "list", "--all", "--name").split():
        if name.startswith(PREFIX):
            sh("virsh", "-c", uri, "destroy", name, check=False)
            sh("virsh", "-c", uri, "undefine", name, check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    ensure_apt("virtinst")
    common = ["--state-dir", "/tmp/spicectl-bench"]
    with system_libvirt() as uri:
        cleanup(uri)
        sc = [SPICECTL, *common, "--connect", uri]
        try:
            # --- screenshots -------------------------------------------------------------
            subprocess.run([*sc, "vm", "create", f"{PREFIX}-shot", "-t", "headless-ci", "--insecure", "--port", "5990",
                            "--virt-type", "qemu", "--wait"], check=True, stdout=subprocess.DEVNULL)
            time.sleep(3)
            print("== screenshot of the same guest")
            report(side_by_side({
                "virsh screenshot": ["virsh", "-c", uri, "screenshot", f"{PREFIX}-shot", "/tmp/spbench-virsh.ppm"],
                "spicectl screenshot": [*sc, "screenshot", f"{PREFIX}-shot", "--plain-port", "-o",
                                        "/tmp/spbench-ours.png"],
            }, args.runs), "virsh screenshot")

            # --- create + start + wait -----------------------------------------------------
            print("\n== create, start and wait for the SPICE port (diskless guest, TCG)")
            samples = {"virt-install + wait": [], "spicectl vm create --wait": []}
            for i in range(args.runs):
                name = f"{PREFIX}-vi{i}"
                start = time.perf_counter()
                subprocess.run(["virt-install", "--connect", uri, "--name", name, "--memory", "256",
                                "--osinfo", "detect=on,require=off", "--disk", "none", "--import", "--noautoconsole",
                                "--graphics", "spice,listen=127.0.0.1", "--video", "qxl", "--sound", "none",
                                "--controller", "usb,model=none", "--network", "none", "--virt-type", "qemu"],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_port(uri, name)
                samples["virt-install + wait"].append(time.perf_counter() - start)
                name = f"{PREFIX}-sc{i}"
                samples["spicectl vm create --wait"].append(timed(
                    [*sc, "vm", "create", name, "-t", "headless-ci", "--insecure", "--virt-type", "qemu", "--wait"]))
                cleanup(uri)
            import statistics

            report({k: statistics.median(v) for k, v in samples.items()}, "virt-install + wait")

            # --- list with 50 guests ----------------------------------------------------------
            print("\n== list with 50 defined guests")
            for i in range(50):
                subprocess.run([*sc, "vm", "create", f"{PREFIX}-l{i:02d}", "-t", "headless-ci", "--insecure",
                                "--virt-type", "qemu", "--no-start"], check=True, stdout=subprocess.DEVNULL)
            report(side_by_side({
                "virsh list --all": ["virsh", "-c", uri, "list", "--all"],
                "spicectl vm list": [*sc, "vm", "list"],
                "spicectl vm list --json": [*sc, "vm", "list", "--json"],
            }, args.runs), "virsh list --all")
        finally:
            cleanup(uri)


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    main()
