"""ROP3, strokes (solid and dashed) and raster text from a real QXL device, drawn by our client as
spice-server draws them.

No Linux or X driver sends these (only old Windows XPDM drivers do), so a guest with the qxl kernel
driver left unloaded drives the device itself (tests/data/qxl_draws.py): it submits those commands
to QEMU's QXL command ring. spice-server forwards each to our client as that SPICE draw message, and
draws them itself with spice-common's canvas when libvirt takes a screenshot: the two pictures must
be equal, pixel for pixel.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import numpy as np
import pytest

from spicectl.spice import Client
from spicectl.spice import messages as M
from tests.conftest import REPO
from tests.integration.conftest import SHELL_PROMPT, console_run, libvirt_screenshot

pytestmark = pytest.mark.integration
GUEST = "xpdm"
SCRIPT = REPO / "tests" / "data" / "qxl_draws.py"
A8_TOP_ROW = (486, slice(520, 755))  # the script's string of 8-bit glyphs: its first row


@pytest.fixture(scope="module")
def raw_qxl(spicectl, desktop_image):
    # no qxl kernel driver, no X session, nothing on the VGA console: the device is the script's alone
    spicectl("vm", "create", GUEST, "--image", "debian-desktop", "--kernel-arg", "modprobe.blacklist=qxl",
             "--kernel-arg", "systemd.mask=spicectl-session.service",
             "--kernel-arg", "systemd.mask=spicectl-desktop-ready.service",
             "--kernel-arg", "systemd.mask=getty@tty1.service", "--virt-type", "qemu", "--wait")
    spicectl("console", GUEST, "--send", "\\n", "--expect", SHELL_PROMPT, "--retry-every", "3", "--timeout", "300",
             timeout=330)
    lines = base64.encodebytes(SCRIPT.read_bytes()).decode().replace("\n", "\\n")
    shell(spicectl, f"base64 -d > /tmp/qxl_draws.py <<'EOF'\\n{lines}EOF\\necho COPIED", r"COPIED\r?\n")
    yield GUEST
    spicectl("vm", "delete", GUEST, check=False)


def shell(spicectl, command: str, expect: str, timeout: float = 120) -> str:
    return console_run(spicectl, GUEST, command, expect, timeout)


def test_rop3_strokes_and_text_from_the_device_equal_spice_servers_own_drawing(spicectl, raw_qxl):
    tls_port = spicectl("vm", "show", GUEST, "--json").json()["spice"]["tls_port"]
    password = spicectl("ticket", GUEST, "--ttl", "300").stdout.strip().encode()
    seen: Counter[int] = Counter()

    async def watch():
        async with Client("127.0.0.1", tls_port=tls_port, password=password, ca_file=spicectl.ca_file) as client:
            handle = client.screen.display.handle

            def counted(msg_type: int, body: bytes) -> None:
                seen[msg_type] += 1
                handle(msg_type, body)

            client.screen.display.handle = counted  # type: ignore[method-assign]
            await client.screen.frame()  # connected before the commands: they come as draw messages, not a snapshot
            out = await asyncio.to_thread(shell, spicectl, "python3 /tmp/qxl_draws.py",
                                          r"QXL-DRAWS (done=\d+|error=.*)\r?\n")
            assert "QXL-DRAWS done=" in out, out
            ours = await client.screen.frame(settle=1.0)
            assert not client.screen.display.warnings, client.screen.display.warnings
            return ours

    ours = asyncio.run(watch())
    try:
        theirs = libvirt_screenshot(spicectl, GUEST)
    except AssertionError as exc:  # spice-server draws in QEMU: when it fails, QEMU's log says why
        pytest.fail(f"{exc}\nQEMU's log ends:\n{spicectl.domain_log(GUEST)[-3000:]}")
    # the script's 14 ROP3s, 30 solid and 5 dashed strokes and 4 strings, each as that draw message
    assert seen[M.MSG_DISPLAY_DRAW_ROP3] >= 14 and seen[M.MSG_DISPLAY_DRAW_STROKE] >= 35 \
        and seen[M.MSG_DISPLAY_DRAW_TEXT] >= 4, dict(seen)
    assert ours.shape == theirs.shape == (600, 800, 3)
    differ = (ours != theirs).any(axis=2)
    # the top row of the 8-bit glyphs: spice-common reads it from past the glyphs' bits (see the script)
    differ[A8_TOP_ROW] = False
    if differ.any():
        ys, xs = np.nonzero(differ)
        pytest.fail(f"{differ.sum()} pixels differ from spice-server's drawing, within x {xs.min()}..{xs.max()} "
                    f"y {ys.min()}..{ys.max()}; first at ({xs[0]}, {ys[0]}): ours {ours[ys[0], xs[0]]}, "
                    f"spice-server's {theirs[ys[0], xs[0]]}")
    assert len(np.unique(ours.reshape(-1, 3), axis=0)) > 100
