"""`vm create` bad input: one clear line, a usage exit code, nothing on stdout."""

from __future__ import annotations


import pytest

BAD = {
    "name with slash": (["bad/name"], "cannot contain '/'"),
    "name with space": (["bad name"], "invalid VM name"),
    "empty name": ([""], "empty"),
    "malformed size": (["ok", "--memory", "2 gigs"], "malformed memory size '2 gigs'"),
    "tiny memory": (["ok", "--memory", "1M"], "too small"),
    "unknown video": (["ok", "--video", "cirrus"], "valid video models: qxl, virtio, vga, none"),
    "unknown sound": (["ok", "--sound", "hda"], "valid sound models: ich9"),
    "unknown usb": (["ok", "--usb", "ohci"], "valid USB controllers: ehci, xhci, none"),
    "redir without usb": (["ok", "--usb-redir", "2", "--usb", "none"], "--usb-redir needs a USB controller"),
    "smartcard without usb": (["ok", "--smartcard", "--usb", "none"], "--smartcard needs a USB controller"),
    "filter without redir": (["ok", "--usb-filter", "allow"], "add --usb-redir"),
    "bad filter": (["ok", "--usb-redir", "1", "--usb-filter", "colour=red"], "unknown key 'colour'"),
    "vram on vga": (["ok", "--video", "vga", "--vram", "64M"], "applies to --video qxl"),
    "gl on qxl": (["ok", "--gl"], "--gl needs --video virtio"),
    "plain port while tls-only": (["ok", "--port", "5900"], "TLS-only"),
    "port out of range": (["ok", "--tls-port", "80"], "out of range"),
    "same ports": (["ok", "--insecure", "--port", "5900", "--tls-port", "5900"], "must differ"),
    "listen not an ip": (["ok", "--listen", "example.org"], "not an IP address"),
    "ide on q35": (["ok", "--disk", "/x.img,bus=ide"], "no IDE bus"),
    "disk without path or size": (["ok", "--disk", "format=raw"], "needs a path or size"),
    "bad network": (["ok", "--network", "vde=x"], "unknown key 'vde'"),
    "missing template": (["ok", "-t", "nope"], "no template 'nope'"),
    "both print modes": (["ok", "--print-qemu"], "exclude each other"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_usage_error_and_no_stdout(run, case):
    args, needle = BAD[case]
    r = run("vm", "create", *args, "--print-xml")
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert needle in r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0].startswith(("spicectl: error:", "Usage:", "Error:"))


def user_template(tmp_path, name: str, text: str) -> dict[str, str]:
    """A config whose templates_dir holds one template; the env that selects that config."""
    tdir = tmp_path / "cfg" / "templates"
    tdir.mkdir(parents=True)
    (tdir / f"{name}.toml").write_text(text)
    cfg = tmp_path / "cfg" / "spicectl.toml"
    cfg.write_text(f'templates_dir = "{tdir}"\n')
    return {"SPICECTL_CONFIG": str(cfg)}


def test_template_with_a_typo_names_the_key_and_suggests(run, tmp_path):
    env = user_template(tmp_path, "mine", 'usb_redirs = 2\n')
    r = run("vm", "create", "ok", "-t", "mine", "--print-xml", env=env)
    assert r.exit_code == 2
    assert "unknown key 'usb_redirs'" in r.stderr and "did you mean 'usb_redir'" in r.stderr
    assert r.stdout == ""


def test_template_with_a_wrong_type_is_a_clear_error(run, tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('vcpus = "two"\n')
    r = run("vm", "create", "ok", "-t", str(path), "--print-xml")
    assert r.exit_code == 2
    assert "vcpus must be a int" in r.stderr


def test_options_override_the_template(run):
    r = run("vm", "create", "ok", "-t", "desktop", "--usb-redir", "4", "--memory", "1G", "--print-xml", "--json")
    xml = r.json()["xml"]
    assert xml.count("<redirdev") == 4
    assert '<memory unit="KiB">1048576</memory>' in xml


def test_user_template_shadows_builtin_and_is_listed(run, tmp_path):
    env = user_template(tmp_path, "desktop", 'description = "mine"\nusb_redir = 1\n')
    items = {t["name"]: t for t in run("template", "list", "--json", env=env).json()}
    assert items["desktop"]["description"] == "mine" and not items["desktop"]["builtin"]
    assert items["media"]["builtin"]
    shown = run("template", "show", "desktop", "--json", env=env).json()
    assert shown["values"]["usb_redir"] == 1


def test_template_show_prints_the_toml(run):
    r = run("template", "show", "headless-ci")
    assert r.exit_code == 0
    assert 'usb = "none"' in r.stdout


def test_print_qemu_json_has_argv_and_readconfig(run):
    r = run("vm", "create", "q", "-t", "desktop", "--virt-type", "qemu", "--print-qemu", "--json")
    data = r.json()
    assert data["argv"][0] == "qemu-system-x86_64"
    assert "-readconfig" in data["argv"]
    assert 'masterbus = "ehci.0"' in data["readconfig"]
    assert data["argv"].count("usb-redir,chardev=charredir0,id=redir0,bus=ehci.0") == 1
    assert not any("password" in a and "=" in a and "secret" not in a and "file" not in a for a in data["argv"])
