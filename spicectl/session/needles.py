"""openQA needles: a PNG and a JSON file naming areas of it, searched for on a guest's screen.

The format and the matching follow os-autoinst (needle.pm, ppmclibs/tinycv.pm, tinycv_impl.cc), so
that existing needle collections work unchanged:

- JSON: `area` (each `xpos`, `ypos`, `width`, `height`; `type` `match` (default), `exclude` or `ocr`;
  optional `match` level in percent, default 96; `margin`, default 50; one `click_point`, either
  `{"xpos": X, "ypos": Y}` inside the area or `"center"`), `tags`, `properties`; the PNG is NAME.png
  beside NAME.json. A needle needs one `match` or `ocr` area.
- Exclude areas are painted green on both the needle's image and the screen before searching.
- Each match area is searched for on the screen within `margin` pixels of its place (its place scaled
  when the screen's size differs from the needle's), on grey images (ITU-R 601 weights, as OpenCV's
  BGR2GRAY) blurred by a 3x3 Gaussian ([1 2 1] / 4 each way), by the sum of squared differences. Of
  the places within 10 of the best sum, the one nearest the area's own place wins; its mean squared
  error becomes a similarity, 0.9 + (40 - mse) / 380, clipped to 0..1 (1 where the area is exactly in
  place). An area matches at its `match` level; a needle when every match area does.
- Among several needles, one that matches beats one that does not; then the smaller mean of
  (1 - similarity)^2 over its areas; then a `workaround` property; then the name.

Differences from os-autoinst are in the README ("Needles"): the search is numpy's (FFT), not
OpenCV's (exact integer sums), which can order ties differently; `ocr` areas are not read yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spicectl.errors import InvalidInput, NotFound

DEFAULT_MATCH = 0.96
DEFAULT_MARGIN = 50
AREA_TYPES = ("match", "exclude", "ocr")
EXCLUDED = (0, 255, 0)          # what os-autoinst paints over exclude areas (OpenCV's CV_RGB(0, 255, 0))
MAX_JSON = 1 << 20              # bytes of one needle's JSON
MAX_SIDE = 16384                # a needle's PNG, each way


@dataclass(frozen=True)
class Area:
    x: int
    y: int
    width: int
    height: int
    type: str = "match"
    match: float = DEFAULT_MATCH     # 0..1
    margin: int = DEFAULT_MARGIN
    click_point: tuple[int, int] | str | None = None   # inside the area, or "center"



@dataclass
class Needle:
    name: str
    json_path: Path
    png_path: Path
    areas: list[Area]
    tags: list[str] = field(default_factory=list)
    properties: list = field(default_factory=list)
    _image: np.ndarray | None = None
    _prepared: np.ndarray | None = None

    @classmethod
    def load(cls, path: str | Path) -> Needle:
        """NAME.json (or NAME, or NAME.png) and the PNG beside it."""
        p = Path(path)
        if p.suffix in (".json", ".png"):
            p = p.with_suffix("")
        json_path, png_path = p.with_name(p.name + ".json"), p.with_name(p.name + ".png")
        try:
            with open(json_path, "rb") as fh:
                raw = fh.read(MAX_JSON + 1)
        except FileNotFoundError:
            raise NotFound(f"no needle {json_path}") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read needle {json_path}: {exc.strerror}") from None
        if len(raw) > MAX_JSON:
            raise InvalidInput(f"needle {json_path} is larger than {MAX_JSON} bytes")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"needle {json_path} is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidInput(f"needle {json_path} is not a JSON object")
        areas = [_area(a, json_path, n) for n, a in enumerate(_list(doc, "area", json_path))]
        if not any(a.type in ("match", "ocr") for a in areas):
            raise InvalidInput(f"needle {json_path} has no match area")
        if not any(a.type == "match" for a in areas):
            # it would pass on any screen: text on screen is not read yet
            raise InvalidInput(f"needle {json_path} has only ocr areas, which spicectl does not read yet")
        if sum(a.click_point is not None for a in areas) > 1:
            raise InvalidInput(f"needle {json_path} has more than one click point")
        tags = _list(doc, "tags", json_path)
        if not all(isinstance(t, str) for t in tags):
            raise InvalidInput(f"needle {json_path}: tags must be strings")
        if not png_path.is_file() or not png_path.stat().st_size:
            raise NotFound(f"needle {p.name} has no image {png_path}")
        return cls(p.name, json_path, png_path, areas, tags, _list(doc, "properties", json_path))

    def image(self) -> np.ndarray:
        """The needle's PNG as RGB, exclude areas painted over."""
        if self._image is None:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(self.png_path) as img:
                    if max(img.size) > MAX_SIDE:
                        raise InvalidInput(f"needle image {self.png_path} is larger than {MAX_SIDE} pixels a side")
                    rgb = np.array(img.convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise InvalidInput(f"cannot read needle image {self.png_path}: {exc}") from None
            h, w = rgb.shape[:2]
            for a in self.areas:
                if a.x + a.width > w or a.y + a.height > h:
                    raise InvalidInput(f"needle {self.name}: area {a.x},{a.y},{a.width}x{a.height} is outside its "
                                       f"{w}x{h} image")
            _paint_excluded(rgb, self.areas)
            self._image = rgb
        return self._image

    def prepared(self) -> np.ndarray:
        """The needle's image grey and blurred, as the search compares it (once per needle)."""
        if self._prepared is None:
            self._prepared = prepare(self.image())
        return self._prepared

    def has_property(self, name: str) -> bool:
        return any(p == name or (isinstance(p, dict) and p.get("name") == name) for p in self.properties)


def _list(doc: dict, key: str, where: Path) -> list:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise InvalidInput(f"needle {where}: {key} must be a list")
    return value


def _area(a: object, where: Path, n: int) -> Area:
    if not isinstance(a, dict):
        raise InvalidInput(f"needle {where}: area {n} is not an object")

    def number(key: str, default: float) -> float:
        value = a.get(key) or default   # as needle.pm: a missing or zero value takes the default
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1 << 16:
            raise InvalidInput(f"needle {where}: area {n} has a bad {key} ({value!r})")
        return value

    x, y, width, height = (int(number(k, 0)) for k in ("xpos", "ypos", "width", "height"))
    kind = a.get("type") or "match"
    if kind not in AREA_TYPES:
        raise InvalidInput(f"needle {where}: area {n} has type {kind!r}, not one of {', '.join(AREA_TYPES)}")
    if kind != "exclude" and (width < 1 or height < 1):
        raise InvalidInput(f"needle {where}: area {n} is empty")
    level = number("match", DEFAULT_MATCH * 100)
    if level > 100:
        raise InvalidInput(f"needle {where}: area {n} has a match level of {level}%")
    click = a.get("click_point")
    point: tuple[int, int] | str | None = None
    if click == "center":
        point = "center"
    elif isinstance(click, dict) and all(isinstance(click.get(k), int | float) and not isinstance(click.get(k), bool)
                                         for k in ("xpos", "ypos")):
        point = (int(click["xpos"]), int(click["ypos"]))
    elif click is not None:
        raise InvalidInput(f"needle {where}: area {n} has an invalid click_point")
    return Area(x, y, width, height, kind, level / 100, int(number("margin", DEFAULT_MARGIN)), point)


def load_dir(directory: str | Path) -> list[Needle]:
    """Every needle under a directory (as os-autoinst's needle directory: subdirectories too)."""
    d = Path(directory)
    if not d.is_dir():
        raise NotFound(f"no needle directory {d}")
    return [Needle.load(p) for p in sorted(d.rglob("*.json"))]


def tagged(needles: list[Needle], tag: str) -> list[Needle]:
    return [n for n in needles if tag in n.tags]


# --- matching ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AreaMatch:
    x: int              # where the area was found on the screen
    y: int
    width: int
    height: int
    similarity: float
    ok: bool
    click_point: tuple[int, int] | str | None = None

    def as_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height,
                "similarity": round(self.similarity, 4), "ok": self.ok}


@dataclass(frozen=True)
class Match:
    needle: Needle
    areas: list[AreaMatch]

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.areas)

    @property
    def error(self) -> float:
        """The mean of (1 - similarity)^2 over the match areas (os-autoinst's ranking)."""
        return sum((1 - a.similarity) ** 2 for a in self.areas) / len(self.areas) if self.areas else 0.0

    @property
    def similarity(self) -> float:
        return min((a.similarity for a in self.areas), default=1.0)

    def click(self) -> tuple[int, int]:
        """The screen point to click, as os-autoinst's testapi finds it: the click point of the last
        area that has one, or the middle of the last area, where the area was found."""
        area = next((a for a in reversed(self.areas) if a.click_point is not None), self.areas[-1])
        point = area.click_point
        dx, dy = point if isinstance(point, tuple) else (area.width / 2, area.height / 2)
        return int(area.x + dx), int(area.y + dy)

    def as_dict(self) -> dict:
        return {"needle": self.needle.name, "ok": self.ok, "similarity": round(self.similarity, 4),
                "areas": [a.as_dict() for a in self.areas]}


class Screen:
    """A frame, prepared (exclusions painted, grey, blurred) where each needle searches it."""

    def __init__(self, frame: np.ndarray) -> None:
        self.rgb = frame

    def prepared(self, needle_shape: tuple[int, ...], areas: list[Area]) -> np.ndarray:
        """The frame prepared as one needle's search reads it: only inside the box that holds its search
        regions (the rest left unset), a pixel wider each way so that the blur there is exact."""
        sh, sw = self.rgb.shape[:2]
        boxes = [_search_box(a, sh, sw, needle_shape) for a in areas if a.type == "match"]
        top, left = max(0, min(b[0] for b in boxes) - 1), max(0, min(b[1] for b in boxes) - 1)
        bottom, right = min(sh, max(b[2] for b in boxes) + 1), min(sw, max(b[3] for b in boxes) + 1)
        part = self.rgb[top:bottom, left:right]
        excluded = [a for a in areas if a.type == "exclude"]
        if excluded:
            rgb = self.rgb.copy()
            _paint_excluded(rgb, excluded)
            part = rgb[top:bottom, left:right]
        out = np.zeros((sh, sw), np.uint8)
        # at the frame's own edges the blur reflects as over the whole frame; inside, the pixel kept
        # around the box supplies the neighbours and is then dropped
        blurred = prepare(part)
        inner_top, inner_left = (1 if top > 0 else 0), (1 if left > 0 else 0)
        inner_bottom = blurred.shape[0] - (1 if bottom < sh else 0)
        inner_right = blurred.shape[1] - (1 if right < sw else 0)
        out[top + inner_top:top + inner_bottom, left + inner_left:left + inner_right] = \
            blurred[inner_top:inner_bottom, inner_left:inner_right]
        return out


def grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma in OpenCV's fixed point (BGR2GRAY on 8-bit images)."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 4899 + g * 9617 + b * 1868 + 8192) >> 14).astype(np.uint8)


def blur(img: np.ndarray) -> np.ndarray:
    """A 3x3 Gaussian ([1 2 1] / 4 each way, OpenCV's kernel for size 3), edges reflected without
    repeating the edge pixel, rounded as OpenCV rounds 8-bit results."""
    p = np.pad(img.astype(np.uint32), 1, mode="reflect")
    rows = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
    both = rows[:-2] + 2 * rows[1:-1] + rows[2:]
    return ((both + 8) >> 4).astype(np.uint8)


def prepare(rgb: np.ndarray) -> np.ndarray:
    return blur(grey(rgb))


def _paint_excluded(rgb: np.ndarray, areas: list[Area]) -> None:
    h, w = rgb.shape[:2]
    for a in areas:
        if a.type == "exclude" and a.x + a.width <= w and a.y + a.height <= h:   # os-autoinst skips others
            rgb[a.y:a.y + a.height, a.x:a.x + a.width] = EXCLUDED


def sqdiff(scene: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Sum of squared differences of `template` at every place inside `scene` (OpenCV's TM_SQDIFF):
    the window sums of scene^2 from an integral image, the cross term by FFT, rounded (all exact
    integers)."""
    s = scene.astype(np.float64)
    t = template.astype(np.float64)
    sh, sw = s.shape
    th, tw = t.shape
    integral = np.zeros((sh + 1, sw + 1))
    integral[1:, 1:] = (s * s).cumsum(0).cumsum(1)
    windows = integral[th:, tw:] - integral[:-th, tw:] - integral[th:, :-tw] + integral[:-th, :-tw]
    # a circular correlation as large as the scene has no wrapped term at the places kept; sizes of
    # 2, 3 and 5 only keep the FFT fast
    shape = (_fast_size(sh), _fast_size(sw))
    cross = np.fft.irfft2(np.fft.rfft2(s, shape) * np.conj(np.fft.rfft2(t, shape)), shape)[:sh - th + 1, :sw - tw + 1]
    return np.rint(windows - 2 * cross + (t * t).sum())


def _fast_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c at least n."""
    best = 1 << max(0, (n - 1).bit_length())
    f5 = 1
    while f5 < best:
        f35 = f5
        while f35 < best:
            f = f35
            while f < n:
                f *= 2
            best = min(best, f)
            f35 *= 3
        f5 *= 5
    return best


def _near_best(result: np.ndarray, start: float) -> list[tuple[int, int]]:
    """os-autoinst's minVec: the places within 10 of the best sum seen so far, in row order (x, y)."""
    limit = start + 10
    places: list[tuple[int, int]] = []
    ys, xs = np.nonzero(result <= limit)      # only these can ever be kept
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        value = result[y, x]
        if value > limit:
            continue
        if value + 10 < limit:
            limit = value + 10
            places = [(x, y)]
        else:
            places.append((x, y))
    return places


def _search_box(area: Area, sh: int, sw: int, needle_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of where `area` is searched on a sh x sw screen: its place (scaled when
    the needle's image has another size) and `margin` around it, within the screen."""
    nh, nw = needle_shape[:2]
    sx, sy = area.x * sw // nw, area.y * sh // nh
    return (max(0, sy - area.margin), max(0, sx - area.margin),
            min(sh, sy + area.height + area.margin), min(sw, sx + area.width + area.margin))


def search_area(screen: np.ndarray, needle_img: np.ndarray, area: Area) -> AreaMatch:
    """Find one match area of a needle on a prepared screen."""
    sh, sw = screen.shape
    nh, nw = needle_img.shape
    x, y, w, h = area.x, area.y, area.width, area.height
    fail = AreaMatch(0, 0, w, h, 0.0, False, area.click_point)
    if x + w > sw or y + h > sh:
        return fail
    sx, sy = x * sw // nw, y * sh // nh
    top, left, bottom, right = _search_box(area, sh, sw, needle_img.shape)
    if right - left < w or bottom - top < h:
        return fail
    template = needle_img[y:y + h, x:x + w]
    result = sqdiff(screen[top:bottom, left:right], template)
    cx, cy = min(sx - left, result.shape[1] - 1), min(sy - top, result.shape[0] - 1)
    at_place = float(result[cy, cx])
    if at_place == 0:
        return AreaMatch(sx, sy, w, h, 1.0, area.match <= 1.0, area.click_point)
    places = _near_best(result, at_place)
    if not places:
        return fail
    bx, by = min(places, key=lambda p: (p[0] - (sx - left)) ** 2 + (p[1] - (sy - top)) ** 2)
    fx, fy = bx + left, by + top
    diff = screen[fy:fy + h, fx:fx + w].astype(np.float64) - template
    mse = float((diff * diff).mean())
    similarity = min(1.0, max(0.0, 0.9 + (40 - mse) / 380))
    return AreaMatch(fx, fy, w, h, similarity, similarity >= area.match, area.click_point)


def search(screen: Screen, needle: Needle) -> Match:
    prepared_needle = needle.prepared()
    prepared_screen = screen.prepared(prepared_needle.shape, needle.areas)
    return Match(needle, [search_area(prepared_screen, prepared_needle, a) for a in needle.areas if a.type == "match"])


def rank(matches: list[Match]) -> list[Match]:
    """Best first, as os-autoinst orders candidates."""
    return sorted(matches, key=lambda m: (not m.ok, m.error, not m.needle.has_property("workaround"),
                                          m.needle.name))


def best(frame: np.ndarray, needles: list[Needle]) -> tuple[Match | None, list[Match]]:
    """(the best matching needle, or None; every candidate best first) on one frame."""
    screen = Screen(frame)
    ranked = rank([search(screen, n) for n in needles])
    return (ranked[0] if ranked and ranked[0].ok else None), ranked
