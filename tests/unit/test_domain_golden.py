"""Golden XML for each template and each option group; every document valid for libvirt.

Regenerate (after checking the change is intended): scripts/test tests/unit/test_domain_golden.py --regen-golden
"""

from __future__ import annotations

import itertools
import re

import pytest
from lxml import etree

from spicectl.domain.validate import validate
from spicectl.domain.xml import from_xml, to_xml
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden"
BASE = ["--state-dir", "/srv/spicectl"]
COMMON = ["--virt-type", "qemu"]

CASES = {
    "template-desktop": ["-t", "desktop"],
    "template-media": ["-t", "media"],
    "template-headless-ci": ["-t", "headless-ci"],
    "template-legacy": ["-t", "legacy"],
    "defaults": [],
    "graphics-tuned": ["--tls-port", "5901", "--image-compression", "auto_glz", "--jpeg", "never",
                       "--zlib", "always", "--playback-compression", "off", "--streaming", "filter",
                       "--no-clipboard", "--no-file-transfer", "--mouse-mode", "client"],
    "graphics-insecure": ["--insecure", "--port", "5900", "--listen", "0.0.0.0"],
    "graphics-gl": ["--video", "virtio", "--gl", "--rendernode", "/dev/dri/renderD128"],
    "video-qxl-sizes": ["--vram", "128M", "--ram", "64M", "--vram64", "256M", "--vgamem", "32M", "--heads", "2"],
    "video-vga": ["--video", "vga"],
    "video-none": ["--video", "none"],
    "sound-ac97": ["--sound", "ac97"],
    "sound-usb": ["--sound", "usb"],
    "sound-none": ["--sound", "none"],
    "usb-ehci-redir-filter": ["--usb", "ehci", "--usb-redir", "3", "--usb-filter", "class=0x08,allow=no",
                              "--usb-filter", "vendor=0x1234,product=0xbeef,version=2.00,allow=yes",
                              "--usb-filter", "deny"],
    "usb-xhci": ["--usb", "xhci", "--usb-redir", "1"],
    "usb-none": ["--usb", "none"],
    "channels": ["--folder-sharing", "--smartcard", "--no-agent"],
    "image": ["--image", str(REPO / "tests" / "data" / "images" / "tiny.toml"),
              "--kernel-arg", "spicectl.scene=static"],
    "guest": ["--memory", "4G", "--vcpus", "4", "--machine", "pc", "--disk", "/var/lib/images/a.qcow2",
              "--disk", "size=10", "--cdrom", "/isos/install.iso", "--network", "bridge=br0",
              "--network", "network=default,model=e1000e", "--boot-menu", "--boot-menu-timeout", "5000",
              "--qemu-arg=-msg", "--qemu-arg=timestamp=on"],
}

PASSWD = re.compile(r'passwd="([A-Za-z0-9_-]+)"')


def normalise(xml: str) -> str:
    """The password is random on each run: check its shape, then mask it."""
    match = PASSWD.search(xml)
    assert match and len(match.group(1)) >= 32, "every guest needs a long random password"
    return PASSWD.sub('passwd="RANDOM"', xml)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_xml(run, case, request):
    r = run(*BASE, "vm", "create", "demo", "--print-xml", *COMMON, *CASES[case])
    assert r.exit_code == 0, r.stderr
    xml = normalise(r.stdout)
    path = GOLDEN / f"{case}.xml"
    if request.config.getoption("--regen-golden"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(xml)
    assert path.exists(), f"no golden file {path.name}: run with --regen-golden"
    assert xml == path.read_text(), f"{path.name} differs (regenerate with --regen-golden if intended)"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_xml_round_trips_and_validates(case):
    xml = (GOLDEN / f"{case}.xml").read_text()
    validate(xml)
    assert to_xml(from_xml(xml)) == xml


def test_every_golden_file_has_a_case():
    assert sorted(p.stem for p in GOLDEN.glob("*.xml")) == sorted(CASES)


def test_expired_password_and_secure_channels_by_default():
    dom = etree.fromstring((GOLDEN / "defaults.xml").read_bytes())
    g = dom.find("devices/graphics")
    assert g.get("passwdValidTo") == "2000-01-01T00:00:00"
    assert g.get("defaultMode") == "secure"
    assert g.find("listen").get("address") == "127.0.0.1"
    assert g.find("image").get("compression") == "off"  # loopback: no compression


def test_ehci_layout_matches_qemus_ich9_config():
    dom = etree.fromstring((GOLDEN / "template-desktop.xml").read_bytes())
    ctrls = dom.findall("devices/controller[@type='usb']")
    layout = [(c.get("model"), c.find("master").get("startport") if c.find("master") is not None else None,
               c.find("address").get("slot"), c.find("address").get("function")) for c in ctrls]
    assert layout == [("ich9-ehci1", None, "0x1d", "0x7"), ("ich9-uhci1", "0", "0x1d", "0x0"),
                      ("ich9-uhci2", "2", "0x1d", "0x1"), ("ich9-uhci3", "4", "0x1d", "0x2")]
    assert len(dom.findall("devices/redirdev[@type='spicevmc']")) == 2


MATRIX = {
    "--video": ["qxl", "virtio", "vga"],
    "--sound": ["ich9", "ich6", "ac97", "es1370", "sb16", "usb", "none"],
    "--usb": ["ehci", "xhci"],
    "--machine": ["q35", "pc"],
    "--image-compression": ["auto_glz", "quic", "off"],
}


def test_option_matrix_validates_against_domain_rng(run):
    from spicectl.domain.build import build_spec
    from spicectl.domain.xml import to_element

    count = 0
    for combo in itertools.product(*MATRIX.values()):
        values = dict(zip(("video", "sound", "usb", "machine", "image_compression"), combo, strict=True))
        values.update(usb_redir=2, folder_sharing=True, smartcard=True, boot_menu=True)
        spec = build_spec("m", values, images_dir=GOLDEN, host_has_kvm=False)
        validate(to_element(spec))
        count += 1
    assert count == 3 * 7 * 2 * 2 * 3
