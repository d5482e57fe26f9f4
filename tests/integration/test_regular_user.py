"""spicectl for a regular user: a wheel installed outside the checkout, run by an unprivileged user
(spicectl-tester, made by scripts/test), with the embedded default under that user's own state dir.

Root hides permission bugs: as root the private libvirt's qemu.conf said user = "root", which for
anyone else made libvirt chown its folders to root ('Failed to create dbus state dir ...').
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, require_binary

pytestmark = pytest.mark.integration
USER = "spicectl-tester"


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture(scope="module")
def user() -> pwd.struct_passwd:
    require_binary("runuser")
    try:
        account = pwd.getpwnam(USER)
    except KeyError:
        pytest.fail(f"no user {USER}: scripts/test makes it (useradd --create-home {USER})")
    shutil.rmtree(Path(account.pw_dir) / ".local" / "share" / "spicectl", ignore_errors=True)
    return account


@pytest.fixture(scope="module")
def wheel_venv():
    """spicectl built as a wheel and installed, with its dependencies, into a fresh venv outside the
    checkout (as `pip install spicectl` would), readable by the unprivileged user."""
    base = Path(tempfile.mkdtemp(prefix="spicectl-wheel-", dir="/var/tmp"))
    base.chmod(0o755)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(REPO)],
                   check=True, timeout=600)
    venv = base / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next((base / "dist").glob("spicectl-*.whl"))
    # with the extras the desktop test uses (sound and Opus for view and record-audio, WebDAV for share)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[viewer,share]"], check=True, timeout=1200)
    for path in [base, *base.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))
    yield venv
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def as_user(user, wheel_venv, spicectl):
    """Run the wheel's spicectl as the unprivileged user, in its home, with a clean environment."""
    # the minimal image, built (or found) by root in the shared cache the user reads
    spicectl("image", "build", "debian-minimal", timeout=1200)
    cache = spicectl.env["SPICECTL_IMAGE_CACHE"]

    def run(*args: str, check: bool = True, timeout: float = 180, extra: dict[str, str] | None = None) -> Ran:
        env = {"HOME": user.pw_dir, "USER": USER, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
               "SPICECTL_PERSIST": "0", "SPICECTL_IMAGE_CACHE": cache, **(extra or {})}
        r = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                            str(wheel_venv / "bin" / "spicectl"), *args], capture_output=True, text=True,
                           timeout=timeout, cwd=user.pw_dir, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"spicectl {' '.join(args)} as {USER} exited {r.returncode}: {r.stderr}")
        return Ran(r.returncode, r.stdout, r.stderr)

    run.with_env = lambda **extra: lambda *a, **k: run(*a, extra=extra, **k)  # type: ignore[attr-defined]
    yield run
    run("host", "stop", check=False, timeout=300)
    # the session daemons libvirt spawned for the user's qemu:///session (they would idle out in 2 min)
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == user.pw_uid and \
                    (entry / "comm").read_text().strip() in ("libvirtd", "virtqemud", "virtlogd"):
                os.kill(int(entry.name), signal.SIGTERM)
        except OSError:
            pass


def test_the_wheel_finds_its_data_files_outside_the_checkout(as_user, wheel_venv):
    assert as_user("--version").stdout.startswith("spicectl, version ")
    assert {"desktop", "headless-ci"} <= {t["name"] for t in as_user("template", "list", "--json").json()}
    assert {"debian-desktop", "debian-minimal"} <= {i["name"] for i in as_user("image", "list", "--json").json()}
    assert "complete" in as_user("completion", "bash").stdout
    located = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", "import spicectl; print(spicectl.__file__)"],
                             capture_output=True, text=True, check=True, cwd="/").stdout
    assert not located.startswith(str(REPO))
    # the wheel's build hook compiled the decoders (the checkout's in-place build is not in the wheel)
    built = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", "from spicectl.spice.codecs import accel;"
                            "print(accel.native.__file__)"], capture_output=True, text=True, check=True, cwd="/")
    assert built.stdout.startswith(str(wheel_venv))
    assert "compiled" in checks(as_user)["decoders"]["detail"]


def checks(as_user) -> dict[str, dict]:
    return {c["check"]: c for c in as_user("host", "check", "--json", check=False).json()["checks"]}


def kvm_closed_to(user: pwd.struct_passwd) -> bool:
    kvm = Path("/dev/kvm")
    return kvm.exists() and not stat.S_IMODE(kvm.stat().st_mode) & 0o006 and \
        kvm.stat().st_gid not in os.getgrouplist(USER, user.pw_gid)


def test_host_check_tells_a_regular_user_the_truth_before_and_after_setup(as_user, user):
    before = checks(as_user)
    if kvm_closed_to(user):   # the user's own probe, not root's: and the fix for the user
        assert "is closed to you" in before["accel"]["detail"] and "usermod -aG kvm" in before["accel"]["detail"]
    assert before["spice_tls"]["ok"] and before["spice_tls"]["severity"] == "warning"
    assert "not set up yet" in before["spice_tls"]["detail"]
    assert before["users"]["ok"] and f"QEMU runs as you ({USER})" in before["users"]["detail"]
    assert before["images"]["ok"] and "image build works" in before["images"]["detail"]  # uidmap, subuids
    assert before["libvirt"]["ok"], before["libvirt"]["detail"]
    as_user("host", "setup")
    after = checks(as_user)
    assert after["spice_tls"]["ok"] and after["spice_tls"]["detail"] == "spice_tls = 1 in qemu.conf"
    state = Path(user.pw_dir) / ".local" / "share" / "spicectl"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and state.stat().st_uid == user.pw_uid
    conf = (state / "libvirt" / "etc" / "qemu.conf").read_text()
    assert 'user = "root"' not in conf


def qemu_owners() -> dict[int, int]:
    owners = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("qemu-system"):
                    owners[int(entry.name)] = entry.stat().st_uid
            except OSError:
                pass
    return owners


def test_a_regular_user_runs_a_guest_over_spice_tls_as_itself(as_user, user):
    made = as_user("vm", "create", "mine", "-t", "headless-ci", "--virt-type", "qemu", "--wait", "--json").json()
    assert made["state"] == "running" and made["spice"]["tls_port"] and not made["spice"]["port"]
    pid_file = Path(user.pw_dir) / ".local/share/spicectl/libvirt/run/qemu/mine.pid"
    pid = int(pid_file.read_text())
    assert qemu_owners()[pid] == user.pw_uid   # QEMU runs as the user, not as root
    shot = as_user("screenshot", "mine", "-o", "shot.png", "--json").json()
    assert (shot["width"], shot["height"]) == (720, 400)
    assert (Path(user.pw_dir) / "shot.png").stat().st_uid == user.pw_uid
    assert len(as_user("ticket", "mine").stdout.strip()) >= 16
    as_user("send-keys", "mine", "esc")
    for proxy in ("ws", "http-connect"):   # a per-session proxy of the user's, with its own secret and store
        through = as_user("connect", "mine", "--builtin", "--screenshot", f"via-{proxy}.png", "--proxy", proxy,
                          "--json").json()
        assert (Path(user.pw_dir) / f"via-{proxy}.png").stat().st_size > 0, through
    as_user("connect", "mine", "--vv", "mine.vv")
    vv = Path(user.pw_dir) / "mine.vv"
    assert stat.S_IMODE(vv.stat().st_mode) == 0o600 and "tls-port=" in vv.read_text()
    as_user("type", "mine", "x")
    as_user("wait-screen", "mine", "--match", "shot.png", "--timeout", "30")   # SeaBIOS's screen stays put
    listed = {g["name"]: g for g in as_user("vm", "list", "--json").json()}
    assert listed["mine"]["state"] == "running"
    as_user("vm", "stop", "mine", "--timeout", "5", "--force")
    assert as_user("vm", "start", "mine", "--wait", "--json").json()["state"] == "running"
    pid = int(pid_file.read_text())
    as_user("vm", "delete", "mine")
    assert pid not in qemu_owners()


def boots_minimal_to_a_shell(run, name: str) -> None:
    """A debian-minimal guest made by `run` answers on its console as soon as `vm create --wait` returns:
    --wait means ready, so no --retry-every is needed."""
    run("vm", "create", name, "--image", "debian-minimal", "--virt-type", "qemu", "--wait", timeout=330)
    try:
        out = run("console", name, "--send", "echo PROBE-$((6*7))\\n", "--expect", "PROBE-42",
                  "--timeout", "20", "--json", timeout=60).json()
        assert "PROBE-42" in out["output"]
    finally:
        run("vm", "delete", name, check=False)


def test_a_regular_users_image_guest_boots_to_a_shell_on_its_console(as_user):
    boots_minimal_to_a_shell(as_user, "mini")


def test_root_and_a_regular_user_run_guests_side_by_side(as_user, spicectl):
    spicectl("vm", "create", "roots", "-t", "headless-ci", "--virt-type", "qemu", "--wait")
    try:
        theirs = as_user("vm", "create", "theirs", "-t", "headless-ci", "--virt-type", "qemu", "--wait",
                         "--json").json()
        ours = spicectl("vm", "show", "roots", "--json").json()
        assert theirs["spice"]["tls_port"] != ours["spice"]["tls_port"]
        assert "roots" not in {g["name"] for g in as_user("vm", "list", "--json").json()}
        as_user("vm", "delete", "theirs")
    finally:
        spicectl("vm", "delete", "roots", check=False)


def test_a_regular_user_builds_an_image_and_boots_it_with_roots_files_owned_by_root(as_user, user):
    """mmdebstrap's unshare mode, and mkfs.ext4 -d inside the same user namespace: the tree's files
    belong to the user's subordinate ids on the host and to root in the image."""
    cache = Path(user.pw_dir) / "own-images"
    shutil.rmtree(cache, ignore_errors=True)
    run = as_user.with_env(SPICECTL_IMAGE_CACHE=str(cache))
    built = run("image", "build", "debian-minimal", "--json", timeout=1200).json()
    disk = Path(built["disk"])
    assert built["cached"] is False and disk.stat().st_uid == user.pw_uid
    assert not list((cache / "debian-minimal").glob(".build-*"))   # the build tree is gone, subuid files too
    run("vm", "create", "built", "--image", "debian-minimal", "--virt-type", "qemu", "--wait", timeout=330)
    try:
        out = run("console", "built", "--send", "echo OWNER-$(stat -c %u:%g /etc/passwd /usr/bin/su | tr '\\n' ,)\\n",
                  "--expect", r"OWNER-[0-9:,]+,\r?\n", "--timeout", "20", "--json", timeout=60).json()["output"]
        assert "OWNER-0:0,0:0," in out, out
    finally:
        run("vm", "delete", "built", check=False)
        shutil.rmtree(cache, ignore_errors=True)


def test_a_regular_user_uses_its_own_qemu_session_with_spice_tls(as_user, user):
    session = as_user.with_env(SPICECTL_CONNECT="qemu:///session")
    setup = session("host", "setup", "--json").json()
    conf = Path(user.pw_dir) / ".config" / "libvirt" / "qemu.conf"
    assert setup["qemu_conf"] == str(conf) and "spice_tls = 1" in conf.read_text()
    seen = {c["check"]: c for c in session("host", "check", "--json").json()["checks"]}
    assert seen["spice_tls"]["ok"] and seen["spice_cert"]["ok"] and "QEMU runs as you" in seen["users"]["detail"]
    assert ("kvm_user" in seen) == kvm_closed_to(user), seen.get("kvm_user")
    assert session("host", "setup", "--json").json()["changed"] is False   # idempotent: nothing restarted
    made = session("vm", "create", "sess", "-t", "headless-ci", "--virt-type", "qemu", "--wait", "--json").json()
    try:
        assert made["uri"] == "qemu:///session" and made["spice"]["tls_port"]
        shot = session("screenshot", "sess", "-o", "sess.png", "--json").json()
        assert (shot["width"], shot["height"]) == (720, 400)
        # (each command costs the session daemon a QEMU probe here: /dev/kvm is closed to the user, and
        # libvirt then calls its capabilities stale every time; the embedded tests above cover the rest)
        session("connect", "sess", "--builtin", "--screenshot", "sess-ws.png", "--proxy", "ws")
    finally:
        session("vm", "delete", "sess", check=False)
    # an image guest on the session libvirt: its overlay in the user's state dir, its base in root's cache
    boots_minimal_to_a_shell(session, "smini")


def test_a_regular_users_desktop_guest_plays_sound_and_shares_a_folder(as_user, user, wheel_venv):
    """record-audio and share as the user, on a desktop image guest (from root's shared cache)."""
    import time
    import wave

    import numpy as np

    as_user("vm", "create", "desk", "--image", "debian-desktop", "--folder-sharing", "--virt-type", "qemu", "--wait",
            timeout=330)
    home = Path(user.pw_dir)

    def console(command: str, expect: str) -> str:
        nonce = f"n{time.monotonic_ns()}"
        out = as_user("console", "desk", "--send", f"echo {nonce}; {command}\\n", "--expect",
                      rf"{nonce}\r?\n(?s:.*){expect}", "--timeout", "90", "--json", timeout=120).json()["output"]
        return out

    try:
        console("(spicectl-tone 8 1000 &); echo TONE", r"TONE\r?\n")
        as_user("record-audio", "desk", "-o", "tone.wav", "--seconds", "3")
        with wave.open(str(home / "tone.wav")) as wav:
            rate, channels = wav.getframerate(), wav.getnchannels()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, channels)[:, 0]
        peak = np.fft.rfftfreq(len(samples), 1 / rate)[np.abs(np.fft.rfft(samples.astype(float))).argmax()]
        assert abs(peak - 1000) < 5, peak

        shared = home / "shared"
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir()
        (shared / "hello.txt").write_text("from the user's folder\n")
        shutil.chown(shared, user.pw_uid, user.pw_gid)
        shutil.chown(shared / "hello.txt", user.pw_uid, user.pw_gid)
        env = {"HOME": user.pw_dir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SPICECTL_PERSIST": "0"}
        sharing = subprocess.Popen(["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                                    str(wheel_venv / "bin" / "spicectl"), "share", "desk", str(shared), "--writable",
                                    "--seconds", "120", "--json"], cwd=user.pw_dir, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            assert json.loads(sharing.stdout.readline())["event"] == "sharing"
            program = ("import urllib.request as u\\nb='http://127.0.0.1:9843/'\\n"
                       "print('GOT=' + u.urlopen(b + 'hello.txt', timeout=30).read().hex())\\n"
                       "print('PUT=%d' % u.urlopen(u.Request(b + 'back.txt', data=b'from the guest', method='PUT'), "
                       "timeout=30).status)")
            out = console(f"python3 - <<'EOF'\\n{program}\\nEOF", r"PUT=\d+\r?\n")
        finally:
            sharing.terminate()
            sharing.communicate(timeout=30)
        assert b"from the user's folder\n".hex() in out and "PUT=201" in out, out

        # spicectl's viewer window, on an X display of the user's own
        number = next(n for n in range(150, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                      and not Path(f"/tmp/.X{n}-lock").exists())
        xvfb = subprocess.Popen(["runuser", "-u", USER, "--", require_binary("Xvfb"), f":{number}", "-screen", "0",
                                 "1280x800x24", "-nolisten", "tcp", "-noreset"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while not Path(f"/tmp/.X11-unix/X{number}").exists():
                assert time.monotonic() < deadline, "Xvfb did not start"
                time.sleep(0.1)
            time.sleep(1)
            viewed = as_user.with_env(DISPLAY=f":{number}")("view", "desk", "--mute", "--close-after", "15",
                                                            timeout=120)
            assert "window open" in viewed.stderr and "window closed" in viewed.stderr, viewed.stderr
        finally:
            xvfb.terminate()
            xvfb.wait(10)
        back = shared / "back.txt"
        assert back.read_bytes() == b"from the guest" and back.stat().st_uid == user.pw_uid
    finally:
        as_user("vm", "delete", "desk", check=False)


def test_a_user_in_the_libvirt_group_runs_image_guests_on_the_system_libvirt(as_user, user, spicectl):
    """qemu:///system for a member of the libvirt group: root sets SPICE TLS up once; the user's guests
    run as libvirt-qemu, their disks are volumes of the daemon's pool (QEMU cannot read the user's files),
    and the client trusts the host's SPICE CA (root's, not the user's own)."""
    from tests.integration.system_libvirt import CERT_DIR, POOL_DIR, HostFiles, SystemLibvirt

    system = as_user.with_env(SPICECTL_CONNECT="qemu:///system")
    files, libvirt = HostFiles(), None
    try:
        files.open_kvm_to_qemu()
        libvirt = SystemLibvirt()
        outside = system("vm", "list", check=False)   # not in the group yet
        assert outside.code == 6 and "Permission denied" in outside.stderr and "Traceback" not in outside.stderr
        denied = system("host", "setup", "--apply", check=False)
        assert denied.code != 0 and "as root: spicectl --connect qemu:///system host setup --apply" in denied.stderr
        spicectl("--connect", "qemu:///system", "host", "setup", "--apply")
        libvirt.restart()
        subprocess.run(["usermod", "-aG", "libvirt", USER], check=True)

        seen = checks(system)
        assert seen["libvirt"]["ok"] and seen["spice_cert"]["ok"], seen
        assert seen["spice_tls"]["severity"] == "warning" and "root's" in seen["spice_tls"]["detail"]
        before = set(qemu_owners())
        made = system("vm", "create", "sys", "--image", "debian-minimal", "--virt-type", "qemu", "--wait",
                      "--json", timeout=400).json()
        assert made["uri"] == "qemu:///system" and made["spice"]["tls_port"]
        assert {uid for pid, uid in qemu_owners().items() if pid not in before} == \
            {pwd.getpwnam("libvirt-qemu").pw_uid}
        out = system("console", "sys", "--send", "echo SYS-$((6*7))\\n", "--expect", "SYS-42", "--timeout", "20",
                     "--json", timeout=60).json()
        assert "SYS-42" in out["output"]   # --wait meant ready here too
        own_ca = Path(user.pw_dir) / ".local/share/spicectl/ca/ca-cert.pem"
        assert not own_ca.exists() or own_ca.read_bytes() != (CERT_DIR / "ca-cert.pem").read_bytes()
        shot = system("screenshot", "sys", "-o", "sys.png", "--json").json()   # TLS, checked against root's CA
        assert (shot["width"], shot["height"]) == (1024, 768)
        assert len(system("ticket", "sys").stdout.strip()) >= 16
        shared = sorted(p.name for p in POOL_DIR.glob("spicectl-image-debian-minimal-*"))
        assert [n.split("-")[-1] for n in shared] == ["disk.raw", "initrd.img", "vmlinuz"]
        deleted = system("vm", "delete", "sys", "--json").json()
        assert deleted["removed_disks"] == [str(POOL_DIR / "spicectl-vm-sys-root.qcow2")]
        assert not (POOL_DIR / "spicectl-vm-sys-root.qcow2").exists()
        assert sorted(p.name for p in POOL_DIR.glob("spicectl-image-debian-minimal-*")) == shared   # for the next
    finally:
        subprocess.run(["virsh", "-c", "qemu:///system", "destroy", "sys"], capture_output=True)
        subprocess.run(["virsh", "-c", "qemu:///system", "undefine", "sys"], capture_output=True)
        subprocess.run(["gpasswd", "-d", USER, "libvirt"], capture_output=True)
        if libvirt is not None:
            libvirt.stop()
        files.restore()


def test_a_regular_user_runs_an_xspice_display_as_itself(as_user, user):
    require_binary("xterm")
    number = next(n for n in range(70, 90) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    started = as_user("xspice", "start", f":{number}", "--run", "xterm", "--no-agent", "--json").json()
    try:
        xorg = next(p["pid"] for p in started["processes"] if p["what"] == "xorg")
        assert os.stat(f"/proc/{xorg}").st_uid == user.pw_uid   # the X server runs as the user
        shot = as_user("screenshot", f":{number}", "-o", "xspice.png", "--json").json()
        assert (shot["width"], shot["height"]) == (1024, 768)
        folder = Path(user.pw_dir) / ".local/share/spicectl/xspice" / str(number)
        assert stat.S_IMODE((folder / "password").stat().st_mode) == 0o600
    finally:
        as_user("xspice", "stop", f":{number}", check=False)
    assert not Path(f"/proc/{xorg}").exists() or Path(f"/proc/{xorg}/stat").read_text().split()[2] == "Z"
