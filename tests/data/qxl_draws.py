"""Runs inside a guest whose qxl kernel driver is not loaded: drives the QXL device itself, as an old
Windows (XPDM) driver would, and submits the draw commands only such drivers send -- ROP3, strokes
and raster text -- with fills and pattern brushes around them. spice-server forwards each to
connected clients as that SPICE draw message, and draws them itself (spice-common's canvas) when
libvirt asks for a screenshot, so a test can compare a client's picture with the server's own.

Usage (root): python3 qxl_draws.py    -- prints "QXL-DRAWS done=N" when the device consumed all N.
Layouts: spice-protocol's qxl_dev.h; the I/O port protocol: QEMU's hw/display/qxl.c.
"""

import glob
import math
import mmap
import os
import struct
import sys
import time

WIDTH, HEIGHT = 800, 600
IO_NOTIFY_CMD, IO_RESET, IO_MEMSLOT_ADD, IO_CREATE_PRIMARY = 0, 5, 8, 12
CMD_DRAW = 1
DRAW_FILL, DRAW_ROP3, DRAW_STROKE, DRAW_TEXT = 1, 9, 10, 11
BRUSH_NONE, BRUSH_SOLID, BRUSH_PATTERN = 0, 1, 2
ROPD_PUT, ROPD_XOR = 1 << 3, 1 << 6
PATH_BEGIN, PATH_END, PATH_CLOSE, PATH_BEZIER = 1, 2, 8, 16
RASTER_A1, RASTER_A4, RASTER_A8 = 1, 2, 4
RING_ITEMS = 32


def find_qxl() -> str:
    for dev in glob.glob("/sys/bus/pci/devices/*"):
        with open(dev + "/vendor") as v, open(dev + "/device") as d:
            if v.read().strip() == "0x1b36" and d.read().strip() == "0x0100":
                return dev
    sys.exit("QXL-DRAWS error=no QXL device")


DEV = find_qxl()
if os.path.exists(DEV + "/driver"):
    sys.exit("QXL-DRAWS error=a driver owns the QXL device (boot with modprobe.blacklist=qxl)")
with open(DEV + "/enable", "w") as f:
    f.write("1")
with open(DEV + "/resource") as f:
    BARS = [tuple(int(v, 16) for v in line.split()) for line in f]
RAM_PHYS, RAM_SIZE = BARS[0][0], BARS[0][1] - BARS[0][0] + 1
IO_BASE = BARS[3][0]


def mapped(index: int, size: int) -> mmap.mmap:
    fd = os.open(f"{DEV}/resource{index}", os.O_RDWR | os.O_SYNC)
    return mmap.mmap(fd, size)


ROM = mapped(2, BARS[2][1] - BARS[2][0] + 1)
RAM = mapped(0, RAM_SIZE)
PORT = os.open("/dev/port", os.O_RDWR)
magic = struct.unpack_from("<I", ROM, 0)[0]
draw_area_offset, surface0_size, ram_header = struct.unpack_from("<III", ROM, 36)  # QXLRom's offsets
if magic != 0x4f525851:  # "QXRO"
    sys.exit("QXL-DRAWS error=bad ROM magic")
SLOT = ROM[64]                # slots_start: the first slot a guest may use
SLOT_SHIFT = 64 - ROM[67]      # slot_id_bits; the generation after a MEMSLOT_ADD is 0


def out(port: int, value: int) -> None:
    os.pwrite(PORT, bytes([value]), IO_BASE + port)


# QXLRam: magic, int_pending, int_mask, log_buf[4096], then the rings
CMD_RING = ram_header + 12 + 4096
RING_HEAD = struct.Struct("<IIIII")  # num_items, prod, notify_on_prod, cons, notify_on_cons
CURSOR_RING = CMD_RING + RING_HEAD.size + RING_ITEMS * 16
RELEASE_RING = CURSOR_RING + RING_HEAD.size + RING_ITEMS * 16
UPDATE_AREA = RELEASE_RING + RING_HEAD.size + 8 * 8
MEM_SLOT = UPDATE_AREA + 16 + 4
CREATE_SURFACE = MEM_SLOT + 16

_next = surface0_size  # command memory: after the primary surface's area, before the ram header


def alloc(data: bytes) -> int:
    """Place data in the device's RAM; its QXLPHYSICAL (slot, then the offset in the slot)."""
    global _next
    at = _next
    if at + len(data) > ram_header:
        sys.exit("QXL-DRAWS error=out of device memory")
    RAM[at:at + len(data)] = data
    _next = (at + len(data) + 7) & ~7
    return SLOT << SLOT_SHIFT | at


def chunk(data: bytes) -> bytes:
    return struct.pack("<IQQ", len(data), 0, 0) + data


def rect(top, left, bottom, right) -> bytes:
    return struct.pack("<iiii", top, left, bottom, right)


def brush(kind=BRUSH_SOLID, color=0, pat=0, x=0, y=0) -> bytes:
    if kind == BRUSH_PATTERN:
        return struct.pack("<IQii", kind, pat, x, y)
    return struct.pack("<II12x", kind, color)


NO_MASK = struct.pack("<BiiQ", 0, 0, 0, 0)


def bitmap(w: int, h: int, pixels: bytes) -> int:
    """A 32-bit top-down bitmap image (QXLImage: descriptor, bitmap, data chunk)."""
    data = alloc(chunk(pixels))
    image_id = 3 | (_next << 32)  # group DRIVER_DONT_CACHE
    return alloc(struct.pack("<QBBII", image_id, 0, 0, w, h) + struct.pack("<BBIIIQQ", 8, 4, w, h, w * 4, 0, data))


_release = 0


def drawable(kind: int, bbox: bytes, payload: bytes, clip: list[bytes] | None = None) -> int:
    global _release
    _release += 1
    clip_type, clip_data = 0, 0
    if clip:
        clip_type, clip_data = 1, alloc(struct.pack("<I", len(clip)) + chunk(b"".join(clip)))
    head = struct.pack("<QIBBB", _release, 0, 0, kind, 0) + rect(0, 0, 0, 0) + bbox + \
        struct.pack("<IQI", clip_type, clip_data, 0) + struct.pack("<iii", -1, -1, -1) + rect(0, 0, 0, 0) * 3
    return alloc(head + payload)


submitted = 0


def submit(draw: int) -> None:
    global submitted
    while True:
        _, prod, _, cons, _ = RING_HEAD.unpack_from(RAM, CMD_RING)
        if prod - cons < RING_ITEMS:
            break
        out(IO_NOTIFY_CMD, 0)
        time.sleep(0.01)
    item = CMD_RING + RING_HEAD.size + (prod % RING_ITEMS) * 16
    RAM[item:item + 16] = struct.pack("<QII", draw, CMD_DRAW, 0)
    struct.pack_into("<I", RAM, CMD_RING + 4, prod + 1)
    out(IO_NOTIFY_CMD, 0)
    submitted += 1


def fill(box: tuple, brush_bytes: bytes, rop=ROPD_PUT) -> None:
    submit(drawable(DRAW_FILL, rect(*box), brush_bytes + struct.pack("<H", rop) + NO_MASK))


def rop3(box: tuple, src: int, code: int, brush_bytes: bytes) -> None:
    t, left, b, r = box
    submit(drawable(DRAW_ROP3, rect(*box), struct.pack("<Q", src) + rect(0, 0, b - t, r - left) + brush_bytes
                    + struct.pack("<BB", code, 1) + NO_MASK))


def fix(v: float) -> int:
    return int(round(v * 16))


LINE_START_WITH_GAP, LINE_STYLED = 4, 8


def stroke(box: tuple, segments: list, brush_bytes: bytes, mode=ROPD_PUT, clip=None, dashes=(), gap=False) -> None:
    data = b"".join(struct.pack("<II", flags, len(points)) + b"".join(struct.pack("<ii", fix(x), fix(y))
                                                                       for x, y in points)
                    for flags, points in segments)
    path = alloc(struct.pack("<I", len(data)) + chunk(data))
    if dashes:  # a styled (dashed) line: its on and off lengths, 28.4 fixed point
        style = alloc(b"".join(struct.pack("<i", fix(d)) for d in dashes))
        flags = LINE_STYLED | (LINE_START_WITH_GAP if gap else 0)
        attr = struct.pack("<BBBBiiQ", flags, 0, 0, len(dashes), 0, 0, style)
    else:
        attr = struct.pack("<BBBBiiQ", 0, 0, 0, 0, 0, 0, 0)
    submit(drawable(DRAW_STROKE, rect(*box), struct.pack("<Q", path) + attr + brush_bytes
                    + struct.pack("<HH", mode, ROPD_PUT), clip))


def text(box: tuple, glyphs: list, flags: int, fore: bytes, back: bytes, back_area=(0, 0, 0, 0), clip=None) -> None:
    """glyphs: (x, y, origin_x, origin_y, width, height, bottom-up rows)."""
    data = b"".join(struct.pack("<iiiiHH", x, y, ox, oy, w, h) + rows for x, y, ox, oy, w, h, rows in glyphs)
    string = alloc(struct.pack("<IHH", len(data), len(glyphs), flags) + chunk(data))
    submit(drawable(DRAW_TEXT, rect(*box), struct.pack("<Q", string) + rect(*back_area) + fore + back
                    + struct.pack("<HH", ROPD_PUT, ROPD_PUT), clip))


def rng(seed: int):
    """A small deterministic generator (the guest's Python needs nothing but the standard library)."""
    state = seed
    while True:
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        yield state >> 8


def glyph_rows(width: int, height: int, bpp: int, seed: int, same_rows: bool = False) -> bytes:
    numbers = rng(seed)
    stride = (width * bpp + 7) // 8
    if same_rows:
        return bytes(next(numbers) & 0xFF for _ in range(stride)) * height
    return bytes(next(numbers) & 0xFF for _ in range(stride * height))


# --- the device: reset, one memory slot over its RAM bar, an 800x600 primary surface -------------------
out(IO_RESET, 0)
struct.pack_into("<QQ", RAM, MEM_SLOT, RAM_PHYS, RAM_PHYS + RAM_SIZE)
out(IO_MEMSLOT_ADD, SLOT)
RAM[draw_area_offset:draw_area_offset + WIDTH * HEIGHT * 4] = bytes(WIDTH * HEIGHT * 4)
struct.pack_into("<IIiIIIIIQ", RAM, CREATE_SURFACE, WIDTH, HEIGHT, WIDTH * 4, 32, 0, 1, 0, 0,
                 SLOT << SLOT_SHIFT | draw_area_offset)
out(IO_CREATE_PRIMARY, 0)

fill((0, 0, HEIGHT, WIDTH), brush(color=0x404040))

# --- ROP3: a checker pattern laid first (a pattern fill anchored on the surface), then each operation
checker = bitmap(8, 8, b"".join(struct.pack("<I", 0xE0C020 if (x // 4 + y // 4) % 2 else 0x2040A0)
                                for y in range(8) for x in range(8)))
stripes = bitmap(6, 5, b"".join(struct.pack("<I", 0x10F0F0 if (x + y) % 3 else 0xF01010)
                                for y in range(5) for x in range(6)))
source = bitmap(96, 64, b"".join(struct.pack("<I", (x * 2 + y) << 16 | (y * 4) << 8 | (255 - x * 2))
                                 for y in range(64) for x in range(96)))
fill((10, 10, 190, 790), brush(BRUSH_PATTERN, pat=checker, x=3, y=1))
# three-input operations only: spice-common's canvas has no handler for the 38 that need fewer inputs
# (a driver sends those as copy, fill or blend), and QEMU aborts when asked to draw one
codes = [0xB8, 0xE2, 0x96, 0xFB, 0x1D, 0x6A, 0x8E, 0x01, 0x16, 0x2B, 0x69, 0xD4, 0x47, 0x7E]
for i, code in enumerate(codes):
    top, left = 20 + (i // 7) * 84, 20 + (i % 7) * 110
    b = brush(BRUSH_PATTERN, pat=stripes, x=i, y=2 * i) if i % 3 == 2 else brush(color=(0x3F5FA7 * (i + 1)) & 0xFFFFFF)
    rop3((top, left, top + 64, left + 96), source, code, b)

# --- strokes: a star in every octant, a closed polygon, curves, XOR over them, clipped and off-surface lines
cx, cy = 200.0, 330.0
for k in range(24):
    a = 2 * math.pi * k / 24 + 0.05
    end = (cx + 95 * math.cos(a) + 0.3, cy + 95 * math.sin(a) - 0.4)
    stroke((200, 80, 460, 320), [(PATH_BEGIN | PATH_END, [(cx + 0.5, cy + 0.25), end])],
           brush(color=(0x40 + k * 8) << 16 | 0xC0 << 8 | (0xFF - k * 8)))
stroke((220, 340, 460, 560), [(PATH_BEGIN | PATH_END | PATH_CLOSE, [(350, 230), (540, 250.5), (520, 440),
                                                                  (360.7, 420), (450, 330)])], brush(color=0xFFFFFF))
stroke((220, 340, 460, 560), [(PATH_BEGIN, [(345, 450)]), (PATH_BEZIER, [(380, 200), (520, 600), (555, 240)]),
                              (PATH_END | PATH_BEZIER, [(560, 300), (430, 300), (350, 260)])], brush(color=0xFF8000))
stroke((200, 60, 470, 580), [(PATH_BEGIN | PATH_END, [(70, 460), (575, 205), (575, 465), (70, 210)])],
       brush(color=0x00FFFF), mode=ROPD_XOR)
stroke((300, 580, 460, 790), [(PATH_BEGIN | PATH_END, [(585, 300), (790, 455), (590, 455), (785, 305)])],
       brush(BRUSH_PATTERN, pat=checker, x=1, y=2))
stroke((0, 0, HEIGHT, WIDTH), [(PATH_BEGIN | PATH_END, [(-400, 480.5), (1300, 590)])], brush(color=0xFF00FF))
stroke((200, 600, 300, 800), [(PATH_BEGIN | PATH_END, [(600, 200), (800, 300)]), (PATH_BEGIN | PATH_END,
                              [(600, 300), (800, 200)])], brush(color=0x80FF80),
       clip=[rect(210, 610, 250, 700), rect(260, 700, 290, 790)])

# --- dashed strokes: patterns, joins, a closed path, XOR (each pixel once), a pattern brush, a gap first
dashed = [((5, 3), False, ROPD_PUT, brush(color=0xFFFF00), [(PATH_BEGIN | PATH_END, [(600, 330), (780, 345)])]),
          ((2, 2), False, ROPD_PUT, brush(color=0x00FF00), [(PATH_BEGIN | PATH_END, [(600, 350), (700, 440.5),
                                                                                       (780, 360)])]),
          ((7, 2, 1, 2), True, ROPD_PUT, brush(color=0xFF4040),
           [(PATH_BEGIN | PATH_END | PATH_CLOSE, [(610, 370), (690, 372), (650, 430)])]),
          ((4, 4), False, ROPD_XOR, brush(color=0x00FFFF), [(PATH_BEGIN | PATH_END, [(595, 335), (785, 435),
                                                                                       (600, 435), (770, 330)])]),
          ((9, 3), False, ROPD_PUT, brush(BRUSH_PATTERN, pat=checker, x=2, y=1),
           [(PATH_BEGIN | PATH_END, [(720, 380), (720.5, 450), (790, 450)])])]
for dashes, gap, mode, b, segments in dashed:
    stroke((320, 590, 460, 795), segments, b, mode=mode, dashes=dashes, gap=gap)

# --- text: 1-, 4- and 8-bit glyphs along baselines, a back area, a pattern fore brush, a clip
a1 = [(40 + 11 * i, 500, 0, -12, 9, 12, glyph_rows(9, 12, 1, i)) for i in range(20)]
text((486, 30, 502, 280), a1, RASTER_A1, brush(color=0xFFFF00), brush(BRUSH_NONE))
a4 = [(300 + 12 * i, 500, 1, -10, 11, 13, glyph_rows(11, 13, 4, 100 + i)) for i in range(16)]
text((480, 290, 504, 500), a4, RASTER_A4, brush(color=0xF0F0F0), brush(color=0x202080), back_area=(484, 295, 500, 495))
# spice-common draws 8-bit glyphs a row off (it starts reading one row past a glyph's bits: its own
# "untested path" warning says so), so these repeat one row: the shift then shows only in the top row
a8 = [(520 + 13 * i, 500, 0, -14, 14, 14, glyph_rows(14, 14, 8, 200 + i, same_rows=True)) for i in range(18)]
text((486, 520, 500, 780), a8, RASTER_A8, brush(BRUSH_PATTERN, pat=checker, x=5, y=7), brush(BRUSH_NONE))
a1b = [(40 + 10 * i, 560, -1, -11, 12, 11, glyph_rows(12, 11, 1, 300 + i)) for i in range(70)]
text((548, 30, 560, 760), a1b, RASTER_A1, brush(color=0x00FF80), brush(BRUSH_NONE),
     clip=[rect(548, 30, 560, 300), rect(548, 400, 555, 760)])

deadline = time.monotonic() + 120
while True:
    _, prod, _, cons, _ = RING_HEAD.unpack_from(RAM, CMD_RING)
    if cons == prod:
        break
    if time.monotonic() > deadline:
        sys.exit(f"QXL-DRAWS error=the device consumed {cons} of {prod} commands")
    out(IO_NOTIFY_CMD, 0)
    time.sleep(0.05)
print(f"QXL-DRAWS done={submitted}")
