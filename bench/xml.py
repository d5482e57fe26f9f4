"""`spicectl vm create --print-xml` against `virt-install --print-xml` with the same devices, side by side;
plus domain documents built, validated and serialised per second in-process.

    .venv/bin/python bench/xml.py [--runs 15]      (installs virtinst if missing)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import SPICECTL, ensure_apt, report, side_by_side


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    ensure_apt("virtinst")
    devices = ["--memory", "2048", "--vcpus", "2"]
    cases = {
        "virt-install --print-xml": [
            "virt-install", "--connect", "test:///default", "--name", "demo", *devices,
            "--osinfo", "detect=on,require=off", "--disk", "none", "--import", "--print-xml",
            "--graphics", "spice,listen=127.0.0.1", "--video", "qxl", "--sound", "ich9", "--controller", "usb2",
            "--redirdev", "usb,type=spicevmc", "--redirdev", "usb,type=spicevmc", "--channel", "spicevmc",
            # libvirt's test driver offers i686/pc only; the devices are the same
            "--network", "user",
        ],
        "spicectl vm create --print-xml": [
            SPICECTL, "--state-dir", "/tmp/spicectl-bench", "vm", "create", "demo", *devices, "--print-xml",
            "--virt-type", "qemu", "--video", "qxl", "--sound", "ich9", "--usb", "ehci", "--usb-redir", "2",
            "--network", "user", "--machine", "q35",
        ],
    }
    medians = side_by_side(cases, args.runs)
    report(medians, "virt-install --print-xml")

    from spicectl.domain.build import build_spec
    from spicectl.domain.templates import load_template
    from spicectl.domain.validate import validate
    from spicectl.domain.xml import to_element, to_xml

    values = {k: v for k, v in load_template("desktop").values.items() if k != "description"}
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 2:
        spec = build_spec("demo", values, images_dir=Path("/tmp"), template="desktop", host_has_kvm=False)
        validate(to_element(spec))
        to_xml(spec)
        n += 1
    print(f"in-process, desktop template: {n / (time.perf_counter() - start):.0f} documents built, "
          f"validated and serialised per second")


if __name__ == "__main__":
    main()
