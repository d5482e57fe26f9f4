"""Record a real guest's display channel for tests and benchmarks.

    .venv/bin/python bench/capture_frames.py --state-dir DIR --name GUEST --out tests/data/display-lz.bin

Connects through spicectl's client, records every display message until the
screen settles, and writes them in `spicectl.spice.recording`'s format with
the client's frame and libvirt's screenshot beside them. The guest's image
compression decides which codecs the recording exercises. The recordings in
tests/data show SeaBIOS's boot menu:

    spicectl --state-dir DIR vm create rec-glz -t headless-ci --virt-type qemu --image-compression glz \\
        --boot-menu-timeout 60000 --wait
    .venv/bin/python bench/capture_frames.py --state-dir DIR --name rec-glz --keys esc --seconds 2 \\
        --out tests/data/display-glz.bin
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from spicectl.pki.ca import CA_CERT
from spicectl.session.server import from_access
from spicectl.spice import recording
from spicectl.spice.channel import Message
from spicectl.virt import lifecycle
from spicectl.virt.access import guest_access
from spicectl.virt.connection import open_hypervisor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--keys", nargs="*", default=[], help="keys to press after the first frame (e.g. esc)")
    ap.add_argument("--seconds", type=float, default=0, help="keep recording this long after the keys")
    args = ap.parse_args()
    records: list[Message] = []
    with open_hypervisor(None, args.state_dir) as hv:
        access = guest_access(hv, args.name, state_dir=args.state_dir)
        server = from_access(access, ca_file=str(args.state_dir / "ca" / CA_CERT))

        async def go():
            client = server.client(display_observer=records.append)
            await client.connect(inputs=bool(args.keys))
            try:
                await client.screen.screenshot(settle=0.5)
                if args.keys:
                    await client.inputs.send_keys(*args.keys)
                await asyncio.sleep(args.seconds)
                return await client.screen.screenshot(settle=0.5)
            finally:
                await client.close()

        image = asyncio.run(go())
        # the independent reference: libvirt's own screenshot, taken while the screen is still settled
        libvirt_png = lifecycle.screenshot_png(hv, lifecycle.lookup(hv, args.name))
    import io

    import numpy as np
    from PIL import Image

    theirs = np.asarray(Image.open(io.BytesIO(libvirt_png)).convert("RGB"))
    ours = np.asarray(image.convert("RGB"))
    if ours.shape != theirs.shape or (ours != theirs).any():
        # (a blinking text cursor, or a screen still changing): a recording is only kept as a reference
        # when libvirt saw exactly what the client drew
        raise SystemExit("the client's frame and libvirt's differ; nothing written (run again)")
    with open(args.out, "wb") as fh:
        recording.write(fh, records)
    recording.libvirt_frame(args.out).write_bytes(libvirt_png)
    print(f"{len(records)} messages, {sum(len(m.body) for m in records)} bytes -> {args.out}")


if __name__ == "__main__":
    main()
