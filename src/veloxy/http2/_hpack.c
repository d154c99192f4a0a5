/*
 * veloxy.http2._hpack: the common HPACK header blocks, decoded and encoded in C for hpack's
 * Decoder and Encoder.
 *
 * Why this is hand-written: hpack decodes and encodes a header block in Python, with a few
 * Python calls and a logging call per field; after h2's state machine it was the largest
 * cost per HTTP/2 request (docs/BENCHMARKS.md, "HTTP/2: where the CPU goes"). Here a whole
 * block is done in one call.
 *
 * A strict *subset* of hpack, never a second opinion on it. The state stays hpack's: the
 * dynamic table is the Decoder's own HeaderTable (its deque of (name, value) tuples and
 * its size), and the static table and Huffman code are hpack's, handed over by
 * http2/hpack_lane.py at import. A block is decoded in two steps: first into a result
 * and a record of the table changes, without touching the table; then, only if all of it
 * was understood, the changes are applied to the deque. Anything else is "declined"
 * (decode() returns None, the table untouched) and hpack's Python decoder decodes the block
 * from the same state: a dynamic table size update, an integer longer than MAX_INT_BYTES,
 * a truncated block, an index outside the tables, Huffman code that is not plainly valid
 * (EOS, padding over 7 bits or not all ones), a header list over max_header_list_size,
 * a table larger than max_allowed_table_size, sizes beyond what C holds. So every error,
 * and its exception class and message, is hpack's own.
 *
 * encode() is hpack's Encoder.encode(headers, huffman=True) for a list or tuple of
 * (bytes, bytes) fields (plain tuples, HeaderTuple, NeverIndexedHeaderTuple) with no table
 * size change pending: the same table search (static first, then dynamic, newest first),
 * Huffman always, the same additions and evictions, on the Encoder's own deque. Anything
 * else is checked before a byte is written or the table changed, and declined.
 *
 * tests/http2/test_hpack_lane.py (hypothesis) holds both to hpack's bytes, results and table
 * state; fuzz/hpack_differential.py fuzzes the decoder's difference.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Continuation bytes of an HPACK integer taken here (hpack allows 5): 3 hold 2^21 + 127,
 * beyond any table index or string this lane has to handle. */
#define MAX_INT_BYTES 3
/* Table changes recorded per block before it is declined: more is not a common block. */
#define MAX_ADDED 128
/* Bytes of one decoded Huffman string decoded on the stack; longer ones are allocated. */
#define HUFF_STACK 1024

/* -- what hpack_lane.configure() hands over ------------------------------------------- */

static PyObject *STATIC[61][2];   /* hpack's HeaderTable.STATIC_TABLE */
static PyTypeObject *HEADER_TUPLE, *NEVER_INDEXED;
static int CONFIGURED = 0;

/* The Huffman code as a binary tree: node 0 is the root; child[n][bit] is > 0 for an inner
 * node, -(symbol + 1) for a leaf, 0 where no code goes (cannot happen for a complete code). */
#define MAX_NODES 512
static uint32_t HUFF_CODE[257];
static uint8_t HUFF_LEN[257];
static int16_t HUFF[MAX_NODES][2];
static int HUFF_NODES = 1;

static int
huff_add(unsigned int code, int length, int symbol)
{
    int node = 0;
    for (int i = length - 1; i >= 0; i--) {
        int bit = (code >> i) & 1;
        if (i == 0) {
            if (HUFF[node][bit] != 0)
                return -1;
            HUFF[node][bit] = (int16_t)(-(symbol + 1));
            return 0;
        }
        int next = HUFF[node][bit];
        if (next < 0)
            return -1;
        if (next == 0) {
            if (HUFF_NODES >= MAX_NODES)
                return -1;
            next = HUFF_NODES++;
            HUFF[node][bit] = (int16_t)next;
        }
        node = next;
    }
    return -1;
}

static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *table, *codes, *lengths, *header, *never;
    if (!PyArg_ParseTuple(args, "OOOOO", &table, &codes, &lengths, &header, &never))
        return NULL;
    if (CONFIGURED)
        Py_RETURN_NONE;
    if (!PyTuple_Check(table) || PyTuple_GET_SIZE(table) != 61) {
        PyErr_SetString(PyExc_ValueError, "the static table must be hpack's 61 entries");
        return NULL;
    }
    for (int i = 0; i < 61; i++) {
        PyObject *entry = PyTuple_GET_ITEM(table, i);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 0))
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 1))) {
            PyErr_SetString(PyExc_ValueError, "a static table entry is not (bytes, bytes)");
            return NULL;
        }
        STATIC[i][0] = Py_NewRef(PyTuple_GET_ITEM(entry, 0));
        STATIC[i][1] = Py_NewRef(PyTuple_GET_ITEM(entry, 1));
    }
    if (PySequence_Size(codes) != 257 || PySequence_Size(lengths) != 257) {
        PyErr_SetString(PyExc_ValueError, "the Huffman code must have 257 symbols");
        return NULL;
    }
    memset(HUFF, 0, sizeof HUFF);
    HUFF_NODES = 1;
    for (int s = 0; s < 257; s++) {
        PyObject *c = PySequence_GetItem(codes, s), *l = PySequence_GetItem(lengths, s);
        long code = c ? PyLong_AsLong(c) : -1, length = l ? PyLong_AsLong(l) : -1;
        Py_XDECREF(c);
        Py_XDECREF(l);
        if (PyErr_Occurred())
            return NULL;
        if (length < 5 || length > 30 || code < 0 || code >= (1L << length)
                || huff_add((unsigned int)code, (int)length, s) < 0) {
            PyErr_SetString(PyExc_ValueError, "not a prefix code");
            return NULL;
        }
        HUFF_CODE[s] = (uint32_t)code;
        HUFF_LEN[s] = (uint8_t)length;
    }
    if (!PyType_Check(header) || !PyType_Check(never)) {
        PyErr_SetString(PyExc_TypeError, "HeaderTuple and NeverIndexedHeaderTuple expected");
        return NULL;
    }
    HEADER_TUPLE = (PyTypeObject *)Py_NewRef(header);
    NEVER_INDEXED = (PyTypeObject *)Py_NewRef(never);
    CONFIGURED = 1;
    Py_RETURN_NONE;
}

/* -- decoding --------------------------------------------------------------------------- */

/* An HPACK integer with an N-bit prefix at *pos; -1: decline (truncated or too long). */
static inline Py_ssize_t
read_int(const unsigned char *data, Py_ssize_t len, Py_ssize_t *pos, int prefix)
{
    unsigned int max = (1u << prefix) - 1;
    Py_ssize_t value = data[*pos] & max;
    (*pos)++;
    if ((unsigned int)value < max)
        return value;
    for (int i = 0, shift = 0; i < MAX_INT_BYTES; i++, shift += 7) {
        if (*pos >= len)
            return -1;
        unsigned char b = data[(*pos)++];
        value += (Py_ssize_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return value;
    }
    return -1;
}

/* Huffman-decoded `src` as a new bytes object; NULL without an exception set: decline. */
static PyObject *
huffman(const unsigned char *src, Py_ssize_t len)
{
    unsigned char stack[HUFF_STACK];
    /* the shortest code has 5 bits: at most 8/5 symbols per byte */
    Py_ssize_t cap = len * 8 / 5 + 1;
    unsigned char *out = cap <= HUFF_STACK ? stack : PyMem_Malloc(cap);
    if (out == NULL)
        return NULL;
    Py_ssize_t n = 0;
    int node = 0, depth = 0, all_ones = 1;
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char byte = src[i];
        for (int b = 7; b >= 0; b--) {
            int bit = (byte >> b) & 1;
            int next = HUFF[node][bit];
            if (next < 0) {
                int symbol = -next - 1;
                if (symbol == 256)
                    goto done;  /* EOS in the string: an error, hpack's to raise */
                out[n++] = (unsigned char)symbol;
                node = 0;
                depth = 0;
                all_ones = 1;
            } else if (next == 0) {
                goto done;
            } else {
                node = next;
                depth++;
                all_ones &= bit;
            }
        }
    }
    /* padding: at most 7 bits, the most significant bits of EOS (all ones) */
    if (depth <= 7 && all_ones)
        result = PyBytes_FromStringAndSize((const char *)out, n);
done:
    if (out != stack)
        PyMem_Free(out);
    return result;
}

/* A string literal (length-prefixed, maybe Huffman-coded) at *pos as a new bytes object;
 * NULL: decline (with an exception set only when memory ran out). */
static PyObject *
read_string(const unsigned char *data, Py_ssize_t len, Py_ssize_t *pos)
{
    if (*pos >= len)
        return NULL;
    int huff = data[*pos] & 0x80;
    Py_ssize_t size = read_int(data, len, pos, 7);
    if (size < 0 || size > len - *pos)
        return NULL;
    const unsigned char *start = data + *pos;
    *pos += size;
    if (huff)
        return huffman(start, size);
    return PyBytes_FromStringAndSize((const char *)start, size);
}

typedef struct {
    PyObject *entries;      /* hpack's deque, newest first; not changed while decoding */
    Py_ssize_t orig_len;    /* its length */
    Py_ssize_t orig_alive;  /* its entries not evicted by this block (the newest ones) */
    PyObject *added[MAX_ADDED][2];  /* entries this block adds, oldest first (borrowed from
                                       the result headers) */
    Py_ssize_t n_added, first_alive;  /* added[first_alive:] are in the table */
    Py_ssize_t size, maxsize;
} Table;

/* The (name, value) at HPACK index `index` (1-based), borrowed; 0 when there is none. */
static int
lookup(Table *t, Py_ssize_t index, PyObject **name, PyObject **value)
{
    if (index < 1)
        return 0;
    if (index <= 61) {
        *name = STATIC[index - 1][0];
        *value = STATIC[index - 1][1];
        return 1;
    }
    Py_ssize_t j = index - 62, alive_added = t->n_added - t->first_alive;
    if (j < alive_added) {
        *name = t->added[t->n_added - 1 - j][0];
        *value = t->added[t->n_added - 1 - j][1];
        return 1;
    }
    j -= alive_added;
    if (j >= t->orig_alive)
        return 0;
    PyObject *entry = PySequence_GetItem(t->entries, j);  /* a deque: O(1) near its ends */
    if (entry == NULL)
        return -1;
    int ok = PyTuple_Check(entry) && PyTuple_GET_SIZE(entry) == 2
             && PyBytes_Check(PyTuple_GET_ITEM(entry, 0))
             && PyBytes_Check(PyTuple_GET_ITEM(entry, 1));
    if (ok) {
        /* the deque keeps them alive for as long as the block is decoded */
        *name = PyTuple_GET_ITEM(entry, 0);
        *value = PyTuple_GET_ITEM(entry, 1);
    }
    Py_DECREF(entry);
    return ok;
}

/* The size of the oldest entry still in the table, which it evicts; -1: decline. */
static Py_ssize_t
evict_oldest(Table *t)
{
    if (t->orig_alive > 0) {
        PyObject *entry = PySequence_GetItem(t->entries, t->orig_alive - 1);
        if (entry == NULL)
            return -1;
        Py_ssize_t size = -1;
        if (PyTuple_Check(entry) && PyTuple_GET_SIZE(entry) == 2
                && PyBytes_Check(PyTuple_GET_ITEM(entry, 0))
                && PyBytes_Check(PyTuple_GET_ITEM(entry, 1)))
            size = 32 + PyBytes_GET_SIZE(PyTuple_GET_ITEM(entry, 0))
                   + PyBytes_GET_SIZE(PyTuple_GET_ITEM(entry, 1));
        Py_DECREF(entry);
        t->orig_alive--;
        return size;
    }
    if (t->first_alive < t->n_added) {
        PyObject **e = t->added[t->first_alive++];
        return 32 + PyBytes_GET_SIZE(e[0]) + PyBytes_GET_SIZE(e[1]);
    }
    return -1;
}

/* HeaderTable.add, on the record; 0: decline. */
static int
table_add(Table *t, PyObject *name, PyObject *value)
{
    Py_ssize_t size = 32 + PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value);
    if (t->n_added >= MAX_ADDED)
        return 0;
    if (size > t->maxsize) {  /* hpack empties the table and adds nothing */
        t->orig_alive = 0;
        t->first_alive = t->n_added;
        t->size = 0;
        return 1;
    }
    t->added[t->n_added][0] = name;
    t->added[t->n_added][1] = value;
    t->n_added++;
    t->size += size;
    while (t->size > t->maxsize) {
        Py_ssize_t evicted = evict_oldest(t);
        if (evicted < 0)
            return 0;
        t->size -= evicted;
    }
    return 1;
}

/* The record applied to hpack's deque: evictions from the right, additions on the left. */
static int
commit(Table *t)
{
    if (t->orig_alive == 0 && t->orig_len > 0) {
        PyObject *r = PyObject_CallMethod(t->entries, "clear", NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    } else {
        for (Py_ssize_t i = t->orig_alive; i < t->orig_len; i++) {
            PyObject *r = PyObject_CallMethod(t->entries, "pop", NULL);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
        }
    }
    PyObject *appendleft = PyUnicode_InternFromString("appendleft");
    if (appendleft == NULL)
        return -1;
    for (Py_ssize_t i = t->first_alive; i < t->n_added; i++) {
        PyObject *entry = PyTuple_Pack(2, t->added[i][0], t->added[i][1]);
        if (entry == NULL)
            return -1;
        PyObject *r = PyObject_CallMethodOneArg(t->entries, appendleft, entry);
        Py_DECREF(entry);
        if (r == NULL) {
            Py_DECREF(appendleft);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_DECREF(appendleft);
    return 0;
}

static PyObject *
header_tuple(PyTypeObject *type, PyObject *name, PyObject *value)
{
    PyObject *h = type->tp_alloc(type, 2);  /* as tuple.__new__(type, (name, value)) */
    if (h == NULL)
        return NULL;
    PyTuple_SET_ITEM(h, 0, Py_NewRef(name));
    PyTuple_SET_ITEM(h, 1, Py_NewRef(value));
    return h;
}

/* decode(data, entries, size, maxsize, max_header_list_size, max_allowed_table_size):
 * ([HeaderTuple...], the table's new size) with `entries` updated, or None (declined,
 * `entries` untouched). */
static PyObject *
decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "decode() takes 6 arguments");
        return NULL;
    }
    if (!CONFIGURED) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    Table t;
    t.entries = args[1];
    t.n_added = t.first_alive = 0;
    t.size = PyLong_AsSsize_t(args[2]);
    t.maxsize = PyLong_AsSsize_t(args[3]);
    Py_ssize_t max_list = PyLong_AsSsize_t(args[4]);
    Py_ssize_t max_allowed = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) {  /* not ints, or beyond C's: hpack's to handle */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    /* hpack raises InvalidTableSizeError at the end of such a block */
    if (t.maxsize > max_allowed || t.maxsize < 0 || t.size < 0)
        Py_RETURN_NONE;
    t.orig_len = t.orig_alive = PyObject_Length(t.entries);
    if (t.orig_len < 0)
        return NULL;

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    const unsigned char *data = view.buf;
    Py_ssize_t len = view.len, pos = 0, inflated = 0;
    PyObject *headers = PyList_New(0);
    if (headers == NULL)
        goto error;
    while (pos < len) {
        unsigned char first = data[pos];
        PyObject *name = NULL, *value = NULL;
        PyTypeObject *type = HEADER_TUPLE;
        int index_it = 0;
        if (first & 0x80) {  /* indexed field */
            Py_ssize_t index = read_int(data, len, &pos, 7);
            int found = index < 0 ? 0 : lookup(&t, index, &name, &value);
            if (found < 0)
                goto error;
            if (!found)
                goto decline;
            Py_INCREF(name);
            Py_INCREF(value);
        } else if ((first & 0xe0) == 0x20) {  /* table size update: hpack's */
            goto decline;
        } else {  /* literal: with incremental indexing, without, never indexed */
            int prefix;
            if (first & 0x40) {
                prefix = 6;
                index_it = 1;
            } else {
                prefix = 4;
                if (first & 0x10)
                    type = NEVER_INDEXED;
            }
            if (first & ((1u << prefix) - 1)) {
                PyObject *unused;
                Py_ssize_t index = read_int(data, len, &pos, prefix);
                int found = index < 0 ? 0 : lookup(&t, index, &name, &unused);
                if (found < 0)
                    goto error;
                if (!found)
                    goto decline;
                Py_INCREF(name);
            } else {
                pos++;
                name = read_string(data, len, &pos);
                if (name == NULL)
                    goto decline_or_error;
            }
            value = read_string(data, len, &pos);
            if (value == NULL) {
                Py_DECREF(name);
                goto decline_or_error;
            }
        }
        PyObject *h = header_tuple(type, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (h == NULL)
            goto error;
        if (PyList_Append(headers, h) < 0) {
            Py_DECREF(h);
            goto error;
        }
        Py_DECREF(h);  /* the list holds it, and with it the name and value added below */
        inflated += 32 + PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value);
        if (inflated > max_list)
            goto decline;  /* OversizedHeaderListError: hpack's */
        if (index_it && !table_add(&t, name, value))
            goto decline;
    }
    if (commit(&t) < 0)
        goto error;
    PyBuffer_Release(&view);
    PyObject *result = Py_BuildValue("(Nn)", headers, t.size);
    return result;

decline_or_error:
    if (PyErr_Occurred())
        goto error;
decline:
    Py_DECREF(headers);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    Py_XDECREF(headers);
    PyBuffer_Release(&view);
    return NULL;
}


/* -- encoding ----------------------------------------------------------------------------- */

typedef struct {
    unsigned char *buf;
    Py_ssize_t len, cap;
} Out;

static int
out_reserve(Out *o, Py_ssize_t more)
{
    if (o->len + more <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap * 2 > o->len + more ? o->cap * 2 : o->len + more + 256;
    unsigned char *buf = PyMem_Realloc(o->buf, cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->buf = buf;
    o->cap = cap;
    return 0;
}

/* hpack's encode_integer, its first byte or-ed with `flags`. */
static int
write_int(Out *o, Py_ssize_t value, int prefix, unsigned char flags)
{
    if (out_reserve(o, 12) < 0)
        return -1;
    Py_ssize_t max = (1 << prefix) - 1;
    if (value < max) {
        o->buf[o->len++] = (unsigned char)value | flags;
        return 0;
    }
    o->buf[o->len++] = (unsigned char)max | flags;
    value -= max;
    while (value >= 128) {
        o->buf[o->len++] = (unsigned char)((value & 127) + 128);
        value >>= 7;
    }
    o->buf[o->len++] = (unsigned char)value;
    return 0;
}

/* A string as hpack writes it with huffman=True: its Huffman code (padded with ones),
 * always, after its length with the H bit. */
static int
write_huffman(Out *o, PyObject *bytes)
{
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(bytes), bits = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        bits += HUFF_LEN[s[i]];
    Py_ssize_t size = (bits + 7) / 8;
    if (write_int(o, size, 7, 0x80) < 0 || out_reserve(o, size) < 0)
        return -1;
    uint64_t acc = 0;
    int have = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        acc = (acc << HUFF_LEN[s[i]]) | HUFF_CODE[s[i]];
        have += HUFF_LEN[s[i]];
        while (have >= 8) {
            have -= 8;
            o->buf[o->len++] = (unsigned char)(acc >> have);
        }
        acc &= (((uint64_t)1) << have) - 1;
    }
    if (have > 0)
        o->buf[o->len++] = (unsigned char)((acc << (8 - have)) | ((1u << (8 - have)) - 1));
    return 0;
}

static inline int
same_bytes(PyObject *a, PyObject *b)
{
    return a == b || (PyBytes_GET_SIZE(a) == PyBytes_GET_SIZE(b)
                      && memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b),
                                PyBytes_GET_SIZE(a)) == 0);
}

/* HeaderTable.search: (index, perfect) or index 0 for no match; -1 on an error. */
static Py_ssize_t
search(PyObject *entries, PyObject *name, PyObject *value, int *perfect)
{
    Py_ssize_t partial = 0;
    *perfect = 0;
    for (int i = 0; i < 61; i++) {
        if (same_bytes(STATIC[i][0], name)) {
            if (!partial)
                partial = i + 1;
            if (same_bytes(STATIC[i][1], value)) {
                *perfect = 1;
                return i + 1;
            }
        }
    }
    PyObject *it = PyObject_GetIter(entries);
    if (it == NULL)
        return -1;
    PyObject *entry;
    Py_ssize_t i = 62;
    while ((entry = PyIter_Next(it)) != NULL) {
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2
                || !PyBytes_Check(PyTuple_GET_ITEM(entry, 0))
                || !PyBytes_Check(PyTuple_GET_ITEM(entry, 1))) {
            Py_DECREF(entry);
            Py_DECREF(it);
            PyErr_SetString(PyExc_RuntimeError, "an hpack table entry is not (bytes, bytes)");
            return -1;
        }
        if (same_bytes(PyTuple_GET_ITEM(entry, 0), name)) {
            if (same_bytes(PyTuple_GET_ITEM(entry, 1), value)) {
                Py_DECREF(entry);
                Py_DECREF(it);
                *perfect = 1;
                return i;
            }
            if (!partial)
                partial = i;
        }
        Py_DECREF(entry);
        i++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    return partial;
}

/* HeaderTable.add on hpack's deque; the table's new size, or -1 on an error. */
static Py_ssize_t
add_entry(PyObject *entries, Py_ssize_t size, Py_ssize_t maxsize, PyObject *name,
          PyObject *value)
{
    Py_ssize_t entry_size = 32 + PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value);
    PyObject *r;
    if (entry_size > maxsize) {
        r = PyObject_CallMethod(entries, "clear", NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    PyObject *entry = PyTuple_Pack(2, name, value);
    if (entry == NULL)
        return -1;
    PyObject *appendleft = PyUnicode_FromString("appendleft");
    r = appendleft ? PyObject_CallMethodOneArg(entries, appendleft, entry) : NULL;
    Py_XDECREF(appendleft);
    Py_DECREF(entry);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    size += entry_size;
    while (size > maxsize) {
        PyObject *old = PyObject_CallMethod(entries, "pop", NULL);
        if (old == NULL)
            return -1;
        if (!PyTuple_Check(old) || PyTuple_GET_SIZE(old) != 2
                || !PyBytes_Check(PyTuple_GET_ITEM(old, 0))
                || !PyBytes_Check(PyTuple_GET_ITEM(old, 1))) {
            Py_DECREF(old);
            PyErr_SetString(PyExc_RuntimeError, "an hpack table entry is not (bytes, bytes)");
            return -1;
        }
        size -= 32 + PyBytes_GET_SIZE(PyTuple_GET_ITEM(old, 0))
                + PyBytes_GET_SIZE(PyTuple_GET_ITEM(old, 1));
        Py_DECREF(old);
    }
    return size;
}

/* encode(headers, entries, size, maxsize): (block, the table's new size) as hpack's
 * Encoder.encode(headers, huffman=True) with no size change pending, or None (declined
 * before anything changed: hpack's encoder encodes them). Taken: a list or tuple of
 * (bytes, bytes) tuples, HeaderTuples and NeverIndexedHeaderTuples. */
static PyObject *
encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "encode() takes 4 arguments");
        return NULL;
    }
    if (!CONFIGURED) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    PyObject *headers = args[0], *entries = args[1];
    if (!PyList_CheckExact(headers) && !PyTuple_CheckExact(headers))
        Py_RETURN_NONE;
    Py_ssize_t size = PyLong_AsSsize_t(args[2]), maxsize = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (size < 0 || maxsize < 0)
        Py_RETURN_NONE;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(headers);
    PyObject **items = PySequence_Fast_ITEMS(headers);
    for (Py_ssize_t i = 0; i < n; i++) {  /* all of them first: nothing changes on a decline */
        PyObject *h = items[i];
        PyTypeObject *type = Py_TYPE(h);
        if ((type != &PyTuple_Type && type != HEADER_TUPLE && type != NEVER_INDEXED)
                || PyTuple_GET_SIZE(h) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(h, 0))
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(h, 1)))
            Py_RETURN_NONE;
    }
    Out o = {NULL, 0, 0};
    if (out_reserve(&o, 64 * (n + 1)) < 0)
        return NULL;
    /* the list may not change under us: hold it (and with it, its items) */
    Py_INCREF(headers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *h = items[i];
        PyObject *name = PyTuple_GET_ITEM(h, 0), *value = PyTuple_GET_ITEM(h, 1);
        int sensitive = Py_TYPE(h) == NEVER_INDEXED, perfect;
        unsigned char indexbit = sensitive ? 0x10 : 0x40;
        Py_ssize_t index = search(entries, name, value, &perfect);
        if (index < 0)
            goto error;
        if (index && perfect) {
            if (write_int(&o, index, 7, 0x80) < 0)
                goto error;
            continue;
        }
        if (index) {
            if (write_int(&o, index, sensitive ? 4 : 6, indexbit) < 0)
                goto error;
        } else {
            if (out_reserve(&o, 1) < 0)
                goto error;
            o.buf[o.len++] = indexbit;
            if (write_huffman(&o, name) < 0)
                goto error;
        }
        if (write_huffman(&o, value) < 0)
            goto error;
        if (!sensitive) {
            size = add_entry(entries, size, maxsize, name, value);
            if (size < 0)
                goto error;
        }
    }
    Py_DECREF(headers);
    PyObject *block = PyBytes_FromStringAndSize((const char *)o.buf, o.len);
    PyMem_Free(o.buf);
    if (block == NULL)
        return NULL;
    return Py_BuildValue("(Nn)", block, size);
error:
    Py_DECREF(headers);
    PyMem_Free(o.buf);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(static_table, huffman_codes, huffman_lengths, HeaderTuple, "
     "NeverIndexedHeaderTuple): hpack's tables, once."},
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(data, entries, size, maxsize, max_header_list_size, max_allowed_table_size)"
     " -> (headers, new size) or None (declined: hpack's decoder decodes the block)."},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "encode(headers, entries, size, maxsize) -> (block, new size) or None (declined: "
     "hpack's encoder encodes them)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hpack",
    "The common HPACK header blocks decoded and encoded in C for hpack's Decoder and Encoder "
    "(http2/hpack_lane.py).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__hpack(void)
{
    return PyModule_Create(&module);
}
