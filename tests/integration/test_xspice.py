"""Xspice for real: Xorg with Debian's spiceqxl driver started by `spicectl xspice start`, with xterm
and xeyes on it and spice-vdagent beside it; every guest command takes the display as `:N`.

One display serves the module (it starts in about a second); the tests that stop or break a
display start their own.
"""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import require_binary
from tests.integration.conftest import find, finish, grab_x, kill, popen, read_stderr_until

pytestmark = pytest.mark.integration

XTERM_AT = (10, 10)          # its top-left corner (no window manager: where --geometry puts it)
EYES = "xeyes -geometry 200x200+600+100"


def free_display(start: int = 40) -> int:
    return next(n for n in range(start, 90) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                and not Path(f"/tmp/.X{n}-lock").exists())


def xwd_root(display: str) -> np.ndarray:
    """The X server's own picture of its root window (xwd, ZPixmap at 32 bits per pixel)."""
    data = subprocess.run(["xwd", "-root", "-silent", "-display", display], check=True, capture_output=True).stdout
    fields = struct.unpack(">25I", data[:100])
    header_size, pixmap_format, depth, width, height = fields[0], fields[2], fields[3], fields[4], fields[5]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = fields[7], fields[11], fields[12], fields[19]
    assert (pixmap_format, depth, bits_per_pixel) == (2, 24, 32), "xwd wrote a layout this test does not read"
    start = header_size + 12 * ncolors
    rows = np.frombuffer(data[start:start + bytes_per_line * height], np.uint8).reshape(height, bytes_per_line)
    pixels = rows[:, :width * 4].reshape(height, width, 4)
    # LSBFirst: B, G, R, pad in memory
    return pixels[:, :, [2, 1, 0]] if byte_order == 0 else pixels[:, :, [1, 2, 3]]


@pytest.fixture(scope="module")
def xspice(spicectl):
    for binary in ("Xorg", "xterm", "xeyes", "xwd", "spice-vdagent", "xclip", "xdpyinfo"):
        require_binary(binary)
    number = free_display()
    name = f":{number}"
    r = spicectl("xspice", "start", name, "--run", "xterm -geometry 80x20+10+10", "--run", EYES, "--agent",
                 "--json")
    info = r.json()
    yield name, info
    spicectl("xspice", "stop", name, check=False)


def screenshot(spicectl, name: str, path: Path) -> np.ndarray:
    spicectl("screenshot", name, "-o", str(path), "--settle", "0.5")
    return np.asarray(Image.open(path).convert("RGB"))


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)
    return result


def test_start_serves_tls_with_a_password_and_lists_the_display(spicectl, xspice):
    name, info = xspice
    assert info["tls_port"] and info["port"] is None and info["password"] and info["agent"]
    listed = spicectl("xspice", "list", "--json").json()["displays"]
    row = next(d for d in listed if d["display"] == name)
    assert row["running"] and {p["what"] for p in row["processes"] if p["running"]} >= {"xorg", "agent", EYES}
    password = Path(spicectl.state_dir, "xspice", name[1:], "password")
    assert password.stat().st_mode & 0o777 == 0o600
    secret = password.read_text()
    for log in Path(spicectl.state_dir, "xspice", name[1:]).glob("*.log"):
        assert secret not in log.read_text(errors="replace"), f"the password is in {log.name}"


def test_our_screenshot_equals_the_x_servers_own_picture(spicectl, xspice, tmp_path):
    name, _ = xspice
    ours = screenshot(spicectl, name, tmp_path / "ours.png")
    theirs = xwd_root(name)
    assert ours.shape == theirs.shape
    # xeyes follows the pointer: the two pictures are compared while nothing moves
    same = (ours == theirs).all(axis=2)
    assert same.all(), f"{(~same).sum()} pixels differ from xwd's picture"
    assert (ours[XTERM_AT[1] + 200, XTERM_AT[0] + 450] == 255).all(), "no xterm (white) where it was placed"


def test_text_typed_through_our_inputs_channel_reaches_the_xterm(spicectl, xspice, tmp_path):
    name, _ = xspice
    target = tmp_path / "typed.txt"
    # no window manager: the keyboard follows the pointer, so it goes over the xterm first
    spicectl("mouse", name, "--move", f"{XTERM_AT[0] + 100},{XTERM_AT[1] + 100}")
    spicectl("type", name, f"echo typed-over-spice-$((6*7)) > {target}\\n")
    wait_for(target.exists, 15, "the typed command never ran in the xterm")
    assert target.read_text().strip() == "typed-over-spice-42"
    # a line typed without its Enter, then Enter pressed by send-keys
    pressed = tmp_path / "pressed.txt"
    spicectl("type", name, f"echo pressed > {pressed}")
    time.sleep(1)
    assert not pressed.exists()
    spicectl("send-keys", name, "enter")
    wait_for(pressed.exists, 15, "send-keys enter did not run the typed line")


def test_resize_through_the_agent_changes_the_x_screen(spicectl, xspice):
    name, _ = xspice

    def size() -> str:
        out = subprocess.run(["xdpyinfo", "-display", name], capture_output=True, text=True, check=True).stdout
        return next(line.split()[1] for line in out.splitlines() if "dimensions:" in line)

    try:
        spicectl("resize", name, "1280x800")
        wait_for(lambda: size() == "1280x800", 20, "the X screen did not become 1280x800")
    finally:
        spicectl("resize", name, "1024x768", check=False)
        wait_for(lambda: size() == "1024x768", 20, "the X screen did not come back to 1024x768")


def test_the_clipboard_goes_both_ways_through_the_agent(spicectl, xspice):
    name, _ = xspice
    env = {**os.environ, "DISPLAY": name}
    offer = popen(spicectl, "clipboard", "set", name, "from-spicectl-42")
    try:
        pasted = wait_for(lambda: subprocess.run(["xclip", "-o", "-selection", "clipboard"], env=env,
                                                 capture_output=True, text=True, timeout=10).stdout,
                          30, "the X session never saw the offered clipboard")
        assert pasted == "from-spicectl-42"
    finally:
        offer.terminate()
        offer.wait(20)
    subprocess.run(["xclip", "-i", "-selection", "clipboard"], input="from-x-session", text=True, env=env, check=True)
    assert spicectl("clipboard", "get", name).stdout.strip() == "from-x-session"


def test_record_audio_hears_what_the_session_plays_into_the_fifo_folder(spicectl, xspice, tmp_path):
    name, info = xspice
    fifo = Path(info["audio_dir"]) / "tone.fifo"
    os.mkfifo(fifo)
    rate, seconds = 48000, 8

    def play() -> None:
        # what PulseAudio's module-pipe-sink does: s16le stereo into a FIFO the driver opened
        samples = b"".join(struct.pack("<hh", v, v) for v in
                           (int(12000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(rate * seconds)))
        with open(fifo, "wb") as out:
            for i in range(0, len(samples), 4 * rate // 50):
                out.write(samples[i:i + 4 * rate // 50])

    player = threading.Thread(target=play, daemon=True)
    player.start()
    try:
        spicectl("record-audio", name, "--seconds", "3", "--raw", "-o", str(tmp_path / "rec.wav"))
    finally:
        player.join(30)
        fifo.unlink()
    with wave.open(str(tmp_path / "rec.wav")) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, rate)
        left = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)[:, 0].astype(float)
    assert len(left) > rate, "less than a second of audio"
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
    assert abs(np.argmax(spectrum) * rate / len(left) - 440) < 5
    assert left.std() > 4000, "the tone is too quiet: something else was recorded"


def test_remote_viewer_shows_the_display(spicectl, xspice, xdisplay, tmp_path):
    require_binary("remote-viewer")
    name, _ = xspice
    ours = screenshot(spicectl, name, tmp_path / "ours.png")
    xterm = ours[XTERM_AT[1]:XTERM_AT[1] + 200, XTERM_AT[0]:XTERM_AT[0] + 400]
    proc = popen(spicectl, "xspice", "connect", name, "--json", display=xdisplay)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    viewer = json.loads(out)
    try:
        wait_for(lambda: find(grab_x(xdisplay), xterm) is not None, 60,
                 "remote-viewer never showed the xterm as our screenshot has it")
    finally:
        kill(viewer["pid"])


def test_view_shows_the_display_pixel_for_pixel_and_wait_screen_matches_it(spicectl, xspice, xdisplay, tmp_path):
    name, _ = xspice
    ours = screenshot(spicectl, name, tmp_path / "ours.png")
    spicectl("wait-screen", name, "--match", str(tmp_path / "ours.png"), "--timeout", "30")
    viewer = popen(spicectl, "view", name, "--close-after", "120", display=xdisplay)
    try:
        read_stderr_until(viewer, "window open", timeout=60)
        # no window manager: the window sits at the screen's origin
        wait_for(lambda: (grab_x(xdisplay)[:ours.shape[0], :ours.shape[1]] == xwd_root(name)).all(), 60,
                 "view's window never showed the display as the X server has it")
    finally:
        viewer.send_signal(signal.SIGINT)
        finish(viewer)


def test_both_per_session_proxies_and_proxy_serve_carry_a_session_to_the_display(spicectl, xspice, tmp_path):
    from tests.integration.test_sessions import start_serve

    name, _ = xspice
    direct = screenshot(spicectl, name, tmp_path / "direct.png")
    shots = {}
    for proxy in ("ws", "http-connect"):
        shots[proxy] = tmp_path / f"via-{proxy}.png"
        spicectl("connect", name, "--builtin", "--proxy", proxy, "--screenshot", str(shots[proxy]))
    serve, port = start_serve(spicectl)
    try:
        shots["serve"] = tmp_path / "via-serve.png"
        spicectl("connect", name, "--proxy-url", f"http://127.0.0.1:{port}", "--proxy", "ws", "--builtin",
                 "--screenshot", str(shots["serve"]))
    finally:
        serve.terminate()
        serve.communicate(timeout=30)
    for how, path in shots.items():
        assert (np.asarray(Image.open(path).convert("RGB")) == direct).all(), f"through {how}: not the same screen"


def test_a_wrong_password_is_refused(spicectl, xspice, tmp_path):
    name, info = xspice
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    ca = Path(spicectl.state_dir, "certs", "server", "127.0.0.1", "ca-cert.pem")
    r = spicectl("screenshot", f"spice://127.0.0.1?tls-port={info['tls_port']}", "--ca-file", str(ca),
                 "--password-file", str(wrong), "-o", str(tmp_path / "no.png"), check=False)
    assert r.exit_code == 5, r.stderr


def test_an_insecure_display_on_loopback_and_stop_ends_every_process(spicectl, tmp_path):
    name = f":{free_display(60)}"
    info = spicectl("xspice", "start", name, "--insecure", "--run", "xterm", "--no-agent", "--json").json()
    try:
        assert info["tls_port"] is None and info["port"] and not info["password"]
        spicectl("screenshot", name, "-o", str(tmp_path / "plain.png"))
        pids = [p["pid"] for p in info["processes"]]
    finally:
        stopped = spicectl("xspice", "stop", name, "--json").json()
    assert stopped["stopped"] and not stopped["killed"]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not Path(f"/tmp/.X11-unix/X{name[1:]}").exists()
    assert name not in [d["display"] for d in spicectl("xspice", "list", "--json").json()["displays"]]
    r = spicectl("screenshot", name, "-o", str(tmp_path / "gone.png"), check=False)
    assert r.exit_code == 3 and "not running" in r.stderr


def test_a_display_that_is_taken_is_refused_before_anything_starts(spicectl, xspice):
    name, _ = xspice
    r = spicectl("xspice", "start", name, check=False)
    assert r.exit_code != 0 and "already running" in r.stderr
