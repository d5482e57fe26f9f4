"""vm migrate before libvirt's migration runs: where QEMU's stream goes, the destination's SPICE
address in the guest's definition, and the refusals (the real migrations are in
tests/integration/test_remote.py)."""

from __future__ import annotations

from lxml import etree

from spicectl.virt.migrate import destination_xml, migration_address

XML = """<domain type='qemu'><name>g</name><devices>
<graphics type='spice' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>
<graphics type='vnc' listen='127.0.0.1'/></devices></domain>"""


def test_the_stream_goes_to_the_destination_hosts_address():
    assert migration_address("qemu+ssh://root@10.1.2.3:2222/system?command=/x") == "10.1.2.3"
    assert migration_address("qemu:///system") == "127.0.0.1"
    assert migration_address("qemu:///embed?root=/var/lib/spicectl/libvirt") == "127.0.0.1"


def test_the_destination_definition_moves_only_spices_listen_address():
    root = etree.fromstring(destination_xml(XML, "10.1.2.3").encode())
    spice = root.find("devices/graphics[@type='spice']")
    assert spice.get("listen") == "10.1.2.3" and spice.find("listen").get("address") == "10.1.2.3"
    assert spice.get("autoport") == "yes"
    assert root.find("devices/graphics[@type='vnc']").get("listen") == "127.0.0.1"


def test_a_guest_cannot_move_to_where_it_is(tmp_path):
    from click.testing import CliRunner

    from spicectl.cli.main import cli

    env = {"SPICECTL_STATE_DIR": str(tmp_path / "state"), "SPICECTL_CONFIG": str(tmp_path / "none.toml"),
           "SPICECTL_PERSIST": "0"}
    r = CliRunner().invoke(cli, ["vm", "migrate", "g", "--to", "default"], env=env)
    assert r.exit_code == 2 and "private libvirt already" in r.output
