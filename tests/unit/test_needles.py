"""openQA needles: the format as os-autoinst reads it, and its matching rules, on synthetic screens.
(On a real guest's screen through `wait-screen --needle`: tests/integration/test_images.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spicectl.errors import InvalidInput, NotFound
from spicectl.session import needles as N


def screen(seed: int = 1, w: int = 320, h: int = 240) -> np.ndarray:
    """A busy picture: every place in it looks different from every other."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def write_needle(directory: Path, name: str, image: np.ndarray, areas: list[dict], **extra) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(directory / f"{name}.png")
    (directory / f"{name}.json").write_text(json.dumps({"area": areas, "tags": extra.pop("tags", [name]), **extra}))
    return directory / name


def area(x, y, w, h, **more) -> dict:
    return {"xpos": x, "ypos": y, "width": w, "height": h, "type": "match", **more}


def shifted(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    return np.roll(frame, (dy, dx), axis=(0, 1))


def test_grey_and_blur_are_opencvs():
    colours = np.array([[[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]]], np.uint8)
    assert N.grey(colours).tolist() == [[255, 76, 150, 29, 0]]
    flat = np.full((5, 5), 77, np.uint8)
    assert (N.blur(flat) == 77).all()
    dot = np.zeros((5, 5), np.uint8)
    dot[2, 2] = 160
    assert N.blur(dot)[1:4, 1:4].tolist() == [[10, 20, 10], [20, 40, 20], [10, 20, 10]]


def test_the_sum_of_squared_differences_is_exact():
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 256, (30, 41), dtype=np.uint8)
    template = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    got = N.sqdiff(scene, template)
    want = np.array([[((scene[y:y + 7, x:x + 9].astype(np.int64) - template) ** 2).sum() for x in range(33)]
                     for y in range(24)])
    assert got.shape == want.shape and (got == want).all()


def test_a_needle_cut_from_the_screen_matches_it_in_place(tmp_path):
    frame = screen()
    needle = N.Needle.load(write_needle(tmp_path, "here", frame, [area(50, 60, 80, 40)]))
    found, ranked = N.best(frame, [needle])
    assert found is not None and found.similarity == 1.0
    assert (found.areas[0].x, found.areas[0].y) == (50, 60)
    assert found.click() == (90, 80)   # no click point: the middle of the last area


def test_an_area_is_found_within_its_margin_and_not_beyond_it(tmp_path):
    frame = screen()
    moved = shifted(frame, 23, -17)
    inside = N.Needle.load(write_needle(tmp_path, "inside", frame, [area(100, 100, 60, 40)]))
    narrow = N.Needle.load(write_needle(tmp_path, "narrow", frame, [area(100, 100, 60, 40, margin=10)]))
    found = N.search(N.Screen(moved), inside)
    assert found.ok and (found.areas[0].x, found.areas[0].y) == (123, 83) and found.similarity == 1.0
    missed = N.search(N.Screen(moved), narrow)
    assert not missed.ok and missed.similarity < 0.96


def test_exclude_areas_are_ignored_on_both_sides(tmp_path):
    frame = screen()
    changed = frame.copy()
    changed[110:150, 110:150] = 255 - changed[110:150, 110:150]   # something moving inside the area
    plain = N.Needle.load(write_needle(tmp_path, "plain", frame, [area(100, 100, 60, 60)]))
    excluding = N.Needle.load(write_needle(tmp_path, "excluding", frame, [
        area(100, 100, 60, 60), {"xpos": 105, "ypos": 105, "width": 50, "height": 50, "type": "exclude"}]))
    assert not N.search(N.Screen(changed), plain).ok
    assert N.search(N.Screen(changed), excluding).ok


def test_a_lower_match_level_accepts_a_noisier_screen(tmp_path):
    frame = screen()
    noisy = np.clip(frame.astype(int) + 5, 0, 255).astype(np.uint8)   # a little brighter: mse about 25
    strict = N.Needle.load(write_needle(tmp_path, "strict", frame, [area(40, 40, 100, 80)]))
    lenient = N.Needle.load(write_needle(tmp_path, "lenient", frame, [area(40, 40, 100, 80, match=85)]))
    sim = N.search(N.Screen(noisy), strict).similarity
    assert 0.85 <= sim < 0.96, sim
    assert not N.search(N.Screen(noisy), strict).ok
    assert N.search(N.Screen(noisy), lenient).ok


def test_every_match_area_must_match(tmp_path):
    frame = screen()
    other = frame.copy()
    other[180:230, 200:300] = screen(7)[180:230, 200:300]
    needle = N.Needle.load(write_needle(tmp_path, "two", frame, [area(20, 20, 60, 40), area(210, 185, 80, 40)]))
    result = N.search(N.Screen(other), needle)
    assert [a.ok for a in result.areas] == [True, False] and not result.ok


def test_tags_pick_the_best_matching_needle(tmp_path):
    frame, elsewhere = screen(1), screen(2)
    write_needle(tmp_path / "a", "login-old", elsewhere, [area(10, 10, 50, 50)], tags=["login"])
    write_needle(tmp_path / "b", "login-new", frame, [area(10, 10, 50, 50)], tags=["login", "desktop"])
    write_needle(tmp_path, "other", frame, [area(10, 10, 50, 50)], tags=["other"])
    candidates = N.tagged(N.load_dir(tmp_path), "login")
    assert sorted(n.name for n in candidates) == ["login-new", "login-old"]
    found, ranked = N.best(frame, candidates)
    assert found is not None and found.needle.name == "login-new"
    assert [m.needle.name for m in ranked] == ["login-new", "login-old"] and not ranked[1].ok


def test_equally_good_needles_prefer_a_workaround_then_the_name(tmp_path):
    frame = screen()
    for name, props in (("b-plain", []), ("c-workaround", ["workaround"]), ("a-plain", [])):
        write_needle(tmp_path, name, frame, [area(10, 10, 50, 50)], properties=props)
    found, ranked = N.best(frame, N.load_dir(tmp_path))
    assert [m.needle.name for m in ranked] == ["c-workaround", "a-plain", "b-plain"]


def test_a_click_point_is_relative_to_where_its_area_was_found(tmp_path):
    frame = screen()
    needle = N.Needle.load(write_needle(tmp_path, "button", frame, [
        area(100, 100, 60, 40, click_point={"xpos": 5, "ypos": 7}), area(20, 20, 30, 30)]))
    found = N.search(N.Screen(shifted(frame, 10, 4)), needle)
    assert found.ok and found.click() == (115, 111)
    centred = N.Needle.load(write_needle(tmp_path, "centred", frame, [area(100, 100, 60, 40, click_point="center")]))
    assert N.search(N.Screen(frame), centred).click() == (130, 120)


def test_a_screen_of_another_size_is_searched_at_the_scaled_place(tmp_path):
    big = screen(4, 640, 480)
    small = big[::2, ::2].copy()
    needle_image = np.zeros_like(big)
    # the content (and the pixel around it, which the blur reads) at its place on the small screen
    needle_image[99:141, 199:261] = small[49:91, 99:161]
    needle = N.Needle.load(write_needle(tmp_path, "scaled", needle_image, [area(200, 100, 60, 40)]))
    found = N.search(N.Screen(small), needle)
    assert found.ok and (found.areas[0].x, found.areas[0].y) == (100, 50)


@pytest.mark.parametrize("doc, error", [
    ({"area": []}, "no match area"),
    ({"area": [{"xpos": 0, "ypos": 0, "width": 5, "height": 5, "type": "exclude"}]}, "no match area"),
    ({"area": [area(0, 0, 5, 5, type="blink")]}, "type 'blink'"),
    ({"area": [area(0, 0, 5, 5, type="ocr")]}, "only ocr areas"),
    ({"area": [area(0, 0, 0, 5)]}, "is empty"),
    ({"area": [area(0, 0, 5, 5, match=101)]}, "match level"),
    ({"area": [area(-1, 0, 5, 5)]}, "bad xpos"),
    ({"area": [area(0, 0, 5, 5, click_point="corner")]}, "invalid click_point"),
    ({"area": [area(0, 0, 5, 5, click_point="center"), area(5, 5, 5, 5, click_point="center")]}, "more than one click"),
    ({"area": "everything"}, "area must be a list"),
    ({"area": [area(0, 0, 5, 5)], "tags": [1]}, "tags must be strings"),
    ([], "not a JSON object"),
])
def test_a_malformed_needle_is_a_clear_error(tmp_path, doc, error):
    Image.new("RGB", (20, 20)).save(tmp_path / "bad.png")
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match=error):
        N.Needle.load(tmp_path / "bad")


def test_missing_files_and_oversized_json_are_refused(tmp_path):
    with pytest.raises(NotFound, match="no needle"):
        N.Needle.load(tmp_path / "absent")
    (tmp_path / "nopng.json").write_text(json.dumps({"area": [area(0, 0, 5, 5)]}))
    with pytest.raises(NotFound, match="has no image"):
        N.Needle.load(tmp_path / "nopng.json")
    Image.new("RGB", (20, 20)).save(tmp_path / "huge.png")
    (tmp_path / "huge.json").write_text(" " * (N.MAX_JSON + 1))
    with pytest.raises(InvalidInput, match="larger than"):
        N.Needle.load(tmp_path / "huge")
    Image.new("RGB", (20, 20)).save(tmp_path / "outside.png")
    (tmp_path / "outside.json").write_text(json.dumps({"area": [area(10, 10, 20, 20)]}))
    with pytest.raises(InvalidInput, match="outside its 20x20 image"):
        N.Needle.load(tmp_path / "outside").image()
    with pytest.raises(NotFound, match="no needle directory"):
        N.load_dir(tmp_path / "nowhere")


def test_wait_screen_and_mouse_find_a_needle_on_a_recorded_real_session(tmp_path):
    """Through the whole client: a real QEMU's display messages, replayed by a stand-in server."""
    from spicectl.spice import recording
    from tests.conftest import REPO
    from tests.hostile_server import HostileServer, Script, run_cli

    path = REPO / "tests" / "data" / "display-lz.bin"
    shown = np.asarray(Image.open(recording.libvirt_frame(path)).convert("RGB"))
    messages = list(recording.read(path))
    h, w = shown.shape[:2]
    right = write_needle(tmp_path, "right", shown, [area(8, 8, w // 2, h // 3, click_point="center")])
    wrong = write_needle(tmp_path, "wrong", 255 - shown, [area(8, 8, w // 2, h // 3)])
    with HostileServer(Script(display=messages)) as server:
        uri = f"spice://127.0.0.1:{server.port}"
        found = run_cli(["wait-screen", uri, "--plain-port", "--needle", str(right), "--timeout", "20"])
        missed = run_cli(["wait-screen", uri, "--plain-port", "--needle", str(wrong), "--timeout", "3",
                          "--last-frame", str(tmp_path / "last.png")])
    assert found.how == "exit" and found.code == 0, str(found)
    assert "needle right matched" in found.stderr and "similarity 1.000 at 8,8" in found.stderr
    assert missed.how == "exit" and missed.code == 9, str(missed)
    assert "no needle matched within 3s; closest: wrong at" in missed.stderr
    assert (tmp_path / "last.png").is_file()


def test_the_screen_is_prepared_only_where_the_search_reads_it_and_exactly_there(tmp_path):
    frame = screen(5, 320, 240)
    needle = N.Needle.load(write_needle(tmp_path, "box", frame, [area(100, 60, 40, 30, margin=20),
                                                                  area(200, 150, 30, 20, margin=5)]))
    part = N.Screen(frame).prepared(needle.prepared().shape, needle.areas)
    full = N.prepare(frame)
    inside = (slice(40, 175), slice(80, 235))   # from the first box's top-left to the second's bottom-right
    assert (part[inside] == full[inside]).all()
    assert not part[:30].any() and not part[:, :70].any()   # nothing prepared where nothing is searched
