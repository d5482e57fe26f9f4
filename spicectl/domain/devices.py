"""Device facts both writers (libvirt XML and the QEMU command line) use: USB 2 layout, channel names."""

from __future__ import annotations

from typing import NamedTuple

# the agent's and the WebDAV folder-sharing virtio-serial port names (spice-vdagent, spice-webdavd)
AGENT_CHANNEL = "com.redhat.spice.0"
WEBDAV_CHANNEL = "org.spice-space.webdav.0"


class UsbFunction(NamedTuple):
    model: str            # libvirt's controller model; QEMU's driver is "ich9-usb-" + model[5:]
    function: int         # PCI function in EHCI_SLOT
    first_port: int       # for a UHCI companion: the EHCI port it serves first


# QEMU's docs/config/ich9-ehci-uhci.cfg: one PCI slot, EHCI on function 7,
# its three UHCI companions on functions 0-2 serving EHCI ports 0, 2 and 4.
EHCI_SLOT = 0x1D
EHCI = UsbFunction("ich9-ehci1", 7, 0)
UHCI_COMPANIONS = (UsbFunction("ich9-uhci1", 0, 0), UsbFunction("ich9-uhci2", 1, 2), UsbFunction("ich9-uhci3", 2, 4))


def qemu_driver(f: UsbFunction) -> str:
    return "ich9-usb-" + f.model.removeprefix("ich9-")
