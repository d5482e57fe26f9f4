"""The pure parts of reaching a remote host's SPICE TLS files: the ssh command, qemu.conf edits, /dev/kvm."""

from __future__ import annotations

import pytest

from spicectl.errors import InvalidInput
from spicectl.virt.host import parse_qemu_conf, set_qemu_conf
from spicectl.virt.remote import SshHost, kvm_open_to


def test_ssh_runs_as_libvirts_own_transport_would_for_the_uri():
    ssh = SshHost.from_uri("qemu+ssh://admin@rack1.example.org:2222/system?keyfile=/k/id&command=/opt/ssh")
    assert ssh.host == "rack1.example.org"
    assert ssh.argv == ("/opt/ssh", "-T", "-o", "BatchMode=yes", "-p", "2222", "-l", "admin", "-i", "/k/id",
                        "--", "rack1.example.org")
    assert "StrictHostKeyChecking=no" in SshHost.from_uri("qemu+ssh://h/system?no_verify=1").argv


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu+tls://h/system", "qemu+ssh:///system"])
def test_apply_needs_an_ssh_uri_with_a_host(uri):
    with pytest.raises(InvalidInput, match="qemu\\+ssh"):
        SshHost.from_uri(uri)


def test_qemu_conf_keys_are_set_in_place_and_everything_else_kept():
    text = '# a comment\n#spice_tls = 1\nspice_tls = 0   # off\nvnc_listen = "0.0.0.0"\nspice_tls = 0\n'
    out = set_qemu_conf(text, {"spice_tls": "1", "spice_tls_x509_cert_dir": '"/etc/pki/libvirt-spice"'})
    lines = out.splitlines()
    assert lines[:4] == ["# a comment", "#spice_tls = 1", "spice_tls = 1", 'vnc_listen = "0.0.0.0"']
    assert lines[4].startswith("# spice_tls = 0")          # a later duplicate would win: commented out
    assert lines[-1] == 'spice_tls_x509_cert_dir = "/etc/pki/libvirt-spice"'
    assert parse_qemu_conf(out) == {"spice_tls": "1", "vnc_listen": "0.0.0.0",
                                    "spice_tls_x509_cert_dir": "/etc/pki/libvirt-spice"}
    assert set_qemu_conf(out, {"spice_tls": "1"}) == out  # nothing to change the second time


@pytest.mark.parametrize("mode, owner, group, ok", [
    ("600", "root", "root", False), ("660", "root", "kvm", True), ("660", "root", "root", False),
    ("666", "root", "root", True), ("600", "libvirt-qemu", "root", True)])
def test_whether_the_qemu_user_may_open_kvm(mode, owner, group, ok):
    assert kvm_open_to("libvirt-qemu", ["kvm", "libvirt-qemu"], mode=mode, owner=owner, group=group) is ok
