"""libvirt itself accepts every golden document: its validator, and its QEMU driver's define."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, require_binary

pytestmark = pytest.mark.integration
GOLDEN = sorted((REPO / "tests" / "golden").glob("*.xml"))


def test_virt_xml_validate_accepts_every_golden_file():
    tool = require_binary("virt-xml-validate")
    for path in GOLDEN:
        r = subprocess.run([tool, str(path), "domain"], capture_output=True, text=True)
        assert r.returncode == 0, f"{path.name}: {r.stdout}{r.stderr}"


DEFINE_ALL = """
import json, sys
from pathlib import Path
import libvirt
from spicectl.virt.connection import open_hypervisor
results = {}
with open_hypervisor(None, Path(sys.argv[1])) as hv:
    for name in sys.argv[2:]:
        xml = Path(name).read_text().replace('passwd="RANDOM"', 'passwd="golden-file-password-0123456789"')
        try:
            dom = hv.conn.defineXML(xml)
            back = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            dom.undefine()
            results[Path(name).name] = ("ok", back)
        except libvirt.libvirtError as exc:
            results[Path(name).name] = ("error", exc.get_error_message())
print(json.dumps(results))
"""


def test_the_qemu_driver_defines_every_golden_file():
    require_binary("qemu-system-x86_64")
    # not tmp_path: pytest's paths grow past what QEMU's monitor sockets allow (see MAX_EMBEDDED_ROOT)
    with tempfile.TemporaryDirectory(prefix="spicectl-golden-") as short:
        r = subprocess.run([sys.executable, "-c", DEFINE_ALL, str(Path(short) / "state"), *map(str, GOLDEN)],
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert sorted(results) == [p.name for p in GOLDEN]
    failed = {k: v[1] for k, v in results.items() if v[0] != "ok"}
    assert failed == {}
    # libvirt kept what matters: the EHCI companions and usbredir devices of the desktop profile
    desktop = results["template-desktop.xml"][1]
    assert desktop.count("<redirdev bus='usb' type='spicevmc'>") == 2
    assert "model='ich9-uhci3'" in desktop and "<master startport='4'/>" in desktop
