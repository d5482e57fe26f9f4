"""Render compositing through pixman, the library spice-server's own canvas composites with.

A DRAW_COMPOSITE message is an X Render operation (Porter-Duff and blend operators,
transforms, filters, repeat modes, component alpha), defined by what pixman does; drawing it
with pixman itself is what makes our picture equal the server's. pixman (Debian's
libpixman-1-0, which QEMU and every X server use) is loaded through ctypes on first use; without
it the client does not announce the composite capability, and guests draw without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache

import numpy as np

from spicectl.errors import ProtocolError

# pixman_format_code_t: bpp << 24 | type << 16 | a << 12 | r << 8 | g << 4 | b (type ARGB = 2)
A8R8G8B8 = 0x20028888
X8R8G8B8 = 0x20020888

# pixman_op_t values pixman defines (Render's PictOp): the rest would index its tables out of bounds
OPERATORS = frozenset([*range(0x00, 0x0E), *range(0x10, 0x1C), *range(0x20, 0x2C), *range(0x30, 0x3F)])
# FAST, GOOD, BEST, NEAREST, BILINEAR; the convolution filters need parameters no message carries
FILTERS = frozenset(range(5))
REPEATS = frozenset(range(4))  # NONE, NORMAL, PAD, REFLECT


class _Transform(ctypes.Structure):
    _fields_ = [("matrix", (ctypes.c_int32 * 3) * 3)]


@cache
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("pixman-1") or "libpixman-1.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    p = ctypes.c_void_p
    lib.pixman_image_create_bits.restype = p
    lib.pixman_image_create_bits.argtypes = [ctypes.c_uint32, ctypes.c_int, ctypes.c_int, p, ctypes.c_int]
    lib.pixman_image_unref.argtypes = [p]
    lib.pixman_image_set_transform.argtypes = [p, ctypes.POINTER(_Transform)]
    lib.pixman_image_set_filter.argtypes = [p, ctypes.c_int, p, ctypes.c_int]
    lib.pixman_image_set_repeat.argtypes = [p, ctypes.c_int]
    lib.pixman_image_set_component_alpha.argtypes = [p, ctypes.c_int]
    lib.pixman_image_composite32.argtypes = [ctypes.c_int, p, p, p, *([ctypes.c_int32] * 8)]
    return lib


def available() -> bool:
    return _library() is not None


@dataclass
class Layer:
    """A source or mask: BGRA/BGRX pixels (h, w, 4) read as `pixman_format`, and how they are sampled."""

    pixels: np.ndarray
    pixman_format: int
    origin: tuple[int, int] = (0, 0)
    transform: tuple[int, int, int, int, int, int] | None = None   # 16.16 fixed: t00 t01 t02 t10 t11 t12
    filter: int = 0
    repeat: int = 0
    component_alpha: bool = False


def composite(op: int, dest: np.ndarray, dest_format: int, src: Layer, mask: Layer | None = None) -> None:
    """`dest` (h, w, 4, C-contiguous) = src OP dest, through mask; src and mask origins map to dest's (0, 0)."""
    lib = _library()
    if lib is None:
        raise ProtocolError("composite drawing needs pixman (libpixman-1), which is not installed")
    if op not in OPERATORS:
        raise ProtocolError(f"display channel: composite operator {op:#x} is not one pixman defines")
    for layer in (src, mask):
        if layer is not None and (layer.filter not in FILTERS or layer.repeat not in REPEATS):
            raise ProtocolError(f"display channel: composite filter {layer.filter} or repeat {layer.repeat} "
                                "is not one this client draws")
    if not dest.flags.c_contiguous:
        raise ValueError("composite needs a C-contiguous destination")
    keep = []  # the arrays pixman reads must outlive its images

    def image(pixels: np.ndarray, pixman_format: int) -> int:
        pixels = np.ascontiguousarray(pixels)
        keep.append(pixels)
        h, w = pixels.shape[:2]
        handle = lib.pixman_image_create_bits(pixman_format, w, h, pixels.ctypes.data, w * 4)
        if not handle:
            raise ProtocolError(f"display channel: pixman refused a {w}x{h} composite image")
        return handle

    handles = []
    try:
        d = image(dest, dest_format)
        handles.append(d)
        layers: list[int | None] = []
        for layer in (src, mask):
            if layer is None:
                layers.append(None)
                continue
            handle = image(layer.pixels, layer.pixman_format)
            handles.append(handle)
            if layer.transform is not None:
                t = _Transform()
                t00, t01, t02, t10, t11, t12 = (ctypes.c_int32(v & 0xFFFFFFFF).value for v in layer.transform)
                for row, values in enumerate(((t00, t01, t02), (t10, t11, t12), (0, 0, 1 << 16))):
                    for col, v in enumerate(values):
                        t.matrix[row][col] = v
                lib.pixman_image_set_transform(handle, ctypes.byref(t))
            lib.pixman_image_set_filter(handle, layer.filter, None, 0)
            lib.pixman_image_set_repeat(handle, layer.repeat)
            if layer is mask:
                lib.pixman_image_set_component_alpha(handle, int(layer.component_alpha))
            layers.append(handle)
        s, m = layers
        h, w = dest.shape[:2]
        mx, my = mask.origin if mask is not None else (0, 0)
        lib.pixman_image_composite32(op, s, m, d, src.origin[0], src.origin[1], mx, my, 0, 0, w, h)
    finally:
        for handle in handles:
            lib.pixman_image_unref(handle)
