"""VMSpec ⇄ libvirt domain XML, as an lxml tree (never string templates).

`to_xml(spec)` writes a document libvirt's QEMU driver accepts as is;
`from_xml(text)` reads back every element spicectl writes, so that
`to_xml(from_xml(to_xml(spec)))` is the same document.
"""

from __future__ import annotations

from lxml import etree

from spicectl.domain.devices import AGENT_CHANNEL, EHCI, EHCI_SLOT, UHCI_COMPANIONS, WEBDAV_CHANNEL
from spicectl.domain.settings import GRAPHICS, VIDEO, get_path, set_path
from spicectl.domain.spec import (
    DiskSpec,
    GraphicsSpec,
    NetworkSpec,
    UsbFilterRule,
    VideoSpec,
    VMSpec,
)
from spicectl.errors import InvalidInput

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
QEMU_ENV = (("GST_REGISTRY_FORK", "no"),)   # see to_xml
SPICECTL_NS = "https://spicectl.dev/xmlns/vm/1"



def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: object) -> etree._Element:
    el = etree.SubElement(parent, tag, {k.rstrip("_"): _attr(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = text
    return el


def _attr(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _pci_address(parent: etree._Element, slot: str, function: str, multifunction: bool = False) -> None:
    _sub(parent, "address", type="pci", domain="0x0000", bus="0x00", slot=slot, function=function,
         multifunction="on" if multifunction else None)


def _hex(value: int | None, width: int) -> str | None:
    return None if value is None else f"0x{value:0{width}x}"


# --- writing -------------------------------------------------------------------

def to_element(spec: VMSpec) -> etree._Element:
    nsmap = {"qemu": QEMU_NS} if spec.qemu_args else None
    dom = etree.Element("domain", {"type": spec.virt_type}, nsmap=nsmap)
    _sub(dom, "name", spec.name)
    if spec.uuid:
        _sub(dom, "uuid", spec.uuid)
    if spec.template or spec.image or spec.creating:
        meta = _sub(dom, "metadata")
        vm = etree.SubElement(meta, f"{{{SPICECTL_NS}}}vm", nsmap={"spicectl": SPICECTL_NS})
        for tag, value in (("template", spec.template), ("image", spec.image), ("creating", spec.creating)):
            if value:
                etree.SubElement(vm, f"{{{SPICECTL_NS}}}{tag}").text = value
    _sub(dom, "memory", str(spec.memory_kib), unit="KiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch, machine=spec.machine)
    for tag in ("kernel", "initrd", "cmdline"):
        if getattr(spec, tag):
            _sub(os_el, tag, getattr(spec, tag))
    if any(d.device == "cdrom" for d in spec.disks):
        _sub(os_el, "boot", dev="cdrom")
    _sub(os_el, "boot", dev="hd")
    if spec.boot_menu:
        _sub(os_el, "bootmenu", enable=True, timeout=spec.boot_menu_timeout_ms)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    _write_disks(devices, spec)
    _write_usb(devices, spec)
    for net in spec.networks:
        iface = _sub(devices, "interface", type=net.kind)
        if net.kind == "bridge":
            _sub(iface, "source", bridge=net.source)
        elif net.kind == "network":
            _sub(iface, "source", network=net.source)
        _sub(iface, "model", type=net.model)
    if spec.agent:
        ch = _sub(devices, "channel", type="spicevmc")
        _sub(ch, "target", type="virtio", name=AGENT_CHANNEL)
    if spec.folder_sharing:
        ch = _sub(devices, "channel", type="spiceport")
        _sub(ch, "source", channel=WEBDAV_CHANNEL)
        _sub(ch, "target", type="virtio", name=WEBDAV_CHANNEL)
    if spec.serial_console:
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port=0)
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="serial", port=0)
    if spec.usb != "none":
        _sub(devices, "input", type="tablet", bus="usb")
    _write_graphics(devices, spec)
    if spec.sound != "none":
        snd = _sub(devices, "sound", model=spec.sound)
        _sub(snd, "audio", id=1)
        _sub(devices, "audio", id=1, type="spice")
    video = _sub(devices, "video")
    v = spec.video
    rows = {s.xml.attr: s.xml.text(get_path(spec, s.field)) for s in VIDEO if s.xml and s.field}
    _sub(video, "model", type=v.model, ram=v.ram, vram=v.vram, vram64=v.vram64, vgamem=v.vgamem, **rows,
         primary=True if v.model != "none" else None)
    for _ in range(spec.usb_redir):
        _sub(devices, "redirdev", bus="usb", type="spicevmc")
    if spec.usb_filter:
        rf = _sub(devices, "redirfilter")
        for rule in spec.usb_filter:
            _sub(rf, "usbdev", class_=_hex(rule.usb_class, 2), vendor=_hex(rule.vendor, 4),
                 product=_hex(rule.product, 4), version=rule.version, allow=rule.allow)
    if spec.smartcard:
        _sub(devices, "smartcard", mode="passthrough", type="spicevmc")
    cmd = etree.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    for arg in spec.qemu_args:
        etree.SubElement(cmd, f"{{{QEMU_NS}}}arg", value=arg)
    # spice-server's GStreamer video encoders (VP8, H.264: what a client that prefers them gets) would
    # fork GStreamer's plugin scanner, which libvirt's seccomp sandbox answers by killing QEMU
    for name, value in QEMU_ENV:
        etree.SubElement(cmd, f"{{{QEMU_NS}}}env", name=name, value=value)
    return dom


def _write_disks(devices: etree._Element, spec: VMSpec) -> None:
    letters = {"virtio": iter("abcdefghijklmnopqrstuvwxyz"), "sata": iter("abcdefghijklmnopqrstuvwxyz"),
               "scsi": iter("abcdefghijklmnopqrstuvwxyz"), "ide": iter("abcd")}
    prefix = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd"}
    for disk in spec.disks:
        el = _sub(devices, "disk", type="file", device=disk.device)
        _sub(el, "driver", name="qemu", type=disk.format)
        _sub(el, "source", file=disk.path)
        if disk.backing:
            backing = _sub(el, "backingStore", type="file")
            _sub(backing, "format", type="raw")
            _sub(backing, "source", file=disk.backing)
        shared = "sata" if disk.bus == "scsi" else disk.bus  # sd* names are shared by sata and scsi
        try:
            letter = next(letters[shared])
        except StopIteration:
            raise InvalidInput(f"too many {disk.bus} disks") from None
        _sub(el, "target", dev=prefix[disk.bus] + letter, bus=disk.bus)
        if disk.device == "cdrom":
            _sub(el, "readonly")


def _write_usb(devices: etree._Element, spec: VMSpec) -> None:
    if spec.usb == "ehci":
        ehci = _sub(devices, "controller", type="usb", index=0, model=EHCI.model)
        _pci_address(ehci, f"{EHCI_SLOT:#x}", f"{EHCI.function:#x}")
        for companion in UHCI_COMPANIONS:
            uhci = _sub(devices, "controller", type="usb", index=0, model=companion.model)
            _sub(uhci, "master", startport=companion.first_port)
            _pci_address(uhci, f"{EHCI_SLOT:#x}", f"{companion.function:#x}", multifunction=companion.function == 0)
    elif spec.usb == "xhci":
        _sub(devices, "controller", type="usb", index=0, model="qemu-xhci", ports=15)
    else:
        _sub(devices, "controller", type="usb", index=0, model="none")


def _write_graphics(devices: etree._Element, spec: VMSpec) -> None:
    g = spec.graphics
    el = _sub(
        devices, "graphics", type="spice",
        port=g.port, tlsPort=g.tls_port, autoport=True if g.autoport else None,
        passwd=g.password, passwdValidTo=g.password_valid_to if g.password else None,
        defaultMode="secure" if g.tls else "any",
    )
    _sub(el, "listen", type="address", address=g.listen)
    for setting in GRAPHICS:
        prop = setting.xml
        assert prop is not None and setting.field is not None
        text = prop.text(get_path(spec, setting.field))
        if text is not None:
            child = el.find(prop.element)
            if child is None:
                child = _sub(el, prop.element)
            child.set(prop.attr, text)


def to_xml(spec: VMSpec) -> str:
    return etree.tostring(to_element(spec), pretty_print=True, encoding="unicode")


# --- reading -------------------------------------------------------------------

def _int(value: str | None) -> int | None:
    return None if value is None else int(value, 0)


def _yes(value: str | None) -> bool:
    return value in ("yes", "on")


def from_xml(text: str | bytes) -> VMSpec:
    """Read a domain spicectl wrote (or any domain, as far as spicectl's model goes)."""
    try:
        dom = etree.fromstring(text.encode() if isinstance(text, str) else text)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"domain XML is not well-formed: {exc}") from None
    if dom.tag != "domain":
        raise InvalidInput(f"expected a <domain> document, got <{dom.tag!s}>")
    spec = VMSpec(name=dom.findtext("name") or "", virt_type=dom.get("type", "kvm"), networks=[])
    spec.uuid = dom.findtext("uuid")
    spec.template = dom.findtext(f"metadata/{{{SPICECTL_NS}}}vm/{{{SPICECTL_NS}}}template")
    spec.image = dom.findtext(f"metadata/{{{SPICECTL_NS}}}vm/{{{SPICECTL_NS}}}image")
    spec.creating = dom.findtext(f"metadata/{{{SPICECTL_NS}}}vm/{{{SPICECTL_NS}}}creating")
    spec.kernel, spec.initrd, spec.cmdline = (dom.findtext(f"os/{tag}") for tag in ("kernel", "initrd", "cmdline"))
    mem = dom.find("memory")
    if mem is not None:
        factor = {"KiB": 1, "k": 1, "MiB": 1024, "M": 1024, "GiB": 1024 ** 2, "G": 1024 ** 2, "b": 1 / 1024,
                  "bytes": 1 / 1024}.get(mem.get("unit", "KiB"), 1)
        spec.memory_kib = int(int(mem.text or 0) * factor)
    spec.vcpus = int(dom.findtext("vcpu") or 1)
    ostype = dom.find("os/type")
    if ostype is not None:
        spec.arch = ostype.get("arch", spec.arch)
        machine = ostype.get("machine", spec.machine)
        spec.machine = "q35" if "q35" in machine else "pc" if machine.startswith("pc") else machine
    menu = dom.find("os/bootmenu")
    spec.boot_menu = menu is not None and _yes(menu.get("enable"))
    timeout = menu.get("timeout") if menu is not None else None
    if timeout:
        spec.boot_menu_timeout_ms = int(timeout)
    devices = dom.find("devices")
    if devices is None:
        return spec
    for disk in devices.findall("disk"):
        source = disk.find("source")
        driver = disk.find("driver")
        target = disk.find("target")
        backing = disk.find("backingStore/source")
        spec.disks.append(DiskSpec(
            path=(source.get("file") if source is not None else "") or "",
            format=driver.get("type", "raw") if driver is not None else "raw",
            bus=target.get("bus", "virtio") if target is not None else "virtio",
            device=disk.get("device", "disk"),
            backing=None if backing is None else backing.get("file"),
        ))
    models = [c.get("model") for c in devices.findall("controller[@type='usb']")]
    spec.usb = "ehci" if EHCI.model in models else "xhci" if any(m and "xhci" in m for m in models) else \
        "none" if "none" in models or not models else "ehci"
    for iface in devices.findall("interface"):
        source = iface.find("source")
        model = iface.find("model")
        spec.networks.append(NetworkSpec(
            kind=iface.get("type", "user"),
            source=None if source is None else source.get("bridge") or source.get("network"),
            model=model.get("type", "virtio") if model is not None else "virtio",
        ))
    names = [t.get("name") for t in devices.findall("channel/target")]
    spec.agent = AGENT_CHANNEL in names
    spec.serial_console = devices.find("console[@type='pty']") is not None
    spec.folder_sharing = WEBDAV_CHANNEL in names
    graphics = devices.find("graphics[@type='spice']")
    if graphics is not None:
        _read_graphics(graphics, spec)
    else:
        spec.graphics = GraphicsSpec()
    sound = devices.find("sound")
    spec.sound = (sound.get("model") or "none") if sound is not None else "none"
    model = devices.find("video/model")
    spec.video = VideoSpec(model="none") if model is None else VideoSpec(
        model=model.get("type", "qxl"), vram=_int(model.get("vram")), ram=_int(model.get("ram")),
        vram64=_int(model.get("vram64")), vgamem=_int(model.get("vgamem")),
    )
    if model is not None:
        for s in VIDEO:
            assert s.xml is not None and s.field is not None
            found = model.get(s.xml.attr)
            set_path(spec, s.field, _int(found) if s.kind == "int" else
                     None if found is None else s.xml.value(found, None))
    spec.usb_redir = len(devices.findall("redirdev[@type='spicevmc']"))
    for rule in devices.findall("redirfilter/usbdev"):
        spec.usb_filter.append(UsbFilterRule(
            allow=_yes(rule.get("allow")), usb_class=_int(rule.get("class")), vendor=_int(rule.get("vendor")),
            product=_int(rule.get("product")), version=rule.get("version"),
        ))
    spec.smartcard = devices.find("smartcard[@type='spicevmc']") is not None
    spec.qemu_args = [a.get("value") or "" for a in dom.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    return spec


def _read_graphics(el: etree._Element, spec: VMSpec) -> None:
    listen = el.find("listen")
    port = _int(el.get("port"))
    tls_port = _int(el.get("tlsPort"))
    autoport = _yes(el.get("autoport"))
    spec.graphics = GraphicsSpec(
        listen=(listen.get("address") if listen is not None else None) or el.get("listen") or "127.0.0.1",
        port=None if autoport or (port is not None and port < 0) else port,
        tls_port=None if autoport or (tls_port is not None and tls_port < 0) else tls_port,
        tls=el.get("defaultMode") == "secure",
        password=el.get("passwd"),
        password_valid_to=el.get("passwdValidTo"),
    )
    for setting in GRAPHICS:
        prop = setting.xml
        assert prop is not None and setting.field is not None
        child = el.find(prop.element)
        text = child.get(prop.attr) if child is not None else None
        if text is not None:
            set_path(spec, setting.field, prop.value(text, get_path(spec, setting.field)))
