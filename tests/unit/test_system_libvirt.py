"""A local system libvirt for a user in its group: which URIs put disks in a pool, which SPICE CA is
trusted, who may set it up, and a KVM probe that belongs to the user who ran it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spicectl.errors import EnvironmentProblem
from spicectl.virt import host as H
from spicectl.virt import kvm, storage
from spicectl.virt.connection import resolve
from spicectl.virt.remote import LocalHost, SshHost, host_of


@pytest.mark.parametrize("uri, system, pooled", [
    ("qemu:///system", True, True), ("qemu:///system/", True, True), ("qemu:///session", False, False),
    ("qemu+ssh://root@lab/system", False, True), ("test:///default", False, False),
    ("qemu:///embed?root=/x", False, False)])
def test_disks_go_into_a_pool_where_qemu_cannot_read_the_users_files(uri, system, pooled):
    location = resolve(uri, Path("/state"))
    assert location.system is system and storage.pooled(location) is pooled
    assert storage.pooled(resolve(None, Path("/state"))) is False   # the private default


def test_a_guests_own_volumes_are_the_ones_deleted_with_it():
    location = resolve("qemu:///system", Path("/state"))
    disks = [Path("/p/spicectl-vm-web-root.qcow2"), Path("/p/spicectl-image-debian-minimal-1-disk.raw"),
             Path("/p/spicectl-vm-web2-disk0.qcow2"), Path("/p/theirs.qcow2")]
    assert storage.owned(location, "web", disks) == [disks[0]]


def test_holes_of_an_image_are_skipped_not_sent(tmp_path):
    path = tmp_path / "sparse.raw"
    with path.open("wb") as f:
        f.write(b"x" * 4096)
        f.seek(1 << 20)
        f.write(b"y" * 4096)
        f.truncate(4 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert storage._hole(None, fd) == [True, 4096]
        os.lseek(fd, 4096, os.SEEK_SET)
        assert storage._hole(None, fd) == [False, (1 << 20) - 4096]
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        assert storage._hole(None, fd) == [True, 4096]
        os.lseek(fd, (1 << 20) + 4096, os.SEEK_SET)
        assert storage._hole(None, fd) == [False, (4 << 20) - (1 << 20) - 4096]
        assert os.lseek(fd, 0, os.SEEK_CUR) == (1 << 20) + 4096   # asking does not move the file
        os.lseek(fd, 0, os.SEEK_END)
        assert storage._hole(None, fd) == [False, 0]
    finally:
        os.close(fd)


@pytest.fixture
def system_certs(tmp_path, monkeypatch):
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o755)
    (certs / "ca-cert.pem").write_text("CA")
    (certs / "ca-cert.pem").chmod(0o644)
    conf = tmp_path / "qemu.conf"
    conf.write_text(f'spice_tls = 1\nspice_tls_x509_cert_dir = "{certs}"\n')
    monkeypatch.setattr(H, "QEMU_CONF", str(conf))
    return certs


@pytest.mark.skipif(os.geteuid() != 0, reason="the files must be root's")
def test_the_system_spice_ca_is_trusted_only_while_root_alone_may_change_it(system_certs):
    assert H.system_spice_ca() == system_certs / "ca-cert.pem"
    (system_certs / "ca-cert.pem").chmod(0o664)
    assert H.system_spice_ca() is None
    (system_certs / "ca-cert.pem").chmod(0o644)
    system_certs.chmod(0o777)
    assert H.system_spice_ca() is None
    system_certs.chmod(0o755)
    os.chown(system_certs / "ca-cert.pem", 1000, 1000)
    assert H.system_spice_ca() is None


def test_an_unreadable_qemu_conf_means_libvirts_default_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(H, "QEMU_CONF", str(tmp_path / "missing.conf"))
    assert H.system_cert_dir() == Path(H.DEFAULT_CERT_DIR)


def test_only_root_sets_up_the_system_libvirt_in_place(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem, match="root's files") as caught:
        host_of("qemu:///system")
    assert caught.value.hint == "as root: spicectl --connect qemu:///system host setup --apply"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    here = host_of("qemu:///system")
    assert isinstance(here, LocalHost) and here.host == H.TLS_HOST and here.label == "system"
    assert here.command("true") == ["sh", "-c", "true"]
    assert type(host_of("qemu+ssh://lab/system")) is SshHost


def test_a_kvm_probe_is_not_reused_by_a_user_who_cannot_open_dev_kvm(tmp_path, monkeypatch):
    monkeypatch.setattr(kvm, "_qemu", lambda: "/usr/bin/qemu-system-x86_64")
    monkeypatch.setattr(kvm.os.path, "exists", lambda p: True if p == kvm.KVM else os.path.lexists(p))
    monkeypatch.setattr(kvm.os, "access", lambda p, mode: True)
    (tmp_path / kvm.PROBE_FILE).write_text(json.dumps(
        kvm.KvmProbe(True, "a Linux kernel booted under KVM in 1.0s", kvm._key(kvm._qemu())).as_dict()))
    assert kvm.probe(tmp_path).usable and kvm.cached(tmp_path)      # the probe's own user: reused
    monkeypatch.setattr(kvm.os, "access", lambda p, mode: False)   # another user, outside the kvm group
    monkeypatch.setattr(kvm, "closed_to_you", lambda: "/dev/kvm (root:kvm 660) is closed to you: ...")
    assert not kvm.cached(tmp_path)
    again = kvm.probe(tmp_path)
    assert not again.usable and "closed to you" in again.detail


@pytest.mark.skipif(os.geteuid() != 0, reason="sets a file's group")
def test_the_kvm_fix_names_the_devices_group_or_how_to_give_it_one(tmp_path, monkeypatch):
    import grp

    device = tmp_path / "kvm"
    device.touch()
    monkeypatch.setattr(kvm, "KVM", str(device))
    kvm_group = next(g for g in grp.getgrall() if g.gr_gid != 0)
    os.chown(device, 0, kvm_group.gr_gid)
    device.chmod(0o660)
    assert kvm.closed_to_you().endswith(f"as root: usermod -aG {kvm_group.gr_name} root, then log in again")
    device.chmod(0o600)
    assert "chgrp kvm" in kvm.closed_to_you() and "chmod 660" in kvm.closed_to_you()
