"""Each SPICE setting is one row of domain/settings.py: option, template key, XML and -spice all follow from it."""

from __future__ import annotations

import pytest

from spicectl.domain import spec as S
from spicectl.domain.build import build_spec
from spicectl.domain.qemu_cmdline import build_command
from spicectl.domain.settings import BY_KEY, GRAPHICS, SETTINGS, VIDEO, get_path
from spicectl.domain.spec import VMSpec
from spicectl.domain.xml import from_xml, to_xml
from spicectl.errors import InvalidInput


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
    xml = to_xml(spec)
    assert f"<{setting.xml.element} " in xml and f'{setting.xml.attr}="' in xml
    assert get_path(from_xml(xml), setting.field) == value
    spice = build_command(spec).argv
    assert f"{setting.qemu.key}=" in spice[spice.index("-spice") + 1]


def test_every_setting_has_one_option_of_vm_create_and_its_words_are_the_options_choices():
    from click import Choice

    from spicectl.cli.vm import create

    keys = [s.key for s in SETTINGS]
    assert len(keys) == len(set(keys))
    params = {p.name: p for p in create.params}
    for setting in SETTINGS:
        param = params[setting.key]                      # the option's dest is the setting's key
        assert setting.option in param.opts, (setting.key, param.opts)
        if setting.choices:                              # completion offers them, errors name them
            assert isinstance(param.type, Choice) and tuple(param.type.choices) == setting.choices
    for key in ("video", "sound", "usb", "machine", "virt_type"):
        assert BY_KEY[key].choices, key


@pytest.mark.parametrize("setting", VIDEO, ids=lambda s: s.key)
def test_a_video_row_gives_option_xml_attribute_and_device_property_for_each_model_it_needs(setting, tmp_path):
    assert setting.range is not None and setting.needs is not None
    value = setting.range[1]
    need_key, need_path, allowed = setting.needs
    for model in allowed:
        spec = build_spec("x", {setting.key: value, need_key: model}, images_dir=tmp_path)
        assert get_path(spec, setting.field) == value and get_path(spec, need_path) == model
        xml = to_xml(spec)
        assert f'{setting.xml.attr}="{value}"' in xml
        assert get_path(from_xml(xml), setting.field) == value
        device = next(a for a in build_command(spec).argv if a.startswith(("qxl-vga", "virtio-vga")))
        assert f",{setting.qemu.key}={value}" in device, device   # as libvirt passes it to both
    other = next(m for m in S.VIDEO_MODELS if m not in allowed)
    with pytest.raises(InvalidInput, match=f"{setting.option} applies to"):
        build_spec("x", {setting.key: value, need_key: other}, images_dir=tmp_path)
    with pytest.raises(InvalidInput, match="out of range"):
        build_spec("x", {setting.key: setting.range[1] + 1, need_key: allowed[0]}, images_dir=tmp_path)
