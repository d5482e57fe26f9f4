"""From user values (template merged with options) to a checked `VMSpec`.

Values use the option names (`usb_redir`, `image_compression` ...), so one
table of keys serves the command line and the TOML templates alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spicectl.domain import spec as S
from spicectl.domain.settings import BY_KEY, GRAPHICS, SETTINGS, TEMPLATE_ONLY, VIDEO, Setting, get_path, set_path
from spicectl.domain.units import check_choice, check_domain_name, parse_number, parse_size_kib
from spicectl.errors import InvalidInput

# every key a template may hold -> (kind, description); kind drives type checks of template values
KEYS: dict[str, tuple[str, str]] = {s.key: (s.kind, s.help) for s in [*TEMPLATE_ONLY.values(), *SETTINGS]}

MAX_MEMORY_KIB = 16 * 1024 ** 3
MAX_VIDEO_KIB = {"vram": 4 * 1024 ** 2, "ram": 4 * 1024 ** 2, "vgamem": 4 * 1024 ** 2, "vram64": 64 * 1024 ** 2}
MAX_DISK_GIB = 64 * 1024

def check_value_types(values: dict[str, Any], source: str) -> None:
    from spicectl.files import check_fields

    check_fields(values, {key: kind for key, (kind, _help) in KEYS.items()}, source)
    for key, value in values.items():
        for text in (value if KEYS[key][0] == "list" else [value]):
            if isinstance(text, str):
                _check_text(text, key, source)


def _check_text(text: str, key: str, source: str) -> None:
    """Every string lands in XML or on a command line: no empty values, no control characters."""
    option = "--" + key.replace("_", "-")
    if not text:
        raise InvalidInput(f"{source}: {option} is empty", hint=f"leave {option} out for the default")
    bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise InvalidInput(f"{source}: {option} {text!r} holds a control character ({ord(bad):#04x})")


def _hexnum(text: str, what: str, limit: int) -> int:
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 16 if what != "class" else 0)
    except ValueError:
        raise InvalidInput(f"USB filter {what} {text!r} is not a number (write it like 0x1234)") from None
    if not 0 <= value <= limit:
        raise InvalidInput(f"USB filter {what} {text!r} is out of range")
    return value


def parse_usb_filter(rule: str) -> S.UsbFilterRule:
    """'class=0x08,vendor=0x1234,product=0xbeef,version=2.00,allow=yes', or just 'allow' / 'deny'."""
    text = rule.strip()
    if text in ("allow", "deny"):
        return S.UsbFilterRule(allow=text == "allow")
    out = S.UsbFilterRule()
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise InvalidInput(f"USB filter rule {rule!r}: {part!r} is not KEY=VALUE",
                               hint="keys: class, vendor, product, version, allow")
        if key == "class":
            out.usb_class = _hexnum(value, "class", 0xFF)
        elif key == "vendor":
            out.vendor = _hexnum(value, "vendor", 0xFFFF)
        elif key == "product":
            out.product = _hexnum(value, "product", 0xFFFF)
        elif key == "version":
            major, dot, minor = value.partition(".")
            if not (major.isdigit() and (not dot or minor.isdigit())):
                raise InvalidInput(f"USB filter version {value!r} must look like 2.00")
            out.version = value
        elif key == "allow":
            if value not in ("yes", "no", "allow", "deny"):
                raise InvalidInput(f"USB filter allow={value!r}: use yes or no")
            out.allow = value in ("yes", "allow")
        else:
            raise InvalidInput(f"USB filter rule {rule!r}: unknown key {key!r}",
                               hint="keys: class, vendor, product, version, allow")
    return out


def _kv(text: str, what: str, keys: tuple[str, ...], bare: str) -> dict[str, str]:
    """'a=1,b=2' into a dict; a bare first word is taken as `bare`."""
    out: dict[str, str] = {}
    for i, part in enumerate(text.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            if i == 0:
                out[bare] = part
                continue
            raise InvalidInput(f"{what} {text!r}: {part!r} is not KEY=VALUE", hint="keys: " + ", ".join(keys))
        if key not in keys:
            raise InvalidInput(f"{what} {text!r}: unknown key {key!r}", hint="keys: " + ", ".join(keys))
        out[key] = value
    return out


def _disk_format(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            if fh.read(4) == b"QFI\xfb":
                return "qcow2"
            return "raw"
    except OSError:
        return "qcow2" if path.endswith(".qcow2") else "raw"


def parse_disk(text: str, name: str, index: int, images_dir: Path, machine: str) -> S.DiskSpec:
    kv = _kv(text, "--disk", ("path", "size", "format", "bus"), "path")
    size = None
    if "size" in kv:
        exact = parse_number(kv["size"].rstrip("GgBbIi"))
        if exact is None:
            raise InvalidInput(f"--disk size {kv['size']!r} is not a number of GiB")
        if not 0 < exact <= MAX_DISK_GIB:
            raise InvalidInput(f"--disk size {kv['size']!r} must be more than zero and at most {MAX_DISK_GIB} GiB")
        size = float(exact)
    path = kv.get("path")
    if not path and size is None:
        raise InvalidInput(f"--disk {text!r} needs a path or size=GB")
    if not path:
        path = str(images_dir / f"{name}-disk{index}.qcow2")
    elif not Path(path).is_absolute():
        path = str(Path(path).absolute())
    fmt = kv.get("format") or ("qcow2" if size is not None else _disk_format(path))
    check_choice(fmt, S.DISK_FORMATS, "disk format")
    bus = check_choice(kv.get("bus", "virtio"), S.DISK_BUSES, "disk bus")
    if bus == "ide" and machine == "q35":
        raise InvalidInput("q35 machines have no IDE bus", hint="use bus=sata or --machine pc")
    return S.DiskSpec(path=path, format=fmt, bus=bus, size_gib=size)


def parse_network(text: str) -> S.NetworkSpec | None:
    if text == "none":
        return None
    kv = _kv(text, "--network", ("bridge", "network", "model", "user"), "kind")
    kind_word = kv.pop("kind", None)
    model = check_choice(kv.pop("model", "virtio"), S.NIC_MODELS, "NIC model")
    if kind_word == "user" and not kv:
        return S.NetworkSpec("user", None, model)
    if kind_word is None and len(kv) == 1:
        (kind, source), = kv.items()
        if kind in ("bridge", "network") and source:
            return S.NetworkSpec(kind, source, model)
    raise InvalidInput(f"--network {text!r} is not understood",
                       hint="use user, bridge=NAME, network=NAME or none (add ,model=e1000e to change the NIC)")


def _bool_or_none(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def build_spec(name: str, values: dict[str, Any], *, images_dir: Path, template: str | None = None,
               host_has_kvm: bool | None = None) -> S.VMSpec:
    """Check `values` (template merged with options) and make the spec, one device group at a time."""
    check_domain_name(name)
    check_value_types(values, "options")
    get = dict(values).get
    spec = S.VMSpec(name=name, template=template)
    _machine(spec, get, host_has_kvm)
    _graphics(spec, get)
    _video(spec, get)
    _usb_and_channels(spec, get)
    _storage_and_network(spec, get, images_dir)
    _boot(spec, get)
    return spec


Get = Callable[..., Any]


def virt_type(asked: str, host_has_kvm: bool | None) -> str:
    """The domain type for --virt-type `asked`: auto is kvm where KVM was shown to run a guest, never
    from /dev/kvm alone (which may exist and not run one: see virt.kvm)."""
    return asked if asked != "auto" else "kvm" if host_has_kvm else "qemu"


def _machine(spec: S.VMSpec, get: Get, host_has_kvm: bool | None) -> None:
    if get("memory") is not None:
        spec.memory_kib = parse_size_kib(get("memory"), what="memory size")
        if spec.memory_kib < 16 * 1024:
            raise InvalidInput(f"memory {get('memory')!r} is too small (at least 16M)")
        if spec.memory_kib > MAX_MEMORY_KIB:
            raise InvalidInput(f"memory {get('memory')!r} is too large (at most 16T)")
    if get("vcpus") is not None:
        if not 1 <= get("vcpus") <= 512:
            raise InvalidInput(f"--vcpus {get('vcpus')} is out of range (1-512)")
        spec.vcpus = get("vcpus")
    spec.machine = _choice("machine", get("machine") or spec.machine)
    spec.arch = get("arch") or spec.arch
    if spec.arch != "x86_64":
        raise InvalidInput(f"architecture {spec.arch!r} is not supported yet", hint="use x86_64")
    spec.virt_type = virt_type(_choice("virt_type", get("virt_type") or "auto"), host_has_kvm)



def _graphics(spec: S.VMSpec, get: Get) -> None:
    g = spec.graphics
    g.listen = get("listen") or g.listen
    if "%" in g.listen:
        raise InvalidInput(f"--listen {g.listen!r}: libvirt takes no scoped (%zone) addresses",
                           hint="listen on a global or loopback address, or on ::")
    if not (_is_loopback(g.listen) or g.listen in ("0.0.0.0", "::")):
        try:
            ipaddress.ip_address(g.listen)
        except ValueError:
            raise InvalidInput(f"--listen {g.listen!r} is not an IP address") from None
    for key in ("port", "tls_port"):
        port = get(key)
        if port is not None and not 1024 <= port <= 65535:
            raise InvalidInput(f"--{key.replace('_', '-')} {port} is out of range (1024-65535)")
    g.port, g.tls_port = get("port"), get("tls_port")
    if g.port is not None and g.port == g.tls_port:
        raise InvalidInput("--port and --tls-port must differ")
    g.tls = not get("insecure", False)
    if g.tls and g.port is not None and g.tls_port is None:
        raise InvalidInput("--port sets the plain port, but every channel is TLS-only",
                           hint="give --tls-port instead, or add --insecure to allow plain channels")
    for setting in GRAPHICS:
        value = get(setting.key)
        if value is not None:
            if setting.choices and setting.kind == "str":
                check_choice(value, setting.choices, setting.what)
            assert setting.field is not None  # every GRAPHICS row names its field
            set_path(spec, setting.field, value)
    if get("image_compression") is None and _is_loopback(g.listen):
        # On loopback bandwidth is free and CPU is not (virt-manager's default too).
        g.image_compression = "off"
    if g.rendernode and not g.gl:
        raise InvalidInput("--rendernode needs --gl")
    # a SASL guest has no ticket at all: with SASL on, spice-server refuses to set one (and QEMU fails to start)
    g.password = None if get("sasl") else S.random_password()



def _choice(key: str, value: str) -> str:
    """`value` checked against its setting's words (a template's value has not met click's check)."""
    return check_choice(value, BY_KEY[key].choices, BY_KEY[key].what)


def _apply_rows(spec: S.VMSpec, rows: list[Setting], get: Get) -> None:
    """Settings that map one value to one field, checked as their rows say (range, what they need)."""
    for setting in rows:
        value = get(setting.key)
        if value is None:
            continue
        if setting.needs is not None:
            key, path, allowed = setting.needs
            current = get_path(spec, path)
            if current not in allowed:
                raise InvalidInput(f"{setting.option} applies to {BY_KEY[key].option} {' or '.join(allowed)}, "
                                   f"not {current}")
        if setting.range is not None and not setting.range[0] <= value <= setting.range[1]:
            raise InvalidInput(f"{setting.option} {value} is out of range ({setting.range[0]}-{setting.range[1]})")
        assert setting.field is not None   # every row of such a table names its field
        set_path(spec, setting.field, value)


def _video(spec: S.VMSpec, get: Get) -> None:
    g = spec.graphics
    video = spec.video
    video.model = _choice("video", get("video") or video.model)
    for key in ("vram", "ram", "vram64", "vgamem"):
        if get(key) is not None:
            if video.model != "qxl":
                raise InvalidInput(f"--{key} applies to --video qxl only, not {video.model}")
            size = parse_size_kib(get(key), what=f"{key} size")
            if size > MAX_VIDEO_KIB[key]:
                raise InvalidInput(f"--{key} {get(key)!r} is too large (QXL takes at most "
                                   f"{MAX_VIDEO_KIB[key] // 1024 ** 2}G)")
            setattr(video, key, size)
    _apply_rows(spec, VIDEO, get)
    if g.gl and video.model != "virtio":
        raise InvalidInput(f"--gl needs --video virtio (not {video.model})")
    if video.model == "none" and g.streaming:
        raise InvalidInput("--streaming needs a video device")



def _usb_and_channels(spec: S.VMSpec, get: Get) -> None:
    spec.sound = _choice("sound", get("sound") or spec.sound)
    spec.usb = _choice("usb", get("usb") or spec.usb)
    redir = get("usb_redir", 0) or 0
    if not 0 <= redir <= 8:
        raise InvalidInput(f"--usb-redir {redir} is out of range (0-8)")
    spec.usb_redir = redir
    spec.usb_filter = [parse_usb_filter(r) for r in get("usb_filter") or []]
    spec.agent = get("agent", True)
    spec.folder_sharing = bool(get("folder_sharing", False))
    spec.smartcard = bool(get("smartcard", False))
    if spec.usb == "none":
        for flag, on in (("--usb-redir", spec.usb_redir), ("--smartcard", spec.smartcard),
                         ("--sound usb", spec.sound == "usb"), ("--usb-filter", spec.usb_filter)):
            if on:
                raise InvalidInput(f"{flag} needs a USB controller, but --usb is none",
                                   hint="use --usb ehci (or xhci), or drop " + flag)
    if spec.usb_filter and not spec.usb_redir:
        raise InvalidInput("--usb-filter applies to usbredir devices; add --usb-redir N")


def _storage_and_network(spec: S.VMSpec, get: Get, images_dir: Path) -> None:
    spec.disks = [parse_disk(d, spec.name, i, images_dir, spec.machine) for i, d in enumerate(get("disk") or [])]
    if get("cdrom"):
        iso = str(Path(get("cdrom")).absolute())
        spec.disks.append(S.DiskSpec(path=iso, format="raw", bus="sata" if spec.machine == "q35" else "ide",
                                     device="cdrom"))
    nets = get("network") or ["user"]
    if "none" in nets and len(nets) > 1:
        raise InvalidInput("--network none cannot be combined with other networks")
    spec.networks = [n for n in (parse_network(t) for t in nets) if n is not None]


def _boot(spec: S.VMSpec, get: Get) -> None:
    spec.boot_menu = bool(get("boot_menu", False))
    if get("boot_menu_timeout") is not None:
        if not 0 <= get("boot_menu_timeout") <= 65535:
            raise InvalidInput("--boot-menu-timeout is out of range (0-65535 ms)")
        spec.boot_menu_timeout_ms = get("boot_menu_timeout")
    spec.qemu_args = list(get("qemu_arg") or [])
