"""The compiled decoder loops (spicectl/spice/codecs/_accel.c) against the pure-Python reference: the
same pixels and the same error for every input, real or hostile; and a build without a compiler."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spicectl.errors import ProtocolError, TimeoutExpired
from spicectl.spice import messages as M
from spicectl.spice import recording
from spicectl.spice.codecs import accel, lz, quic
from spicectl.spice.display import copy_source
from tests.conftest import REPO

# (kind, payload) of every compressed DRAW_COPY image the recordings hold, in order
FRAMES = [(d["type"], p) for name in ("display-lz", "display-glz", "display-auto_glz", "display-quic", "scene-quic")
          for d, p in (copy_source(m.body) for m in recording.read(REPO / "tests" / "data" / f"{name}.bin")
                       if m.type == M.MSG_DISPLAY_DRAW_COPY)
          if d["type"] in (M.IMAGE_LZ_RGB, M.IMAGE_GLZ_RGB, M.IMAGE_QUIC)]
# small QUIC images, so that hostile examples stay quick in the pure-Python reference
SMALL_QUIC = [p for k, p in FRAMES if k == M.IMAGE_QUIC and len(p) < 20000]


def outcome(kind: int, payload: bytes, window: lz.GlzWindow, compiled: bool) -> tuple:
    """What one implementation makes of a payload: its pixels, or its error's type and message."""
    saved = accel.native
    accel.native = saved if compiled else None
    try:
        if kind == M.IMAGE_QUIC:
            image = quic.decode_quic(payload)
        elif kind == M.IMAGE_GLZ_RGB:
            image = lz.decode_glz(payload, window)
        else:
            image = lz.decode_lz(payload)
        return ("image", image.width, image.height, image.row_pixels, image.has_alpha, bytes(image.pixels))
    except ProtocolError as e:
        return ("error", str(e))
    finally:
        accel.native = saved


def both(kind: int, payload: bytes, windows: tuple[lz.GlzWindow, lz.GlzWindow]) -> tuple:
    ours, reference = outcome(kind, payload, windows[0], True), outcome(kind, payload, windows[1], False)
    assert ours == reference
    assert windows[0].images.keys() == windows[1].images.keys()
    return ours


@pytest.fixture(autouse=True)
def compiled_built():
    assert accel.native is not None, f"the compiled decoders are not built: {accel.why_not}"


def test_every_recorded_image_decodes_to_the_same_pixels_both_ways():
    windows = (lz.GlzWindow(1 << 24), lz.GlzWindow(1 << 24))
    kinds = {kind for kind, payload in FRAMES if both(kind, payload, windows)[0] == "image"}
    assert kinds == {M.IMAGE_LZ_RGB, M.IMAGE_GLZ_RGB, M.IMAGE_QUIC}


def mutated(data: st.DataObject, payload: bytes) -> bytes:
    """A payload with a few bytes changed, cut short, or given a header field's extreme value."""
    buf = bytearray(payload)
    how = data.draw(st.sampled_from(["bytes", "truncate", "field"]))
    if how == "truncate":
        return bytes(buf[:data.draw(st.integers(0, len(buf)))])
    if how == "field":   # one 32-bit header field (LZ/GLZ big-endian, QUIC little-endian) set to an extreme
        at = data.draw(st.sampled_from(range(0, min(len(buf), 40) - 3)))
        value = data.draw(st.sampled_from([0, 1, 2, 3, 7, 8, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]))
        buf[at:at + 4] = value.to_bytes(4, data.draw(st.sampled_from(["big", "little"])))
        return bytes(buf)
    for _ in range(data.draw(st.integers(1, 8))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    return bytes(buf)


HOSTILE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HOSTILE
@given(data=st.data())
def test_a_mutated_lz_or_glz_image_gives_the_same_pixels_or_error_both_ways(data):
    lzs = [(k, p) for k, p in FRAMES if k != M.IMAGE_QUIC]
    at = data.draw(st.integers(0, len(lzs) - 1))
    windows = (lz.GlzWindow(1 << 24), lz.GlzWindow(1 << 24))
    for kind, payload in lzs[max(0, at - 6):at]:   # the images a GLZ one may refer back to
        both(kind, payload, windows)
    kind, payload = lzs[at]
    both(kind, mutated(data, payload), windows)


@HOSTILE
@given(data=st.data())
def test_a_mutated_quic_image_gives_the_same_pixels_or_error_both_ways(data):
    payload = data.draw(st.sampled_from(SMALL_QUIC))
    both(M.IMAGE_QUIC, mutated(data, payload), (lz.GlzWindow(1), lz.GlzWindow(1)))


@settings(max_examples=300, deadline=None)
@given(kind=st.integers(1, 5), w=st.integers(1, 70), h=st.integers(1, 9), body=st.binary(max_size=900))
def test_quic_garbage_gives_the_same_pixels_or_error_both_ways(kind, w, h, body):
    head = b"".join(v.to_bytes(4, "little") for v in (quic.MAGIC, quic.VERSION, kind, w, h))
    both(M.IMAGE_QUIC, head + body, (lz.GlzWindow(1), lz.GlzWindow(1)))


@settings(max_examples=300, deadline=None)
@given(image_type=st.integers(0, 12), w=st.integers(1, 40), h=st.integers(1, 6), top_down=st.booleans(),
       glz=st.booleans(), body=st.binary(max_size=400))
def test_lz_garbage_of_every_image_type_gives_the_same_pixels_or_error_both_ways(image_type, w, h, top_down, glz,
                                                                                  body):
    stride = w * lz.RGB_BYTES_PER_PIXEL.get(image_type, 1) if image_type not in lz.PLT_PIXELS_PER_BYTE \
        else (w + lz.PLT_PIXELS_PER_BYTE[image_type] - 1) // lz.PLT_PIXELS_PER_BYTE[image_type]
    if glz:
        head = lz.MAGIC.to_bytes(4, "big") + lz.VERSION.to_bytes(4, "big") + bytes([image_type | top_down << 4]) + \
            b"".join(v.to_bytes(4, "big") for v in (w, h, stride)) + (7).to_bytes(8, "big") + (3).to_bytes(4, "big")
    else:
        head = b"".join(v.to_bytes(4, "big") for v in (lz.MAGIC, lz.VERSION, image_type, w, h, stride, top_down))
    palette = [0x102030, 0x405060, 0x708090, 0xA0B0C0, 0xFFFFFF]
    windows = (lz.GlzWindow(1 << 20), lz.GlzWindow(1 << 20))
    for window in windows:   # two earlier images to refer back to
        window.add(5, bytearray(range(256)) * 4, 10)
        window.add(6, bytearray(64), 10)

    def run(compiled: bool, window: lz.GlzWindow) -> tuple:
        saved = accel.native
        accel.native = saved if compiled else None
        try:
            image = lz.decode_glz(head + body, window, palette) if glz else lz.decode_lz(head + body, palette)
            return ("image", image.width, image.height, image.row_pixels, image.has_alpha, bytes(image.pixels))
        except ProtocolError as e:
            return ("error", str(e))
        finally:
            accel.native = saved

    assert run(True, windows[0]) == run(False, windows[1])


def test_the_compiled_quic_loop_lets_other_threads_run_and_stops_at_its_deadline():
    import threading
    import time

    head = b"".join(v.to_bytes(4, "little") for v in (quic.MAGIC, quic.VERSION, quic.TYPE_RGB32, 4096, 4096))
    data = head + bytes(48 << 20)   # zeros: a whole 4096x4096 image, a few tenths of a second of work
    ticks = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        time.sleep(0.01)
        started = time.monotonic()
        quic.decode_quic(data)
        ended = time.monotonic()
    finally:
        stop.set()
        ticker.join()
    assert sum(started < t < ended for t in ticks) >= 5, "the decoder held the GIL"
    with pytest.raises(TimeoutExpired, match="at row 0 "):
        quic.decode_quic(data, deadline=time.monotonic())


def load_hook():
    spec = importlib.util.spec_from_file_location("hatch_build", REPO / "hatch_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_c_compiler_the_build_goes_on_pure_python(tmp_path, monkeypatch, capsys):
    hook = load_hook()
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert hook.compile_accel(REPO, tmp_path) is None
    assert "no C compiler" in capsys.readouterr().err
    monkeypatch.setenv("CC", "false")
    assert hook.compile_accel(REPO, tmp_path) is None
    assert "failed; the decoders stay pure Python" in capsys.readouterr().err
    monkeypatch.delenv("CC")
    monkeypatch.setenv("SPICECTL_NO_ACCEL", "1")
    assert hook.compile_accel(REPO, tmp_path) is None


def test_the_hook_builds_a_module_that_decodes(tmp_path):
    built = load_hook().compile_accel(REPO, tmp_path)
    assert built is not None and built.is_file()
    payload = next(p for k, p in FRAMES if k == M.IMAGE_QUIC)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import _accel; from spicectl.spice.codecs import quic;"
            "p = open(sys.argv[2], 'rb').read(); d = quic.decode_quic(p);"
            "assert bytes(_accel.quic(p, quic.TYPE_RGB32 if d.width else 0, d.width, d.height, -1.0)) == d.pixels")
    sample = tmp_path / "image.quic"
    sample.write_bytes(payload)
    kind = int.from_bytes(payload[8:12], "little")
    code = code.replace("quic.TYPE_RGB32 if d.width else 0", str(kind))
    subprocess.run([sys.executable, "-c", code, str(tmp_path), str(sample)], check=True, cwd=REPO)


def test_the_compiled_loops_stay_in_bounds_under_asan_on_hostile_input(tmp_path):
    """The differential tests above, again with the extension built under AddressSanitizer and
    UBSan: an out-of-bounds read or write, or undefined arithmetic, aborts the run."""
    import os

    target = tmp_path / "_accel.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O1", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
                    f"-I{__import__('sysconfig').get_paths()['include']}", str(REPO / "spicectl/spice/codecs/_accel.c"),
                    "-o", str(target)], check=True)
    runtimes = [subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True,
                               check=True).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("spicectl.spice.codecs._accel", {str(target)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules[spec.name] = module
from spicectl.spice.codecs import accel
assert accel.native is module
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "tests/unit/test_accel.py", "-k", "both_ways"]))
"""
    env = {**os.environ, "LD_PRELOAD": " ".join(runtimes), "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"}
    env.pop("SPICECTL_DECODERS", None)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout


def test_spicectl_decoders_python_picks_the_reference(tmp_path):
    probe = "from spicectl.spice.codecs import accel; print(accel.native is None, accel.describe())"
    out = subprocess.run([sys.executable, "-c", probe], env={"SPICECTL_DECODERS": "python", "PATH": "/usr/bin"},
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.startswith("True pure Python (SPICECTL_DECODERS=python)")
    out = subprocess.run([sys.executable, "-c", probe], env={"PATH": "/usr/bin"}, capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.startswith("False compiled")


def test_the_extension_is_built_from_the_checked_in_source():
    """A stale build (the C changed after `pip install -e`) would test the wrong code."""
    built = Path(accel.native.__file__)
    source = REPO / "spicectl" / "spice" / "codecs" / "_accel.c"
    if built.parent == source.parent:   # an editable install
        assert built.stat().st_mtime >= source.stat().st_mtime, "rebuild: scripts/test reinstalls when the C changes"
