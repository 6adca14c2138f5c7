/*
 * provmint._native: the minting hot loops in C over Arrow buffers, with OpenSSL's SHA-256.
 *
 * The loops hash with OpenSSL's low-level SHA256_Init/Update/Final (deprecated in OpenSSL 3,
 * still built, the same SHA-NI/AVX block functions): a SHA256_CTX is a plain struct, so an HMAC
 * state is copied by assignment, where each EVP init or copy allocates, frees and wipes a
 * context (measured: about half of the kernel's time went there).
 *
 * Where the CPU has AVX-512, the loops hash sixteen products (or tree nodes) at once, one
 * per lane of the vector registers, in code of their own: about twice OpenSSL's speed there.
 *
 * Optional: provmint.engine, provmint.ingest, provmint.merkle and provmint.store.keyindex
 * fall back to pure-Python or numpy loops (same results, pinned by tests) when this module
 * is not built. It computes nothing new: it removes Python's per-call overhead (about
 * 0.3 us per hashlib call, five calls per row) and releases the GIL while hashing.
 *
 *   hash_products(secret, token_tag, commit_tag, record_header, gtin_offsets, gtin_data,
 *                 serial_offsets, serial_data, fields[, payloads[, lanes]])
 *       -> (tokens: bytes, leaves: bytes):
 *       token  = HMAC-SHA256(secret, token_tag || gtin14 || serial)[:16]
 *       leaf   = SHA-256(0x00 || record || SHA-256(commit_tag || token))
 *       record = record_header || for each (prefix, offsets, data) in fields:
 *                prefix || u32be len(value) || value
 *       with payloads true, also (offsets: bytes (n + 1 int64), data: bytes) of every row's
 *       u32be len(record) || record || token: a record part's rows (provmint-records/1)
 *   key_hashes(gtin_offsets, gtin_data, serial_offsets, serial_data) -> bytes (u64 LE each)
 *   reduce_level(level[, lanes]) -> bytes   pairs hashed as SHA-256(0x01 || l || r), odd node
 *                                  promoted
 *   lanes: 0 (the default) hashes sixteen messages at once where the CPU has AVX-512, 1 one
 *   at a time with OpenSSL, 16 sixteen or a ValueError; SIMD_LANES is 16 or 1 (see "sixteen
 *   lanes" below: the same bytes either way)
 *   token_text(tokens) -> bytes   every 16-byte token as 22 chars of unpadded base64url
 *   merge_entries(pieces) -> (keys: bytes, rows: bytes)   sorted (u64 key, u32 row) index
 *       entries, each piece a (keys, rows) pair, merged by (key, row)
 *   concat(n, parts) -> (offsets: bytes (int32), data: bytes)
 *       row i = the concatenation of every part for row i; a part is
 *       bytes                      the same bytes in every row
 *       ("col", offsets, data)     the row's value
 *       ("len32", offsets, data)   the value's byte length, u32 big-endian
 *       ("opt", offsets, data, p)  p || value, or nothing when the value is empty
 *
 * A column is an int32 Arrow offsets buffer (n + 1 entries, absolute into the data buffer)
 * and its data buffer; any C-contiguous buffer works (bytes, numpy arrays, pyarrow
 * buffers, memoryviews). Safe to call with anything: every argument is checked, and each
 * offsets buffer is copied before it is checked, so a writable buffer that another thread
 * changes while the GIL is released can change the output, never the memory we touch.
 * Lengths, row counts and constants are read once, with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_*: see the top of the file */
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define TOKEN_BYTES 16
#define HASH 32
#define BLOCK 64
#define GTIN_BYTES 14
#define SERIAL_MAX 20

static const unsigned char empty[1];

/* Raise for a failed SHA-256 call. */
static void
set_openssl_error(void)
{
    char msg[256] = "unknown error";
    unsigned long code = ERR_get_error();
    if (code)
        ERR_error_string_n(code, msg, sizeof msg);
    ERR_clear_error();
    PyErr_Format(PyExc_RuntimeError, "OpenSSL SHA-256 failed: %s", msg);
}

/* SHA-256 of one message. Not OpenSSL's one-shot SHA256(), which in OpenSSL 3 goes
 * through EVP and fetches the digest on every call. */
static inline int
sha256_of(const void *data, size_t len, unsigned char *out)
{
    SHA256_CTX c;
    return SHA256_Init(&c) && SHA256_Update(&c, data, len) && SHA256_Final(out, &c);
}

static inline void
copy_bytes(unsigned char *dst, const unsigned char *src, size_t len)
{
    /* Most values are short: up to 32 bytes they move in two overlapping fixed-size copies
     * (loads and stores, where a call to memcpy per value cost more than the bytes). Reads
     * src[0, len) and writes dst[0, len) only. memcpy(_, NULL, 0) is undefined, and empty
     * buffers may have no address: nothing is touched for len 0. */
    if (len >= 16 && len <= 32) {
        memcpy(dst, src, 16);
        memcpy(dst + len - 16, src + len - 16, 16);
    }
    else if (len >= 8 && len < 16) {
        memcpy(dst, src, 8);
        memcpy(dst + len - 8, src + len - 8, 8);
    }
    else if (len >= 4 && len < 8) {
        memcpy(dst, src, 4);
        memcpy(dst + len - 4, src + len - 4, 4);
    }
    else if (len > 0 && len < 4) {
        dst[0] = src[0];
        dst[len / 2] = src[len / 2];
        dst[len - 1] = src[len - 1];
    }
    else if (len > 32)
        memcpy(dst, src, len);
}

/* ------------------------------------------------------------------------------ columns */

/* The private copies of every offsets buffer one call reads, each made and checked once:
 * record and URL columns pass the same offsets several times (a "len32" and a "col" part,
 * gtin and serial both as identity and as record fields), and copying each only once
 * keeps the loops' memory traffic what it was without copies. */
typedef struct {
    const void *buf; /* the caller's buffer, held (by a column) for the whole call */
    Py_ssize_t len;
    int32_t *copy;
} offsets_copy_t;

typedef struct {
    offsets_copy_t *items;
    Py_ssize_t count, cap;
} copies_t;

static void
copies_free(copies_t *copies)
{
    for (Py_ssize_t i = 0; i < copies->count; i++)
        PyMem_Free(copies->items[i].copy);
    PyMem_Free(copies->items);
    memset(copies, 0, sizeof *copies);
}

/* A private copy of ``view`` (len / 4 int32 values, non-decreasing), or NULL with an
 * exception set. Copied before it is checked, so nothing read afterwards can change. */
static const int32_t *
copies_get(copies_t *copies, const Py_buffer *view, const char *what)
{
    for (Py_ssize_t i = 0; i < copies->count; i++)
        if (copies->items[i].buf == view->buf && copies->items[i].len == view->len)
            return copies->items[i].copy;
    if (copies->count == copies->cap) {
        Py_ssize_t cap = copies->cap ? 2 * copies->cap : 8;
        offsets_copy_t *items = PyMem_Realloc(copies->items, (size_t)cap * sizeof *items);
        if (!items) {
            PyErr_NoMemory();
            return NULL;
        }
        copies->items = items;
        copies->cap = cap;
    }
    int32_t *copy = PyMem_Malloc((size_t)view->len);
    if (!copy) {
        PyErr_NoMemory();
        return NULL;
    }
    /* Copied and checked in one pass; memcpy per value reads a misaligned buffer safely. */
    const unsigned char *src = view->buf;
    int32_t previous = INT32_MIN;
    for (Py_ssize_t i = 0, count = view->len / 4; i < count; i++) {
        int32_t value;
        memcpy(&value, src + 4 * i, 4);
        if (value < previous) {
            PyErr_Format(PyExc_ValueError, "%s: offsets decrease at row %zd", what, i - 1);
            PyMem_Free(copy);
            return NULL;
        }
        copy[i] = previous = value;
    }
    copies->items[copies->count++] = (offsets_copy_t){view->buf, view->len, copy};
    return copy;
}

/* One Arrow binary column: its buffers, held for the call, and the checked private copy
 * of its offsets (the only numbers read without the GIL, so no other thread can change
 * them between the check and the use). */
typedef struct {
    const int32_t *off; /* the loops' fields first: they share a cache line */
    const unsigned char *data;
    Py_ssize_t n; /* rows */
    Py_buffer offsets_view, data_view;
    int held; /* views acquired: 0, 1 or 2 */
} column_t;

static void
column_close(column_t *c)
{
    if (c->held >= 1)
        PyBuffer_Release(&c->offsets_view);
    if (c->held >= 2)
        PyBuffer_Release(&c->data_view);
    c->held = 0;
    c->off = NULL;
}

/* Acquire (offsets, data) and check that the offsets are n + 1 non-decreasing int32 values
 * inside the data. ``expect`` is the required row count, or -1 for any. On failure the
 * column is closed and an exception set. */
static int
column_open(column_t *c, PyObject *offsets, PyObject *data, Py_ssize_t expect, const char *what,
            copies_t *copies)
{
    memset(c, 0, sizeof *c);
    if (PyObject_GetBuffer(offsets, &c->offsets_view, PyBUF_SIMPLE) < 0)
        goto fail;
    c->held = 1;
    if (PyObject_GetBuffer(data, &c->data_view, PyBUF_SIMPLE) < 0)
        goto fail;
    c->held = 2;
    Py_ssize_t len = c->offsets_view.len;
    if (len < 4 || len % 4 != 0) {
        PyErr_Format(PyExc_ValueError, "%s: offsets must be a non-empty int32 buffer", what);
        goto fail;
    }
    c->n = len / 4 - 1;
    if (expect >= 0 && c->n != expect) {
        PyErr_Format(PyExc_ValueError, "%s: %zd rows, expected %zd", what, c->n, expect);
        goto fail;
    }
    c->off = copies_get(copies, &c->offsets_view, what);
    if (!c->off)
        goto fail;
    if (c->off[0] < 0 || c->off[c->n] > c->data_view.len) { /* non-decreasing between */
        PyErr_Format(PyExc_ValueError, "%s: offsets outside the data", what);
        goto fail;
    }
    c->data = c->data_view.buf ? (const unsigned char *)c->data_view.buf : empty;
    return 0;
fail:
    column_close(c);
    return -1;
}

static inline size_t
value_len(const column_t *c, Py_ssize_t row)
{
    return (size_t)(c->off[row + 1] - c->off[row]);
}

static inline const unsigned char *
value_at(const column_t *c, Py_ssize_t row)
{
    return c->data + c->off[row];
}

/* A little-endian u64, in the form compilers turn into one load (the byte-at-a-time
 * loop it replaced made key_hashes take about 65 ns a row). */
static inline uint64_t
load_u64le(const unsigned char *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24
           | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48
           | (uint64_t)p[7] << 56;
}

static inline void
put_u32be(unsigned char *dst, uint32_t v)
{
    dst[0] = (unsigned char)(v >> 24);
    dst[1] = (unsigned char)(v >> 16);
    dst[2] = (unsigned char)(v >> 8);
    dst[3] = (unsigned char)v;
}

/* --------------------------------------------------------------- sixteen lanes (AVX-512) */

/*
 * SHA-256 of sixteen messages at once, one per 32-bit lane of AVX-512 registers: where the
 * CPU has AVX-512 (F and BW), each lane costs about half of OpenSSL's one block at a time
 * (SHA-NI included). Used by hash_products and reduce_level when they are asked for
 * ``lanes`` 0 (the default: sixteen where the CPU has them) or 16; otherwise, and for inputs
 * whose fixed-length hashes would not fit one block, they hash one message at a time as
 * above. The same bytes either way (tests compare the two on generated inputs).
 *
 * The chained hashes of one product need no transposition between them: an HMAC's outer
 * block and the commitment's block are built from the previous state's words as they are
 * in the registers. Only the variable-length inputs (the identity and the leaf) are laid
 * out one message per lane in scratch memory, then gathered a block at a time.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_X16 1
#include <immintrin.h>
#define X16 __attribute__((target("avx512f,avx512bw")))
#else
#define HAVE_X16 0
#endif

#define LANES 16

/* Whether this CPU (and its OS) runs the sixteen-lane code. */
static int
x16_supported(void)
{
#if HAVE_X16
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

#if HAVE_X16
static const uint32_t SHA256_IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

static const uint32_t SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

/* ror(x, r1) ^ ror(x, r2) ^ last: the sigma functions (a macro: the rotations take
 * immediates). 0x96 is the truth table of a three-way XOR. */
#define X16_SIGMA(x, r1, r2, last) \
    _mm512_ternarylogic_epi32(_mm512_ror_epi32(x, r1), _mm512_ror_epi32(x, r2), last, 0x96)

/* One block in every lane: ``s`` (eight state words a lane) += the rounds over ``in``
 * (sixteen message words a lane, already big-endian decoded). FIPS 180-4, 6.2.2. */
X16 static inline void
x16_compress(__m512i s[8], const __m512i in[16])
{
    __m512i w[16];
    for (int i = 0; i < 16; i++)
        w[i] = in[i];
    __m512i a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    _Pragma("GCC unroll 64") for (int i = 0; i < 64; i++)
    {
        __m512i wi = w[i & 15];
        if (i >= 16) {
            __m512i w15 = w[(i + 1) & 15], w2 = w[(i + 14) & 15];
            __m512i s0 = X16_SIGMA(w15, 7, 18, _mm512_srli_epi32(w15, 3));
            __m512i s1 = X16_SIGMA(w2, 17, 19, _mm512_srli_epi32(w2, 10));
            wi = _mm512_add_epi32(_mm512_add_epi32(wi, s0), _mm512_add_epi32(w[(i + 9) & 15], s1));
            w[i & 15] = wi;
        }
        __m512i big1 = X16_SIGMA(e, 6, 11, _mm512_ror_epi32(e, 25));
        __m512i ch = _mm512_ternarylogic_epi32(e, f, g, 0xCA); /* e ? f : g */
        __m512i t1 = _mm512_add_epi32(
            _mm512_add_epi32(h, big1),
            _mm512_add_epi32(ch, _mm512_add_epi32(wi, _mm512_set1_epi32((int)SHA256_K[i]))));
        __m512i big0 = X16_SIGMA(a, 2, 13, _mm512_ror_epi32(a, 22));
        __m512i t2 = _mm512_add_epi32(big0, _mm512_ternarylogic_epi32(a, b, c, 0xE8)); /* Maj */
        h = g;
        g = f;
        f = e;
        e = _mm512_add_epi32(d, t1);
        d = c;
        c = b;
        b = a;
        a = _mm512_add_epi32(t1, t2);
    }
    s[0] = _mm512_add_epi32(s[0], a);
    s[1] = _mm512_add_epi32(s[1], b);
    s[2] = _mm512_add_epi32(s[2], c);
    s[3] = _mm512_add_epi32(s[3], d);
    s[4] = _mm512_add_epi32(s[4], e);
    s[5] = _mm512_add_epi32(s[5], f);
    s[6] = _mm512_add_epi32(s[6], g);
    s[7] = _mm512_add_epi32(s[7], h);
}

X16 static inline void
x16_set(__m512i s[8], const uint32_t words[8])
{
    for (int i = 0; i < 8; i++)
        s[i] = _mm512_set1_epi32((int)words[i]);
}

/* The sixteen words of one block of every lane: lane l's block starts at ``base`` +
 * ``at``[l] bytes (big-endian words, as SHA-256 reads them). */
X16 static inline void
x16_gather(__m512i w[16], const unsigned char *base, __m512i at)
{
    const __m512i swap = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
    for (int j = 0; j < 16; j++) {
        __m512i v = _mm512_i32gather_epi32(_mm512_add_epi32(at, _mm512_set1_epi32(4 * j)), base, 1);
        w[j] = _mm512_shuffle_epi8(v, swap);
    }
}

/* The first ``words`` state words of each of the first ``lanes`` lanes, big-endian, to
 * ``out`` + l * ``stride``. */
X16 static inline void
x16_store(const __m512i s[8], int words, int lanes, unsigned char *out, size_t stride)
{
    uint32_t t[8][LANES];
    for (int i = 0; i < words; i++)
        _mm512_storeu_si512(t[i], s[i]);
    for (int l = 0; l < lanes; l++)
        for (int i = 0; i < words; i++)
            put_u32be(out + (size_t)l * stride + 4 * (size_t)i, t[i][l]);
}

/* The lane offsets 0, stride, 2 stride, ... (16 stride fits an int32: checked by callers). */
X16 static inline __m512i
x16_lane_offsets(size_t stride)
{
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)stride));
}

/* SHA-256 padding after the ``len`` bytes at ``msg``, which follow ``before`` bytes already
 * hashed (whole blocks): 0x80, zeros, the message's bit length. Returns the number of
 * blocks from ``msg`` on; ``msg`` has room for them. */
static inline int
pad_message(unsigned char *msg, size_t len, size_t before)
{
    size_t blocks = (len + 9 + BLOCK - 1) / BLOCK, end = blocks * BLOCK;
    msg[len] = 0x80;
    memset(msg + len + 1, 0, end - 8 - len - 1);
    uint64_t bits = (uint64_t)(before + len) * 8;
    for (int i = 0; i < 8; i++)
        msg[end - 1 - i] = (unsigned char)(bits >> (8 * i));
    return (int)blocks;
}

/* reduce_level's pairs ``first`` .. ``first`` + lanes - 1, hashed as 0x01 || l || r.
 * ``scratch`` holds LANES padded two-block messages (laid out by x16_reduce). */
X16 static void
x16_pairs(const unsigned char *src, Py_ssize_t first, int lanes, unsigned char *scratch,
          unsigned char *dst)
{
    for (int l = 0; l < lanes; l++)
        memcpy(scratch + 2 * BLOCK * l + 1, src + (first + l) * 2 * HASH, 2 * HASH);
    __m512i s[8], w[16], at = x16_lane_offsets(2 * BLOCK);
    x16_set(s, SHA256_IV);
    x16_gather(w, scratch, at);
    x16_compress(s, w);
    x16_gather(w, scratch + BLOCK, at);
    x16_compress(s, w);
    x16_store(s, 8, lanes, dst + first * HASH, HASH);
}

/* Every pair of a level, sixteen at a time. */
X16 static void
x16_reduce(const unsigned char *src, Py_ssize_t pairs, unsigned char *scratch, unsigned char *dst)
{
    memset(scratch, 0, LANES * 2 * BLOCK);
    for (int l = 0; l < LANES; l++) {
        scratch[2 * BLOCK * l] = 0x01;
        pad_message(scratch + 2 * BLOCK * l, 1 + 2 * HASH, 0);
    }
    for (Py_ssize_t i = 0; i < pairs; i += LANES)
        x16_pairs(src, i, pairs - i < LANES ? (int)(pairs - i) : LANES, scratch, dst);
}
#endif /* HAVE_X16 */

/* ----------------------------------------------------------------------- reduce_level */

/* The ``lanes`` argument of hash_products and reduce_level: 0 (sixteen lanes where the CPU
 * has them), 1 (one message at a time) or 16 (sixteen, refused where the CPU has not).
 * Sets *x16 to whether to use sixteen lanes, or returns -1 with an exception. */
static int x16_cpu = 0; /* x16_supported(), found once at import */

static int
lanes_choice(int lanes, int *x16)
{
    if (lanes != 0 && lanes != 1 && lanes != LANES) {
        PyErr_Format(PyExc_ValueError, "lanes must be 0, 1 or %d", LANES);
        return -1;
    }
    if (lanes == LANES && !x16_cpu) {
        PyErr_SetString(PyExc_ValueError, "this CPU has no AVX-512 for sixteen lanes");
        return -1;
    }
    *x16 = lanes != 1 && x16_cpu;
    return 0;
}

static PyObject *
reduce_level(PyObject *self, PyObject *args)
{
    Py_buffer level;
    int lanes = 0, x16 = 0;
    if (!PyArg_ParseTuple(args, "y*|i", &level, &lanes))
        return NULL;
    PyObject *out = NULL;
    unsigned char *scratch = NULL;
    if (lanes_choice(lanes, &x16) < 0)
        goto done;
    if (level.len % HASH != 0) {
        PyErr_SetString(PyExc_ValueError, "a level is a run of 32-byte hashes");
        goto done;
    }
    Py_ssize_t count = level.len / HASH, pairs = count / 2;
    out = PyBytes_FromStringAndSize(NULL, (pairs + count % 2) * HASH);
    if (!out)
        goto done;
    if (x16 && pairs > 0) {
        scratch = PyMem_Malloc(LANES * 2 * BLOCK);
        if (!scratch) {
            PyErr_NoMemory();
            Py_CLEAR(out);
            goto done;
        }
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *src = (const unsigned char *)level.buf;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
#if HAVE_X16
    if (scratch)
        x16_reduce(src, pairs, scratch, dst);
    else
#endif
    {
        unsigned char node[1 + 2 * HASH];
        node[0] = 0x01;
        for (Py_ssize_t i = 0; ok && i < pairs; i++) {
            memcpy(node + 1, src + 2 * i * HASH, 2 * HASH); /* one update instead of two */
            ok = sha256_of(node, sizeof node, dst + i * HASH);
        }
    }
    if (ok && count % 2)
        memcpy(dst + pairs * HASH, src + (count - 1) * HASH, HASH);
    Py_END_ALLOW_THREADS
    if (!ok) {
        set_openssl_error();
        Py_CLEAR(out);
    }
done:
    PyMem_Free(scratch);
    PyBuffer_Release(&level);
    return out;
}

/* ----------------------------------------------------------------------------- concat */

enum part_kind { P_CONST, P_COL, P_LEN32, P_OPT };

typedef struct {
    enum part_kind kind;
    const unsigned char *cbuf; /* constant bytes, or the "opt" prefix */
    Py_ssize_t clen;
    column_t col;
    Py_buffer cview;
    int cheld;
} part_t;

static void
part_close(part_t *p)
{
    if (p->cheld)
        PyBuffer_Release(&p->cview);
    p->cheld = 0;
    column_close(&p->col);
}

static int
kind_of(PyObject *name, Py_ssize_t tuple_size, enum part_kind *kind)
{
    Py_ssize_t size;
    const char *text = PyUnicode_Check(name) ? PyUnicode_AsUTF8AndSize(name, &size) : NULL;
    if (!text) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "a part's kind is 'col', 'len32' or 'opt'");
        return -1;
    }
    if (size == 3 && memcmp(text, "col", 3) == 0 && tuple_size == 3)
        *kind = P_COL;
    else if (size == 5 && memcmp(text, "len32", 5) == 0 && tuple_size == 3)
        *kind = P_LEN32;
    else if (size == 3 && memcmp(text, "opt", 3) == 0 && tuple_size == 4)
        *kind = P_OPT;
    else {
        PyErr_SetString(PyExc_ValueError, "a part is ('col' | 'len32', offsets, data) or "
                                          "('opt', offsets, data, prefix)");
        return -1;
    }
    return 0;
}

static int
part_constant(part_t *p, PyObject *obj)
{
    if (PyObject_GetBuffer(obj, &p->cview, PyBUF_SIMPLE) < 0)
        return -1;
    p->cheld = 1;
    p->cbuf = p->cview.buf ? (const unsigned char *)p->cview.buf : empty;
    p->clen = p->cview.len;
    return 0;
}

static int
part_open(part_t *p, PyObject *item, Py_ssize_t n, copies_t *copies)
{
    memset(p, 0, sizeof *p);
    if (PyBytes_Check(item)) {
        p->kind = P_CONST;
        return part_constant(p, item);
    }
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 3) {
        PyErr_SetString(PyExc_TypeError, "a part is bytes or a (kind, offsets, data) tuple");
        return -1;
    }
    if (kind_of(PyTuple_GET_ITEM(item, 0), PyTuple_GET_SIZE(item), &p->kind) < 0)
        return -1;
    if (column_open(&p->col, PyTuple_GET_ITEM(item, 1), PyTuple_GET_ITEM(item, 2), n,
                    "concat part", copies) < 0)
        return -1;
    return p->kind == P_OPT ? part_constant(p, PyTuple_GET_ITEM(item, 3)) : 0;
}

/* Bytes that ``p`` adds to row ``r``. */
static inline int64_t
part_size(const part_t *p, Py_ssize_t r)
{
    switch (p->kind) {
    case P_CONST: return p->clen;
    case P_COL: return (int64_t)value_len(&p->col, r);
    case P_LEN32: return 4;
    case P_OPT: {
        size_t len = value_len(&p->col, r);
        return len ? p->clen + (int64_t)len : 0;
    }
    }
    return 0;
}

static inline unsigned char *
part_write(const part_t *p, Py_ssize_t r, unsigned char *dst)
{
    size_t len = p->kind == P_CONST ? 0 : value_len(&p->col, r);
    switch (p->kind) {
    case P_CONST:
        copy_bytes(dst, p->cbuf, (size_t)p->clen);
        return dst + p->clen;
    case P_LEN32:
        put_u32be(dst, (uint32_t)len);
        return dst + 4;
    case P_OPT:
        if (!len)
            return dst;
        copy_bytes(dst, p->cbuf, (size_t)p->clen);
        dst += p->clen;
        /* fall through */
    case P_COL:
        copy_bytes(dst, value_at(&p->col, r), len);
        return dst + len;
    }
    return dst;
}

static PyObject *
concat(PyObject *self, PyObject *args)
{
    Py_ssize_t n;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "nO", &n, &seq))
        return NULL;
    if (n < 0 || n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "n must be between 0 and 2**31 - 1");
        return NULL;
    }
    /* A private tuple: a list changed while its items are acquired cannot shift them. */
    PyObject *items = PySequence_Tuple(seq);
    if (!items)
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(items), opened = 0;
    copies_t copies = {0};
    part_t *parts = PyMem_Calloc(count ? (size_t)count : 1, sizeof(part_t));
    PyObject *offsets = NULL, *data = NULL, *result = NULL;
    if (!parts) {
        PyErr_NoMemory();
        goto done;
    }
    for (; opened < count; opened++) {
        if (part_open(&parts[opened], PyTuple_GET_ITEM(items, opened), n, &copies) < 0) {
            part_close(&parts[opened]);
            goto done;
        }
    }
    /* Sizes first, so the output is allocated once; the write loop below uses the same
     * private offsets and constant lengths, so it writes exactly ``total`` bytes. */
    offsets = PyBytes_FromStringAndSize(NULL, (n + 1) * 4);
    if (!offsets)
        goto done;
    int32_t *out_off = (int32_t *)PyBytes_AS_STRING(offsets);
    int64_t total = 0;
    out_off[0] = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        for (Py_ssize_t i = 0; i < count; i++) {
            total += part_size(&parts[i], r);
            if (total > INT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "concatenated column exceeds 2 GiB");
                goto done;
            }
        }
        out_off[r + 1] = (int32_t)total;
    }
    data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!data)
        goto done;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(data);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n; r++)
        for (Py_ssize_t i = 0; i < count; i++)
            dst = part_write(&parts[i], r, dst);
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, offsets, data);
done:
    Py_XDECREF(offsets);
    Py_XDECREF(data);
    if (parts) {
        for (Py_ssize_t i = 0; i < opened; i++)
            part_close(&parts[i]);
        PyMem_Free(parts);
    }
    copies_free(&copies);
    Py_DECREF(items);
    return result;
}

/* ---------------------------------------------------------------------- hash_products */

/* The token and commitment half of minting: HMAC-SHA256 with its pads absorbed once
 * (RFC 2104; a key longer than the block is hashed first), then per product a copy of
 * each padded state. */
typedef struct {
    SHA256_CTX inner, outer;  /* inner has also absorbed the token tag */
    unsigned char *commit_in; /* commit tag || token */
    size_t ctag_len;
} minter_t;

static void
minter_close(minter_t *m)
{
    PyMem_Free(m->commit_in);
    OPENSSL_cleanse(m, sizeof *m); /* the keyed states */
}

static int
minter_open(minter_t *m, const Py_buffer *secret, const Py_buffer *ttag, const Py_buffer *ctag)
{
    unsigned char hashed[HASH], ipad[BLOCK], opad[BLOCK];
    const unsigned char *key = secret->buf;
    size_t key_len = (size_t)secret->len;
    memset(m, 0, sizeof *m);
    int ok = 1;
    if (key_len > BLOCK) {
        ok = sha256_of(key, key_len, hashed);
        key = hashed;
        key_len = HASH;
    }
    memset(ipad, 0x36, BLOCK);
    memset(opad, 0x5c, BLOCK);
    for (size_t i = 0; ok && i < key_len; i++) {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    ok = ok && SHA256_Init(&m->inner) && SHA256_Update(&m->inner, ipad, BLOCK)
         && SHA256_Update(&m->inner, ttag->buf, (size_t)ttag->len) && SHA256_Init(&m->outer)
         && SHA256_Update(&m->outer, opad, BLOCK);
    OPENSSL_cleanse(hashed, sizeof hashed);
    OPENSSL_cleanse(ipad, sizeof ipad);
    OPENSSL_cleanse(opad, sizeof opad);
    if (!ok) {
        set_openssl_error();
        minter_close(m);
        return -1;
    }
    m->ctag_len = (size_t)ctag->len;
    m->commit_in = PyMem_Malloc(m->ctag_len + TOKEN_BYTES);
    if (!m->commit_in) {
        PyErr_NoMemory();
        minter_close(m);
        return -1;
    }
    copy_bytes(m->commit_in, ctag->buf, m->ctag_len);
    return 0;
}

/* Token and commitment of one product: ``c`` = HMAC inner state + token tag + identity. */
static inline int
minter_token(minter_t *m, SHA256_CTX *c, const column_t *gtin, const column_t *serial,
             Py_ssize_t row, unsigned char *token, unsigned char *commit)
{
    unsigned char digest[HASH];
    *c = m->inner;
    int ok = SHA256_Update(c, value_at(gtin, row), value_len(gtin, row))
             && SHA256_Update(c, value_at(serial, row), value_len(serial, row))
             && SHA256_Final(digest, c);
    *c = m->outer;
    ok = ok && SHA256_Update(c, digest, HASH) && SHA256_Final(digest, c);
    if (!ok)
        return 0;
    memcpy(token, digest, TOKEN_BYTES);
    memcpy(m->commit_in + m->ctag_len, digest, TOKEN_BYTES);
    return sha256_of(m->commit_in, m->ctag_len + TOKEN_BYTES, commit);
}

typedef struct {
    column_t col;
    Py_buffer prefix; /* u8 len(name) || name */
    int prefix_held;
} field_t;

static void
fields_close(field_t *fields, Py_ssize_t count)
{
    for (Py_ssize_t f = 0; f < count; f++) {
        if (fields[f].prefix_held)
            PyBuffer_Release(&fields[f].prefix);
        column_close(&fields[f].col);
    }
}

/* Acquire every (prefix, offsets, data) field of ``n`` rows; on failure, release them. */
static field_t *
fields_open(PyObject *items, Py_ssize_t n, copies_t *copies)
{
    Py_ssize_t count = PyTuple_GET_SIZE(items);
    field_t *fields = PyMem_Calloc(count ? (size_t)count : 1, sizeof(field_t));
    if (!fields) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t f = 0; f < count; f++) {
        PyObject *item = PyTuple_GET_ITEM(items, f);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "a field is (prefix, offsets, data)");
            fields_close(fields, f);
            goto fail;
        }
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 0), &fields[f].prefix, PyBUF_SIMPLE) < 0) {
            fields_close(fields, f);
            goto fail;
        }
        fields[f].prefix_held = 1;
        if (column_open(&fields[f].col, PyTuple_GET_ITEM(item, 1), PyTuple_GET_ITEM(item, 2), n,
                        "field", copies) < 0) {
            fields_close(fields, f + 1);
            goto fail;
        }
    }
    return fields;
fail:
    PyMem_Free(fields);
    return NULL;
}

/* The longest ``0x00 || header || record || commitment`` of any row, or -1 (and an
 * exception) when it does not fit in memory. */
static Py_ssize_t
longest_leaf_input(Py_ssize_t header_len, const field_t *fields, Py_ssize_t nf, Py_ssize_t n,
                   uint64_t *all_values)
{
    uint64_t fixed = 1 + (uint64_t)header_len + HASH, longest = 0, total = 0;
    for (Py_ssize_t f = 0; f < nf; f++)
        fixed += (uint64_t)fields[f].prefix.len + 4;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t values = 0;
        for (Py_ssize_t f = 0; f < nf; f++)
            values += value_len(&fields[f].col, i);
        if (values > longest)
            longest = values;
        total += values;
    }
    if (fixed + longest > (uint64_t)PY_SSIZE_T_MAX / 2) {
        PyErr_SetString(PyExc_OverflowError, "records too long");
        return -1;
    }
    *all_values = total;
    return (Py_ssize_t)(fixed + longest);
}

/* The row's fields as a record has them (each: its prefix, u32be length, value), from
 * ``dst`` on; returns the end. */
static inline unsigned char *
put_fields(unsigned char *dst, const field_t *fields, Py_ssize_t nf, Py_ssize_t row)
{
    for (Py_ssize_t f = 0; f < nf; f++) {
        size_t len = value_len(&fields[f].col, row);
        copy_bytes(dst, fields[f].prefix.buf, (size_t)fields[f].prefix.len);
        dst += fields[f].prefix.len;
        put_u32be(dst, (uint32_t)len);
        copy_bytes(dst + 4, value_at(&fields[f].col, row), len);
        dst += 4 + len;
    }
    return dst;
}

/* leaf = SHA-256(0x00 || header || fields of the row || commit), assembled in ``buf``
 * (which already starts with 0x00 || header) and hashed in one update: each EVP update
 * costs more than copying its bytes. */
static inline int
leaf_hash(unsigned char *buf, size_t start_len, const field_t *fields, Py_ssize_t nf,
          Py_ssize_t row, const unsigned char *commit, unsigned char *leaf, size_t *record_len)
{
    unsigned char *dst = put_fields(buf + start_len, fields, nf, row);
    *record_len = (size_t)(dst - buf) - 1; /* the record follows the 0x00 */
    memcpy(dst, commit, HASH);
    dst += HASH;
    return sha256_of(buf, (size_t)(dst - buf), leaf);
}

/* A record part's row (see hash_products): u32be len(record) || record || token; returns
 * the offset of the next row. */
static inline int64_t
put_payload(unsigned char *pay, int64_t at, const unsigned char *record, size_t record_len,
            const unsigned char *token)
{
    unsigned char *row = pay + at;
    put_u32be(row, (uint32_t)record_len);
    memcpy(row + 4, record, record_len);
    memcpy(row + 4 + record_len, token, TOKEN_BYTES);
    return at + 4 + (int64_t)record_len + TOKEN_BYTES;
}

/* What one hash_products call hashes, for the sixteen-lane loop. */
typedef struct {
    const minter_t *m;
    uint32_t inner[8], outer[8]; /* the HMAC states after the key's pad block: secret */
    const unsigned char *ttag;
    size_t ttag_len;
    const column_t *gtin, *serial;
    const field_t *fields;
    Py_ssize_t nf;
    size_t header_end;         /* 0x00 || record header */
    unsigned char *scratch;    /* LANES identity blocks, then LANES leaf inputs */
    size_t stride;             /* bytes of one lane's leaf input, whole blocks */
    unsigned char *tok, *lf;   /* the outputs */
    unsigned char *pay;        /* and the record part's rows, or NULL */
    int64_t *pay_off;
} products_job_t;

/* The longest leaf input the sixteen lanes take (each lane's is laid out in a scratch
 * buffer: 16 MB for all at most; the longest record minting makes is about 266 KB). */
#define X16_LONGEST_LEAF (1 << 20)

/* The sixteen-lane path applies when every fixed-length hash is one block: the identity
 * (token tag || gtin || serial) after the HMAC key's block, the commitment (a tag of whole
 * words || token), and no leaf input is longer than X16_LONGEST_LEAF (which also keeps
 * the lanes' offsets within gather's int32 indices). */
static int
x16_fits(const minter_t *m, size_t ttag_len, const column_t *gtin, const column_t *serial,
         Py_ssize_t longest_leaf)
{
    if (m->inner.num != ttag_len || m->ctag_len % 4 != 0 || m->ctag_len + TOKEN_BYTES > BLOCK - 9
        || longest_leaf > X16_LONGEST_LEAF)
        return 0;
    size_t longest_id = 0;
    for (Py_ssize_t i = 0; i < gtin->n; i++) {
        size_t len = value_len(gtin, i) + value_len(serial, i);
        if (len > longest_id)
            longest_id = len;
    }
    return ttag_len + longest_id <= BLOCK - 9;
}

#if HAVE_X16
/* hash_products' loop over rows ``first`` .. ``first`` + lanes - 1 in sixteen lanes. */
X16 static void
x16_products(const products_job_t *j, Py_ssize_t first, int lanes)
{
    const minter_t *m = j->m;
    unsigned char *ids = j->scratch, *leaf_in = j->scratch + LANES * BLOCK;
    /* The HMAC's inner block: token tag || gtin || serial (after the key's block). */
    for (int l = 0; l < lanes; l++) {
        Py_ssize_t row = first + l;
        unsigned char *msg = ids + l * BLOCK;
        size_t g = value_len(j->gtin, row), s = value_len(j->serial, row);
        memcpy(msg, j->ttag, j->ttag_len);
        copy_bytes(msg + j->ttag_len, value_at(j->gtin, row), g);
        copy_bytes(msg + j->ttag_len + g, value_at(j->serial, row), s);
        pad_message(msg, j->ttag_len + g + s, BLOCK);
    }
    __m512i s[8], t[8], w[16];
    x16_set(s, j->inner);
    x16_gather(w, ids, x16_lane_offsets(BLOCK));
    x16_compress(s, w);
    /* The outer block: the inner digest's words as they are, padded (96 bytes in all). */
    for (int i = 0; i < 8; i++)
        w[i] = s[i];
    w[8] = _mm512_set1_epi32((int)0x80000000u);
    for (int i = 9; i < 15; i++)
        w[i] = _mm512_setzero_si512();
    w[15] = _mm512_set1_epi32((BLOCK + HASH) * 8);
    x16_set(t, j->outer);
    x16_compress(t, w);
    x16_store(t, TOKEN_BYTES / 4, lanes, j->tok + first * TOKEN_BYTES, TOKEN_BYTES);
    /* The commitment: SHA-256(commit tag || token), the token being the first 4 words. */
    int tag_words = (int)(m->ctag_len / 4), k = 0;
    for (; k < tag_words; k++) {
        const unsigned char *p = m->commit_in + 4 * k;
        w[k] = _mm512_set1_epi32((int)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16
                                       | (uint32_t)p[2] << 8 | p[3]));
    }
    for (int i = 0; i < 4; i++)
        w[k++] = t[i];
    w[k++] = _mm512_set1_epi32((int)0x80000000u);
    while (k < 15)
        w[k++] = _mm512_setzero_si512();
    w[15] = _mm512_set1_epi32((int)(m->ctag_len + TOKEN_BYTES) * 8);
    x16_set(s, SHA256_IV);
    x16_compress(s, w);
    /* The leaves: 0x00 || header || the row's fields || commitment, a lane each. */
    unsigned char commits[LANES * HASH];
    x16_store(s, 8, lanes, commits, HASH);
    int blocks[LANES] = {0}, most = 0;
    for (int l = 0; l < lanes; l++) {
        Py_ssize_t row = first + l;
        unsigned char *msg = leaf_in + (size_t)l * j->stride;
        unsigned char *end = put_fields(msg + j->header_end, j->fields, j->nf, row);
        size_t record_len = (size_t)(end - msg) - 1;
        memcpy(end, commits + l * HASH, HASH);
        blocks[l] = pad_message(msg, (size_t)(end - msg) + HASH, 0);
        if (blocks[l] > most)
            most = blocks[l];
        if (j->pay)
            j->pay_off[row + 1] = put_payload(j->pay, j->pay_off[row], msg + 1, record_len,
                                              j->tok + row * TOKEN_BYTES);
    }
    __m512i at = x16_lane_offsets(j->stride);
    x16_set(s, SHA256_IV);
    for (int b = 0; b < most; b++) {
        __mmask16 live = 0;
        for (int l = 0; l < lanes; l++)
            live |= (__mmask16)((blocks[l] > b) << l);
        for (int i = 0; i < 8; i++)
            t[i] = s[i];
        x16_gather(w, leaf_in + (size_t)b * BLOCK, at);
        x16_compress(t, w);
        for (int i = 0; i < 8; i++)
            s[i] = _mm512_mask_mov_epi32(s[i], live, t[i]);
    }
    x16_store(s, 8, lanes, j->lf + first * HASH, HASH);
}
#endif

static PyObject *
hash_products(PyObject *self, PyObject *args)
{
    Py_buffer secret, ttag, ctag, header;
    PyObject *goff, *gdata, *soff, *sdata, *fields_obj;
    int want_payloads = 0, lanes = 0, x16 = 0;
    if (!PyArg_ParseTuple(args, "y*y*y*y*OOOOO|pi", &secret, &ttag, &ctag, &header, &goff, &gdata,
                          &soff, &sdata, &fields_obj, &want_payloads, &lanes))
        return NULL;
    PyObject *result = NULL, *tokens = NULL, *leaves = NULL, *items = NULL;
    PyObject *pay_offsets = NULL, *pay_data = NULL;
    field_t *fields = NULL;
    column_t gtin = {0}, serial = {0};
    copies_t copies = {0};
    minter_t m = {0};
    unsigned char *leaf_in = NULL; /* 0x00 || record header || the row's record || commit */
    Py_ssize_t nf = 0;
    if (lanes_choice(lanes, &x16) < 0)
        goto done;
    if (column_open(&gtin, goff, gdata, -1, "gtin", &copies) < 0
        || column_open(&serial, soff, sdata, gtin.n, "serial", &copies) < 0)
        goto done;
    if (gtin.n > PY_SSIZE_T_MAX / HASH) {
        PyErr_SetString(PyExc_OverflowError, "too many rows");
        goto done;
    }
    items = PySequence_Tuple(fields_obj);
    if (!items)
        goto done;
    nf = PyTuple_GET_SIZE(items);
    fields = fields_open(items, gtin.n, &copies);
    if (!fields)
        goto done;
    uint64_t all_values = 0;
    Py_ssize_t longest = longest_leaf_input(header.len, fields, nf, gtin.n, &all_values);
    if (longest < 0)
        goto done;
    unsigned char *pay = NULL;
    int64_t *pay_off = NULL;
    if (want_payloads) {
        /* Each row: u32be length, the record (its header, its fields' prefixes and length
         * words, its values) and the token. */
        uint64_t row_fixed = 4 + (uint64_t)header.len + TOKEN_BYTES;
        for (Py_ssize_t f = 0; f < nf; f++)
            row_fixed += (uint64_t)fields[f].prefix.len + 4;
        uint64_t total = all_values + row_fixed * (uint64_t)gtin.n;
        if (total > (uint64_t)PY_SSIZE_T_MAX / 2
            || (uint64_t)gtin.n > (uint64_t)PY_SSIZE_T_MAX / 16) {
            PyErr_SetString(PyExc_OverflowError, "records too long");
            goto done;
        }
        pay_offsets = PyBytes_FromStringAndSize(NULL, (gtin.n + 1) * 8);
        pay_data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        if (!pay_offsets || !pay_data)
            goto done;
        pay_off = (int64_t *)PyBytes_AS_STRING(pay_offsets);
        pay = (unsigned char *)PyBytes_AS_STRING(pay_data);
        pay_off[0] = 0;
    }
    tokens = PyBytes_FromStringAndSize(NULL, gtin.n * TOKEN_BYTES);
    leaves = PyBytes_FromStringAndSize(NULL, gtin.n * HASH);
    if (!tokens || !leaves || minter_open(&m, &secret, &ttag, &ctag) < 0)
        goto done;
    size_t header_end = (size_t)header.len + 1;
    /* Sixteen lanes: LANES identity blocks, then LANES leaf inputs of whole blocks (zeroed:
     * a lane with no block left still has its block gathered, and dropped). */
    x16 = x16 && gtin.n > 0 && x16_fits(&m, (size_t)ttag.len, &gtin, &serial, longest);
    size_t stride = x16 ? ((size_t)longest + 9 + BLOCK - 1) / BLOCK * BLOCK : 0;
    Py_ssize_t lanes_used = x16 ? LANES : 1;
    leaf_in = x16 ? PyMem_Calloc(LANES * (BLOCK + stride), 1) : PyMem_Malloc((size_t)longest);
    if (!leaf_in) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *first_in = x16 ? leaf_in + LANES * BLOCK : leaf_in;
    for (Py_ssize_t l = 0; l < lanes_used; l++) {
        first_in[(size_t)l * stride] = 0x00;
        copy_bytes(first_in + (size_t)l * stride + 1, header.buf, (size_t)header.len);
    }
    unsigned char *tok = (unsigned char *)PyBytes_AS_STRING(tokens);
    unsigned char *lf = (unsigned char *)PyBytes_AS_STRING(leaves);
    Py_ssize_t n = gtin.n;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
#if HAVE_X16
    if (x16) {
        products_job_t job = {.m = &m,
                              .ttag = ttag.buf,
                              .ttag_len = (size_t)ttag.len,
                              .gtin = &gtin,
                              .serial = &serial,
                              .fields = fields,
                              .nf = nf,
                              .header_end = header_end,
                              .scratch = leaf_in,
                              .stride = stride,
                              .tok = tok,
                              .lf = lf,
                              .pay = pay,
                              .pay_off = pay_off};
        for (int i = 0; i < 8; i++) {
            job.inner[i] = (uint32_t)m.inner.h[i];
            job.outer[i] = (uint32_t)m.outer.h[i];
        }
        for (Py_ssize_t first = 0; first < n; first += LANES)
            x16_products(&job, first, n - first < LANES ? (int)(n - first) : LANES);
        OPENSSL_cleanse(&job, sizeof job);
    }
    else
#endif
    {
        unsigned char commit[HASH];
        SHA256_CTX work;
        size_t record_len = 0;
        for (Py_ssize_t i = 0; ok && i < n; i++) {
            ok = minter_token(&m, &work, &gtin, &serial, i, tok + i * TOKEN_BYTES, commit)
                 && leaf_hash(leaf_in, header_end, fields, nf, i, commit, lf + i * HASH,
                              &record_len);
            if (pay) /* the sizes summed above, from the same private offsets */
                pay_off[i + 1] = put_payload(pay, pay_off[i], leaf_in + 1, record_len,
                                             tok + i * TOKEN_BYTES);
        }
        OPENSSL_cleanse(&work, sizeof work);
    }
    Py_END_ALLOW_THREADS
    if (!ok) {
        set_openssl_error();
        goto done;
    }
    result = want_payloads ? PyTuple_Pack(4, tokens, leaves, pay_offsets, pay_data)
                           : PyTuple_Pack(2, tokens, leaves);
done:
    minter_close(&m);
    PyMem_Free(leaf_in);
    Py_XDECREF(tokens);
    Py_XDECREF(leaves);
    Py_XDECREF(pay_offsets);
    Py_XDECREF(pay_data);
    if (fields) {
        fields_close(fields, nf);
        PyMem_Free(fields);
    }
    Py_XDECREF(items);
    column_close(&gtin);
    column_close(&serial);
    copies_free(&copies);
    PyBuffer_Release(&secret);
    PyBuffer_Release(&ttag);
    PyBuffer_Release(&ctag);
    PyBuffer_Release(&header);
    return result;
}

/* ------------------------------------------------------------------------- key_hashes */

/*
 * key_hashes(gtin_offsets, gtin_data, serial_offsets, serial_data) -> bytes (n u64, LE)
 * provmint-keyhash/1, as provmint.ingest.key_hashes computes it with numpy: the 14 GTIN
 * digits and the serial NUL-padded to 20 bytes, as five little-endian u64 words, mixed
 * splitmix64-style.
 */
static PyObject *
key_hashes(PyObject *self, PyObject *args)
{
    PyObject *goff, *gdata, *soff, *sdata;
    if (!PyArg_ParseTuple(args, "OOOO", &goff, &gdata, &soff, &sdata))
        return NULL;
    PyObject *out = NULL;
    column_t gtin = {0}, serial = {0};
    copies_t copies = {0};
    if (column_open(&gtin, goff, gdata, -1, "gtin", &copies) < 0
        || column_open(&serial, soff, sdata, gtin.n, "serial", &copies) < 0)
        goto done;
    /* Checked on the private offsets, which the loop below reads: the 40-byte block
     * cannot overflow whatever happens to the caller's buffers meanwhile. */
    for (Py_ssize_t i = 0; i < gtin.n; i++) {
        if (value_len(&gtin, i) != GTIN_BYTES || value_len(&serial, i) > SERIAL_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "row %zd: gtin must be 14 bytes and serial at most 20", i);
            goto done;
        }
    }
    if (gtin.n > PY_SSIZE_T_MAX / 8) {
        PyErr_SetString(PyExc_OverflowError, "too many rows");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, gtin.n * 8);
    if (!out)
        goto done;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    const uint64_t m1 = 0xBF58476D1CE4E5B9ULL, m2 = 0x94D049BB133111EBULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < gtin.n; i++) {
        unsigned char block[40];
        memset(block, 0, sizeof block);
        memcpy(block, value_at(&gtin, i), GTIN_BYTES);
        size_t serial_len = value_len(&serial, i); /* at most SERIAL_MAX: checked above */
        copy_bytes(block + GTIN_BYTES, value_at(&serial, i),
                   serial_len > SERIAL_MAX ? 0 : serial_len);
        uint64_t h = 0x9E3779B97F4A7C15ULL;
        for (int w = 0; w < 5; w++) {
            h ^= load_u64le(block + w * 8);
            h *= m1;
            h ^= h >> 31;
        }
        h ^= h >> 30;
        h *= m1;
        h ^= h >> 27;
        h *= m2;
        h ^= h >> 31;
        for (int b = 0; b < 8; b++)
            dst[i * 8 + b] = (unsigned char)(h >> (8 * b));
    }
    Py_END_ALLOW_THREADS
done:
    column_close(&gtin);
    column_close(&serial);
    copies_free(&copies);
    return out;
}

/* ------------------------------------------------------------------------- token_text */

/*
 * The text form of tokens: each 16-byte token as unpadded base64url (RFC 4648 section 5),
 * 22 characters, back to back. What base64.urlsafe_b64encode(token).rstrip(b"=") gives
 * for each, in one pass (the numpy fallback in provmint.engine took about 10 ms a chunk).
 */
static PyObject *
token_text(PyObject *self, PyObject *args)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    Py_buffer in;
    if (!PyArg_ParseTuple(args, "y*", &in))
        return NULL;
    PyObject *out = NULL;
    if (in.len % TOKEN_BYTES != 0) {
        PyErr_Format(PyExc_ValueError, "tokens are %d bytes each", TOKEN_BYTES);
        goto done;
    }
    Py_ssize_t n = in.len / TOKEN_BYTES;
    if (n > PY_SSIZE_T_MAX / 22) {
        PyErr_SetString(PyExc_OverflowError, "too many tokens");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, n * 22);
    if (!out)
        goto done;
    const unsigned char *src = (const unsigned char *)in.buf;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++, src += TOKEN_BYTES) {
        unsigned char t[18] = {0}; /* 16 bytes and two of padding: six groups of three */
        memcpy(t, src, TOKEN_BYTES);
        unsigned char chars[24];
        for (int g = 0; g < 6; g++) {
            uint32_t v = ((uint32_t)t[3 * g] << 16) | ((uint32_t)t[3 * g + 1] << 8) | t[3 * g + 2];
            chars[4 * g] = (unsigned char)alphabet[(v >> 18) & 63];
            chars[4 * g + 1] = (unsigned char)alphabet[(v >> 12) & 63];
            chars[4 * g + 2] = (unsigned char)alphabet[(v >> 6) & 63];
            chars[4 * g + 3] = (unsigned char)alphabet[v & 63];
        }
        memcpy(dst, chars, 22); /* 128 bits are 22 sextets (the last holds 2 bits and zeros) */
        dst += 22;
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&in);
    return out;
}

/* ---------------------------------------------------------------------- merge_entries */

/*
 * merge_entries(pieces) -> (keys: bytes, rows: bytes)
 * Index entries (provmint-keyrun/1: a u64 key and a u32 row each, held as numpy holds
 * them, in native byte order) merged by (key, row): each piece is (keys, rows), n keys
 * and n rows, sorted by (key, row); the result holds every entry of every piece, sorted
 * likewise. Pieces out of order give some interleaving of them (never a read or a write
 * out of bounds). The pieces are copied side by side into memory of our own, then merged
 * two runs at a time, round after round, without a branch on the keys (they are hashes:
 * a branch on them is mispredicted half the time). provmint.store.keyindex's numpy merge
 * sorts all the entries again: measured on 1M entries, this takes a quarter to half its
 * time for two to four pieces, and as long for eight or more (a round per doubling).
 */

/* Runs a and b (both sorted) into out; the tie-break is the row. */
static void
merge_two(const uint64_t *ka, const uint32_t *ra, Py_ssize_t na, const uint64_t *kb,
          const uint32_t *rb, Py_ssize_t nb, uint64_t *ko, uint32_t *ro)
{
    Py_ssize_t i = 0, j = 0, o = 0;
    while (i < na && j < nb) {
        uint64_t a = ka[i], b = kb[j];
        uint32_t x = ra[i], y = rb[j];
        int take_b = (b < a) | ((b == a) & (y < x));
        ko[o] = take_b ? b : a;
        ro[o] = take_b ? y : x;
        o++;
        i += !take_b;
        j += take_b;
    }
    memcpy(ko + o, ka + i, (size_t)(na - i) * sizeof *ko);
    memcpy(ro + o, ra + i, (size_t)(na - i) * sizeof *ro);
    o += na - i;
    memcpy(ko + o, kb + j, (size_t)(nb - j) * sizeof *ko);
    memcpy(ro + o, rb + j, (size_t)(nb - j) * sizeof *ro);
}

static PyObject *
merge_entries(PyObject *self, PyObject *args)
{
    PyObject *arg;
    if (!PyArg_ParseTuple(args, "O", &arg))
        return NULL;
    PyObject *seq = PySequence_Fast(arg, "pieces must be a sequence of (keys, rows) pairs");
    if (!seq)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq), held = 0, total = 0;
    Py_buffer *views = PyMem_Calloc((size_t)(2 * k + 1), sizeof *views);
    Py_ssize_t *bounds = PyMem_Calloc((size_t)(k + 1), sizeof *bounds);
    PyObject *keys_out = NULL, *rows_out = NULL, *result = NULL;
    uint64_t *spare_keys = NULL;
    uint32_t *spare_rows = NULL;
    if (!views || !bounds) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t p = 0; p < k; p++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, p);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_Format(PyExc_TypeError, "piece %zd is not a (keys, rows) pair", p);
            goto done;
        }
        for (int c = 0; c < 2; c++) {
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(pair, c), &views[held], PyBUF_C_CONTIGUOUS) < 0)
                goto done;
            held++;
        }
        Py_ssize_t klen = views[held - 2].len, rlen = views[held - 1].len;
        if (klen % 8 || rlen % 4 || klen / 8 != rlen / 4) {
            PyErr_Format(PyExc_ValueError, "piece %zd: n u64 keys and n u32 rows are needed", p);
            goto done;
        }
        if (klen / 8 > PY_SSIZE_T_MAX / 8 - total) {
            PyErr_SetString(PyExc_OverflowError, "too many entries");
            goto done;
        }
        bounds[p] = total;
        total += klen / 8;
    }
    bounds[k] = total;
    keys_out = PyBytes_FromStringAndSize(NULL, total * 8);
    rows_out = PyBytes_FromStringAndSize(NULL, total * 4);
    spare_keys = PyMem_Malloc((size_t)(total ? total : 1) * 8);
    spare_rows = PyMem_Malloc((size_t)(total ? total : 1) * 4);
    if (!keys_out || !rows_out || !spare_keys || !spare_rows) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    uint64_t *out_keys = (uint64_t *)PyBytes_AS_STRING(keys_out);
    uint32_t *out_rows = (uint32_t *)PyBytes_AS_STRING(rows_out);
    int rounds = 0;
    for (Py_ssize_t runs = k; runs > 1; runs = (runs + 1) / 2)
        rounds++;
    /* Each round merges from one buffer into the other: start in the one the last
     * round does not write to. */
    uint64_t *src_keys = rounds % 2 ? spare_keys : out_keys;
    uint32_t *src_rows = rounds % 2 ? spare_rows : out_rows;
    uint64_t *dst_keys = rounds % 2 ? out_keys : spare_keys;
    uint32_t *dst_rows = rounds % 2 ? out_rows : spare_rows;
    for (Py_ssize_t p = 0; p < k; p++) { /* the GIL held: the callers' buffers stay put */
        memcpy(src_keys + bounds[p], views[2 * p].buf, (size_t)(bounds[p + 1] - bounds[p]) * 8);
        memcpy(src_rows + bounds[p], views[2 * p + 1].buf, (size_t)(bounds[p + 1] - bounds[p]) * 4);
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t runs = k; runs > 1; runs = (runs + 1) / 2) {
        for (Py_ssize_t r = 0; r < runs; r += 2) {
            Py_ssize_t a = bounds[r], b = bounds[r + 1 < runs ? r + 1 : runs];
            Py_ssize_t end = bounds[r + 2 < runs ? r + 2 : runs];
            merge_two(src_keys + a, src_rows + a, b - a, src_keys + b, src_rows + b, end - b,
                      dst_keys + a, dst_rows + a);
            bounds[r / 2] = a;
        }
        bounds[(runs + 1) / 2] = total;
        uint64_t *tk = src_keys;
        uint32_t *tr = src_rows;
        src_keys = dst_keys, src_rows = dst_rows;
        dst_keys = tk, dst_rows = tr;
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, keys_out, rows_out);
done:
    for (Py_ssize_t v = 0; v < held; v++)
        PyBuffer_Release(&views[v]);
    PyMem_Free(views);
    PyMem_Free(bounds);
    PyMem_Free(spare_keys);
    PyMem_Free(spare_rows);
    Py_XDECREF(keys_out);
    Py_XDECREF(rows_out);
    Py_DECREF(seq);
    return result;
}

/* ----------------------------------------------------------------------------- module */

static PyMethodDef methods[] = {
    {"hash_products", hash_products, METH_VARARGS, "Tokens and leaves straight from columns."},
    {"key_hashes", key_hashes, METH_VARARGS, "64-bit (gtin, serial) index hashes."},
    {"concat", concat, METH_VARARGS, "Concatenate constant and per-row parts."},
    {"token_text", token_text, METH_VARARGS, "Tokens as unpadded base64url, 22 chars each."},
    {"reduce_level", reduce_level, METH_VARARGS, "Hash adjacent pairs of a Merkle level."},
    {"merge_entries", merge_entries, METH_VARARGS, "Merge sorted (key, row) index entries."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "provmint._native",
    .m_doc = "Native minting loops (OpenSSL SHA-256).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    /* Sets up OpenSSL's CPU capability flags, which pick the SHA-NI/AVX block functions
     * (the EVP API would do it when first used; SHA256_* alone never does). */
    x16_cpu = x16_supported();
    if (!OPENSSL_init_crypto(0, NULL)) {
        ERR_clear_error();
        PyErr_SetString(PyExc_ImportError, "OpenSSL's libcrypto cannot be initialised");
        return NULL;
    }
    PyObject *mod = PyModule_Create(&module);
    if (mod && PyModule_AddIntConstant(mod, "SIMD_LANES", x16_cpu ? LANES : 1) < 0)
        Py_CLEAR(mod);
    return mod;
}
