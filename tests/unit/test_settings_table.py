"""Each SPICE setting is one row of domain/settings.py: option, template key, XML and -spice all follow from it."""

from __future__ import annotations

import pytest

from spicectl.cli.vm_options import OPTIONS
from spicectl.domain.build import KEYS, build_spec
from spicectl.domain.qemu_cmdline import build_command
from spicectl.domain.settings import GRAPHICS, SETTINGS, get_path
from spicectl.domain.spec import VMSpec
from spicectl.domain.xml import from_xml, to_xml


def a_value_other_than_the_default(setting):
    if setting.kind == "bool":
        return not get_path(VMSpec(name="x"), setting.field)
    if setting.choices:
        return setting.choices[1]
    return "/dev/dri/renderD128"


@pytest.mark.parametrize("setting", GRAPHICS, ids=lambda s: s.key)
def test_a_graphics_row_gives_option_template_key_xml_and_qemu_key(setting, tmp_path):
    value = a_value_other_than_the_default(setting)
    values = {setting.key: value}
    if setting.key == "rendernode":
        values["gl"] = True
    if setting.key in ("gl", "rendernode"):
        values["video"] = "virtio"
    spec = build_spec("x", values, images_dir=tmp_path)
    assert get_path(spec, setting.field) == value
    assert KEYS[setting.key][0] == setting.kind
    option_names = {name for option in OPTIONS for name in _names(option)}
    assert setting.option in option_names
    xml = to_xml(spec)
    assert f"<{setting.xml.element} " in xml and f'{setting.xml.attr}="' in xml
    assert get_path(from_xml(xml), setting.field) == value
    spice = build_command(spec).argv
    assert f"{setting.qemu.key}=" in spice[spice.index("-spice") + 1]


def test_every_setting_has_one_option_and_one_template_key():
    keys = [s.key for s in SETTINGS]
    assert len(keys) == len(set(keys))
    assert set(keys) <= set(KEYS)


def _names(decorator) -> list[str]:
    def probe():
        pass

    decorator(probe)
    return [n.split("/")[0] for p in probe.__click_params__ for n in p.opts]
