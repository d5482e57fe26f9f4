/* Compiled twins of the hot loops in quic.py and lz.py: the QUIC rows, and one LZ or GLZ pass.
 *
 * The Python modules are the reference: they parse and check every header, size the output and
 * keep the GLZ window; these functions only run the loops, and must give byte-identical output and
 * fail where the Python fails, with the same message (tests/unit/test_accel.py decodes recordings
 * and hostile streams with both). Failures are ValueError (the data is wrong) or TimeoutError (the
 * caller's deadline passed); the Python wrappers turn them into ProtocolError / TimeoutExpired.
 *
 * Every read is checked against the input's length and every write against the output's, in
 * 64-bit arithmetic, before it happens: the input comes from an untrusted server.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* ----------------------------------------------------------------------------------------------
 * QUIC (facts and names as in quic.py)
 */

#define MAX_CODEWORD 26
#define WM_MAX 6
#define WM_NEXT 2048
#define MELC_STATES 32

static const unsigned EVOL_TRIGGERS[11] = {110, 550, 900, 800, 550, 400, 350, 250, 140, 160, 140};
static const unsigned MELC_LEN[MELC_STATES] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                               4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static uint32_t CHAOS[256]; /* filled from quic.CHAOS at first use: the table is declared once */
static int chaos_ready;

typedef struct {
    unsigned bpc, mask;
    unsigned n_gr[8], not_gr_len[8], not_gr_suffix_mask[8];
    uint32_t prefix_mask[8];
    uint8_t code_len[8][256];
    uint8_t l2u[256];
    uint8_t bucket[256];
} Family;

static Family FAMILY_8, FAMILY_5;

static unsigned bit_length(uint64_t v) {
    return v ? 64 - (unsigned)__builtin_clzll(v) : 0;
}

static void family_init(Family *f, unsigned bpc) {
    unsigned levels = 1u << bpc;
    f->bpc = bpc;
    f->mask = levels - 1;
    for (unsigned code = 0; code < bpc; code++) {
        unsigned prefix = (1u << (bpc - code)) - 1;
        if (prefix > MAX_CODEWORD - bpc)
            prefix = MAX_CODEWORD - bpc;
        unsigned n_gr = prefix << code;
        unsigned suffix = bit_length(levels - n_gr - 1);
        f->n_gr[code] = n_gr;
        f->not_gr_len[code] = prefix + suffix;
        f->not_gr_suffix_mask[code] = (1u << suffix) - 1;
        f->prefix_mask[code] = (uint32_t)((1ull << (32 - prefix)) - 1);
        for (unsigned n = 0; n < 256; n++)
            f->code_len[code][n] = (uint8_t)(n < n_gr ? (n >> code) + code + 1 : prefix + suffix);
    }
    for (unsigned s = 0; s < 256; s++) {
        f->l2u[s] = (uint8_t)(s >= levels ? 0 : (s & 1) ? f->mask - (s >> 1) : (s >> 1));
        unsigned b = bit_length(s + 1) - 1;
        f->bucket[s] = (uint8_t)(b < bpc - 1 ? b : bpc - 1);
    }
}

typedef struct {
    const uint8_t *data;  /* the whole stream; words are little-endian, bits read MSB first */
    uint64_t words;
    uint64_t limit;       /* bits */
    uint64_t pos;         /* bits; may run past limit: reads there see zeros, rows check at their end */
} Bits;

static inline uint32_t word_at(const Bits *b, uint64_t w) {
    if (w >= b->words)
        return 0;
    const uint8_t *p = b->data + 4 * w;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint32_t window32(const Bits *b) {
    uint64_t w = b->pos >> 5;
    unsigned shift = (unsigned)(b->pos & 31);
    uint64_t pair = (uint64_t)word_at(b, w) << 32 | word_at(b, w + 1);
    return (uint32_t)(pair >> (32 - shift));
}

typedef struct {
    unsigned counters[8][8]; /* [bucket][code] */
    unsigned best[8];
    uint8_t *corr;           /* width + 1 entries: corr[0] is the row's [-1] */
} Channel;

typedef struct {
    Bits *bits;
    const Family *f;
    unsigned n_channels;
    Channel ch[3];
    uint64_t width;
    /* CommonState */
    uint64_t waitcnt;
    unsigned seed, wmidx, trigger, melcstate, melclen;
    uint64_t wmileft, melcorder;
} Codec;

/* set when a row fails, to the message quic.py gives (per thread: decodes run without the GIL) */
static _Thread_local const char *quic_error;
static _Thread_local char quic_message[160];

static int codec_init(Codec *c, Bits *bits, const Family *f, unsigned n_channels, uint64_t width) {
    memset(c, 0, sizeof *c);
    c->bits = bits;
    c->f = f;
    c->n_channels = n_channels;
    c->width = width;
    for (unsigned k = 0; k < n_channels; k++) {
        c->ch[k].corr = calloc(width + 1, 1);
        if (!c->ch[k].corr)
            return -1;
        for (unsigned b = 0; b < f->bpc; b++)
            c->ch[k].best[b] = f->bpc - 1;
    }
    c->seed = 0xFF;
    c->wmileft = WM_NEXT;
    c->trigger = EVOL_TRIGGERS[0];
    c->melclen = MELC_LEN[0];
    c->melcorder = 1ull << c->melclen;
    return 0;
}

static void codec_free(Codec *c) {
    for (unsigned k = 0; k < c->n_channels; k++)
        free(c->ch[k].corr);
}

static inline uint32_t tabrand(Codec *c) {
    c->seed = (c->seed + 1) & 0xFF;
    return CHAOS[c->seed];
}

static inline unsigned golomb(Codec *c, Channel *ch, uint8_t prev_corr) {
    const Family *f = c->f;
    unsigned code = ch->best[f->bucket[prev_corr]];
    uint32_t bits = window32(c->bits);
    unsigned length, value;
    if (bits > f->prefix_mask[code]) {
        unsigned zeros = bits ? (unsigned)__builtin_clz(bits) : 32;
        length = zeros + 1 + code;
        value = (zeros << code) | ((bits >> (32 - length)) & ((1u << code) - 1));
    } else {
        length = f->not_gr_len[code];
        value = f->n_gr[code] + ((bits >> (32 - length)) & f->not_gr_suffix_mask[code]);
    }
    c->bits->pos += length;
    return value & 0xFF;
}

static void update(Codec *c, uint64_t index) {
    const Family *f = c->f;
    for (unsigned k = 0; k < c->n_channels; k++) {
        Channel *ch = &c->ch[k];
        unsigned value = ch->corr[index + 1];
        unsigned b = f->bucket[ch->corr[index]];
        unsigned *counters = ch->counters[b];
        unsigned best = f->bpc - 1;
        unsigned best_len = counters[best] += f->code_len[best][value];
        for (int i = (int)f->bpc - 2; i >= 0; i--) {
            unsigned length = counters[i] += f->code_len[i][value];
            if (length < best_len) {
                best = (unsigned)i;
                best_len = length;
            }
        }
        ch->best[b] = best;
        if (best_len > c->trigger)
            for (unsigned i = 0; i < f->bpc; i++)
                counters[i] >>= 1;
    }
}

static inline void melc_step(Codec *c, unsigned state) {
    c->melcstate = state;
    c->melclen = MELC_LEN[state];
    c->melcorder = 1ull << c->melclen;
}

/* a run length; returns -1 (with quic_error set) when the run goes past the data */
static int64_t run_length(Codec *c) {
    Bits *bits = c->bits;
    uint64_t run = 0;
    for (;;) {
        unsigned top = window32(bits) >> 24;
        unsigned ones = 8 - bit_length(top ^ 0xFF);
        for (unsigned k = 0; k < ones; k++) {
            run += c->melcorder;
            if (c->melcstate < MELC_STATES - 1)
                melc_step(c, c->melcstate + 1);
        }
        if (ones != 8) {
            bits->pos += ones + 1;
            break;
        }
        bits->pos += 8;
        if (bits->pos > bits->limit) {
            quic_error = "QUIC image: a run goes past the data";
            return -1;
        }
    }
    if (c->melclen) {
        run += window32(bits) >> (32 - c->melclen);
        bits->pos += c->melclen;
    }
    if (c->melcstate)
        melc_step(c, c->melcstate - 1);
    return (int64_t)run;
}

/* cur/prev: one row per channel; prev is NULL on the first row */
static inline void pixel(Codec *c, uint8_t **cur, uint8_t **prev, uint64_t i) {
    const Family *f = c->f;
    for (unsigned k = 0; k < c->n_channels; k++) {
        Channel *ch = &c->ch[k];
        unsigned value = golomb(c, ch, ch->corr[i]);
        ch->corr[i + 1] = (uint8_t)value;
        uint8_t *row = cur[k];
        unsigned u = f->l2u[value];
        if (!prev)
            row[i] = (uint8_t)(i ? (u + row[i - 1]) & f->mask : u);
        else if (i)
            row[i] = (uint8_t)((u + ((row[i - 1] + prev[k][i]) >> 1)) & f->mask);
        else
            row[i] = (uint8_t)((u + prev[k][0]) & f->mask);
    }
}

static inline int run_ahead(const Codec *c, uint8_t **cur, uint8_t **prev, uint64_t i, uint64_t run_index) {
    if (run_index == i || i <= 2)
        return 0;
    for (unsigned k = 0; k < c->n_channels; k++)
        if (prev[k][i - 1] != prev[k][i])
            return 0;
    for (unsigned k = 0; k < c->n_channels; k++)
        if (cur[k][i - 1] != cur[k][i - 2])
            return 0;
    return 1;
}

static int segment(Codec *c, uint8_t **cur, uint8_t **prev, uint64_t i, uint64_t end) {
    uint32_t wait_mask = (1u << c->wmidx) - 1;
    if (i == 0) {
        pixel(c, cur, prev, 0);
        if (c->waitcnt) {
            c->waitcnt--;
        } else {
            c->waitcnt = tabrand(c) & wait_mask;
            update(c, 0);
        }
        i = 1;
    }
    uint64_t stop = i + c->waitcnt;
    uint64_t run_index = 0;
    for (;;) {
        int in_run = 0;
        while (stop < end && !in_run) {
            while (i <= stop) {
                if (prev && run_ahead(c, cur, prev, i, run_index)) {
                    in_run = 1;
                    break;
                }
                pixel(c, cur, prev, i);
                i++;
            }
            if (!in_run) {
                update(c, stop);
                stop = i + (tabrand(c) & wait_mask);
            }
        }
        if (!in_run) {
            while (i < end) {
                if (prev && run_ahead(c, cur, prev, i, run_index)) {
                    in_run = 1;
                    break;
                }
                pixel(c, cur, prev, i);
                i++;
            }
            if (!in_run) {
                c->waitcnt = stop - end;
                return 0;
            }
        }
        c->waitcnt = stop - i;
        run_index = i;
        int64_t run = run_length(c);
        if (run < 0)
            return -1;
        if ((uint64_t)run > end - i) {
            snprintf(quic_message, sizeof quic_message, "QUIC image: a run of %lld pixels goes past its row",
                     (long long)run);
            quic_error = quic_message;
            return -1;
        }
        uint64_t run_end = i + (uint64_t)run;
        for (unsigned k = 0; k < c->n_channels; k++)
            memset(cur[k] + i, cur[k][i - 1], run_end - i);
        i = run_end;
        if (i == end)
            return 0;
        stop = i + c->waitcnt;
    }
}

static int quic_row(Codec *c, uint8_t **cur, uint8_t **prev) {
    for (unsigned k = 0; k < c->n_channels; k++)
        c->ch[k].corr[0] = prev ? c->ch[k].corr[1] : 0;
    uint64_t width = c->width, pos = 0;
    while (c->wmidx < WM_MAX && c->wmileft <= width) {
        if (c->wmileft) {
            if (segment(c, cur, prev, pos, pos + c->wmileft))
                return -1;
            width -= c->wmileft;
            pos += c->wmileft;
        }
        c->wmidx++;
        c->trigger = EVOL_TRIGGERS[c->wmidx < 10 ? c->wmidx : 10];
        c->wmileft = WM_NEXT;
    }
    if (width) {
        if (segment(c, cur, prev, pos, pos + width))
            return -1;
        if (c->wmidx < WM_MAX)
            c->wmileft -= width;
    }
    if (c->bits->pos > c->bits->limit) {
        quic_error = "QUIC image: the data ends before the image does";
        return -1;
    }
    return 0;
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint8_t widen5(uint8_t v) {
    return (uint8_t)((v << 3) | (v >> 2));
}

enum { TYPE_GRAY = 1, TYPE_RGB16, TYPE_RGB24, TYPE_RGB32, TYPE_RGBA };

/* the rows of one image; out is width*height BGRX, zeroed. 0, -1 (quic_error) or -2 (timed out) */
static int quic_rows(Bits *bits, int kind, uint64_t width, uint64_t height, uint8_t *out, double deadline,
                     uint64_t *timed_out_row) {
    int rc = -1;
    quic_error = NULL;
    const Family *family = kind == TYPE_RGB16 ? &FAMILY_5 : &FAMILY_8;
    unsigned colours = kind == TYPE_GRAY ? 1 : 3;
    Codec colour, alpha;
    int have_alpha = kind == TYPE_RGBA;
    uint8_t *planes = calloc(2 * (colours + 1), width);
    int colour_ok = codec_init(&colour, bits, family, colours, width) == 0;
    int alpha_ok = !have_alpha || codec_init(&alpha, bits, &FAMILY_8, 1, width) == 0;
    if (!planes || !colour_ok || !alpha_ok) {
        quic_error = NULL; /* out of memory */
        goto done;
    }
    uint8_t *rows[2][4];
    for (unsigned r = 0; r < 2; r++)
        for (unsigned k = 0; k <= colours; k++)
            rows[r][k] = planes + (r * (colours + 1) + k) * width;
    for (uint64_t y = 0; y < height; y++) {
        if (deadline >= 0 && !(y & 7) && monotonic() > deadline) {
            *timed_out_row = y;
            rc = -2;
            goto done;
        }
        uint8_t **cur = rows[y & 1], **prev = y ? rows[(y & 1) ^ 1] : NULL;
        if (quic_row(&colour, cur, prev))
            goto done;
        uint8_t *line = out + y * width * 4;
        if (kind == TYPE_GRAY) {
            for (uint64_t x = 0; x < width; x++)
                line[4 * x] = line[4 * x + 1] = line[4 * x + 2] = cur[0][x];
        } else if (kind == TYPE_RGB16) {
            for (uint64_t x = 0; x < width; x++) {
                line[4 * x] = widen5(cur[2][x]);
                line[4 * x + 1] = widen5(cur[1][x]);
                line[4 * x + 2] = widen5(cur[0][x]);
            }
        } else {
            for (uint64_t x = 0; x < width; x++) {
                line[4 * x] = cur[2][x];
                line[4 * x + 1] = cur[1][x];
                line[4 * x + 2] = cur[0][x];
            }
        }
        if (have_alpha) {
            uint8_t *acur[1] = {cur[3]}, *aprev[1] = {prev ? prev[3] : NULL};
            if (quic_row(&alpha, acur, prev ? aprev : NULL))
                goto done;
            for (uint64_t x = 0; x < width; x++)
                line[4 * x + 3] = cur[3][x];
        }
    }
    rc = 0;
done:
    if (colour_ok)
        codec_free(&colour);
    if (have_alpha && alpha_ok)
        codec_free(&alpha);
    free(planes);
    return rc;
}

static int load_chaos(void) {
    if (chaos_ready)
        return 0;
    PyObject *quic = PyImport_ImportModule("spicectl.spice.codecs.quic");
    if (!quic)
        return -1;
    PyObject *table = PyObject_GetAttrString(quic, "CHAOS");
    Py_DECREF(quic);
    if (!table)
        return -1;
    if (!PyTuple_Check(table) || PyTuple_GET_SIZE(table) != 256) {
        Py_DECREF(table);
        PyErr_SetString(PyExc_RuntimeError, "quic.CHAOS is not a tuple of 256 entries");
        return -1;
    }
    for (Py_ssize_t k = 0; k < 256; k++) {
        unsigned long v = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(table, k));
        if (PyErr_Occurred()) {
            Py_DECREF(table);
            return -1;
        }
        CHAOS[k] = (uint32_t)v;
    }
    Py_DECREF(table);
    chaos_ready = 1;
    return 0;
}

/* quic(data, kind, width, height, deadline) -> bytearray of BGRX; the header (5 words) is checked by
 * the caller, which also bounds width*height; deadline < 0 means none */
static PyObject *accel_quic(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    int kind;
    unsigned long long width, height;
    double deadline;
    if (!PyArg_ParseTuple(args, "y*iKKd", &data, &kind, &width, &height, &deadline))
        return NULL;
    PyObject *result = NULL;
    if (load_chaos() < 0)
        goto out;
    if (kind < TYPE_GRAY || kind > TYPE_RGBA || !width || !height || width > (1ull << 30) / height) {
        PyErr_SetString(PyExc_ValueError, "QUIC image: bad type or size");
        goto out;
    }
    result = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(width * height * 4));
    if (!result)
        goto out;
    uint8_t *out = (uint8_t *)PyByteArray_AS_STRING(result);
    memset(out, 0, width * height * 4);
    Bits bits = {(const uint8_t *)data.buf, (uint64_t)data.len / 4, (uint64_t)data.len / 4 * 32, 5 * 32};
    uint64_t timed_out_row = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = quic_rows(&bits, kind, width, height, out, deadline, &timed_out_row);
    Py_END_ALLOW_THREADS
    if (rc == -2) {
        PyErr_Format(PyExc_TimeoutError,
                     "QUIC image: still decoding at row %llu when the command's time ran out",
                     (unsigned long long)timed_out_row);
        Py_CLEAR(result);
    } else if (rc) {
        if (quic_error)
            PyErr_SetString(PyExc_ValueError, quic_error);
        else
            PyErr_NoMemory();
        Py_CLEAR(result);
    }
out:
    PyBuffer_Release(&data);
    return result;
}

/* ----------------------------------------------------------------------------------------------
 * LZ and GLZ passes (facts and names as in lz.py)
 */

enum { PLT1_LE = 1, PLT1_BE, PLT4_LE, PLT4_BE, PLT8, RGB16, RGB24, RGB32, RGBA, XXXA, A8 };
#define MAX_COPY 32
#define MAX_DISTANCE 8191

typedef struct {
    const uint8_t *data;
    uint64_t len, pos;
    const char *what;
} Reader;

static int ends_early(const Reader *r) {
    PyErr_Format(PyExc_ValueError, "%s: compressed data ends early at byte %llu", r->what,
                 (unsigned long long)r->pos);
    return -1;
}

static int run_on(Reader *r, uint64_t *length) {
    for (;;) {
        if (r->pos >= r->len)
            return ends_early(r);
        unsigned code = r->data[r->pos++];
        *length += code;
        if (code != 255)
            return 0;
    }
}

static unsigned plt_scale(int type) {
    switch (type) {
    case PLT1_LE: case PLT1_BE: return 8;
    case PLT4_LE: case PLT4_BE: return 2;
    default: return 1;
    }
}

typedef struct {
    int type;
    unsigned scale;
    const uint8_t *pal; /* palette entries, 4 bytes each (B, G, R, 0) */
    uint64_t n_pal;
    int alpha_only;
} Units;

static void put_pal(uint8_t *dst, const Units *u, uint64_t index) {
    memcpy(dst, u->pal + 4 * index, 4);
}

/* count literal units at pixel op; returns the new op, or -1 with an exception set */
static int64_t literals(Reader *r, const Units *u, uint8_t *out, uint64_t op, uint64_t count, uint64_t n_pixels) {
    if (count * u->scale > n_pixels - op) /* op < n_pixels always holds here */
        return PyErr_Format(PyExc_ValueError, "%s: literal run past the end of the image", r->what), -1;
    uint8_t *d = out + 4 * op;
    const uint8_t *s;
    int t = u->type;
    if (u->alpha_only || t == XXXA || t == A8) {
        if (count > r->len - r->pos)
            return ends_early(r), -1;
        s = r->data + r->pos;
        for (uint64_t k = 0; k < count; k++)
            d[4 * k + 3] = s[k];
        r->pos += count;
        return (int64_t)(op + count);
    }
    if (t == RGB32 || t == RGB24 || t == RGBA) {
        if (3 * count > r->len - r->pos)
            return ends_early(r), -1;
        s = r->data + r->pos;
        for (uint64_t k = 0; k < count; k++) {
            d[4 * k] = s[3 * k];
            d[4 * k + 1] = s[3 * k + 1];
            d[4 * k + 2] = s[3 * k + 2];
        }
        r->pos += 3 * count;
        return (int64_t)(op + count);
    }
    if (t == RGB16) {
        if (2 * count > r->len - r->pos)
            return ends_early(r), -1;
        s = r->data + r->pos;
        for (uint64_t k = 0; k < count; k++) {
            unsigned w = (unsigned)s[2 * k] << 8 | s[2 * k + 1];
            d[4 * k] = widen5(w & 31);
            d[4 * k + 1] = widen5((w >> 5) & 31);
            d[4 * k + 2] = widen5((w >> 10) & 31);
            d[4 * k + 3] = 0;
        }
        r->pos += 2 * count;
        return (int64_t)(op + count);
    }
    if (count > r->len - r->pos)
        return ends_early(r), -1;
    s = r->data + r->pos;
    uint64_t n = u->n_pal;
    if (t == PLT8) {
        for (uint64_t k = 0; k < count; k++) {
            if (s[k] >= n)
                return PyErr_Format(PyExc_ValueError, "%s: palette index out of range", r->what), -1;
            put_pal(d + 4 * k, u, s[k]);
        }
    } else if (t == PLT4_LE || t == PLT4_BE) {
        for (uint64_t k = 0; k < count; k++) {
            unsigned lo = s[k] & 15, hi = s[k] >> 4;
            put_pal(d + 8 * k, u, (t == PLT4_LE ? lo : hi) % n);
            put_pal(d + 8 * k + 4, u, (t == PLT4_LE ? hi : lo) % n);
        }
    } else {
        for (uint64_t k = 0; k < count; k++)
            for (unsigned i = 0; i < 8; i++) {
                unsigned bit = t == PLT1_LE ? i : 7 - i;
                put_pal(d + 32 * k + 4 * i, u, (s[k] >> bit) & 1 ? 1 % n : 0);
            }
    }
    r->pos += count;
    return (int64_t)(op + count * u->scale);
}

/* length pixels from pixel src of src_buf to pixel op of out; forward, so an overlapping run repeats */
static void copy_ref(uint8_t *out, const uint8_t *src_buf, uint64_t src, uint64_t op, uint64_t length,
                     int alpha_only) {
    uint8_t *d = out + 4 * op;
    const uint8_t *s = src_buf + 4 * src;
    uint64_t n = 4 * length;
    if (alpha_only) {
        for (uint64_t i = 3; i < n; i += 4)
            d[i] = s[i];
    } else if (src_buf != out || s + n <= d) {
        memcpy(d, s, n);
    } else {
        for (uint64_t i = 0; i < n; i++)
            d[i] = s[i];
    }
}

static int units_from(Units *u, int type, Py_buffer *palette, int alpha_only, const char *what) {
    u->type = type;
    u->scale = plt_scale(type);
    u->alpha_only = alpha_only;
    u->pal = palette->buf;
    u->n_pal = palette->buf ? (uint64_t)palette->len / 4 : 0;
    if (type < PLT1_LE || type > A8) {
        PyErr_Format(PyExc_ValueError, "%s: unknown image type %d", what, type);
        return -1;
    }
    if (type <= PLT8 && !alpha_only && !u->n_pal) {
        PyErr_Format(PyExc_ValueError, "%s: palette image without a palette", what);
        return -1;
    }
    return 0;
}

/* lz_pass(data, pos, out, n_pixels, type, palette, alpha_only) -> the position after the pass */
static PyObject *accel_lz_pass(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data, out, palette = {0};
    unsigned long long pos, n_pixels;
    int type, alpha_only;
    if (!PyArg_ParseTuple(args, "y*Kw*Kiz*p", &data, &pos, &out, &n_pixels, &type, &palette, &alpha_only))
        return NULL;
    PyObject *result = NULL;
    Units u;
    Reader r = {data.buf, (uint64_t)data.len, pos, "LZ"};
    if (units_from(&u, type, &palette, alpha_only, "LZ") < 0)
        goto out;
    if (n_pixels > (uint64_t)out.len / 4) {
        PyErr_SetString(PyExc_ValueError, "LZ: output smaller than the image");
        goto out;
    }
    uint8_t *o = out.buf;
    uint64_t bias = u.type <= PLT8 || u.type == XXXA || u.type == A8 || alpha_only ? 3 : u.type == RGB16 ? 2 : 1;
    uint64_t scale = u.scale, op = 0;
    for (;;) {
        unsigned ctrl;
        if (r.pos >= r.len) {
            ends_early(&r);
            goto out;
        }
        ctrl = r.data[r.pos++];
        if (ctrl >= MAX_COPY) {
            uint64_t length = (ctrl >> 5) - 1, ofs = (uint64_t)(ctrl & 31) << 8;
            if (length == 6 && run_on(&r, &length) < 0)
                goto out;
            if (r.pos >= r.len) {
                ends_early(&r);
                goto out;
            }
            unsigned code = r.data[r.pos++];
            ofs += code;
            if (code == 255 && ofs - code == 31u << 8) {
                if (r.len - r.pos < 2) {
                    if (r.pos < r.len)
                        r.pos++;
                    ends_early(&r);
                    goto out;
                }
                ofs = ((uint64_t)r.data[r.pos] << 8) + r.data[r.pos + 1] + MAX_DISTANCE;
                r.pos += 2;
            }
            length = (length + bias) * scale;
            ofs = (ofs + 1) * scale;
            if (ofs > op || length > n_pixels - op) {
                PyErr_SetString(PyExc_ValueError, "LZ: back-reference outside the image");
                goto out;
            }
            copy_ref(o, o, op - ofs, op, length, alpha_only);
            op += length;
        } else {
            int64_t next = literals(&r, &u, o, op, (uint64_t)ctrl + 1, n_pixels);
            if (next < 0)
                goto out;
            op = (uint64_t)next;
        }
        if (op >= n_pixels)
            break;
    }
    result = PyLong_FromUnsignedLongLong(r.pos);
out:
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    if (palette.obj)
        PyBuffer_Release(&palette);
    return result;
}

/* The window image `image_dist` before image_id, from `images` (the GLZ window: id -> pixels). */
typedef struct {
    PyObject *images, *obj;
    Py_buffer buf;
    uint64_t dist;
} WindowRef;

static int window_ref(WindowRef *w, unsigned long long image_id, uint64_t dist) {
    if (w->obj && w->dist == dist)
        return 0;
    if (w->obj) {
        PyBuffer_Release(&w->buf);
        Py_CLEAR(w->obj);
    }
    PyObject *id = PyLong_FromUnsignedLongLong(image_id), *d = PyLong_FromUnsignedLongLong(dist), *key = NULL;
    if (id && d)
        key = PyNumber_Subtract(id, d);
    Py_XDECREF(id);
    Py_XDECREF(d);
    if (!key)
        return -1;
    PyObject *pixels = PyDict_GetItemWithError(w->images, key);
    if (!pixels) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "GLZ: reference to image %S, which is not in the window", key);
        Py_DECREF(key);
        return -1;
    }
    Py_DECREF(key);
    if (PyObject_GetBuffer(pixels, &w->buf, PyBUF_SIMPLE) < 0)
        return -1;
    Py_INCREF(pixels);
    w->obj = pixels;
    w->dist = dist;
    return 0;
}

#define GBYTE(dst)                      \
    do {                                \
        if (r->pos >= r->len)           \
            return ends_early(r);       \
        (dst) = r->data[r->pos++];      \
    } while (0)

static int glz_pass(Reader *r, const Units *u, uint8_t *o, uint64_t n_pixels, unsigned long long image_id,
                    WindowRef *w) {
    int alpha_only = u->alpha_only;
    uint64_t bias = u->type <= PLT8 || alpha_only ? 2 : u->type == RGB16 ? 1 : 0;
    uint64_t scale = u->scale, op = 0;
    for (;;) {
        unsigned ctrl;
        GBYTE(ctrl);
        if (ctrl >= MAX_COPY) {
            uint64_t length = ctrl >> 5, pixel_flag = (ctrl >> 4) & 1, pixel_ofs = ctrl & 0x0F, image_dist;
            unsigned b, code;
            if (length == 7 && run_on(r, &length) < 0)
                return -1;
            GBYTE(b);
            pixel_ofs += (uint64_t)b << 4;
            GBYTE(code);
            unsigned image_flag = (code >> 6) & 3;
            if (!pixel_flag) {
                image_dist = code & 0x3F;
                for (unsigned i = 0; i < image_flag; i++) {
                    GBYTE(b);
                    image_dist += (uint64_t)b << (6 + 8 * i);
                }
            } else {
                pixel_flag = (code >> 5) & 1;
                pixel_ofs += (uint64_t)(code & 0x1F) << 12;
                image_dist = 0;
                for (unsigned i = 0; i < image_flag; i++) {
                    GBYTE(b);
                    image_dist += (uint64_t)b << (8 * i);
                }
                if (pixel_flag) {
                    GBYTE(b);
                    pixel_ofs += (uint64_t)b << 17;
                }
            }
            length += bias;
            if (!image_dist)
                pixel_ofs += 1;
            pixel_ofs *= scale;
            length *= scale;
            if (length > n_pixels - op) {
                PyErr_SetString(PyExc_ValueError, "GLZ: back-reference runs past the end of the image");
                return -1;
            }
            if (!image_dist) {
                if (pixel_ofs > op) {
                    PyErr_SetString(PyExc_ValueError, "GLZ: back-reference before the start of the image");
                    return -1;
                }
                copy_ref(o, o, op - pixel_ofs, op, length, alpha_only);
            } else {
                if (window_ref(w, image_id, image_dist) < 0)
                    return -1;
                if (pixel_ofs + length > (uint64_t)w->buf.len / 4) {
                    PyErr_SetString(PyExc_ValueError, "GLZ: back-reference outside the referenced image");
                    return -1;
                }
                copy_ref(o, w->buf.buf, pixel_ofs, op, length, alpha_only);
            }
            op += length;
        } else {
            int64_t next = literals(r, u, o, op, (uint64_t)ctrl + 1, n_pixels);
            if (next < 0)
                return -1;
            op = (uint64_t)next;
        }
        if (op >= n_pixels)
            return 0;
    }
}
#undef GBYTE

static int read_be(Reader *r, unsigned size, uint64_t *value) {
    if (size > r->len - r->pos)
        return ends_early(r);
    *value = 0;
    for (unsigned k = 0; k < size; k++)
        *value = *value << 8 | r->data[r->pos + k];
    r->pos += size;
    return 0;
}

/* glz(data, images, palette, max_pixels) -> (width, height, row_pixels, has_alpha, image_id, win_head_dist,
 * pixels in decode order, pixels top row first): one whole GLZ image, as lz.decode_glz decodes it (header
 * checks included: small images are mostly header), referring back into `images` (id -> pixels) */
static PyObject *accel_glz(PyObject *self, PyObject *args) {
    Py_buffer data, palette = {0};
    PyObject *images;
    unsigned long long max_pixels;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O!z*K", &data, &PyDict_Type, &images, &palette, &max_pixels))
        return NULL;
    PyObject *result = NULL, *out = NULL, *shown = NULL;
    WindowRef w = {images, NULL, {0}, 0};
    Reader r = {data.buf, (uint64_t)data.len, 0, "GLZ"};
    uint64_t magic, version, tmp, width, height, stride, image_id, head_dist;
    if (read_be(&r, 4, &magic) < 0)
        goto out;
    if (magic != 0x20205A4C /* "  ZL" */) {
        PyErr_SetString(PyExc_ValueError, "GLZ: bad magic");
        goto out;
    }
    if (read_be(&r, 4, &version) < 0)
        goto out;
    if (version != 0x00010001) {
        PyErr_SetString(PyExc_ValueError, "GLZ: unsupported version");
        goto out;
    }
    if (read_be(&r, 1, &tmp) < 0 || read_be(&r, 4, &width) < 0 || read_be(&r, 4, &height) < 0 ||
        read_be(&r, 4, &stride) < 0)
        goto out;
    int type = (int)(tmp & 0x0F), top_down = (int)(tmp >> 4);
    if (type == XXXA || type == A8) {
        PyErr_Format(PyExc_ValueError, "GLZ: image type %d is not used with GLZ", type);
        goto out;
    }
    if (!width || width > 65535 || !height || height > 65535) {
        PyErr_Format(PyExc_ValueError, "GLZ: image size %llux%llu is out of range", (unsigned long long)width,
                     (unsigned long long)height);
        goto out;
    }
    uint64_t n;
    if (type >= PLT1_LE && type <= PLT8) {
        uint64_t ppb = plt_scale(type);
        if (stride * ppb < width || stride > width / ppb + 1) {
            PyErr_Format(PyExc_ValueError, "GLZ: stride %llu does not fit width %llu", (unsigned long long)stride,
                         (unsigned long long)width);
            goto out;
        }
        n = stride * ppb * height;
    } else if (type >= RGB16 && type <= A8) {
        n = width * height;
    } else {
        PyErr_Format(PyExc_ValueError, "GLZ: unknown image type %d", type);
        goto out;
    }
    if (n > max_pixels) {
        PyErr_Format(PyExc_ValueError, "GLZ: image of %llux%llu is larger than %llu pixels",
                     (unsigned long long)width, (unsigned long long)height, max_pixels);
        goto out;
    }
    if (read_be(&r, 8, &image_id) < 0 || read_be(&r, 4, &head_dist) < 0)
        goto out;
    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(n * 4));
    if (!out)
        goto out;
    uint8_t *o = (uint8_t *)PyByteArray_AS_STRING(out);
    memset(o, 0, n * 4);
    Units u;
    if (units_from(&u, type == RGB24 || type == RGBA ? RGB32 : type, &palette, 0, "GLZ") < 0)
        goto out;
    if (glz_pass(&r, &u, o, n, image_id, &w) < 0)
        goto out;
    if (type == RGBA) {
        u.alpha_only = 1;
        if (glz_pass(&r, &u, o, n, image_id, &w) < 0)
            goto out;
    }
    uint64_t row = n / height;
    if (top_down) {
        shown = out;
        Py_INCREF(shown);
    } else {
        shown = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(n * 4));
        if (!shown)
            goto out;
        uint8_t *f = (uint8_t *)PyByteArray_AS_STRING(shown);
        for (uint64_t y = 0; y < height; y++)
            memcpy(f + y * row * 4, o + (height - 1 - y) * row * 4, row * 4);
    }
    result = Py_BuildValue("KKKOKKOO", (unsigned long long)width, (unsigned long long)height,
                           (unsigned long long)row, type == RGBA ? Py_True : Py_False, image_id,
                           (unsigned long long)head_dist, out, shown);
out:
    if (w.obj) {
        PyBuffer_Release(&w.buf);
        Py_DECREF(w.obj);
    }
    Py_XDECREF(out);
    Py_XDECREF(shown);
    PyBuffer_Release(&data);
    if (palette.obj)
        PyBuffer_Release(&palette);
    return result;
}

static PyMethodDef methods[] = {
    {"quic", accel_quic, METH_VARARGS, "QUIC rows after the header: (data, kind, width, height, deadline)."},
    {"lz_pass", accel_lz_pass, METH_VARARGS, "One LZ pass: (data, pos, out, n_pixels, type, palette, alpha_only)."},
    {"glz", accel_glz, METH_VARARGS, "One GLZ image: (data, images, palette, max_pixels)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_accel", "Compiled QUIC, LZ and GLZ loops.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__accel(void) {
    family_init(&FAMILY_8, 8);
    family_init(&FAMILY_5, 5);
    return PyModule_Create(&module);
}
