"""The X server's configuration for one Xspice display, from a spec (sans-I/O).

What Debian 12's spiceqxl needs, found on this machine (../shared/spice-protocol.md): explicit
buffer sizes (its defaults abort at start) and one head (without `NumHeads 1` Xorg 21 may find no
connected output and crash). Input comes from the driver's own `xspice keyboard`/`xspice pointer`
input drivers; Xorg's "Failed to load module xspicekeyboard" in the log is harmless.

Everything but the password goes in the file, where the X server's log shows what it used. The
password goes in the environment: Xorg logs every option of the file, values included.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from spicectl.errors import InvalidInput

IMAGE_COMPRESSIONS = ("auto_glz", "auto_lz", "quic", "glz", "lz", "lz4", "off")
STREAMING_VIDEO = ("off", "all", "filter")
MAX_DISPLAY = 9999
# MB of guest-visible memory: the framebuffer bounds the screen (16 MB: up to 2560x1600 at 32 bpp)
FRAMEBUFFER_MB, SURFACES_MB, COMMANDS_MB = 16, 128, 128


def parse_display(text: str) -> int:
    """`:N` (as X writes a display) or `N`."""
    m = re.fullmatch(r":?(\d{1,4})(?:\.0)?", text.strip())
    if not m or int(m.group(1)) > MAX_DISPLAY:
        raise InvalidInput(f"{text!r} is not an X display", hint="write it as :N, e.g. :1")
    return int(m.group(1))


def is_display(text: str) -> bool:
    """Whether a guest argument names an Xspice display (`:N`): VM names cannot start with ':'."""
    return text.startswith(":")


@dataclass(frozen=True)
class XspiceSpec:
    display: int
    listen: str = "127.0.0.1"
    tls_port: int | None = None
    port: int | None = None               # a plain port: only when asked for
    x509_dir: Path | None = None          # ca-cert.pem, server-cert.pem, server-key.pem (QEMU's names)
    ticketing: bool = True                # off only for --insecure on loopback
    image_compression: str = "auto_glz"
    streaming_video: str = "filter"
    playback_dir: Path | None = None      # the driver plays PCM written to FIFOs in this folder
    agent_virtio: Path | None = None      # where spice-vdagentd reaches the driver's agent channel
    agent_uinput: Path | None = None      # where the driver feeds spice-vdagentd's pointer

    def __post_init__(self) -> None:
        if self.tls_port is None and self.port is None:
            raise InvalidInput("an Xspice display needs a TLS port or a plain port")
        if self.tls_port is not None and self.x509_dir is None:
            raise InvalidInput("TLS needs a certificate folder")
        if self.image_compression not in IMAGE_COMPRESSIONS:
            raise InvalidInput(f"unknown image compression {self.image_compression!r}",
                               hint="one of " + ", ".join(IMAGE_COMPRESSIONS))
        if self.streaming_video not in STREAMING_VIDEO:
            raise InvalidInput(f"unknown streaming mode {self.streaming_video!r}",
                               hint="one of " + ", ".join(STREAMING_VIDEO))


def _option(name: str, value: object) -> str:
    text = str(value)
    if '"' in text or "\n" in text:
        raise InvalidInput(f"{name}: {text!r} cannot go in an X configuration file")
    return f'    Option "{name}" "{text}"\n'


TEMPLATE = (
    "# written by spicectl for Xspice display :{display}; rewritten by `spicectl xspice start`\n"
    'Section "Device"\n'
    '    Identifier "spicectl-xspice"\n'
    '    Driver "spiceqxl"\n'
    "{device}"
    "EndSection\n"
    'Section "InputDevice"\n'
    '    Identifier "spicectl-keyboard"\n'
    '    Driver "xspice keyboard"\n'
    "EndSection\n"
    'Section "InputDevice"\n'
    '    Identifier "spicectl-pointer"\n'
    '    Driver "xspice pointer"\n'
    "EndSection\n"
    'Section "Screen"\n'
    '    Identifier "spicectl-screen"\n'
    '    Device "spicectl-xspice"\n'
    "EndSection\n"
    'Section "ServerLayout"\n'
    '    Identifier "spicectl-layout"\n'
    '    Screen "spicectl-screen"\n'
    '    InputDevice "spicectl-keyboard"\n'
    '    InputDevice "spicectl-pointer"\n'
    "EndSection\n"
    'Section "ServerFlags"\n'
    "    # the host's input devices stay the host's\n"
    '    Option "AutoAddDevices" "False"\n'
    "EndSection\n"
)


def xorg_conf(spec: XspiceSpec) -> str:
    """The xorg.conf text for `spec`."""
    device = [_option("NumHeads", 1), _option("FrameBufferSize", FRAMEBUFFER_MB),
              _option("SurfaceBufferSize", SURFACES_MB), _option("CommandBufferSize", COMMANDS_MB),
              _option("SpiceAddr", spec.listen),
              # port 0: no plain listener at all unless one was asked for
              _option("SpicePort", spec.port or 0)]
    if spec.tls_port is not None:
        device += [_option("SpiceTlsPort", spec.tls_port), _option("SpiceX509Dir", spec.x509_dir)]
    if not spec.ticketing:
        device.append(_option("SpiceDisableTicketing", "True"))
    device += [_option("SpiceImageCompression", spec.image_compression),
               _option("SpiceStreamingVideo", spec.streaming_video)]
    if spec.playback_dir is not None:
        device.append(_option("SpicePlaybackFIFODir", spec.playback_dir))
    if spec.agent_virtio is not None:
        device += [_option("SpiceVdagentEnabled", "True"), _option("SpiceVdagentVirtioPath", spec.agent_virtio)]
        if spec.agent_uinput is not None:
            device.append(_option("SpiceVdagentUinputPath", spec.agent_uinput))
    return TEMPLATE.format(display=spec.display, device="".join(device))


def environment(spec: XspiceSpec, password: bytes | None) -> dict[str, str]:
    """What the X server's environment adds: the password (never in the file, see above)."""
    env = {"XSPICE_VDAGENT_UID": str(os.getuid()), "XSPICE_VDAGENT_GID": str(os.getgid())}
    if spec.ticketing:
        if not password:
            raise InvalidInput("a display with ticketing needs a password")
        env["XSPICE_PASSWORD"] = password.decode()
    return env


def xorg_args(spec: XspiceSpec, conf: Path, log: Path) -> list[str]:
    """The X server's arguments after its path: no TCP, no VT switch, and no reset (the driver cannot
    survive one)."""
    return [f":{spec.display}", "-config", str(conf), "-logfile", str(log), "-noreset", "-nolisten", "tcp",
            "-novtswitch", "-sharevts"]
