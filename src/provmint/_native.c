/*
 * provmint._native: the minting hot loops in C over Arrow buffers, with OpenSSL's SHA-256.
 *
 * The loops hash with OpenSSL's low-level SHA256_Init/Update/Final (deprecated in OpenSSL 3,
 * still built, the same SHA-NI/AVX block functions): a SHA256_CTX is a plain struct, so an HMAC
 * state is copied by assignment, where each EVP init or copy allocates, frees and wipes a
 * context (measured: about half of the kernel's time went there).
 *
 * Optional: provmint.engine, provmint.ingest and provmint.merkle fall back to the
 * pure-Python loops (same results, pinned by tests) when this module is not built. It
 * computes nothing new: it removes Python's per-call overhead (about 0.3 us per hashlib
 * call, five calls per row) and releases the GIL while hashing.
 *
 *   hash_products(secret, token_tag, commit_tag, record_header, gtin_offsets, gtin_data,
 *                 serial_offsets, serial_data, fields[, payloads])
 *       -> (tokens: bytes, leaves: bytes):
 *       token  = HMAC-SHA256(secret, token_tag || gtin14 || serial)[:16]
 *       leaf   = SHA-256(0x00 || record || SHA-256(commit_tag || token))
 *       record = record_header || for each (prefix, offsets, data) in fields:
 *                prefix || u32be len(value) || value
 *       with payloads true, also (offsets: bytes (n + 1 int64), data: bytes) of every row's
 *       u32be len(record) || record || token: a record part's rows (provmint-records/1)
 *   key_hashes(gtin_offsets, gtin_data, serial_offsets, serial_data) -> bytes (u64 LE each)
 *   reduce_level(level) -> bytes   pairs hashed as SHA-256(0x01 || l || r), odd node promoted
 *   token_text(tokens) -> bytes   every 16-byte token as 22 chars of unpadded base64url
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
    if (len) /* memcpy(_, NULL, 0) is undefined, and empty buffers may have no address */
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

/* ----------------------------------------------------------------------- reduce_level */

static PyObject *
reduce_level(PyObject *self, PyObject *args)
{
    Py_buffer level;
    if (!PyArg_ParseTuple(args, "y*", &level))
        return NULL;
    PyObject *out = NULL;
    if (level.len % HASH != 0) {
        PyErr_SetString(PyExc_ValueError, "a level is a run of 32-byte hashes");
        goto done;
    }
    Py_ssize_t count = level.len / HASH, pairs = count / 2;
    out = PyBytes_FromStringAndSize(NULL, (pairs + count % 2) * HASH);
    if (!out)
        goto done;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *src = (const unsigned char *)level.buf;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    unsigned char node[1 + 2 * HASH];
    node[0] = 0x01;
    for (Py_ssize_t i = 0; ok && i < pairs; i++) {
        memcpy(node + 1, src + 2 * i * HASH, 2 * HASH); /* one update instead of two */
        ok = sha256_of(node, sizeof node, dst + i * HASH);
    }
    if (ok && count % 2)
        memcpy(dst + pairs * HASH, src + (count - 1) * HASH, HASH);
    Py_END_ALLOW_THREADS
    if (!ok) {
        set_openssl_error();
        Py_CLEAR(out);
    }
done:
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

/* leaf = SHA-256(0x00 || header || fields of the row || commit), assembled in ``buf``
 * (which already starts with 0x00 || header) and hashed in one update: each EVP update
 * costs more than copying its bytes. */
static inline int
leaf_hash(unsigned char *buf, size_t start_len, const field_t *fields, Py_ssize_t nf,
          Py_ssize_t row, const unsigned char *commit, unsigned char *leaf, size_t *record_len)
{
    unsigned char *dst = buf + start_len;
    for (Py_ssize_t f = 0; f < nf; f++) {
        size_t len = value_len(&fields[f].col, row);
        copy_bytes(dst, fields[f].prefix.buf, (size_t)fields[f].prefix.len);
        dst += fields[f].prefix.len;
        put_u32be(dst, (uint32_t)len);
        copy_bytes(dst + 4, value_at(&fields[f].col, row), len);
        dst += 4 + len;
    }
    *record_len = (size_t)(dst - buf) - 1; /* the record follows the 0x00 */
    memcpy(dst, commit, HASH);
    dst += HASH;
    return sha256_of(buf, (size_t)(dst - buf), leaf);
}

static PyObject *
hash_products(PyObject *self, PyObject *args)
{
    Py_buffer secret, ttag, ctag, header;
    PyObject *goff, *gdata, *soff, *sdata, *fields_obj;
    int want_payloads = 0;
    if (!PyArg_ParseTuple(args, "y*y*y*y*OOOOO|p", &secret, &ttag, &ctag, &header, &goff, &gdata,
                          &soff, &sdata, &fields_obj, &want_payloads))
        return NULL;
    PyObject *result = NULL, *tokens = NULL, *leaves = NULL, *items = NULL;
    PyObject *pay_offsets = NULL, *pay_data = NULL;
    field_t *fields = NULL;
    column_t gtin = {0}, serial = {0};
    copies_t copies = {0};
    minter_t m = {0};
    unsigned char *leaf_in = NULL; /* 0x00 || record header || the row's record || commit */
    Py_ssize_t nf = 0;
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
    leaf_in = PyMem_Malloc((size_t)longest);
    if (!leaf_in) {
        PyErr_NoMemory();
        goto done;
    }
    leaf_in[0] = 0x00;
    copy_bytes(leaf_in + 1, header.buf, (size_t)header.len);
    tokens = PyBytes_FromStringAndSize(NULL, gtin.n * TOKEN_BYTES);
    leaves = PyBytes_FromStringAndSize(NULL, gtin.n * HASH);
    if (!tokens || !leaves || minter_open(&m, &secret, &ttag, &ctag) < 0)
        goto done;
    unsigned char *tok = (unsigned char *)PyBytes_AS_STRING(tokens);
    unsigned char *lf = (unsigned char *)PyBytes_AS_STRING(leaves);
    Py_ssize_t n = gtin.n;
    size_t header_end = (size_t)header.len + 1;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    unsigned char commit[HASH];
    SHA256_CTX work;
    size_t record_len = 0;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        ok = minter_token(&m, &work, &gtin, &serial, i, tok + i * TOKEN_BYTES, commit)
             && leaf_hash(leaf_in, header_end, fields, nf, i, commit, lf + i * HASH,
                          &record_len);
        if (pay) { /* the sizes summed above, from the same private offsets */
            unsigned char *row = pay + pay_off[i];
            put_u32be(row, (uint32_t)record_len);
            memcpy(row + 4, leaf_in + 1, record_len);
            memcpy(row + 4 + record_len, tok + i * TOKEN_BYTES, TOKEN_BYTES);
            pay_off[i + 1] = pay_off[i] + 4 + (int64_t)record_len + TOKEN_BYTES;
        }
    }
    OPENSSL_cleanse(&work, sizeof work);
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
        copy_bytes(block + GTIN_BYTES, value_at(&serial, i), value_len(&serial, i));
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

/* ----------------------------------------------------------------------------- module */

static PyMethodDef methods[] = {
    {"hash_products", hash_products, METH_VARARGS, "Tokens and leaves straight from columns."},
    {"key_hashes", key_hashes, METH_VARARGS, "64-bit (gtin, serial) index hashes."},
    {"concat", concat, METH_VARARGS, "Concatenate constant and per-row parts."},
    {"token_text", token_text, METH_VARARGS, "Tokens as unpadded base64url, 22 chars each."},
    {"reduce_level", reduce_level, METH_VARARGS, "Hash adjacent pairs of a Merkle level."},
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
    if (!OPENSSL_init_crypto(0, NULL)) {
        ERR_clear_error();
        PyErr_SetString(PyExc_ImportError, "OpenSSL's libcrypto cannot be initialised");
        return NULL;
    }
    return PyModule_Create(&module);
}
