"""Record a real guest's display channel for tests and benchmarks.

    .venv/bin/python bench/capture_frames.py --state-dir DIR --name GUEST --out tests/data/display-lz.bin

Connects through spicectl's client, records every display message until the
screen settles, and writes them as a stream of (u16 type, u32 size, body)
records, plus the resulting frame as PNG beside it (FILE.png). The guest's
image compression decides which codecs the recording exercises.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from pathlib import Path

from spicectl.spice import display as D
from spicectl.virt.connection import open_hypervisor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--keys", nargs="*", default=[], help="keys to press after the first frame (e.g. esc)")
    ap.add_argument("--seconds", type=float, default=0, help="keep recording this long after the keys")
    args = ap.parse_args()
    from spicectl.session.target import from_libvirt

    with open_hypervisor(None, args.state_dir) as hv:
        target = from_libvirt(hv, args.name, ca_file=str(args.state_dir / "ca" / "ca-cert.pem"))
    records: list[tuple[int, bytes]] = []
    original = D.Display.handle

    def recording(self, msg_type, body):
        records.append((msg_type, bytes(body)))
        return original(self, msg_type, body)

    D.Display.handle = recording

    async def go():
        client = target.client()
        await client.connect(inputs=bool(args.keys))
        try:
            await client.screenshot(settle=0.5)
            if args.keys:
                await client.send_keys(*args.keys)
            await asyncio.sleep(args.seconds)
            return await client.screenshot(settle=0.5)
        finally:
            await client.close()

    image = asyncio.run(go())
    with open(args.out, "wb") as fh:
        for msg_type, body in records:
            fh.write(struct.pack("<HI", msg_type, len(body)) + body)
    image.save(args.out.with_suffix(args.out.suffix + ".png"))
    print(f"{len(records)} messages, {sum(len(b) for _, b in records)} bytes -> {args.out}")


if __name__ == "__main__":
    main()
