/*
 * provmint._native: the minting hot loops in C over Arrow buffers, with OpenSSL's SHA-256.
 *
 * Optional: provmint.engine and provmint.merkle fall back to the pure-Python loops (same
 * results, pinned by tests) when this module is not built. It computes nothing new: it
 * removes Python's per-call overhead (about 0.3 us per hashlib call, five calls per row)
 * and releases the GIL while hashing.
 *
 *   hash_products(secret, token_tag, commit_tag, record_header, gtin, serial, fields)
 *       -> (tokens: bytes, leaves: bytes), straight from the column buffers:
 *       token  = HMAC-SHA256(secret, token_tag || gtin14 || serial)[:16]
 *       leaf   = SHA-256(0x00 || record || SHA-256(commit_tag || token))
 *   key_hashes(gtin_offsets, gtin_data, serial_offsets, serial_data) -> bytes
 *   reduce_level(level) -> bytes   pairs hashed as SHA-256(0x01 || l || r), odd node promoted
 *   concat(n, parts) -> (offsets: bytes (int32), data: bytes)
 *       row i = the concatenation of every part for row i; a part is
 *       bytes                      the same bytes in every row
 *       ("col", offsets, data)     the row's value
 *       ("len32", offsets, data)   the value's byte length, u32 big-endian
 *       ("opt", offsets, data, p)  p || value, or nothing when the value is empty
 *
 * Offsets are int32 Arrow offset buffers (n + 1 entries, absolute into the data buffer).
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define TOKEN_BYTES 16
#define HASH 32
#define BLOCK 64

static int
check_offsets(const Py_buffer *off, const Py_buffer *data, Py_ssize_t *n_out)
{
    if (off->len % 4 != 0 || off->len < 4) {
        PyErr_SetString(PyExc_ValueError, "offsets must be a non-empty int32 buffer");
        return -1;
    }
    Py_ssize_t n = off->len / 4 - 1;
    const int32_t *o = (const int32_t *)off->buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (o[i] < 0 || o[i + 1] < o[i] || (Py_ssize_t)o[i + 1] > data->len) {
            PyErr_SetString(PyExc_ValueError, "offsets are not monotonic within the data");
            return -1;
        }
    }
    if (n > 0 && o[0] < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        return -1;
    }
    *n_out = n;
    return 0;
}

/* The token and commitment half of minting (HMAC with precomputed pads). */
typedef struct {
    SHA256_CTX inner, outer; /* HMAC pads absorbed; inner also holds the token tag */
    unsigned char commit_in[32 + TOKEN_BYTES];
    size_t ctag_len;
} minter_t;

static void
minter_init(minter_t *m, const Py_buffer *secret, const Py_buffer *ttag, const Py_buffer *ctag)
{
    unsigned char ipad[BLOCK], opad[BLOCK];
    memset(ipad, 0x36, BLOCK);
    memset(opad, 0x5c, BLOCK);
    for (Py_ssize_t i = 0; i < secret->len; i++) {
        ipad[i] ^= ((const unsigned char *)secret->buf)[i];
        opad[i] ^= ((const unsigned char *)secret->buf)[i];
    }
    SHA256_Init(&m->inner);
    SHA256_Update(&m->inner, ipad, BLOCK);
    SHA256_Update(&m->inner, ttag->buf, ttag->len);
    SHA256_Init(&m->outer);
    SHA256_Update(&m->outer, opad, BLOCK);
    memcpy(m->commit_in, ctag->buf, ctag->len);
    m->ctag_len = (size_t)ctag->len;
}

/* ``c`` is a copy of m->inner that has absorbed the product identity. Writes the
 * 16-byte token and its 32-byte commitment. Not the one-shot SHA256(): in OpenSSL 3 it
 * fetches the digest on every call. */
static void
minter_finish(minter_t *m, SHA256_CTX *c, unsigned char *token, unsigned char *commit)
{
    unsigned char digest[HASH];
    SHA256_Final(digest, c);
    *c = m->outer;
    SHA256_Update(c, digest, HASH);
    SHA256_Final(digest, c);
    memcpy(token, digest, TOKEN_BYTES);
    memcpy(m->commit_in + m->ctag_len, digest, TOKEN_BYTES);
    SHA256_Init(c);
    SHA256_Update(c, m->commit_in, m->ctag_len + TOKEN_BYTES);
    SHA256_Final(commit, c);
}

static PyObject *
reduce_level(PyObject *self, PyObject *args)
{
    Py_buffer level;
    if (!PyArg_ParseTuple(args, "y*", &level))
        return NULL;
    if (level.len % HASH != 0) {
        PyBuffer_Release(&level);
        PyErr_SetString(PyExc_ValueError, "a level is a run of 32-byte hashes");
        return NULL;
    }
    Py_ssize_t count = level.len / HASH, pairs = count / 2;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (pairs + count % 2) * HASH);
    if (out) {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
        const unsigned char *src = (const unsigned char *)level.buf;
        Py_BEGIN_ALLOW_THREADS
        unsigned char one = 0x01;
        SHA256_CTX c;
        for (Py_ssize_t i = 0; i < pairs; i++) {
            SHA256_Init(&c);
            SHA256_Update(&c, &one, 1);
            SHA256_Update(&c, src + 2 * i * HASH, 2 * HASH);
            SHA256_Final(dst + i * HASH, &c);
        }
        if (count % 2)
            memcpy(dst + pairs * HASH, src + (count - 1) * HASH, HASH);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&level);
    return out;
}


enum { P_CONST, P_COL, P_LEN32, P_OPT };

typedef struct {
    int kind;
    const unsigned char *cbuf; /* constant bytes or "opt" prefix */
    Py_ssize_t clen;
    const int32_t *off;
    const unsigned char *data;
    Py_buffer views[3];
    int nviews;
} part_t;

static void
release_parts(part_t *parts, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count; i++)
        for (int v = 0; v < parts[i].nviews; v++)
            PyBuffer_Release(&parts[i].views[v]);
}

static PyObject *
concat(PyObject *self, PyObject *args)
{
    Py_ssize_t n;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "nO", &n, &seq))
        return NULL;
    PyObject *fast = PySequence_Fast(seq, "parts must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast), ready = 0;
    part_t *parts = PyMem_Calloc(count ? count : 1, sizeof(part_t));
    PyObject *offsets = NULL, *data = NULL, *result = NULL;
    if (!parts) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++, ready++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        part_t *p = &parts[i];
        if (PyBytes_Check(item)) {
            p->kind = P_CONST;
            if (PyObject_GetBuffer(item, &p->views[0], PyBUF_SIMPLE) < 0)
                goto fail;
            p->nviews = 1;
            p->cbuf = p->views[0].buf;
            p->clen = p->views[0].len;
            continue;
        }
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 3) {
            PyErr_SetString(PyExc_TypeError, "a part is bytes or a (kind, offsets, data) tuple");
            goto fail;
        }
        const char *kind = PyUnicode_AsUTF8(PyTuple_GET_ITEM(item, 0));
        if (!kind)
            goto fail;
        if (strcmp(kind, "col") == 0)
            p->kind = P_COL;
        else if (strcmp(kind, "len32") == 0)
            p->kind = P_LEN32;
        else if (strcmp(kind, "opt") == 0 && PyTuple_GET_SIZE(item) == 4)
            p->kind = P_OPT;
        else {
            PyErr_SetString(PyExc_ValueError, "unknown part kind");
            goto fail;
        }
        for (int v = 0; v < (p->kind == P_OPT ? 3 : 2); v++) {
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, v + 1), &p->views[v], PyBUF_SIMPLE) < 0)
                goto fail;
            p->nviews = v + 1;
        }
        Py_ssize_t dn;
        if (p->views[0].len != (n + 1) * 4) {
            PyErr_SetString(PyExc_ValueError, "offsets do not match the row count");
            goto fail;
        }
        if (check_offsets(&p->views[0], &p->views[1], &dn) < 0)
            goto fail;
        p->off = p->views[0].buf;
        p->data = p->views[1].buf;
        if (p->kind == P_OPT) {
            p->cbuf = p->views[2].buf;
            p->clen = p->views[2].len;
        }
    }
    /* Sizes first, so the output is allocated once. */
    offsets = PyBytes_FromStringAndSize(NULL, (n + 1) * 4);
    if (!offsets)
        goto fail;
    int32_t *out_off = (int32_t *)PyBytes_AS_STRING(offsets);
    int64_t total = 0;
    out_off[0] = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        for (Py_ssize_t i = 0; i < count; i++) {
            part_t *p = &parts[i];
            int32_t len = p->kind == P_CONST ? 0 : p->off[r + 1] - p->off[r];
            switch (p->kind) {
            case P_CONST: total += p->clen; break;
            case P_COL: total += len; break;
            case P_LEN32: total += 4; break;
            case P_OPT: total += len ? p->clen + len : 0; break;
            }
        }
        if (total > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "concatenated column exceeds 2 GiB");
            goto fail;
        }
        out_off[r + 1] = (int32_t)total;
    }
    data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!data)
        goto fail;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(data);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n; r++) {
        for (Py_ssize_t i = 0; i < count; i++) {
            part_t *p = &parts[i];
            if (p->kind == P_CONST) {
                memcpy(dst, p->cbuf, p->clen);
                dst += p->clen;
                continue;
            }
            int32_t len = p->off[r + 1] - p->off[r];
            if (p->kind == P_LEN32) {
                dst[0] = (unsigned char)(len >> 24);
                dst[1] = (unsigned char)(len >> 16);
                dst[2] = (unsigned char)(len >> 8);
                dst[3] = (unsigned char)len;
                dst += 4;
                continue;
            }
            if (p->kind == P_OPT) {
                if (!len)
                    continue;
                memcpy(dst, p->cbuf, p->clen);
                dst += p->clen;
            }
            memcpy(dst, p->data + p->off[r], len);
            dst += len;
        }
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, offsets, data);
fail:
    Py_XDECREF(offsets);
    Py_XDECREF(data);
    if (parts) {
        release_parts(parts, ready + (ready < count ? 1 : 0));
        PyMem_Free(parts);
    }
    Py_DECREF(fast);
    return result;
}


/*
 * hash_products(secret, token_tag, commit_tag, record_header, gtin, serial, fields)
 *     -> (tokens, leaves)
 * Tokens and leaves without materializing ids or records:
 * gtin and serial are (offsets, data) pairs; fields lists, in canonical order,
 * (prefix, offsets, data) where prefix = u8 len(name) || name. The record is
 * record_header || for each field: prefix || u32be len(value) || value.
 */
typedef struct {
    Py_buffer prefix, off, data;
    int held;
} field_t;

static PyObject *
hash_products(PyObject *self, PyObject *args)
{
    Py_buffer secret, ttag, ctag, header, goff, gdata, soff, sdata;
    PyObject *fields_obj;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*O", &secret, &ttag, &ctag, &header, &goff,
                          &gdata, &soff, &sdata, &fields_obj))
        return NULL;
    PyObject *result = NULL, *tokens = NULL, *leaves = NULL, *fast = NULL;
    field_t *fields = NULL;
    Py_ssize_t nf = 0, n = 0, n2 = 0;
    if (check_offsets(&goff, &gdata, &n) < 0 || check_offsets(&soff, &sdata, &n2) < 0)
        goto done;
    if (n != n2 || secret.len > BLOCK || ctag.len > 32) {
        PyErr_SetString(PyExc_ValueError, "bad lengths (rows, secret or commit tag)");
        goto done;
    }
    fast = PySequence_Fast(fields_obj, "fields must be a sequence");
    if (!fast)
        goto done;
    nf = PySequence_Fast_GET_SIZE(fast);
    fields = PyMem_Calloc(nf ? nf : 1, sizeof(field_t));
    if (!fields) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t f = 0; f < nf; f++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, f);
        Py_ssize_t fn;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "a field is (prefix, offsets, data)");
            goto done;
        }
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 0), &fields[f].prefix, PyBUF_SIMPLE) < 0)
            goto done;
        fields[f].held = 1;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 1), &fields[f].off, PyBUF_SIMPLE) < 0)
            goto done;
        fields[f].held = 2;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 2), &fields[f].data, PyBUF_SIMPLE) < 0)
            goto done;
        fields[f].held = 3;
        if (check_offsets(&fields[f].off, &fields[f].data, &fn) < 0)
            goto done;
        if (fn != n) {
            PyErr_SetString(PyExc_ValueError, "a field has a different row count");
            goto done;
        }
    }
    tokens = PyBytes_FromStringAndSize(NULL, n * TOKEN_BYTES);
    leaves = PyBytes_FromStringAndSize(NULL, n * HASH);
    if (!tokens || !leaves)
        goto done;
    {
        unsigned char *tok = (unsigned char *)PyBytes_AS_STRING(tokens);
        unsigned char *lf = (unsigned char *)PyBytes_AS_STRING(leaves);
        const int32_t *go = goff.buf, *so = soff.buf;
        const unsigned char *gd = gdata.buf, *sd = sdata.buf;
        unsigned char zero = 0x00, len4[4], commit[HASH];
        minter_t m;
        SHA256_CTX leaf0, c;
        Py_BEGIN_ALLOW_THREADS
        minter_init(&m, &secret, &ttag, &ctag);
        SHA256_Init(&leaf0);
        SHA256_Update(&leaf0, &zero, 1);
        SHA256_Update(&leaf0, header.buf, header.len);
        for (Py_ssize_t i = 0; i < n; i++) {
            c = m.inner;
            SHA256_Update(&c, gd + go[i], (size_t)(go[i + 1] - go[i]));
            SHA256_Update(&c, sd + so[i], (size_t)(so[i + 1] - so[i]));
            minter_finish(&m, &c, tok + i * TOKEN_BYTES, commit);
            c = leaf0;
            for (Py_ssize_t f = 0; f < nf; f++) {
                const int32_t *o = fields[f].off.buf;
                int32_t len = o[i + 1] - o[i];
                len4[0] = (unsigned char)(len >> 24);
                len4[1] = (unsigned char)(len >> 16);
                len4[2] = (unsigned char)(len >> 8);
                len4[3] = (unsigned char)len;
                SHA256_Update(&c, fields[f].prefix.buf, fields[f].prefix.len);
                SHA256_Update(&c, len4, 4);
                SHA256_Update(&c, (const unsigned char *)fields[f].data.buf + o[i], (size_t)len);
            }
            SHA256_Update(&c, commit, HASH);
            SHA256_Final(lf + i * HASH, &c);
        }
        Py_END_ALLOW_THREADS
    }
    result = PyTuple_Pack(2, tokens, leaves);
done:
    Py_XDECREF(tokens);
    Py_XDECREF(leaves);
    if (fields) {
        for (Py_ssize_t f = 0; f < nf; f++) {
            if (fields[f].held >= 1)
                PyBuffer_Release(&fields[f].prefix);
            if (fields[f].held >= 2)
                PyBuffer_Release(&fields[f].off);
            if (fields[f].held >= 3)
                PyBuffer_Release(&fields[f].data);
        }
        PyMem_Free(fields);
    }
    Py_XDECREF(fast);
    PyBuffer_Release(&secret);
    PyBuffer_Release(&ttag);
    PyBuffer_Release(&ctag);
    PyBuffer_Release(&header);
    PyBuffer_Release(&goff);
    PyBuffer_Release(&gdata);
    PyBuffer_Release(&soff);
    PyBuffer_Release(&sdata);
    return result;
}

/*
 * key_hashes(gtin_offsets, gtin_data, serial_offsets, serial_data) -> bytes (n u64, LE)
 * provmint-keyhash/1, as provmint.ingest.key_hashes computes it with numpy: the 14 GTIN
 * digits and the serial NUL-padded to 20 bytes, as five little-endian u64 words, mixed
 * splitmix64-style.
 */
static PyObject *
key_hashes(PyObject *self, PyObject *args)
{
    Py_buffer goff, gdata, soff, sdata;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &goff, &gdata, &soff, &sdata))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = 0, n2 = 0;
    if (check_offsets(&goff, &gdata, &n) < 0 || check_offsets(&soff, &sdata, &n2) < 0)
        goto done;
    if (n != n2) {
        PyErr_SetString(PyExc_ValueError, "gtin and serial differ in length");
        goto done;
    }
    const int32_t *go = goff.buf, *so = soff.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (go[i + 1] - go[i] != 14 || so[i + 1] - so[i] > 20) {
            PyErr_SetString(PyExc_ValueError, "gtin must be 14 bytes and serial at most 20");
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!out)
        goto done;
    {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
        const unsigned char *gd = gdata.buf, *sd = sdata.buf;
        const uint64_t m1 = 0xBF58476D1CE4E5B9ULL, m2 = 0x94D049BB133111EBULL;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned char block[40];
            memset(block, 0, sizeof block);
            memcpy(block, gd + go[i], 14);
            memcpy(block + 14, sd + so[i], (size_t)(so[i + 1] - so[i]));
            uint64_t h = 0x9E3779B97F4A7C15ULL;
            for (int w = 0; w < 5; w++) {
                uint64_t word = 0;
                for (int b = 7; b >= 0; b--)
                    word = (word << 8) | block[w * 8 + b];
                h ^= word;
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
    }
done:
    PyBuffer_Release(&goff);
    PyBuffer_Release(&gdata);
    PyBuffer_Release(&soff);
    PyBuffer_Release(&sdata);
    return out;
}

static PyMethodDef methods[] = {
    {"hash_products", hash_products, METH_VARARGS, "Tokens and leaves straight from columns."},
    {"key_hashes", key_hashes, METH_VARARGS, "64-bit (gtin, serial) index hashes."},
    {"concat", concat, METH_VARARGS, "Concatenate constant and per-row parts."},
    {"reduce_level", reduce_level, METH_VARARGS, "Hash adjacent pairs of a Merkle level."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "provmint._native", "Native minting loops (OpenSSL SHA-256).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModule_Create(&module);
}
