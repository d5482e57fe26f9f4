"""QUIC, SPICE's lossless photographic codec (SFALIC-based), decoded.

Facts from spice-common's `common/quic*.c` (the encoder QEMU's spice-server
uses): a stream of 32-bit little-endian words, read most significant bit
first; a header (magic "QUIC", version 0, image type, width, height); then
rows. Each channel value is predicted from its left and upper neighbours,
the residual is mapped to a non-negative "L" value and Golomb-Rice coded
with a code chosen per context bucket; the buckets' statistics adapt at
pseudo-random intervals (a fixed table drives them, so the decoder must step
exactly as the encoder did). Runs of repeated pixels are run-length coded.

`decode_quic(data)` returns a `Decoded` image (BGRX bytes, as the LZ
decoders do) or raises `ProtocolError`; hostile input can neither read past
its data nor write past the image.
"""

from __future__ import annotations

import time

import numpy as np

from spicectl.errors import ProtocolError, TimeoutExpired
from spicectl.spice.codecs import accel
from spicectl.spice.codecs.lz import MAX_PIXELS, Decoded
from spicectl.spice.pixels import widen5

MAGIC = int.from_bytes(b"QUIC", "little")
VERSION = 0
TYPE_GRAY, TYPE_RGB16, TYPE_RGB24, TYPE_RGB32, TYPE_RGBA = 1, 2, 3, 4, 5

MAX_CODEWORD = 26          # DEFmaxclen
EVOL_TRIGGERS = (110, 550, 900, 800, 550, 400, 350, 250, 140, 160, 140)  # besttrigtab for DEFevol 3
WM_MAX = 6                 # DEFwmimax: the wait mask grows to 2**6 - 1
WM_NEXT = 2048             # DEFwminext: symbols between wait mask steps
# melcode (run length) states: the expected run is 2**MELC_LEN[state]
MELC_LEN = (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15)
# the encoder's pseudo-random model-update schedule (tabrand_chaos): a protocol constant
CHAOS = (
    0x02c57542, 0x35427717, 0x2f5a2153, 0x9244f155, 0x7bd26d07, 0x354c6052, 0x57329b28, 0x2993868e,
    0x6cd8808c, 0x147b46e0, 0x99db66af, 0xe32b4cac, 0x1b671264, 0x9d433486, 0x62a4c192, 0x06089a4b,
    0x9e3dce44, 0xdaabee13, 0x222425ea, 0xa46f331d, 0xcd589250, 0x8bb81d7f, 0xc8b736b9, 0x35948d33,
    0xd7ac7fd0, 0x5fbe2803, 0x2cfbc105, 0x013dbc4e, 0x7a37820f, 0x39f88e9e, 0xedd58794, 0xc5076689,
    0xfcada5a4, 0x64c2f46d, 0xb3ba3243, 0x8974b4f9, 0x5a05aebd, 0x20afcd00, 0x39e2b008, 0x88a18a45,
    0x600bde29, 0xf3971ace, 0xf37b0a6b, 0x7041495b, 0x70b707ab, 0x06beffbb, 0x4206051f, 0xe13c4ee3,
    0xc1a78327, 0x91aa067c, 0x8295f72a, 0x732917a6, 0x1d871b4d, 0x4048f136, 0xf1840e7e, 0x6a6048c1,
    0x696cb71a, 0x7ff501c3, 0x0fc6310b, 0x57e0f83d, 0x8cc26e74, 0x11a525a2, 0x946934c7, 0x7cd888f0,
    0x8f9d8604, 0x4f86e73b, 0x04520316, 0xdeeea20c, 0xf1def496, 0x67687288, 0xf540c5b2, 0x22401484,
    0x3478658a, 0xc2385746, 0x01979c2c, 0x5dad73c8, 0x0321f58b, 0xf0fedbee, 0x92826ddf, 0x284bec73,
    0x5b1a1975, 0x03df1e11, 0x20963e01, 0xa17cf12b, 0x740d776e, 0xa7a6bf3c, 0x01b5cce4, 0x1118aa76,
    0xfc6fac0a, 0xce927e9b, 0x00bf2567, 0x806f216c, 0xbca69056, 0x795bd3e9, 0xc9dc4557, 0x8929b6c2,
    0x789d52ec, 0x3f3fbf40, 0xb9197368, 0xa38c15b5, 0xc3b44fa8, 0xca8333b0, 0xb7e8d590, 0xbe807feb,
    0xbf5f8360, 0xd99e2f5c, 0x372928e1, 0x7c757c4c, 0x0db5b154, 0xc01ede02, 0x1fc86e78, 0x1f3985be,
    0xb4805c77, 0x00c880fa, 0x974c1b12, 0x35ab0214, 0xb2dc840d, 0x5b00ae37, 0xd313b026, 0xb260969d,
    0x7f4c8879, 0x1734c4d3, 0x49068631, 0xb9f6a021, 0x6b863e6f, 0xcee5debf, 0x29f8c9fb, 0x53dd6880,
    0x72b61223, 0x1f67a9fd, 0x0a0f6993, 0x13e59119, 0x11cca12e, 0xfe6b6766, 0x16b6effc, 0x97918fc4,
    0xc2b8a563, 0x94f2f741, 0x0bfa8c9a, 0xd1537ae8, 0xc1da349c, 0x873c60ca, 0x95005b85, 0x9b5c080e,
    0xbc8abbd9, 0xe1eab1d2, 0x6dac9070, 0x4ea9ebf1, 0xe0cf30d4, 0x1ef5bd7b, 0xd161043e, 0x5d2fa2e2,
    0xff5d3cae, 0x86ed9f87, 0x2aa1daa1, 0xbd731a34, 0x9e8f4b22, 0xb1c2c67a, 0xc21758c9, 0xa182215d,
    0xccb01948, 0x8d168df7, 0x04238cfe, 0x368c3dbc, 0x0aeadca5, 0xbad21c24, 0x0a71fee5, 0x9fc5d872,
    0x54c152c6, 0xfc329483, 0x6783384a, 0xeddb3e1c, 0x65f90e30, 0x884ad098, 0xce81675a, 0x4b372f7d,
    0x68bf9a39, 0x43445f1e, 0x40f8d8cb, 0x90d5acb6, 0x4cd07282, 0x349eeb06, 0x0c9d5332, 0x520b24ef,
    0x80020447, 0x67976491, 0x2f931ca3, 0xfe9b0535, 0xfcd30220, 0x61a9e6cc, 0xa487d8d7, 0x3f7c5dd1,
    0x7d0127c5, 0x48f51d15, 0x60dea871, 0xc9a91cb7, 0x58b53bb3, 0x9d5e0b2d, 0x624a78b4, 0x30dbee1b,
    0x9bdf22e7, 0x1df5c299, 0x2d5643a7, 0xf4dd35ff, 0x03ca8fd6, 0x53b47ed8, 0x6f2c19aa, 0xfeb0c1f4,
    0x49e54438, 0x2f2577e6, 0xbf876969, 0x72440ea9, 0xfa0bafb8, 0x74f5b3a0, 0x7dd357cd, 0x89ce1358,
    0x6ef2cdda, 0x1e7767f3, 0xa6be9fdb, 0x4f5f88f8, 0xba994a3a, 0x08ca6b65, 0xe0893818, 0x9e00a16a,
    0xf42bfc8f, 0x9972eedc, 0x749c8b51, 0x32c05f5e, 0xd706805f, 0x6bfbb7cf, 0xd9210a10, 0x31a1db97,
    0x923a9559, 0x37a7a1f6, 0x059f8861, 0xca493e62, 0x65157e81, 0x8f6467dd, 0xab85ff9f, 0x9331aff2,
    0x8616b9f5, 0xedbd5695, 0xee7e29b1, 0x313ac44f, 0xb903112f, 0x432ef649, 0xdc0a36c0, 0x61cf2bba,
    0x81474925, 0xa8b6c7ad, 0xee5931de, 0xb2f8158d, 0x59fb7409, 0x2e3dfaed, 0x9af25a3f, 0xe1fed4d5,)


class _Family:
    """The Golomb-Rice code family for `bpc` bits a channel value (8, or 5 for RGB16)."""

    def __init__(self, bpc: int) -> None:
        self.bpc = bpc
        self.mask = (1 << bpc) - 1
        levels = 1 << bpc
        self.n_gr: list[int] = []          # values coded with the plain GR code, per code number l
        self.not_gr_len: list[int] = []    # the escape codeword's length
        self.not_gr_suffix_mask: list[int] = []
        self.prefix_mask: list[int] = []   # a window above this starts with a GR codeword
        self.code_len: list[list[int]] = []
        for code in range(bpc):
            prefix = min(MAX_CODEWORD - bpc, (1 << (bpc - code)) - 1)
            n_gr = prefix << code
            suffix = (levels - n_gr - 1).bit_length()  # ceil(log2(escaped values))
            self.n_gr.append(n_gr)
            self.not_gr_len.append(prefix + suffix)
            self.not_gr_suffix_mask.append((1 << suffix) - 1)
            self.prefix_mask.append((1 << (32 - prefix)) - 1)
            self.code_len.append([(n >> code) + code + 1 if n < n_gr else prefix + suffix for n in range(256)])
        # the residual's L value back to U: even L is +L/2, odd L is -(L+1)/2, modulo 2**bpc
        self.l2u = [(self.mask - (s >> 1)) if s & 1 else (s >> 1) for s in range(levels)] + [0] * (256 - levels)
        # context buckets: 0 | 1-2 | 3-6 | 7-14 | ... the last one reaching the top level
        self.bucket = [min((v + 1).bit_length() - 1, bpc - 1) for v in range(256)]
        self.buckets = bpc  # number of buckets, which equals bpc for DEFevol 3


FAMILY_8, FAMILY_5 = _Family(8), _Family(5)


class _State:
    """What the encoder's CommonState holds: the model-update schedule and the run-length coder."""

    __slots__ = ("waitcnt", "seed", "wmidx", "wmileft", "trigger", "melcstate", "melclen", "melcorder")

    def __init__(self) -> None:
        self.waitcnt = 0
        self.seed = 0xFF
        self.wmidx = 0
        self.wmileft = WM_NEXT
        self.trigger = EVOL_TRIGGERS[0]
        self.melcstate = 0
        self.melclen = MELC_LEN[0]
        self.melcorder = 1 << self.melclen

    def tabrand(self) -> int:
        self.seed = (self.seed + 1) & 0xFF
        return CHAOS[self.seed]

    def next_wait_mask(self) -> None:
        self.wmidx += 1
        self.trigger = EVOL_TRIGGERS[min(self.wmidx, 10)]
        self.wmileft = WM_NEXT


class _Bits:
    """The stream's bits, most significant first within each little-endian 32-bit word."""

    def __init__(self, data: bytes) -> None:
        words = len(data) // 4
        # byte-swapped into one big-endian string, plus zeros so a window near the end reads zeros
        self.buf = np.frombuffer(data, "<u4", words).astype(">u4").tobytes() + bytes(8)
        self.limit = words * 32
        self.pos = 0

    def window(self) -> int:
        p = self.pos
        q = p >> 3
        return (int.from_bytes(self.buf[q:q + 5], "big") >> (8 - (p & 7))) & 0xFFFFFFFF

    def take32(self) -> int:
        value = self.window()
        self.pos += 32
        return value

    def check(self) -> None:
        if self.pos > self.limit:
            raise ProtocolError("QUIC image: the data ends before the image does")


class _Channel:
    def __init__(self, family: _Family, width: int) -> None:
        self.family = family
        self.counters = [[0] * family.bpc for _ in range(family.buckets)]
        self.best = [family.bpc - 1] * family.buckets
        self.corr = [0] * (width + 1)  # correlate_row, shifted by one: corr[0] is the row's [-1]


class _Codec:
    """One coded plane group: the three colour channels sharing a state, or one alpha/grey channel."""

    def __init__(self, bits: _Bits, family: _Family, channels: int, width: int) -> None:
        self.bits = bits
        self.family = family
        self.channels = [_Channel(family, width) for _ in range(channels)]
        self.state = _State()
        self.width = width

    # --- symbols -----------------------------------------------------------------------
    def _golomb(self, ch: _Channel, prev_corr: int) -> int:
        f = self.family
        code = ch.best[f.bucket[prev_corr]]
        bits = self.bits.window()
        if bits > f.prefix_mask[code]:
            zeros = 32 - bits.bit_length()
            length = zeros + 1 + code
            value = (zeros << code) | ((bits >> (32 - length)) & ((1 << code) - 1))
        else:
            length = f.not_gr_len[code]
            value = f.n_gr[code] + ((bits >> (32 - length)) & f.not_gr_suffix_mask[code])
        self.bits.pos += length
        return value & 0xFF

    def _update(self, index: int) -> None:
        """Adapt each channel's bucket of pixel `index` to the value just coded there."""
        f = self.family
        trigger = self.state.trigger
        for ch in self.channels:
            value = ch.corr[index + 1]
            b = f.bucket[ch.corr[index]]
            counters = ch.counters[b]
            best = f.bpc - 1
            best_len = counters[best] = counters[best] + f.code_len[best][value]
            for i in range(f.bpc - 2, -1, -1):
                length = counters[i] = counters[i] + f.code_len[i][value]
                if length < best_len:
                    best, best_len = i, length
            ch.best[b] = best
            if best_len > trigger:
                for i in range(f.bpc):
                    counters[i] >>= 1

    def _run(self) -> int:
        """A run length (the melcode of spice-common's decode_run)."""
        st, bits = self.state, self.bits
        run = 0
        while True:
            ones = 8 - ((bits.window() >> 24) ^ 0xFF).bit_length()  # leading ones, up to 8
            for _ in range(ones):
                run += st.melcorder
                if st.melcstate < len(MELC_LEN) - 1:
                    st.melcstate += 1
                    st.melclen = MELC_LEN[st.melcstate]
                    st.melcorder = 1 << st.melclen
            if ones != 8:
                bits.pos += ones + 1
                break
            bits.pos += 8
            if bits.pos > bits.limit:
                raise ProtocolError("QUIC image: a run goes past the data")
        if st.melclen:
            run += bits.window() >> (32 - st.melclen)
            bits.pos += st.melclen
        if st.melcstate:
            st.melcstate -= 1
            st.melclen = MELC_LEN[st.melcstate]
            st.melcorder = 1 << st.melclen
        return run

    # --- rows ----------------------------------------------------------------------------
    def row(self, cur: list[list[int]], prev: list[list[int]] | None) -> None:
        """Decode one row into `cur` (one list per channel); `prev` is the row above, or None."""
        st = self.state
        for ch in self.channels:
            ch.corr[0] = ch.corr[1] if prev is not None else 0
        width, pos = self.width, 0
        while st.wmidx < WM_MAX and st.wmileft <= width:
            if st.wmileft:
                self._segment(cur, prev, pos, pos + st.wmileft)
                width -= st.wmileft
                pos += st.wmileft
            st.next_wait_mask()
        if width:
            self._segment(cur, prev, pos, pos + width)
            if st.wmidx < WM_MAX:
                st.wmileft -= width
        self.bits.check()

    def _pixel(self, cur: list[list[int]], prev: list[list[int]] | None, i: int) -> None:
        f = self.family
        mask, l2u = f.mask, f.l2u
        for c, ch in enumerate(self.channels):
            value = self._golomb(ch, ch.corr[i])
            ch.corr[i + 1] = value
            row = cur[c]
            if prev is None:
                row[i] = (l2u[value] + row[i - 1]) & mask if i else l2u[value]
            elif i:
                row[i] = (l2u[value] + ((row[i - 1] + prev[c][i]) >> 1)) & mask
            else:
                row[i] = (l2u[value] + prev[c][0]) & mask

    def _run_ahead(self, cur: list[list[int]], prev: list[list[int]], i: int, run_index: int) -> bool:
        """The encoder codes a run here: the row above repeats, and so did the last two pixels."""
        if run_index == i or i <= 2:
            return False
        return all(p[i - 1] == p[i] for p in prev) and all(r[i - 1] == r[i - 2] for r in cur)

    def _segment(self, cur: list[list[int]], prev: list[list[int]] | None, i: int, end: int) -> None:
        st = self.state
        wait_mask = (1 << st.wmidx) - 1
        if i == 0:
            self._pixel(cur, prev, 0)
            if st.waitcnt:
                st.waitcnt -= 1
            else:
                st.waitcnt = st.tabrand() & wait_mask
                self._update(0)
            i = 1
        stop = i + st.waitcnt
        run_index = 0
        while True:
            in_run = False
            while stop < end and not in_run:
                while i <= stop:
                    if prev is not None and self._run_ahead(cur, prev, i, run_index):
                        in_run = True
                        break
                    self._pixel(cur, prev, i)
                    i += 1
                else:
                    self._update(stop)
                    stop = i + (st.tabrand() & wait_mask)
            if not in_run:
                while i < end:
                    if prev is not None and self._run_ahead(cur, prev, i, run_index):
                        in_run = True
                        break
                    self._pixel(cur, prev, i)
                    i += 1
                if not in_run:
                    st.waitcnt = stop - end
                    return
            assert prev is not None
            st.waitcnt = stop - i
            run_index = i
            run_end = i + self._run()
            if run_end > end:
                raise ProtocolError(f"QUIC image: a run of {run_end - i} pixels goes past its row")
            for row in cur:
                row[i:run_end] = [row[i - 1]] * (run_end - i)
            i = run_end
            if i == end:
                return
            stop = i + st.waitcnt


def decode_quic(data: bytes, deadline: float | None = None) -> Decoded:
    """One QUIC image; past `deadline` (a time.monotonic()) the decode stops with TimeoutExpired: a
    large image takes seconds in pure Python, and the command's time is the user's."""
    bits = _Bits(data)
    if bits.limit < 5 * 32:
        raise ProtocolError("QUIC image: truncated header")
    magic, version, kind, width, height = (bits.take32() for _ in range(5))
    if magic != MAGIC:
        raise ProtocolError(f"QUIC image: bad magic {magic:#x}")
    if version != VERSION:
        raise ProtocolError(f"QUIC image: version {version:#x} is not {VERSION}")
    if not (0 < width and 0 < height and width * height <= MAX_PIXELS):
        raise ProtocolError(f"QUIC image of {width}x{height} is out of bounds")
    if kind not in (TYPE_GRAY, TYPE_RGB16, TYPE_RGB24, TYPE_RGB32, TYPE_RGBA):
        raise ProtocolError(f"QUIC image: unknown type {kind}")
    # every symbol takes a bit at least: the first row is coded whole, and every other row codes three
    # pixels before a run can start; a stream shorter than that is refused before the image is allocated
    channels = {TYPE_GRAY: 1, TYPE_RGBA: 4}.get(kind, 3)
    if bits.limit - bits.pos < channels * (width + 3 * (height - 1)):
        raise ProtocolError(f"QUIC image: too little data for {width}x{height}")
    if accel.native is not None:
        try:
            pixels = accel.native.quic(data, kind, width, height, -1.0 if deadline is None else deadline)
        except accel.FAILURES as e:
            raise accel.failure(e) from None
        return Decoded(width, height, pixels, width, has_alpha=kind == TYPE_RGBA)
    out = np.zeros((height, width, 4), np.uint8)
    if kind == TYPE_GRAY:
        _decode_planes(bits, FAMILY_8, 1, width, height, out, (0, 1, 2), deadline)
    else:
        family = FAMILY_5 if kind == TYPE_RGB16 else FAMILY_8
        colour = _Codec(bits, family, 3, width)
        alpha = _Codec(bits, FAMILY_8, 1, width) if kind == TYPE_RGBA else None
        prev_c: list[list[int]] | None = None
        prev_a: list[list[int]] | None = None
        for y in range(height):
            _check(deadline, y)
            cur_c = [[0] * width for _ in range(3)]
            colour.row(cur_c, prev_c)
            for target, plane in ((2, cur_c[0]), (1, cur_c[1]), (0, cur_c[2])):  # r, g, b into BGRX
                values = np.array(plane, np.uint8)
                out[y, :, target] = widen5(values) if family is FAMILY_5 else values
            if alpha is not None:
                cur_a = [[0] * width]
                alpha.row(cur_a, prev_a)
                out[y, :, 3] = cur_a[0]
                prev_a = cur_a
            prev_c = cur_c
    return Decoded(width, height, bytearray(out.tobytes()), width, has_alpha=kind == TYPE_RGBA)


def _check(deadline: float | None, y: int) -> None:
    if deadline is not None and not y & 7 and time.monotonic() > deadline:
        raise TimeoutExpired(f"QUIC image: still decoding at row {y} when the command's time ran out")


def _decode_planes(bits: _Bits, family: _Family, channels: int, width: int, height: int, out: np.ndarray,
                   targets: tuple[int, ...], deadline: float | None) -> None:
    codec = _Codec(bits, family, channels, width)
    prev: list[list[int]] | None = None
    for y in range(height):
        _check(deadline, y)
        cur = [[0] * width]
        codec.row(cur, prev)
        for t in targets:
            out[y, :, t] = cur[0]
        prev = cur
