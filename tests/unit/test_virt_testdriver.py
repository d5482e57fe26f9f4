"""URI handling and lifecycle logic on libvirt's test:///default driver (fast; never the only proof)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spicectl.domain.build import build_spec
from spicectl.errors import Conflict, HypervisorError, NotFound
from spicectl.virt import lifecycle
from spicectl.virt.connection import open_hypervisor, resolve
from spicectl.virt.host import domcaps_support_spice


def test_no_uri_means_the_private_embedded_root(tmp_path):
    t = resolve(None, tmp_path)
    assert t.embedded and t.uri == f"qemu:///embed?root={tmp_path / 'libvirt'}"
    assert resolve("qemu:///system", tmp_path).embedded is False
    assert resolve("qemu+ssh://h/system", tmp_path).local is False
    assert resolve("qemu:///system", tmp_path).local is True


@pytest.fixture
def hv(tmp_path):
    with open_hypervisor("test:///default", tmp_path) as h:
        yield h


def spec(name: str, **values):
    return build_spec(name, {"virt_type": "qemu", **values}, images_dir=Path("/nonexistent"), template="desktop")


def test_create_list_show_delete_on_the_test_driver(hv):
    lifecycle.create(hv, spec("unit-a"), start=False)
    rows = {r["name"]: r for r in lifecycle.list_domains(hv)}
    assert rows["unit-a"]["state"] == "shut-off"
    assert rows["unit-a"]["template"] == "desktop"
    assert rows["test"]["state"] == "running"  # the driver's own guest
    with pytest.raises(Conflict):
        lifecycle.create(hv, spec("unit-a"), start=False)
    lifecycle.delete(hv, "unit-a", images_dir=Path("/nonexistent"))
    with pytest.raises(NotFound):
        lifecycle.lookup(hv, "unit-a")


def test_stop_of_a_stopped_guest_is_a_conflict(hv):
    lifecycle.create(hv, spec("unit-b"), start=False)
    with pytest.raises(Conflict):
        lifecycle.stop(hv, "unit-b")
    with pytest.raises(Conflict):
        lifecycle.destroy(hv, "unit-b")


def test_cli_takes_any_uri(run):
    r = run("--connect", "test:///default", "vm", "list", "--json")
    assert r.exit_code == 0
    assert [row["name"] for row in r.json()] == ["test"]
    assert r.json()[0]["uri"] == "test:///default"
    r = run("vm", "show", "test", "--json", env={"SPICECTL_CONNECT": "test:///default"})
    assert r.json()["state"] == "running"
    r = run("vm", "create", "fresh", "--no-start", "--virt-type", "qemu", "--json",
            env={"LIBVIRT_DEFAULT_URI": "test:///default"})
    assert r.exit_code == 0, r.stderr
    assert r.json()["state"] == "shut-off"


def test_unknown_guest_is_not_found(run):
    r = run("--connect", "test:///default", "vm", "show", "nope")
    assert r.exit_code == 3
    assert "no guest named 'nope' on test:///default" in r.stderr


def test_all_hosts_lists_every_configured_host(run, tmp_path):
    cfg = tmp_path / "hosts.toml"
    cfg.write_text('[hosts]\nalpha = "test:///default"\nbeta = "test:///default"\n')
    r = run("vm", "list", "--all-hosts", "--json", env={"SPICECTL_CONFIG": str(cfg)})
    assert r.exit_code == 0, r.stderr
    assert sorted((row["host"], row["name"]) for row in r.json()) == [("alpha", "test"), ("beta", "test")]
    human = run("vm", "list", "--all-hosts", env={"SPICECTL_CONFIG": str(cfg)}).stdout
    assert "alpha" in human and "beta" in human


def test_all_hosts_without_hosts_is_a_clear_error(run):
    r = run("vm", "list", "--all-hosts")
    assert r.exit_code == 2
    assert "no [hosts]" in r.stderr


def test_unreachable_uri_is_a_hypervisor_error(tmp_path):
    with pytest.raises(HypervisorError) as info:
        open_hypervisor("qemu+unix:///system?socket=/nonexistent/sock", tmp_path)
    assert "qemu+unix:///system?socket=/nonexistent/sock" in info.value.message


DOMCAPS = """<domainCapabilities><devices>
  <graphics supported='yes'><enum name='type'>{values}</enum></graphics>
</devices></domainCapabilities>"""


def test_domain_capabilities_tell_whether_qemu_has_spice():
    assert domcaps_support_spice(DOMCAPS.format(values="<value>sdl</value><value>vnc</value><value>spice</value>"))
    assert not domcaps_support_spice(DOMCAPS.format(values="<value>sdl</value><value>vnc</value>"))


def test_a_state_dir_too_long_for_qemus_sockets_is_refused_before_libvirt_starts(run, tmp_path):
    deep = tmp_path / ("d" * 80)
    r = run("vm", "list", env={"SPICECTL_STATE_DIR": str(deep)})
    assert r.exit_code == 2
    assert "monitor sockets" in r.stderr and "shorter state dir" in r.stderr
    assert not (deep / "libvirt").exists()


def test_a_start_job_left_by_a_killed_libvirt_user_is_cleared_before_libvirt_opens(tmp_path):
    from spicectl.virt.host import clear_interrupted_starts

    run = tmp_path / "run" / "qemu"
    lib = tmp_path / "lib" / "qemu"
    run.mkdir(parents=True)
    for name, job in (("half", "async='start'"), ("fine", "async='none'")):
        (run / f"{name}.xml").write_text(f"<domstatus><job type='none' {job}/></domstatus>")
        (run / f"{name}.pid").write_text("999999999")  # no such process
        (lib / f"domain-1-{name}").mkdir(parents=True)
    (run / "half.xml.new").write_text("<domstatus/>")
    (lib / "domain-2-other-half").mkdir()
    assert clear_interrupted_starts(tmp_path) == ["half"]
    assert sorted(p.name for p in run.iterdir()) == ["fine.pid", "fine.xml"]
    assert sorted(p.name for p in lib.iterdir()) == ["domain-1-fine", "domain-2-other-half"]


def test_connect_takes_a_host_named_in_the_config_file(run, tmp_path):
    cfg = tmp_path / "hosts.toml"
    cfg.write_text('[hosts]\nlab = "test:///default"\n')
    r = run("--connect", "lab", "vm", "list", "--json", env={"SPICECTL_CONFIG": str(cfg)})
    assert r.exit_code == 0, r.stderr
    assert [(row["name"], row["uri"]) for row in r.json()] == [("test", "test:///default")]


def test_a_start_whose_spice_port_was_taken_meanwhile_is_tried_again():
    import libvirt

    from spicectl.virt import lifecycle

    class Taken(libvirt.libvirtError):
        def get_error_message(self):
            return "internal error: qemu unexpectedly closed the monitor: binding socket to 127.0.0.1:5901 failed"

    class Dom:
        tries = 0

        def create(self):
            Dom.tries += 1
            if Dom.tries < 3:
                raise Taken("taken")

    said: list[str] = []
    lifecycle._start(Dom(), "g", False, 5, said.append)
    assert Dom.tries == 3 and sum("port was taken" in s for s in said) == 2

    class Broken(Dom):
        def create(self):
            raise Taken("taken")

    from spicectl.errors import HypervisorError

    with pytest.raises(HypervisorError, match="g failed to start"):
        lifecycle._start(Broken(), "g", False, 5, said.append)


def test_wait_means_ready_unless_asked_for_ports():
    from spicectl.cli.vm import PORTS_TIMEOUT, READY_TIMEOUT, _wait_level

    assert _wait_level(False, None, None) == (False, PORTS_TIMEOUT)
    assert _wait_level(True, None, None) == ("ready", READY_TIMEOUT)
    assert _wait_level(False, "ports", None) == ("ports", PORTS_TIMEOUT)   # --wait-for implies --wait
    assert _wait_level(True, "ports", 5) == ("ports", 5)
