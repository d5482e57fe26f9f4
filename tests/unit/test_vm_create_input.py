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
    "huge memory": (["ok", "--memory", "99999999999999999999T"], "too large"),
    "huge vram": (["ok", "--vram", "8G"], "too large"),
    "control character in qemu-arg": (["ok", "--qemu-arg", "a\x01b"], "holds a control character (0x01)"),
    "control character in cdrom": (["ok", "--cdrom", "/x\x02.iso"], "holds a control character"),
    "control character in disk": (["ok", "--disk", "/x\x1b.img"], "holds a control character"),
    "control character in network": (["ok", "--network", "bridge=br\x7f"], "holds a control character"),
    "control character in rendernode": (["ok", "--video", "virtio", "--gl", "--rendernode", "/dev/\x03"],
                                        "holds a control character"),
    "disk size nan": (["ok", "--disk", "size=nan"], "is not a number of GiB"),
    "disk size inf": (["ok", "--disk", "size=inf"], "is not a number of GiB"),
    "disk size 1e400": (["ok", "--disk", "size=1e400"], "is not a number of GiB"),
    "disk size zero": (["ok", "--disk", "size=0"], "must be more than zero"),
    "disk size of 50 digits": (["ok", "--disk", "size=" + "9" * 50], "at most"),
    "memory of 30 digits": (["ok", "--memory", "9" * 30], "too large"),
    "memory of 50 digits": (["ok", "--memory", "9" * 50 + "G"], "too large"),
    "vram of 50 digits": (["ok", "--vram", "9" * 50], "too large"),
    "memory in Arabic-Indic digits": (["ok", "--memory", "\u0663G"], "malformed memory size"),
    "vcpus in Arabic-Indic digits": (["ok", "--vcpus", "\u0663"], "is not a whole number"),
    "vcpus with an underscore": (["ok", "--vcpus", "1_0"], "is not a whole number"),
    "empty machine": (["ok", "--machine", ""], "'--machine': is empty"),
    "empty video": (["ok", "--video", ""], "'--video': is empty"),
    "empty listen": (["ok", "--listen", ""], "'--listen': is empty"),
    "scoped listen address": (["ok", "--listen", "fe80::1%eth0"], "no scoped (%zone) addresses"),
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


def test_a_template_with_a_control_character_is_refused(run, tmp_path):
    env = user_template(tmp_path, "ctl", 'qemu_arg = ["-msg", "x\\u0007"]\n')
    r = run("vm", "create", "ok", "-t", "ctl", "--print-xml", env=env)
    assert r.exit_code == 2 and "holds a control character (0x07)" in r.stderr


@pytest.mark.parametrize("command", [["vm", "create", "ok"], ["vm", "start", "ok"], ["vm", "stop", "ok"],
                                     ["vm", "restart", "ok"], ["host", "stop"], ["wait-screen", "ok", "--changed"],
                                     ["console", "ok", "--expect", "x"]])
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_timeouts_are_finite_positive_seconds(run, command, value):
    r = run(*command, "--timeout", value)
    assert r.exit_code == 2 and "--timeout" in r.stderr


@pytest.mark.parametrize("option, value", [("--settle", "-0.5"), ("--settle", "nan"), ("--hold", "inf")])
def test_delays_are_finite_and_not_negative(run, option, value):
    command = ["screenshot", "ok", "-o", "x.png"] if option == "--settle" else ["send-keys", "ok", "esc"]
    r = run(*command, option, value)
    assert r.exit_code == 2 and option in r.stderr


@pytest.mark.parametrize("command", [["--connect", "test:///default", "ticket", "test", "-o"],
                                     ["screenshot", "spice://127.0.0.1:1", "-o"]])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(run, tmp_path, command):
    r = run(*command, str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.stderr
    r = run(*command, str(tmp_path / "missing" / "out"))
    assert r.exit_code == 2 and "is not a directory" in r.stderr


def test_print_qemu_gives_the_usb_filter_to_every_redirection_device_as_libvirt_does(run):
    r = run("vm", "create", "q", "-t", "desktop", "--virt-type", "qemu", "--usb", "ehci", "--usb-redir", "3",
            "--usb-filter", "class=0x08,allow=no", "--usb-filter", "vendor=0x1234,allow=yes", "--print-qemu",
            "--json")
    assert r.exit_code == 0, r.output
    devices = [a for a in r.json()["argv"] if a.startswith("usb-redir,")]
    assert len(devices) == 3
    assert all(d.endswith(",filter=0x08,-1,-1,-1,0|-1,0x1234,-1,-1,1") for d in devices), devices


def test_a_usb_filter_version_is_bcd_as_libvirt_reads_it_and_print_qemu_writes_numbers(run):
    from spicectl.domain.spec import UsbFilterRule

    assert UsbFilterRule(version="2.00").version_bcd == 0x0200
    assert UsbFilterRule(version="1.1").version_bcd == 0x0101
    assert UsbFilterRule().version_bcd is None
    r = run("vm", "create", "w", "-t", "desktop", "--usb-filter", "class=0x08,version=2.00,allow=no",
            "--usb-filter", "allow", "--print-qemu")
    assert r.exit_code == 0, r.stderr
    # QEMU reads each field with strtol: "2.00" would have been refused
    assert "filter=0x08,-1,-1,0x200,0|-1,-1,-1,-1,1" in r.stdout
