"""Whether KVM can really run a guest here: probed once per host, not read off /dev/kvm.

/dev/kvm can exist and still not work: a host that is itself a VM may offer
`kvm_pvm`, under which SeaBIOS runs but a Linux kernel stops after "Probing
EDD" and idle guests burn a CPU each. So boot a real kernel under KVM, with
no root file system, and see it reach its panic ("VFS: Unable to mount root
fs") in time. The answer is kept in the state dir, keyed by what could
change it (the host kernel, the QEMU binary, /dev/kvm).
"""

from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROBE_FILE = "kvm-probe.json"
KVM = "/dev/kvm"
PROBE_TIMEOUT = 20.0  # a working KVM boots a kernel to its panic in a second or two; TCG in about ten


@dataclass(frozen=True)
class KvmProbe:
    usable: bool
    detail: str
    key: str
    seconds: float = 0.0
    probed: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def _qemu() -> str | None:
    from spicectl.virt.host import find_qemu

    return find_qemu()


def _key(qemu: str | None) -> str:
    try:
        st = os.stat(qemu) if qemu else None
    except OSError:
        st = None
    # whether *this* user may open it: a probe root made says nothing of a user outside the kvm group
    kvm = f"{os.path.exists(KVM)}:{os.access(KVM, os.R_OK | os.W_OK)}"
    return f"{os.uname().release}|{qemu}|{st.st_size if st else 0}:{int(st.st_mtime) if st else 0}|{kvm}"


def closed_to_you() -> str:
    """Why this user cannot open /dev/kvm, and the fix."""
    import grp
    import pwd

    st = os.stat(KVM)
    owner = pwd.getpwuid(st.st_uid).pw_name
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    me = pwd.getpwuid(os.getuid()).pw_name
    fix = (f"as root: usermod -aG {group} {me}, then log in again" if group != "root" and st.st_mode & 0o060 == 0o060
           else f"as root: chgrp kvm {KVM}; chmod 660 {KVM}; usermod -aG kvm {me} (then log in again)")
    return f"{KVM} ({owner}:{group} {stat.S_IMODE(st.st_mode):o}) is closed to you: {fix}"


def probe_kernels(image_cache: Path | None) -> list[Path]:
    """Kernels to probe with: those of built images, then the host's own."""
    found = sorted(Path(p) for p in glob.glob(str(image_cache / "*" / "*" / "vmlinuz"))) if image_cache else []
    return found + sorted(Path(p) for p in glob.glob("/boot/vmlinuz-*"))


def _die_with_parent() -> None:
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_probe(qemu: str, kernel: Path, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str, float]:
    argv = [qemu, "-accel", "kvm", "-machine", "q35", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot", "-serial", "stdio", "-monitor", "none",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
    started = time.monotonic()
    try:
        # a QEMU hung under a broken KVM must not outlive a killed spicectl
        r = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace").strip().splitlines()
        last = out[-1].strip() if out else "no output"
        return False, f"a Linux kernel under KVM did not finish booting within {timeout:g}s (last: {last})", timeout
    seconds = time.monotonic() - started
    text = (r.stdout + r.stderr).decode(errors="replace")
    if "Kernel panic" in text or "Unable to mount root" in text:
        return True, f"a Linux kernel booted under KVM in {seconds:.1f}s", seconds
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return False, f"QEMU with KVM failed: {lines[-1].strip() if lines else f'exit {r.returncode}'}", seconds


def cached(state_dir: Path) -> bool:
    """The last probe's answer for this host, without probing (False when there is none)."""
    try:
        data = json.loads((state_dir / PROBE_FILE).read_text())
        return bool(data.get("usable")) and data.get("key") == _key(_qemu())
    except (OSError, ValueError, AttributeError):
        return False


def probe(state_dir: Path, image_cache: Path | None = None, *, refresh: bool = False,
          progress=lambda _m: None) -> KvmProbe:
    qemu = _qemu()
    key = _key(qemu)
    path = state_dir / PROBE_FILE
    if not refresh:
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return KvmProbe(**cached)
        except (OSError, ValueError, TypeError):
            pass
    if not os.path.exists(KVM):
        result = KvmProbe(False, f"no {KVM} (no KVM in this kernel, or it is not loaded)", key)
    elif not os.access(KVM, os.R_OK | os.W_OK):
        result = KvmProbe(False, closed_to_you(), key)
    elif qemu is None:
        result = KvmProbe(False, "qemu-system-x86_64 is not installed", key, probed=False)
    else:
        kernels = probe_kernels(image_cache)
        if not kernels:
            # nothing to boot: don't trust the device node (see above), and don't cache the guess
            return KvmProbe(False, "/dev/kvm exists, but there is no kernel to check it with "
                                   "(build an image: spicectl image build debian-minimal)", key, probed=False)
        progress("checking whether KVM can run a guest here (once per host)")
        usable, detail, seconds = run_probe(qemu, kernels[0])
        result = KvmProbe(usable, detail, key, round(seconds, 2))
    if result.probed:
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(json.dumps(result.as_dict()) + "\n")
        except OSError:
            pass  # a read-only state dir only costs a probe next time
    return result
