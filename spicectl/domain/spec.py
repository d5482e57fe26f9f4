"""The VM spec: what a user asks for, independent of how libvirt spells it.

Options and templates become a `VMSpec`; `domain.xml` turns it into libvirt
XML and back. Every field has the default a user gets when saying nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGE_COMPRESSIONS = ("auto_glz", "auto_lz", "quic", "glz", "lz", "off")
WAN_MODES = ("auto", "never", "always")
STREAMING_MODES = ("filter", "all", "off")
MOUSE_MODES = ("client", "server")
VIDEO_MODELS = ("qxl", "virtio", "vga", "none")
SOUND_MODELS = ("ich9", "ich6", "ac97", "es1370", "sb16", "usb", "none")
USB_MODELS = ("ehci", "xhci", "none")
MACHINES = ("q35", "pc")
VIRT_TYPES = ("kvm", "qemu")
DISK_BUSES = ("virtio", "sata", "scsi", "ide")
DISK_FORMATS = ("qcow2", "raw")
NIC_MODELS = ("virtio", "e1000e", "e1000", "rtl8139")

# A date long past: the guest starts with a password nobody can use until a
# ticket is set (QEMU refuses to set one at run time if it started without).
EXPIRED = "2000-01-01T00:00:00"


def random_password() -> str:
    import secrets

    # 32 URL-safe characters: well under SPICE's 60-byte limit.
    return secrets.token_urlsafe(24)


@dataclass
class GraphicsSpec:
    listen: str = "127.0.0.1"
    port: int | None = None            # None: libvirt picks (autoport)
    tls_port: int | None = None
    tls: bool = True                   # every channel secure; False allows plain channels
    password: str | None = None
    password_valid_to: str | None = EXPIRED
    image_compression: str | None = None
    jpeg: str | None = None
    zlib: str | None = None
    playback_compression: bool | None = None
    streaming: str | None = None
    clipboard: bool = True
    file_transfer: bool = True
    mouse_mode: str | None = None
    gl: bool = False
    rendernode: str | None = None

    @property
    def autoport(self) -> bool:
        return self.port is None and self.tls_port is None


@dataclass
class VideoSpec:
    model: str = "qxl"
    vram: int | None = None   # KiB, as libvirt counts
    ram: int | None = None
    vram64: int | None = None
    vgamem: int | None = None
    heads: int | None = None


@dataclass
class UsbFilterRule:
    allow: bool = True
    usb_class: int | None = None
    vendor: int | None = None
    product: int | None = None
    version: str | None = None

    @property
    def version_bcd(self) -> int | None:
        """The version as usbredir's filters and USB descriptors write it: libvirt reads "2.00" as
        major and minor in hex, 0x0200 ("1.1" is 0x0101)."""
        if self.version is None:
            return None
        major, _, minor = self.version.partition(".")
        return int(major, 16) << 8 | int(minor or "0", 16)


@dataclass
class DiskSpec:
    path: str
    format: str = "qcow2"
    bus: str = "virtio"
    size_gib: float | None = None     # set when spicectl creates the image
    device: str = "disk"             # disk | cdrom
    backing: str | None = None       # a raw base image this qcow2 is a copy-on-write overlay on


@dataclass
class NetworkSpec:
    kind: str = "user"               # user | bridge | network
    source: str | None = None
    model: str = "virtio"


@dataclass
class VMSpec:
    name: str
    memory_kib: int = 2 * 1024 * 1024
    vcpus: int = 2
    machine: str = "q35"
    arch: str = "x86_64"
    virt_type: str = "kvm"
    graphics: GraphicsSpec = field(default_factory=GraphicsSpec)
    video: VideoSpec = field(default_factory=VideoSpec)
    sound: str = "ich9"
    usb: str = "ehci"
    usb_redir: int = 0
    usb_filter: list[UsbFilterRule] = field(default_factory=list)
    agent: bool = True
    folder_sharing: bool = False
    smartcard: bool = False
    disks: list[DiskSpec] = field(default_factory=list)
    networks: list[NetworkSpec] = field(default_factory=lambda: [NetworkSpec()])
    boot_menu: bool = False
    boot_menu_timeout_ms: int = 3000
    qemu_args: list[str] = field(default_factory=list)
    template: str | None = None
    uuid: str | None = None
    image: str | None = None          # the built image the root disk is an overlay on
    kernel: str | None = None         # direct kernel boot (images carry their kernel and initrd)
    initrd: str | None = None
    cmdline: str | None = None
    serial_console: bool = False
    creating: str | None = None       # "PID BOOT_ID" of the `vm create` still setting the guest up
