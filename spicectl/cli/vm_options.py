"""The options of `vm create`, grouped as libvirt and virt-install users know them.

Each option's dest is a key of `spicectl.domain.build.KEYS`, so options and
template files share one vocabulary; an option left unset (None) keeps the
template's value.
"""

from __future__ import annotations

import click

IMAGE_COMPRESSIONS = ("auto_glz", "auto_lz", "quic", "glz", "lz", "off")
WAN = ("auto", "never", "always")


def _flag_pair(name: str, help_text: str):
    return click.option(f"--{name}/--no-{name}", name.replace("-", "_"), default=None, help=help_text)


OPTIONS = [
    # the guest
    click.option("--template", "-t", metavar="NAME", help="Start from a VM profile (spicectl template list)."),
    click.option("--memory", metavar="SIZE", help="Guest memory, e.g. 2G or 512M (a bare number is MiB)."),
    click.option("--vcpus", type=int, help="Virtual CPUs."),
    click.option("--machine", metavar="TYPE", help="Machine type: q35 (default) or pc."),
    click.option("--arch", metavar="ARCH", help="Guest architecture (x86_64)."),
    click.option("--virt-type", metavar="TYPE", help="kvm, qemu (TCG), or auto (default: kvm where a probe showed it boots a kernel here; spicectl host check)."),
    click.option("--disk", multiple=True, metavar="SPEC", help="PATH, or size=GB; add ,format=qcow2|raw ,bus=virtio|sata|scsi|ide (repeatable)."),
    click.option("--cdrom", metavar="ISO", help="Attach an ISO image and boot from it first."),
    click.option("--network", multiple=True, metavar="SPEC", help="user (default), bridge=NAME, network=NAME or none; add ,model=e1000e (repeatable)."),
    _flag_pair("boot-menu", "Show the firmware boot menu."),
    click.option("--boot-menu-timeout", type=int, metavar="MS", help="How long the boot menu waits (ms)."),
    click.option("--qemu-arg", multiple=True, metavar="ARG", help="Extra QEMU argument, via libvirt's qemu:commandline (repeatable)."),
    # graphics
    click.option("--listen", metavar="ADDR", help="SPICE listen address (default 127.0.0.1)."),
    click.option("--port", type=int, help="Fixed plain SPICE port (needs --insecure); default: libvirt picks."),
    click.option("--tls-port", type=int, help="Fixed TLS SPICE port; default: libvirt picks."),
    click.option("--insecure", is_flag=True, default=None, help="Allow plain channels (default: every channel TLS)."),
    click.option("--image-compression", type=click.Choice(IMAGE_COMPRESSIONS), help="SPICE image compression (default off on loopback)."),
    click.option("--jpeg", type=click.Choice(WAN), help="JPEG compression over WAN."),
    click.option("--zlib", type=click.Choice(WAN), help="zlib-GLZ compression over WAN."),
    click.option("--playback-compression", type=click.Choice(("on", "off")), help="Compress audio playback."),
    click.option("--streaming", type=click.Choice(("filter", "all", "off")), help="Video streaming detection."),
    _flag_pair("clipboard", "Clipboard sharing through the agent (default on)."),
    _flag_pair("file-transfer", "File transfer through the agent (default on)."),
    click.option("--mouse-mode", type=click.Choice(("client", "server")), help="SPICE mouse mode."),
    click.option("--gl", is_flag=True, default=None, help="OpenGL acceleration (needs --video virtio)."),
    click.option("--rendernode", metavar="PATH", help="DRM render node for --gl."),
    # video, sound, USB, channels
    click.option("--video", metavar="MODEL", help="qxl (default), virtio, vga or none."),
    click.option("--vram", metavar="SIZE", help="QXL vram, e.g. 64M."),
    click.option("--ram", metavar="SIZE", help="QXL ram, e.g. 64M."),
    click.option("--vram64", metavar="SIZE", help="QXL 64-bit vram."),
    click.option("--vgamem", metavar="SIZE", help="QXL VGA memory, e.g. 16M."),
    click.option("--heads", type=int, help="Number of displays."),
    click.option("--sound", metavar="MODEL", help="ich9 (default), ich6, ac97, es1370, sb16, usb or none; audio goes over SPICE."),
    click.option("--usb", metavar="MODEL", help="ehci (ich9 EHCI + 3 UHCI companions, default), xhci or none."),
    click.option("--usb-redir", type=int, metavar="N", help="Add N usbredir channels over SPICE."),
    click.option("--usb-filter", multiple=True, metavar="RULE", help="usbredir filter rule: class=,vendor=,product=,version=,allow=yes|no, or allow/deny (repeatable, in order)."),
    _flag_pair("agent", "SPICE agent channel com.redhat.spice.0 (default on)."),
    click.option("--folder-sharing", is_flag=True, default=None, help="WebDAV folder sharing channel."),
    click.option("--smartcard", is_flag=True, default=None, help="Smartcard passthrough over SPICE."),
]

KEYS = ("memory", "vcpus", "machine", "arch", "virt_type", "disk", "cdrom", "network", "boot_menu",
        "boot_menu_timeout", "qemu_arg", "listen", "port", "tls_port", "insecure", "image_compression", "jpeg",
        "zlib", "playback_compression", "streaming", "clipboard", "file_transfer", "mouse_mode", "gl",
        "rendernode", "video", "vram", "ram", "vram64", "vgamem", "heads", "sound", "usb", "usb_redir",
        "usb_filter", "agent", "folder_sharing", "smartcard")


def vm_options(func):
    for option in reversed(OPTIONS):
        func = option(func)
    return func


def collect(params: dict) -> dict:
    """Option values the user actually gave, as build-spec keys."""
    values = {}
    for key in KEYS:
        value = params.get(key)
        if value is None or value == ():
            continue
        if key == "playback_compression":
            value = value == "on"
        values[key] = list(value) if isinstance(value, tuple) else value
    return values
