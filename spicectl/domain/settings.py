"""Every VM setting declared once: its option, its template key, and — for the simple ones — where it lands.

One `Setting` row gives the `vm create` option (name, type or choices,
help), the key and type a template file may hold, and, when the setting
maps one value to one place, the `VMSpec` field it fills, the element and
attribute of libvirt's XML that holds it (the model is virt-manager's
`XMLProperty("./image/@compression")`: one declaration reads and writes),
and its `-spice` key for `--print-qemu`. Settings without a `field` (sizes
with limits, disks, networks, ports) have builders in `domain/build.py`.

A new SPICE option is one row in GRAPHICS plus its golden file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spicectl.domain import spec as S


@dataclass(frozen=True)
class XMLProp:
    """An attribute of a child element of the element a setting's object is written to."""

    element: str                              # a child tag, e.g. "image"
    attr: str                                 # e.g. "compression"
    spell: dict[Any, str] = field(default_factory=dict)  # value -> text; values absent here are not written

    def text(self, value: Any) -> str | None:
        if value is None:
            return None
        if self.spell:
            return self.spell.get(value)
        return str(value)

    def value(self, text: str, default: Any) -> Any:
        if self.spell:
            return {t: v for v, t in self.spell.items()}.get(text, default)
        return text


@dataclass(frozen=True)
class QemuProp:
    """A key of QEMU's -spice option, or a property of the device the setting's object is."""

    key: str
    spell: dict[Any, str] = field(default_factory=dict)   # as XMLProp; strings are escaped (,,) instead

    def text(self, value: Any) -> str | None:
        if value is None:
            return None
        if self.spell:
            return self.spell.get(value)
        return str(value).replace(",", ",,")  # a user's comma would start a new key


@dataclass(frozen=True)
class Setting:
    key: str                       # template key; the option is --key-with-dashes
    kind: str                      # what a template holds: str, int, bool, size or list
    help: str
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    flag: str = ""                 # "pair": --x/--no-x; "on": a bare --x
    short: str | None = None
    words: dict[str, Any] | None = None  # the option's words for a bool (--playback-compression on|off)
    field: str | None = None       # "graphics.image_compression": filled from the value as is
    xml: XMLProp | None = None
    qemu: QemuProp | None = None
    range: tuple[int, int] | None = None               # an int's bounds, both included
    # another setting (its key, and its VMSpec field once resolved) and the values it must have
    needs: tuple[str, str, tuple[str, ...]] | None = None
    noun: str | None = None        # what one value is called in errors ("video model"); else the key

    @property
    def option(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def what(self) -> str:
        return self.noun or self.key.replace("_", " ")


ON_OFF = {True: "on", False: "off"}

# The SPICE server's settings: children of <graphics type='spice'>, keys of -spice, fields of GraphicsSpec.
# Written and read in this order (libvirt's schema takes them in any order; golden files keep this one).
GRAPHICS: list[Setting] = [
    Setting("image_compression", "str", "SPICE image compression (default off on loopback).",
            S.IMAGE_COMPRESSIONS, field="graphics.image_compression", xml=XMLProp("image", "compression"),
            qemu=QemuProp("image-compression")),
    Setting("jpeg", "str", "JPEG compression over WAN.", S.WAN_MODES, field="graphics.jpeg",
            xml=XMLProp("jpeg", "compression"), qemu=QemuProp("jpeg-wan-compression")),
    Setting("zlib", "str", "zlib-GLZ compression over WAN.", S.WAN_MODES, field="graphics.zlib",
            xml=XMLProp("zlib", "compression"), qemu=QemuProp("zlib-glz-wan-compression")),
    Setting("playback_compression", "bool", "Compress audio playback.", ("on", "off"),
            words={"on": True, "off": False}, field="graphics.playback_compression",
            xml=XMLProp("playback", "compression", ON_OFF), qemu=QemuProp("playback-compression", ON_OFF)),
    Setting("streaming", "str", "Video streaming detection.", S.STREAMING_MODES, field="graphics.streaming",
            xml=XMLProp("streaming", "mode"), qemu=QemuProp("streaming-video")),
    Setting("clipboard", "bool", "Clipboard sharing through the agent (default on).", flag="pair",
            field="graphics.clipboard", xml=XMLProp("clipboard", "copypaste", {False: "no"}),
            qemu=QemuProp("disable-copy-paste", {False: "on"})),
    Setting("mouse_mode", "str", "SPICE mouse mode.", S.MOUSE_MODES, field="graphics.mouse_mode",
            xml=XMLProp("mouse", "mode"), qemu=QemuProp("agent-mouse", {"client": "on", "server": "off"})),
    Setting("file_transfer", "bool", "File transfer through the agent (default on).", flag="pair",
            field="graphics.file_transfer", xml=XMLProp("filetransfer", "enable", {False: "no"}),
            qemu=QemuProp("disable-agent-file-xfer", {False: "on"})),
    Setting("gl", "bool", "OpenGL acceleration (needs --video virtio).", flag="on", field="graphics.gl",
            xml=XMLProp("gl", "enable", {True: "yes"}), qemu=QemuProp("gl", {True: "on"})),
    Setting("rendernode", "str", "DRM render node for --gl.", metavar="PATH", field="graphics.rendernode",
            xml=XMLProp("gl", "rendernode"), qemu=QemuProp("rendernode")),
]

# The video device's settings: attributes of <video><model>, properties of its QEMU device, fields of VideoSpec.
VIDEO: list[Setting] = [
    Setting("heads", "int", "Number of displays.", metavar="N", range=(1, 4),
            needs=("video", "video.model", ("qxl", "virtio")),
            field="video.heads", xml=XMLProp("model", "heads"), qemu=QemuProp("max_outputs")),
]

SETTINGS: list[Setting] = [
    # the guest
    Setting("memory", "size", "Guest memory, e.g. 2G or 512M (a bare number is MiB).", metavar="SIZE"),
    Setting("vcpus", "int", "Virtual CPUs."),
    Setting("machine", "str", "Machine type (default q35).", S.MACHINES, noun="machine type"),
    Setting("arch", "str", "Guest architecture (x86_64).", metavar="ARCH"),
    Setting("virt_type", "str", "qemu is TCG; auto (default) is kvm where a probe showed it boots a kernel "
            "here (spicectl host check).", (*S.VIRT_TYPES, "auto"), noun="virt type"),
    Setting("disk", "list", "PATH, or size=GB; add ,format=qcow2|raw ,bus=virtio|sata|scsi|ide (repeatable).",
            metavar="SPEC"),
    Setting("cdrom", "str", "Attach an ISO image and boot from it first.", metavar="ISO"),
    Setting("network", "list", "user (default), bridge=NAME, network=NAME or none; add ,model=e1000e "
            "(repeatable).", metavar="SPEC"),
    Setting("boot_menu", "bool", "Show the firmware boot menu.", flag="pair"),
    Setting("boot_menu_timeout", "int", "How long the boot menu waits (ms).", metavar="MS"),
    Setting("qemu_arg", "list", "Extra QEMU argument, via libvirt's qemu:commandline (repeatable).",
            metavar="ARG"),
    # graphics
    Setting("listen", "str", "SPICE listen address (default 127.0.0.1).", metavar="ADDR"),
    Setting("port", "int", "Fixed plain SPICE port (needs --insecure); default: libvirt picks."),
    Setting("tls_port", "int", "Fixed TLS SPICE port; default: libvirt picks."),
    Setting("insecure", "bool", "Allow plain channels (default: every channel TLS).", flag="on"),
    Setting("sasl", "bool", "Clients log in with SASL, not tickets: no SPICE password in the definition (the "
            "host's SPICE servers need SASL on; the default when spicectl host setup --sasl turned it on for the "
            "private libvirt).", flag="on"),
    *GRAPHICS,
    # video, sound, USB, channels
    Setting("video", "str", "Video device (default qxl).", S.VIDEO_MODELS, noun="video model"),
    Setting("vram", "size", "QXL vram, e.g. 64M.", metavar="SIZE"),
    Setting("ram", "size", "QXL ram, e.g. 64M.", metavar="SIZE"),
    Setting("vram64", "size", "QXL 64-bit vram.", metavar="SIZE"),
    Setting("vgamem", "size", "QXL VGA memory, e.g. 16M.", metavar="SIZE"),
    *VIDEO,
    Setting("sound", "str", "Sound card (default ich9); its audio goes over SPICE.", S.SOUND_MODELS,
            noun="sound model"),
    Setting("usb", "str", "USB controllers (default ehci: ich9 EHCI and its 3 UHCI companions).", S.USB_MODELS,
            noun="USB controller"),
    Setting("usb_redir", "int", "Add N usbredir channels over SPICE.", metavar="N"),
    Setting("usb_filter", "list", "usbredir filter rule: class=,vendor=,product=,version=,allow=yes|no, or "
            "allow/deny (repeatable, in order).", metavar="RULE"),
    Setting("agent", "bool", "SPICE agent channel com.redhat.spice.0 (default on).", flag="pair"),
    Setting("folder_sharing", "bool", "WebDAV folder sharing channel.", flag="on"),
    Setting("smartcard", "bool", "Smartcard passthrough over SPICE.", flag="on"),
]

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
# what a template may hold besides the settings
TEMPLATE_ONLY = {"description": Setting("description", "str", "one line shown by `template list`")}


def get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def set_path(obj: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)
