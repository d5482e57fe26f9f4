"""Real libvirt + QEMU: spicectl runs as separate processes against one private embedded root.

Each test session gets its own state dir; every guest is removed at the end
(`spicectl host stop`, then `vm delete`), so no QEMU outlives the suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from spicectl.spice import link, transport
from tests.conftest import require_binary

SPICECTL = [sys.executable, "-m", "spicectl"]


@dataclass
class Proc:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


class Spicectl:
    def __init__(self, state_dir: Path, config: Path) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, "SPICECTL_STATE_DIR": str(state_dir), "SPICECTL_CONFIG": str(config),
                    # built guest images outlive the run (scripts/test sets where; building takes minutes)
                    "SPICECTL_IMAGE_CACHE": os.environ.get("SPICECTL_TEST_IMAGE_CACHE",
                                                           "/var/cache/spicectl-test/images"),
                    # each command does its own work; test_holder.py turns the session holder on
                    "SPICECTL_PERSIST": "0"}
        for key in ("SPICECTL_CONNECT", "LIBVIRT_DEFAULT_URI", "SPICECTL_CA_PASSPHRASE"):
            self.env.pop(key, None)

    def __call__(self, *args: str, check: bool = True, timeout: float = 180) -> Proc:
        r = subprocess.run([*SPICECTL, *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"spicectl {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return Proc(r.returncode, r.stdout, r.stderr)

    @property
    def root(self) -> Path:
        return self.state_dir / "libvirt"

    @property
    def ca_file(self) -> str:
        return str(self.state_dir / "ca" / "ca-cert.pem")

    def domain_log(self, name: str) -> str:
        return (self.root / "log" / "qemu" / f"{name}.log").read_text()


SHELL_PROMPT = r"root@spicectl-guest:\S*# "   # an image guest's root shell on its console


@pytest.fixture(scope="module")
def desktop_image(spicectl) -> dict:
    """The debian-desktop image, built (or found in the cache) once per module that needs it."""
    require_binary("mmdebstrap")
    return spicectl("image", "build", "debian-desktop", "--json", timeout=1200).json()


@pytest.fixture(scope="session")
def spicectl() -> Spicectl:
    require_binary("qemu-system-x86_64")
    # not pytest's tmp dirs: their paths grow with its numbering, and QEMU's monitor sockets
    # under the state dir must stay within a UNIX socket path (see MAX_EMBEDDED_ROOT)
    base = Path(tempfile.mkdtemp(prefix="spicectl-it-"))
    sc = Spicectl(base / "state", base / "no-config.toml")
    yield sc
    listed = sc("vm", "list", "--json", check=False)
    if listed.exit_code == 0:
        for vm in listed.json():
            sc("vm", "delete", vm["name"], check=False)
    shutil.rmtree(base, ignore_errors=True)


async def _tls_link(port: int, cafile: str, password: bytes | None, channel: int = link.MAIN) -> link.LinkReply:
    ctx = ssl.create_default_context(cafile=cafile)
    stream = await transport.open_stream("127.0.0.1", port, ssl_context=ctx, server_hostname="127.0.0.1")
    try:
        return (await transport.link(stream, link.Handshake(channel, password=password))).channel.reply
    finally:
        stream.close()


def spice_link(port: int, cafile: str, password: bytes | None) -> link.LinkReply:
    return asyncio.run(_tls_link(port, cafile, password))


LIBVIRT_SHOT = (
    "import sys\n"
    "from pathlib import Path\n"
    "from spicectl.virt import lifecycle\n"
    "from spicectl.virt.connection import open_hypervisor\n"
    "with open_hypervisor(None, Path(sys.argv[1])) as hv:\n"
    "    sys.stdout.buffer.write(lifecycle.screenshot_png(hv, lifecycle.lookup(hv, sys.argv[2])))\n"
)


def locate(big: np.ndarray, small: np.ndarray) -> bool:
    """Whether `small` appears in `big` pixel for pixel (but for a blinking cursor cell)."""
    h, w = small.shape[:2]
    H, W = big.shape[:2]
    ys, xs = np.nonzero(small.any(axis=2))
    if len(ys) == 0:
        return False
    idx = np.linspace(0, len(ys) - 1, 64).astype(int)
    probe_y, probe_x = ys[idx], xs[idx]
    for y in range(0, H - h + 1):
        for x in range(0, W - w + 1):
            hits = (big[probe_y + y, probe_x + x] == small[probe_y, probe_x]).all(axis=1).mean()
            if hits > 0.9 and differs_only_in_one_text_cell(big[y:y + h, x:x + w], small):
                return True
    return False


def libvirt_screenshot(spicectl: Spicectl, name: str):
    """libvirt's own virDomainScreenshot of the guest, as an RGB numpy array (the oracle)."""
    import io

    import numpy as np
    from PIL import Image

    r = subprocess.run([sys.executable, "-c", LIBVIRT_SHOT, str(spicectl.state_dir), name],
                       capture_output=True, env=spicectl.env, timeout=120)
    assert r.returncode == 0, f"libvirt screenshot of {name} failed: {r.stderr.decode(errors='replace')[-2000:]}"
    png = r.stdout
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def our_screenshot(spicectl: Spicectl, name: str, tmp_path: Path, *extra: str):
    import numpy as np
    from PIL import Image

    out = tmp_path / f"{name}-ours.png"
    spicectl("screenshot", name, "-o", str(out), *extra)
    return np.asarray(Image.open(out).convert("RGB"))


def differs_only_in_one_text_cell(a, b, cell=(16, 9)) -> bool:
    """True if a equals b except inside one character cell (the blinking text cursor)."""
    import numpy as np

    if a.shape != b.shape:
        return False
    ys, xs = np.nonzero((a != b).any(axis=2))
    if len(ys) == 0:
        return True
    return ys.max() - ys.min() < cell[0] and xs.max() - xs.min() < cell[1]


@pytest.fixture(scope="module")
def xdisplay():
    xvfb = require_binary("Xvfb")
    number = next(n for n in range(90, 140) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    # -noreset: by default the server resets when its last client leaves, and refuses
    # connections meanwhile (remote-viewer then fails with "cannot open display")
    proc = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # its socket file appears before it accepts clients: wait until an X client gets through
    deadline = time.monotonic() + 15
    while True:
        try:
            grab_x(f":{number}")
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.1)
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


class SoundServer:
    """A private PulseAudio with one null sink (timed like a sound card): what reaches it is recorded."""

    def __init__(self, base: Path) -> None:
        self.base = base
        (base / "run").mkdir()
        # a PortAudio program reaches it as a desktop program does: ALSA's default device, the pulse plugin
        (base / ".asoundrc").write_text("pcm.!default { type pulse }\nctl.!default { type pulse }\n")
        self.env = {"PULSE_SERVER": f"unix:{base}/pulse.sock", "PULSE_RUNTIME_PATH": str(base / "run"),
                    "HOME": str(base)}

    def record(self, path: Path) -> subprocess.Popen:
        return subprocess.Popen([require_binary("parec"), "-d", "out.monitor", "--format=s16le", "--rate=48000",
                                 "--channels=2"], stdout=path.open("wb"), stderr=subprocess.DEVNULL,
                                env={**os.environ, **self.env})


@pytest.fixture(scope="module")
def sound_server():
    pulseaudio = require_binary("pulseaudio")
    base = Path(tempfile.mkdtemp(prefix="spicectl-pulse-"))
    server = SoundServer(base)
    proc = subprocess.Popen([pulseaudio, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
                             "--load=module-null-sink sink_name=out rate=48000 channels=2",
                             f"--load=module-native-protocol-unix socket={base}/pulse.sock auth-anonymous=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **server.env})
    deadline = time.monotonic() + 15
    while not (base / "pulse.sock").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "PulseAudio did not start"
        time.sleep(0.1)
    yield server
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(base, ignore_errors=True)


def find(big: np.ndarray, patch: np.ndarray) -> tuple[int, int] | None:
    """Where `patch` stands in `big` pixel for pixel (top-left), if it does."""
    h, w = patch.shape[:2]
    ys, xs = np.nonzero((big == patch[0, 0]).all(axis=2))
    for y, x in zip(ys, xs, strict=True):
        if y + h <= big.shape[0] and x + w <= big.shape[1] and (big[y:y + h, x:x + w] == patch).all():
            return int(x), int(y)
    return None


def grab_x(display: str) -> np.ndarray:
    from PIL import ImageGrab

    return np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))


def console_run(spicectl: Spicectl, name: str, command: str, expect: str, timeout: float = 60) -> str:
    """Run `command` on guest `name`'s serial console; its output once `expect` (a regex) appears."""
    nonce = f"run-{time.monotonic_ns()}"
    # the nonce on a line of its own is the command's output, not the echo of what was typed
    r = spicectl("console", name, "--send", f"echo {nonce}; {command}\\n", "--expect",
                 rf"{nonce}\r?\n(?s:.*){expect}", "--json", "--timeout", str(timeout), timeout=timeout + 30)
    output = r.json()["output"]
    return output[output.index(nonce + "\r\n"):] if nonce + "\r\n" in output else output


def popen(spicectl, *args, display=None):
    env = dict(spicectl.env)
    if display:
        env["DISPLAY"] = display
    return subprocess.Popen([*SPICECTL, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def finish(proc, timeout=20) -> str:
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return err


def read_stderr_until(proc, needle: str, *, before: int = 1, timeout: float = 30) -> str:
    """What proc has written on stderr once `needle` has appeared `before` times (the rest stays unread)."""
    import selectors

    text = ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while text.count(needle) < before:
            assert time.monotonic() < deadline, f"no {needle!r} in {text!r}"
            if sel.select(1):
                # the descriptor, not the buffered pipe object: communicate() later reads what is left
                chunk = os.read(proc.stderr.fileno(), 65536)
                assert chunk, f"stderr closed before {needle!r}: {text!r}"
                text += chunk.decode(errors="replace")
    return text


@contextmanager
def html5_page(url: str, size: tuple[int, int] = (1024, 768)):
    """Chromium (through Playwright) showing spice-html5 at `url`: yields a function that returns the
    canvas's own pixels (None before there is one); an element screenshot would blend its border in."""
    require_binary("chromium")
    if not Path("/usr/share/spice-html5/spice_auto.html").exists():
        pytest.fail("spice-html5 is not installed (scripts/test installs it)") if os.environ.get("CI") else \
            pytest.skip("spice-html5 is not installed")
    import base64
    import io
    import shutil

    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        said: list[str] = []  # what the page logged: the only account of a connection that never drew
        page.on("console", lambda m: said.append(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: said.append(f"pageerror: {e}"))
        page.on("websocket", lambda ws: (said.append(f"websocket opened {ws.url.split('?')[0]}"),
                                         ws.on("close", lambda _: said.append("websocket closed"))))
        page.goto(url)
        try:
            page.wait_for_selector("canvas", timeout=20000)
        except Exception:
            message = page.evaluate("() => document.getElementById('message-div')?.innerText ?? ''")
            browser.close()
            pytest.fail("spice-html5 drew no canvas within 20 s; its messages: "
                        + " | ".join(said + [f"message-div: {message}"]))

        def canvas():
            data = page.evaluate("() => { const c = document.querySelector('canvas');"
                                 " return c ? c.toDataURL('image/png') : null; }")
            if not data:
                return None
            return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB"))

        try:
            yield canvas
        finally:
            browser.close()
