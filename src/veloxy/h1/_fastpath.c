/*
 * veloxy.h1._fastpath: the HTTP/1.1 message heads of the common case, parsed in C.
 *
 * Why this is hand-written: on the proxy's hot path the Python parsers (h1/parser.py) get
 * one C-to-Python callback per header field from httptools, about 3.4k instructions each,
 * plus the head bookkeeping around them; for a small proxied request that was about a third
 * of veloxy's own CPU (docs/BENCHMARKS.md, "The C fast lane"). Here a whole head is parsed
 * and classified in one call, and the handler gets the same events as from the Python
 * parsers: a RequestHead/ResponseHead with the same attributes, body chunks, the end.
 *
 * The fast lane is a strict *subset* of HTTP/1.1, never a second opinion on it. A message
 * it does not fully understand (chunked framing, an upgrade, Expect, a Connection header
 * naming other fields, a duplicate Host or Content-Length, a byte outside the conservative
 * character sets below, a head over the size limits, an informational response...) is
 * "declined": the parser hands every byte of it, and all that follows on that connection,
 * to the Python parser (llhttp in strict mode), which either serves it or refuses it with
 * its precise status. Declining happens before any event of that message is emitted, so
 * the Python parser starts on a message boundary with nothing lost or repeated, and it is
 * fed the declined bytes read by read as they came, so that a refusal comes with the same
 * read as it would without the fast lane (an unfinished head that can no longer become
 * one of ours is declined at once). tests/h1/test_fastpath.py holds both to that:
 * whatever the fast lane accepts, the Python parser must accept with the same events.
 *
 * As llhttp does, the parser refuses every byte after a message that closed the connection
 * and after a read whose handler callback raised (its framing is lost then); a handler may
 * not feed the parser again from a callback; an unfinished head is re-scanned from its
 * start at each read, so past MAX_HEAD_READS reads it is declined to llhttp, which goes on
 * where it stopped (tests/h1/test_fastpath_robustness.py).
 *
 * No I/O and no asyncio here, as in the rest of h1/.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* -- character classes (RFC 9110 §5.6.2 tchar; the rest deliberately narrower) ----------- */

static unsigned char TCHAR[256];   /* field names and methods */
static unsigned char VCHAR[256];   /* field values and reason phrases: VCHAR, SP, HTAB */
static unsigned char TARGET[256];  /* origin-form targets: RFC 3986 pchar, "/", "?" */

static void
init_tables(void)
{
    const char *tspecials = "!#$%&'*+-.^_`|~";
    const char *target_extra = "-._~:/?[]@!$&'()*+,;=%";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        TCHAR[c] = alnum || (c && strchr(tspecials, c) != NULL);
        VCHAR[c] = (c >= 0x21 && c <= 0x7e) || c == ' ' || c == '\t';
        TARGET[c] = alnum || (c && strchr(target_extra, c) != NULL);
    }
}

static inline int
lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* Case-insensitive equality of a name with a lowercase literal of the same length. */
static inline int
name_is(const char *p, Py_ssize_t n, const char *lit, Py_ssize_t litn)
{
    if (n != litn)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (lower((unsigned char)p[i]) != lit[i])
            return 0;
    return 1;
}
#define NAME_IS(p, n, lit) name_is((p), (n), (lit), (Py_ssize_t)sizeof(lit) - 1)

/* Field roles, as in h1/rules.py; the fast lane declines the ones it does not serve. */
enum {
    R_KEEP,
    R_DROP,          /* keep-alive, te, trailer; ours: x-real-ip... */
    R_CONNECTION,
    R_DECLINE,       /* transfer-encoding, upgrade, expect, proxy-connection: llhttp's */
    R_HOST,
    R_CONTENT_LENGTH,
    R_FORWARDED_FOR,
};

static int
request_role(const char *p, Py_ssize_t n)
{
    switch (n) {
    case 2: return NAME_IS(p, n, "te") ? R_DROP : R_KEEP;
    case 4: return NAME_IS(p, n, "host") ? R_HOST : R_KEEP;
    case 6: return NAME_IS(p, n, "expect") ? R_DECLINE : R_KEEP;
    case 7:
        if (NAME_IS(p, n, "upgrade")) return R_DECLINE;
        return NAME_IS(p, n, "trailer") ? R_DROP : R_KEEP;
    case 9: return NAME_IS(p, n, "x-real-ip") ? R_DROP : R_KEEP;
    case 10:
        if (NAME_IS(p, n, "connection")) return R_CONNECTION;
        return NAME_IS(p, n, "keep-alive") ? R_DROP : R_KEEP;
    case 14: return NAME_IS(p, n, "content-length") ? R_CONTENT_LENGTH : R_KEEP;
    case 15: return NAME_IS(p, n, "x-forwarded-for") ? R_FORWARDED_FOR : R_KEEP;
    case 16:
        /* llhttp reads Proxy-Connection's close/keep-alive as Connection's: its case */
        if (NAME_IS(p, n, "proxy-connection")) return R_DECLINE;
        return NAME_IS(p, n, "x-forwarded-host") ? R_DROP : R_KEEP;
    case 17:
        if (NAME_IS(p, n, "transfer-encoding")) return R_DECLINE;
        return NAME_IS(p, n, "x-forwarded-proto") ? R_DROP : R_KEEP;
    default: return R_KEEP;
    }
}

static int
response_role(const char *p, Py_ssize_t n)
{
    switch (n) {
    case 2: return NAME_IS(p, n, "te") ? R_DROP : R_KEEP;
    case 7:
        if (NAME_IS(p, n, "upgrade")) return R_DECLINE;
        return NAME_IS(p, n, "trailer") ? R_DROP : R_KEEP;
    case 10:
        if (NAME_IS(p, n, "connection")) return R_CONNECTION;
        return NAME_IS(p, n, "keep-alive") ? R_DROP : R_KEEP;
    case 14: return NAME_IS(p, n, "content-length") ? R_CONTENT_LENGTH : R_KEEP;
    case 16: return NAME_IS(p, n, "proxy-connection") ? R_DECLINE : R_KEEP;
    case 17: return NAME_IS(p, n, "transfer-encoding") ? R_DECLINE : R_KEEP;
    default: return R_KEEP;
    }
}

/* -- shared objects ------------------------------------------------------------------------ */

static PyObject *S_COMMA_SP, *S_V10, *S_EMPTY;
static PyObject *A_method, *A_target, *A_wire, *A_host, *A_content_length, *A_version,
    *A_close, *A_forwarded_for, *A_status, *A_in_body;
static PyObject *A_on_request_head, *A_on_request_body, *A_on_request_end,
    *A_on_response_head, *A_on_response_body, *A_on_response_end, *A_on_request,
    *A_on_response, *A_feed, *A_join, *A_data_after_close, *A_finish,
    *A_idle, *A_expect_no_body;
static PyObject *K_max_request_line, *K_max_header_bytes, *K_max_body_bytes;
static PyObject *EMPTY_TUPLE;

/* Interned methods: the common ones come back as the same bytes object every time. */
static const char *METHOD_NAMES[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
                                     "PATCH", "TRACE", NULL};
static PyObject *METHODS[8];

/* Parse outcomes. */
#define P_INCOMPLETE 0
#define P_OK 1
#define P_DECLINE 2
#define P_ERROR -1

/* Content-Length: 1 to 18 digits (llhttp refuses the rest; we decline it to llhttp). */
static long long
parse_length(const char *p, Py_ssize_t n)
{
    if (n < 1 || n > 18)
        return -1;
    long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* The tokens of a Connection value: only "close" and "keep-alive" are served here (other
 * tokens name more hop-by-hop fields, or ask to upgrade: declined). Returns -1 to decline. */
static int
connection_tokens(const char *p, Py_ssize_t n, int *close, int *keep_alive)
{
    Py_ssize_t i = 0;
    while (i < n) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        Py_ssize_t start = i;
        while (i < n && p[i] != ',')
            i++;
        Py_ssize_t end = i;
        while (end > start && (p[end - 1] == ' ' || p[end - 1] == '\t'))
            end--;
        if (end == start)
            continue;
        if (NAME_IS(p + start, end - start, "close"))
            *close = 1;
        else if (NAME_IS(p + start, end - start, "keep-alive"))
            *keep_alive = 1;
        else
            return -1;
    }
    return 0;
}

/* Whether any of the 8 bytes at p is below 0x20, DEL or above 0x7e: the bytes VCHAR
 * refuses, and HTAB. A value is scanned 8 bytes at a time with it (long browser values:
 * User-Agent, Accept, Cookie, at a byte-by-byte table lookup, were most of the instructions
 * a browser-like head adds; docs/BENCHMARKS.md, "nginx-class in the hard cases"), and the
 * bytes from the first word it flags on go through the VCHAR table, which allows HTAB. The tests are exact
 * (no false negative, whatever the other bytes): with no byte below n, no subtraction
 * borrows across bytes, and the lowest byte below n (< 0x80) sets its high bit. */
static inline int
has_ctl_del_or_high(const char *p)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t w;
    memcpy(&w, p, 8);
    uint64_t below_space = (w - ones * 0x20) & ~w & highs;
    uint64_t x = w ^ (ones * 0x7f);
    uint64_t del = (x - ones) & ~x & highs;
    return ((w & highs) | below_space | del) != 0;
}

/* One header line at p (up to the LF at lf, with its CR just before). Splits it into the
 * name and the value without the whitespace before it; a value with whitespace after it is
 * declined. Returns 0, or -1 to decline. */
static int
split_field(const char *p, const char *lf, const char **name, Py_ssize_t *name_len,
            const char **value, Py_ssize_t *value_len)
{
    const char *end = lf - 1; /* the CR */
    const char *q = p;
    while (q < end && TCHAR[(unsigned char)*q])
        q++;
    if (q == p || q == end || *q != ':')
        return -1; /* empty name, obs-fold (leading whitespace), "name :" or a bad byte */
    *name = p;
    *name_len = q - p;
    q++;
    while (q < end && (*q == ' ' || *q == '\t'))
        q++;
    const char *v = q;
    while (end - q >= 8 && !has_ctl_del_or_high(q))
        q += 8;
    while (q < end && VCHAR[(unsigned char)*q])
        q++;
    if (q != end)
        return -1; /* a CR, a NUL, DEL or a byte >= 0x80 inside the value */
    if (q > v && (q[-1] == ' ' || q[-1] == '\t'))
        return -1; /* llhttp keeps trailing whitespace in the value: its parser's case */
    *value = v;
    *value_len = q - v;
    return 0;
}

/* The end of the head: the offset just past CRLFCRLF, or 0 when it has not all arrived.
 * A bare LF ends no head here: the line checks decline it later. */
static Py_ssize_t
head_end(const char *buf, Py_ssize_t n)
{
    const char *p = buf;
    const char *end = buf + n;
    while (p < end) {
        const char *lf = memchr(p, '\n', end - p);
        if (lf == NULL)
            return 0;
        if (lf + 2 < end && lf[1] == '\r' && lf[2] == '\n')
            return (lf + 3) - buf;
        if (lf + 2 >= end)
            return 0;
        p = lf + 1;
    }
    return 0;
}

/* The request line at p, up to the LF at lf: METHOD SP origin-form SP HTTP/1.x CR.
 * Returns 0 with the interned method, the target and the minor version, or -1 to decline. */
static int
request_line(const char *p, const char *lf, PyObject **method, const char **target,
             Py_ssize_t *target_len, int *minor)
{
    if (lf == p || lf[-1] != '\r')
        return -1;
    const char *q = p;
    while (q < lf && *q >= 'A' && *q <= 'Z')
        q++;
    Py_ssize_t mlen = q - p;
    if (q == lf || *q != ' ')
        return -1;
    *method = NULL;
    for (int i = 0; METHOD_NAMES[i] != NULL; i++) {
        if ((Py_ssize_t)strlen(METHOD_NAMES[i]) == mlen
            && memcmp(METHOD_NAMES[i], p, mlen) == 0) {
            *method = METHODS[i];
            break;
        }
    }
    if (*method == NULL)
        return -1; /* CONNECT, WebDAV and the rest */
    const char *t = ++q;
    if (t >= lf || *t != '/')
        return -1; /* absolute-form, asterisk-form */
    while (q < lf && TARGET[(unsigned char)*q])
        q++;
    if (q + 10 != lf || *q != ' ' || memcmp(q + 1, "HTTP/1.", 7) != 0)
        return -1;
    if (q[8] != '1' && q[8] != '0')
        return -1;
    *target = t;
    *target_len = q - t;
    *minor = q[8];
    return 0;
}

/* The status line at p, up to the LF at lf: HTTP/1.x SP 3DIGIT SP reason CR, a final
 * status (1xx and 101 are the Python parser's). Returns the status, or -1 to decline. */
static int
status_line(const char *p, const char *lf, int *minor)
{
    if (lf - p < 14 || lf[-1] != '\r' || memcmp(p, "HTTP/1.", 7) != 0)
        return -1;
    if ((p[7] != '1' && p[7] != '0') || p[8] != ' ' || p[12] != ' ')
        return -1;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        status = status * 10 + (p[i] - '0');
    }
    if (status < 200 || status > 599)
        return -1;
    for (const char *q = p + 13; q < lf - 1; q++)
        if (!VCHAR[(unsigned char)*q])
            return -1;
    *minor = p[7];
    return status;
}

/* Whether p[0:n) matches `pattern` as far as it goes. */
static inline int
prefix_of(const char *p, Py_ssize_t n, const char *pattern)
{
    Py_ssize_t len = (Py_ssize_t)strlen(pattern);
    return memcmp(p, pattern, n < len ? n : len) == 0 && n <= len;
}

/* Whether p[0:n), the first line of a head with no LF yet, can still become a line the
 * fast lane serves. */
static int
first_line_prefix_ok(const char *p, Py_ssize_t n, int response)
{
    Py_ssize_t i = 0;
    if (response) {
        /* HTTP/1.x SP 3DIGIT SP reason CR */
        if (!prefix_of(p, n < 7 ? n : 7, "HTTP/1."))
            return 0;
        for (i = 7; i < n && i < 13; i++) {
            int c = p[i];
            if (i == 7 ? (c != '0' && c != '1') : (i == 8 || i == 12) ? c != ' '
                    : (c < '0' || c > '9' || (i == 9 && c < '2')))
                return 0;
        }
        for (; i < n; i++)
            if (!VCHAR[(unsigned char)p[i]] && !(p[i] == '\r' && i == n - 1))
                return 0;
        return 1;
    }
    /* METHOD SP origin-form SP HTTP/1.x CR */
    while (i < n && p[i] != ' ')
        i++;
    int known = 0;
    for (int m = 0; METHOD_NAMES[m] != NULL; m++)
        if (i < n ? (Py_ssize_t)strlen(METHOD_NAMES[m]) == i
                        && memcmp(METHOD_NAMES[m], p, i) == 0
                  : prefix_of(p, i, METHOD_NAMES[m]))
            known = 1;
    if (!known)
        return 0;
    if (++i >= n)
        return 1;
    if (p[i] != '/')
        return 0;
    while (i < n && TARGET[(unsigned char)p[i]])
        i++;
    if (i == n)
        return 1;
    if (p[i] != ' ')
        return 0;
    i++;
    return prefix_of(p + i, n - i < 7 ? n - i : 7, "HTTP/1.")
           && (n - i <= 7 || p[i + 7] == '0' || p[i + 7] == '1')
           && (n - i <= 8 || (p[i + 8] == '\r' && n - i == 9));
}

/* Whether an unfinished head (no empty line yet) can still become one the fast lane
 * serves. When it cannot, it is declined at once, and the Python parser gets its bytes
 * read by read as it would have alone: a refusal comes with the same read and the same
 * status (a TLS hello on the cleartext port gets its 400 now, not a 408 later). */
static int
head_prefix_ok(const char *p, Py_ssize_t n, int response, Py_ssize_t max_line,
               Py_ssize_t max_header_bytes)
{
    const char *end = p + n;
    const char *lf = memchr(p, '\n', n);
    if (lf == NULL)
        return n <= max_line && first_line_prefix_ok(p, n, response);
    if (lf - p > max_line)
        return 0;
    if (response) {
        int minor;
        if (status_line(p, lf, &minor) < 0)
            return 0;
    }
    else {
        PyObject *method;
        const char *t;
        Py_ssize_t tlen;
        int minor;
        if (request_line(p, lf, &method, &t, &tlen, &minor) < 0)
            return 0;
    }
    Py_ssize_t header_bytes = 0;
    int hosts = 0, lengths = 0, close = 0, keep_alive = 0;
    for (p = lf + 1; p < end; p = lf + 1) {
        lf = memchr(p, '\n', end - p);
        if (lf == NULL)
            break;
        const char *name, *value;
        Py_ssize_t nlen, vlen;
        if (lf == p || lf[-1] != '\r' || split_field(p, lf, &name, &nlen, &value, &vlen) < 0)
            return 0;
        header_bytes += (lf - 1 - p) + 4;
        if (!response && header_bytes > max_header_bytes)
            return 0;
        /* the fields the full parse would decline: declined now, with this read */
        switch (response ? response_role(name, nlen) : request_role(name, nlen)) {
        case R_DECLINE:
            return 0;
        case R_HOST:
            if (hosts++)
                return 0;
            break;
        case R_CONTENT_LENGTH:
            if (lengths++ || parse_length(value, vlen) < 0)
                return 0;
            break;
        case R_CONNECTION:
            if (connection_tokens(value, vlen, &close, &keep_alive) < 0 || (close && keep_alive))
                return 0;
            break;
        }
    }
    if (p == end)
        return 1;
    /* the last line, unfinished: a name, then ':' and a value, or the empty line's CR */
    Py_ssize_t i = 0, rest = end - p;
    while (i < rest && TCHAR[(unsigned char)p[i]])
        i++;
    if (i == rest)
        return 1;
    if (p[i] != ':')
        return i == 0 && rest == 1 && p[0] == '\r';
    if (i == 0)
        return 0;
    /* a name that is declined once its line is complete is declined now: llhttp may
     * refuse it on its name alone (Transfer-Encoding after Content-Length) */
    int role = response ? response_role(p, i) : request_role(p, i);
    if (role == R_DECLINE)
        return 0;
    if (role == R_CONTENT_LENGTH) {
        /* llhttp refuses a second Content-Length, or a byte no length has, as the value
         * arrives: declined now, so that its refusal comes with this read */
        Py_ssize_t digits = 0;
        if (lengths)
            return 0;
        for (i++; i < rest && (p[i] == ' ' || p[i] == '\t'); i++)
            ;
        for (; i < rest; i++) {
            if (p[i] >= '0' && p[i] <= '9')
                digits++;
            else if (!(p[i] == '\r' && i == rest - 1))
                return 0;
        }
        return digits <= 18;
    }
    for (i++; i < rest; i++)
        if (!VCHAR[(unsigned char)p[i]] && !(p[i] == '\r' && i == rest - 1))
            return 0;
    return 1;
}

/* The kept fields of a head in wire form, "Name: value\r\n" each, gathered as spans of
 * the input and copied into one bytes object at the end: the proxy forwards them as one
 * piece, and a head costs one allocation for its fields instead of two per field (the
 * Python side splits them into pairs only when asked, h1/head.py). */
#define MAX_KEPT 100 /* more fields than this: declined (llhttp takes them) */

typedef struct {
    const char *name[MAX_KEPT], *value[MAX_KEPT];
    Py_ssize_t name_len[MAX_KEPT], value_len[MAX_KEPT];
    int count;
    Py_ssize_t size;
} Wire;

static inline int
wire_add(Wire *w, const char *name, Py_ssize_t nlen, const char *value, Py_ssize_t vlen)
{
    if (w->count == MAX_KEPT)
        return -1;
    w->name[w->count] = name;
    w->name_len[w->count] = nlen;
    w->value[w->count] = value;
    w->value_len[w->count] = vlen;
    w->count++;
    w->size += nlen + vlen + 4;
    return 0;
}

static PyObject *
wire_bytes(const Wire *w)
{
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, w->size);
    if (bytes == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(bytes);
    for (int i = 0; i < w->count; i++) {
        memcpy(out, w->name[i], w->name_len[i]);
        out += w->name_len[i];
        *out++ = ':';
        *out++ = ' ';
        memcpy(out, w->value[i], w->value_len[i]);
        out += w->value_len[i];
        *out++ = '\r';
        *out++ = '\n';
    }
    return bytes;
}

/* A new instance of a head class without running its __init__ (the class keeps defaults
 * for every attribute a common message leaves alone). */
static PyObject *
new_head(PyObject *cls)
{
    return PyBaseObject_Type.tp_new((PyTypeObject *)cls, EMPTY_TUPLE, NULL);
}

/* new_head() calls object.__new__ directly: only for a class whose instances it makes (a
 * class with a C base of its own, a deque say, would come out with its C state unmade). */
static int
check_head_class(PyObject *cls)
{
    if (!PyType_Check(cls) || ((PyTypeObject *)cls)->tp_new != PyBaseObject_Type.tp_new) {
        PyErr_SetString(PyExc_TypeError,
                        "head_class must be a class whose instances object.__new__ makes");
        return -1;
    }
    return 0;
}

/* Every method that touches the handler, on a parser whose __init__ never succeeded. */
static int
check_ready(PyObject *handler)
{
    if (handler == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "parser not initialised");
        return -1;
    }
    return 0;
}

static int
set_attr(PyObject *obj, PyObject *name, PyObject *value)
{
    if (value == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, value);
    Py_DECREF(value);
    return rc;
}

/* *out = obj.name, or NULL when it has no such attribute; -1 on another error. */
static int
optional_attr(PyObject *obj, PyObject *name, PyObject **out)
{
    *out = PyObject_GetAttr(obj, name);
    if (*out != NULL)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
        return -1;
    PyErr_Clear();
    return 0;
}

/* The whole-message event: handler.on_request(head, body) or on_response(head, body), body
 * b"" when there is none. Steals the reference to head; advances *pos past the body. */
static PyObject *
call_whole(PyObject *callback, PyObject *head, const char *base, Py_ssize_t *pos,
           long long length)
{
    PyObject *body;
    if (length > 0) {
        body = PyBytes_FromStringAndSize(base + *pos, (Py_ssize_t)length);
        if (body == NULL) {
            Py_DECREF(head);
            return NULL;
        }
        *pos += (Py_ssize_t)length;
    }
    else {
        body = S_EMPTY;
        Py_INCREF(body);
    }
    PyObject *args[2] = {head, body};
    PyObject *r = PyObject_Vectorcall(callback, args, 2, NULL);
    Py_DECREF(head);
    Py_DECREF(body);
    return r;
}

/* -- unfinished heads and declining ------------------------------------------------------ */

/* The bytes to parse: `data`, after the reads an unfinished head came in when there are
 * some (`*pending`, a list; `data` joins it). A new reference. */
static PyObject *
with_pending(PyObject *pending, PyObject *data)
{
    if (pending == NULL) {
        Py_INCREF(data);
        return data;
    }
    if (PyList_Append(pending, data) < 0)
        return NULL;
    return PyObject_CallMethodOneArg(S_EMPTY, A_join, pending);
}

/* An unfinished head is joined and scanned again from its start at every read: past this
 * many reads it goes to the Python parser (llhttp goes on where it stopped), or a client
 * trickling a head byte by byte costs time in the square of its size. */
#define MAX_HEAD_READS 32

/* Keeps the unfinished head at buf[pos:] for the next read; *mid_read: it began after
 * other messages of the same read. */
static int
keep_pending(PyObject **pending, PyObject *buf, Py_ssize_t pos, int *mid_read)
{
    if (*pending != NULL)
        return 0; /* it holds every read of this head already (and pos is 0) */
    *mid_read = pos > 0;
    PyObject *chunk = pos == 0 ? (Py_INCREF(buf), buf)
                               : PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + pos,
                                                           PyBytes_GET_SIZE(buf) - pos);
    if (chunk == NULL)
        return -1;
    *pending = PyList_New(1);
    if (*pending == NULL) {
        Py_DECREF(chunk);
        return -1;
    }
    PyList_SET_ITEM(*pending, 0, chunk);
    return 0;
}

/* Feeds the Python parser what the fast lane declined: the bytes from the start of the
 * declined message on, read by read as they came (an unfinished head's reads, then this
 * one's rest), so that llhttp sees what it would have seen alone. `counts`: the parser
 * counts the reads of an unfinished head (the request parser's size guard), except those
 * that began after other messages of the same read (feed(data, False)). Returns what its
 * last feed returned (the earlier ones only carried an unfinished head: None). */
static PyObject *
replay(PyObject *fallback, PyObject **pending, int mid_read, PyObject *buf, Py_ssize_t pos,
       int counts)
{
    PyObject *r;
    if (*pending != NULL) {
        PyObject *chunks = *pending;
        *pending = NULL;
        r = NULL;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(chunks); i++) {
            Py_XDECREF(r);
            PyObject *chunk = PyList_GET_ITEM(chunks, i);
            if (i == 0 && mid_read && counts) /* in a read of its own: not counted */
                r = PyObject_CallMethodObjArgs(fallback, A_feed, chunk, Py_False, NULL);
            else
                r = PyObject_CallMethodOneArg(fallback, A_feed, chunk);
            if (r == NULL)
                break;
        }
        Py_DECREF(chunks);
        return r;
    }
    if (pos == 0)
        return PyObject_CallMethodOneArg(fallback, A_feed, buf);
    PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + pos,
                                               PyBytes_GET_SIZE(buf) - pos);
    if (rest == NULL)
        return NULL;
    if (counts) /* the rest of a read whose first messages were ours: not counted either */
        r = PyObject_CallMethodObjArgs(fallback, A_feed, rest, Py_False, NULL);
    else
        r = PyObject_CallMethodOneArg(fallback, A_feed, rest);
    Py_DECREF(rest);
    return r;
}

/* ======================================================================================== */
/* What both parsers share                                                                   */
/* ======================================================================================== */

/* The members both parser types begin with, in this order, so that the functions on
 * LaneObject below serve both (as every CPython object begins with PyObject_HEAD). */
#define LANE_MEMBERS                                                                         \
    PyObject_HEAD                                                                            \
    PyObject *on_head;    /* handler.on_request_head / on_response_head */                   \
    PyObject *on_body;    /* ..._body */                                                     \
    PyObject *on_end;     /* ..._end */                                                      \
    PyObject *on_whole;   /* handler.on_request / on_response(head, body), if it has one */  \
    PyObject *handler;                                                                       \
    PyObject *fallback_class;                                                                \
    PyObject *fallback;   /* the Python parser, once a message was declined */               \
    PyObject *head_class;                                                                    \
    PyObject *pending;    /* the reads of an unfinished head (a list), or NULL */            \
    int pending_mid_read; /* that head began after other messages of its first read */       \
    long long body_left;  /* > 0 while a Content-Length body is arriving */                  \
    int close_after;      /* the current message ends the connection's messages */          \
    int closed;           /* ...and it has ended: any byte more is an error */               \
    int feeding;          /* inside feed(): a handler may not feed again */                  \
    int failed;           /* feed() raised: framing is lost, every later feed raises */

typedef struct {
    LANE_MEMBERS
} LaneObject;

static int
lane_traverse(LaneObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_whole);
    Py_VISIT(self->on_head);
    Py_VISIT(self->on_body);
    Py_VISIT(self->on_end);
    Py_VISIT(self->handler);
    Py_VISIT(self->fallback_class);
    Py_VISIT(self->fallback);
    Py_VISIT(self->head_class);
    Py_VISIT(self->pending);
    return 0;
}

static int
lane_clear(LaneObject *self)
{
    Py_CLEAR(self->on_whole);
    Py_CLEAR(self->on_head);
    Py_CLEAR(self->on_body);
    Py_CLEAR(self->on_end);
    Py_CLEAR(self->handler);
    Py_CLEAR(self->fallback_class);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->head_class);
    Py_CLEAR(self->pending);
    return 0;
}

static void
lane_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_TYPE(self)->tp_clear(self);
    Py_TYPE(self)->tp_free(self);
}

/* The shared part of __init__: the handler's callbacks (`names`: head, body, end, whole;
 * whole optional), the classes, the state reset. Everything that can fail is done before
 * anything is changed: a failed __init__ leaves the parser as it was. `clear` is the
 * type's tp_clear (it also drops the type's own references). */
static int
lane_init(LaneObject *self, PyObject *handler, PyObject *fallback_class,
          PyObject *head_class, PyObject *const names[4], inquiry clear)
{
    if (self->feeding) {
        PyErr_SetString(PyExc_RuntimeError, "__init__() called from a handler callback");
        return -1;
    }
    if (check_head_class(head_class) < 0)
        return -1;
    PyObject *on_head = NULL, *on_body = NULL, *on_end = NULL, *on_whole = NULL;
    if ((on_head = PyObject_GetAttr(handler, names[0])) == NULL
        || (on_body = PyObject_GetAttr(handler, names[1])) == NULL
        || (on_end = PyObject_GetAttr(handler, names[2])) == NULL
        || optional_attr(handler, names[3], &on_whole) < 0) {
        Py_XDECREF(on_head);
        Py_XDECREF(on_body);
        Py_XDECREF(on_end);
        return -1;
    }
    clear((PyObject *)self);
    self->on_head = on_head;
    self->on_body = on_body;
    self->on_end = on_end;
    self->on_whole = on_whole;
    self->body_left = 0;
    self->pending_mid_read = 0;
    self->close_after = self->closed = self->failed = 0;
    Py_INCREF(handler);
    self->handler = handler;
    Py_INCREF(fallback_class);
    self->fallback_class = fallback_class;
    Py_INCREF(head_class);
    self->head_class = head_class;
    return 0;
}

/* feed() of either type: refuses a parser never initialised and a feed from inside one of
 * its own callbacks (neither parser nor llhttp can go on from the middle of a read); after
 * a failure or once declined, hands the bytes on; else calls the type's `parse` with the
 * bytes to parse (an unfinished head's reads joined before them). */
static PyObject *
lane_feed(LaneObject *self, PyObject *data, PyObject *(*parse)(LaneObject *, PyObject *),
          PyObject *(*data_after_close)(LaneObject *))
{
    if (check_ready(self->handler) < 0)
        return NULL;
    if (self->feeding) {
        PyErr_SetString(PyExc_RuntimeError, "feed() called from a handler callback");
        return NULL;
    }
    PyObject *r;
    self->feeding = 1; /* (around the Python parser too: llhttp is not re-entrant either) */
    if (self->failed)
        r = data_after_close(self);
    else if (self->fallback != NULL)
        r = PyObject_CallMethodOneArg(self->fallback, A_feed, data);
    else if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "feed() takes bytes");
        r = NULL;
    }
    else {
        /* an unfinished head goes on from its start (rare: heads mostly come in one read) */
        PyObject *buf = with_pending(self->pending, data);
        r = buf == NULL ? NULL : parse(self, buf);
        Py_XDECREF(buf);
    }
    self->feeding = 0;
    return r;
}

static PyObject *
lane_get_declined(LaneObject *self, void *closure)
{
    return PyBool_FromLong(self->fallback != NULL);
}

/* After a message that closed the connection llhttp lets line ends follow; skips them.
 * True when bytes other than those remain (the caller refuses them). */
static inline int
more_after_close(const char *base, Py_ssize_t *pos, Py_ssize_t size)
{
    while (*pos < size && (base[*pos] == '\r' || base[*pos] == '\n'))
        (*pos)++;
    return *pos < size;
}

/* The next n body bytes at buf[pos:], as a new reference (buf itself when it is all). */
static inline PyObject *
body_chunk(PyObject *buf, Py_ssize_t pos, Py_ssize_t n)
{
    if (pos == 0 && n == PyBytes_GET_SIZE(buf)) {
        Py_INCREF(buf);
        return buf;
    }
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + pos, n);
}

/* ======================================================================================== */
/* RequestParser                                                                             */
/* ======================================================================================== */

typedef struct {
    LANE_MEMBERS
    Py_ssize_t max_request_line;
    Py_ssize_t max_header_bytes;
    long long max_body_bytes; /* -1: no limit */
} RequestParserObject;

static int
RequestParser_init(RequestParserObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"handler", "fallback_class", "head_class", "max_request_line",
                             "max_header_bytes", "max_body_bytes", NULL};
    PyObject *handler, *fallback_class, *head_class, *max_body = Py_None;
    Py_ssize_t max_line = 8192, max_header = 65536;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|$nnO", kwlist, &handler,
                                     &fallback_class, &head_class, &max_line, &max_header,
                                     &max_body))
        return -1;
    if (max_line < 0 || max_header < 0) {
        PyErr_SetString(PyExc_ValueError, "negative size limit");
        return -1;
    }
    long long max_body_bytes = -1;
    if (max_body != Py_None) {
        max_body_bytes = PyLong_AsLongLong(max_body);
        if (max_body_bytes == -1 && PyErr_Occurred())
            return -1;
    }
    PyObject *const names[4] = {A_on_request_head, A_on_request_body, A_on_request_end,
                                A_on_request};
    if (lane_init((LaneObject *)self, handler, fallback_class, head_class, names,
                  (inquiry)lane_clear) < 0)
        return -1;
    self->max_body_bytes = max_body_bytes;
    self->max_request_line = max_line;
    self->max_header_bytes = max_header;
    return 0;
}

/* Parses the head in buf[0:end). On P_OK *head_out is the new RequestHead and *length its
 * Content-Length (-1: none). */
static int
parse_request_head(RequestParserObject *self, const char *buf, Py_ssize_t end,
                   PyObject **head_out, long long *length)
{
    const char *p = buf;
    const char *stop = buf + end;
    const char *lf = memchr(p, '\n', stop - p);
    if (lf == NULL || lf - p > self->max_request_line)
        return P_DECLINE; /* 414 is the Python parser's to give */
    PyObject *method;
    const char *t;
    Py_ssize_t tlen;
    int minor;
    if (request_line(p, lf, &method, &t, &tlen, &minor) < 0)
        return P_DECLINE;
    p = lf + 1;

    int close = 0, keep_alive = 0;
    long long content_length = -1;
    Py_ssize_t header_bytes = 0;
    const char *xff = NULL;
    Py_ssize_t xff_len = 0;
    Wire wire;
    wire.count = 0;
    wire.size = 0;
    PyObject *xff_joined = NULL, *head = NULL, *host_value = NULL;
    int result = P_DECLINE;
    while (p < stop) {
        lf = memchr(p, '\n', stop - p);
        if (lf == NULL || lf == p || lf[-1] != '\r')
            goto done;
        if (lf == p + 1)
            break; /* the empty line */
        const char *name, *value;
        Py_ssize_t nlen, vlen;
        if (split_field(p, lf, &name, &nlen, &value, &vlen) < 0)
            goto done;
        /* The whole line counts (an upper bound on what the Python parser counts: name
         * and value as llhttp hands them, + 4): accepted here, accepted there. */
        header_bytes += (lf - 1 - p) + 4;
        if (header_bytes > self->max_header_bytes)
            goto done; /* 431 is the Python parser's to give */
        switch (request_role(name, nlen)) {
        case R_KEEP:
            if (wire_add(&wire, name, nlen, value, vlen) < 0)
                goto done;
            break;
        case R_DROP:
            break;
        case R_DECLINE:
            goto done;
        case R_CONNECTION:
            if (connection_tokens(value, vlen, &close, &keep_alive) < 0)
                goto done;
            break;
        case R_HOST:
            if (host_value != NULL)
                goto done; /* duplicate Host: a 400 from the Python parser */
            host_value = PyBytes_FromStringAndSize(value, vlen);
            if (host_value == NULL)
                goto error;
            if (wire_add(&wire, name, nlen, value, vlen) < 0)
                goto done;
            break;
        case R_CONTENT_LENGTH:
            if (content_length >= 0)
                goto done;
            content_length = parse_length(value, vlen);
            if (content_length < 0 || wire_add(&wire, name, nlen, value, vlen) < 0)
                goto done;
            break;
        case R_FORWARDED_FOR:
            if (xff == NULL) {
                xff = value;
                xff_len = vlen;
            }
            else {
                /* several X-Forwarded-For fields: joined in order, as the Python parser */
                PyObject *more = PyBytes_FromStringAndSize(value, vlen);
                if (more == NULL)
                    goto error;
                if (xff_joined == NULL) {
                    xff_joined = PyBytes_FromStringAndSize(xff, xff_len);
                    if (xff_joined == NULL) {
                        Py_DECREF(more);
                        goto error;
                    }
                }
                PyBytes_Concat(&xff_joined, S_COMMA_SP);
                PyBytes_ConcatAndDel(&xff_joined, more);
                if (xff_joined == NULL)
                    goto error;
            }
            break;
        }
        p = lf + 1;
    }
    if (p >= stop)
        goto done; /* no empty line: cannot happen with head_end's offset, but be sure */
    if (minor == '1' && host_value == NULL)
        goto done; /* missing Host: a 400 from the Python parser */
    if (close && keep_alive)
        goto done;
    if (self->max_body_bytes >= 0 && content_length > self->max_body_bytes)
        goto done; /* 413 is the Python parser's to give */

    head = new_head(self->head_class);
    if (head == NULL)
        goto error;
    Py_INCREF(method);
    if (set_attr(head, A_method, method) < 0
        || set_attr(head, A_target, PyBytes_FromStringAndSize(t, tlen)) < 0)
        goto error;
    if (set_attr(head, A_wire, wire_bytes(&wire)) < 0)
        goto error;
    if (host_value != NULL && PyObject_SetAttr(head, A_host, host_value) < 0)
        goto error;
    if (content_length >= 0
        && set_attr(head, A_content_length, PyLong_FromLongLong(content_length)) < 0)
        goto error;
    if (minor == '0') {
        Py_INCREF(S_V10);
        if (set_attr(head, A_version, S_V10) < 0)
            goto error;
    }
    if (minor == '0' ? !keep_alive : close) {
        Py_INCREF(Py_True);
        if (set_attr(head, A_close, Py_True) < 0)
            goto error;
    }
    if (xff != NULL) {
        if (xff_joined == NULL)
            xff_joined = PyBytes_FromStringAndSize(xff, xff_len);
        if (xff_joined == NULL || PyObject_SetAttr(head, A_forwarded_for, xff_joined) < 0)
            goto error;
    }
    *head_out = head;
    head = NULL;
    *length = content_length;
    self->close_after = minor == '0' ? !keep_alive : close;
    result = P_OK;
    goto done;
error:
    result = P_ERROR;
done:
    Py_XDECREF(host_value);
    Py_XDECREF(head);
    Py_XDECREF(xff_joined);
    return result;
}

/* The Python parser, with the same handler and limits. */
static int
make_request_fallback(RequestParserObject *self)
{
    PyObject *kwargs = Py_BuildValue("{OnOnOO}", K_max_request_line, self->max_request_line,
                                     K_max_header_bytes, self->max_header_bytes,
                                     K_max_body_bytes, Py_None);
    if (kwargs == NULL)
        return -1;
    if (self->max_body_bytes >= 0) {
        PyObject *limit = PyLong_FromLongLong(self->max_body_bytes);
        if (limit == NULL || PyDict_SetItem(kwargs, K_max_body_bytes, limit) < 0) {
            Py_XDECREF(limit);
            Py_DECREF(kwargs);
            return -1;
        }
        Py_DECREF(limit);
    }
    PyObject *args = PyTuple_Pack(1, self->handler);
    if (args == NULL) {
        Py_DECREF(kwargs);
        return -1;
    }
    self->fallback = PyObject_Call(self->fallback_class, args, kwargs);
    Py_DECREF(args);
    Py_DECREF(kwargs);
    return self->fallback == NULL ? -1 : 0;
}

/* Hands the declined message, buf[pos:] (after the reads of its head so far), to the
 * Python parser, made now; it serves the rest of the connection. */
static PyObject *
request_decline(RequestParserObject *self, PyObject *buf, Py_ssize_t pos)
{
    if (make_request_fallback(self) < 0)
        return NULL;
    return replay(self->fallback, &self->pending, self->pending_mid_read, buf, pos, 1);
}

/* What feed raises for bytes after a message that closed the connection, or after feed
 * raised (a handler's exception): the Python parser's refusal (llhttp refuses every byte
 * after either). */
static PyObject *
request_data_after_close(RequestParserObject *self)
{
    self->failed = 1;
    if (self->fallback == NULL && make_request_fallback(self) < 0)
        return NULL;
    return PyObject_CallMethodNoArgs(self->fallback, A_data_after_close);
}

/* Parses buf (lane_feed's): events to the handler, declines to the Python parser. */
static PyObject *
request_parse(RequestParserObject *self, PyObject *buf)
{
    const char *base = PyBytes_AS_STRING(buf);
    Py_ssize_t size = PyBytes_GET_SIZE(buf);
    Py_ssize_t pos = 0;
    PyObject *r;
    while (pos < size) {
        if (self->closed) {
            if (!more_after_close(base, &pos, size))
                break;
            goto after_close;
        }
        if (self->body_left > 0) {
            Py_ssize_t n = size - pos;
            if ((long long)n > self->body_left)
                n = (Py_ssize_t)self->body_left;
            PyObject *chunk = body_chunk(buf, pos, n);
            if (chunk == NULL)
                goto error;
            self->body_left -= n;
            pos += n;
            r = PyObject_CallOneArg(self->on_body, chunk);
            Py_DECREF(chunk);
            if (r == NULL)
                goto error;
            Py_DECREF(r);
            if (self->body_left == 0) {
                self->closed = self->close_after;
                r = PyObject_CallNoArgs(self->on_end);
                if (r == NULL)
                    goto error;
                Py_DECREF(r);
            }
            continue;
        }
        Py_ssize_t end = head_end(base + pos, size - pos);
        if (end == 0) {
            if (size - pos - self->max_request_line > self->max_header_bytes
                || (self->pending != NULL && PyList_GET_SIZE(self->pending) >= MAX_HEAD_READS)
                || !head_prefix_ok(base + pos, size - pos, 0, self->max_request_line,
                                   self->max_header_bytes))
                goto decline; /* too large a head (414 or 431), or not one of ours */
            if (keep_pending(&self->pending, buf, pos, &self->pending_mid_read) < 0)
                goto error;
            break;
        }
        PyObject *head = NULL;
        long long length = 0;
        int rc = parse_request_head(self, base + pos, end, &head, &length);
        if (rc == P_ERROR)
            goto error;
        if (rc == P_DECLINE)
            goto decline;
        Py_CLEAR(self->pending);
        pos += end;
        if (self->on_whole != NULL && size - pos >= length) {
            /* the whole request is here: one event instead of two or three */
            self->closed = self->close_after;
            r = call_whole(self->on_whole, head, base, &pos, length);
            if (r == NULL)
                goto error;
            Py_DECREF(r);
            continue;
        }
        self->body_left = length > 0 ? length : 0;
        r = PyObject_CallOneArg(self->on_head, head);
        Py_DECREF(head);
        if (r == NULL)
            goto error;
        Py_DECREF(r);
        if (length <= 0) {
            self->closed = self->close_after;
            r = PyObject_CallNoArgs(self->on_end);
            if (r == NULL)
                goto error;
            Py_DECREF(r);
        }
    }
    Py_RETURN_NONE;
decline:
    return request_decline(self, buf, pos);
after_close:
    /* bytes after a message that closed the connection: the Python parser's error */
    return request_data_after_close(self);
error:
    /* a handler raised (or no memory): the rest of this read is lost, so is the framing */
    self->failed = 1;
    return NULL;
}

static PyObject *
RequestParser_feed(RequestParserObject *self, PyObject *data)
{
    return lane_feed((LaneObject *)self, data,
                     (PyObject * (*)(LaneObject *, PyObject *))request_parse,
                     (PyObject * (*)(LaneObject *))request_data_after_close);
}

static PyMethodDef RequestParser_methods[] = {
    {"feed", (PyCFunction)RequestParser_feed, METH_O,
     "Parse bytes from the client; events go to the handler. Errors are the Python "
     "parser's (a declined message is parsed there)."},
    {NULL},
};

static PyGetSetDef RequestParser_getset[] = {
    {"declined", (getter)lane_get_declined, NULL,
     "True once the connection's messages go to the Python parser.", NULL},
    {NULL},
};

static PyTypeObject RequestParserType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "veloxy.h1._fastpath.RequestParser",
    .tp_basicsize = sizeof(RequestParserObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Requests of one client connection: the common case in C, the rest declined "
              "to the Python parser (see the module docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RequestParser_init,
    .tp_dealloc = lane_dealloc,
    .tp_traverse = (traverseproc)lane_traverse,
    .tp_clear = (inquiry)lane_clear,
    .tp_methods = RequestParser_methods,
    .tp_getset = RequestParser_getset,
};

/* ======================================================================================== */
/* ResponseParser                                                                            */
/* ======================================================================================== */

typedef struct {
    LANE_MEMBERS
    PyObject *in_body;    /* the head of the response whose body is arriving, or NULL */
    int no_body;          /* the next response answers a HEAD request */
    int in_message;       /* between a head and the end of its response (for `idle`) */
} ResponseParserObject;

static int
ResponseParser_traverse(ResponseParserObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->in_body);
    return lane_traverse((LaneObject *)self, visit, arg);
}

static int
ResponseParser_clear(ResponseParserObject *self)
{
    Py_CLEAR(self->in_body);
    return lane_clear((LaneObject *)self);
}

static int
ResponseParser_init(ResponseParserObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"handler", "fallback_class", "head_class", NULL};
    PyObject *handler, *fallback_class, *head_class;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO", kwlist, &handler, &fallback_class,
                                     &head_class))
        return -1;
    PyObject *const names[4] = {A_on_response_head, A_on_response_body, A_on_response_end,
                                A_on_response};
    if (lane_init((LaneObject *)self, handler, fallback_class, head_class, names,
                  (inquiry)ResponseParser_clear) < 0)
        return -1;
    self->no_body = 0;
    self->in_message = 0;
    return 0;
}

/* Parses the head in buf[0:end). On P_OK *head_out is the new ResponseHead, *length the
 * length of the body that follows (0: none) and *bodiless whether the response has no body
 * by its kind (204, 304, an answer to HEAD) rather than by its length. */
static int
parse_response_head(ResponseParserObject *self, const char *buf, Py_ssize_t end,
                    PyObject **head_out, long long *length, int *bodiless_out)
{
    const char *p = buf;
    const char *stop = buf + end;
    const char *lf = memchr(p, '\n', stop - p);
    int minor;
    int status = lf == NULL ? -1 : status_line(p, lf, &minor);
    if (status < 0)
        return P_DECLINE;
    p = lf + 1;

    int close = 0, keep_alive = 0;
    long long content_length = -1;
    Wire wire;
    wire.count = 0;
    wire.size = 0;
    PyObject *head = NULL;
    int result = P_DECLINE;
    while (p < stop) {
        lf = memchr(p, '\n', stop - p);
        if (lf == NULL || lf == p || lf[-1] != '\r')
            goto done;
        if (lf == p + 1)
            break;
        const char *name, *value;
        Py_ssize_t nlen, vlen;
        if (split_field(p, lf, &name, &nlen, &value, &vlen) < 0)
            goto done;
        int role = response_role(name, nlen);
        switch (role) {
        case R_CONTENT_LENGTH:
            if (content_length >= 0)
                goto done;
            content_length = parse_length(value, vlen);
            if (content_length < 0)
                goto done;
            /* fall through: kept, as the Python parser does */
        case R_KEEP:
            if (wire_add(&wire, name, nlen, value, vlen) < 0)
                goto done;
            break;
        case R_DROP:
            break;
        case R_CONNECTION:
            if (connection_tokens(value, vlen, &close, &keep_alive) < 0)
                goto done;
            break;
        default:
            goto done;
        }
        p = lf + 1;
    }
    if (p >= stop || (close && keep_alive))
        goto done;
    int bodiless = self->no_body || status == 204 || status == 304;
    if (!bodiless && content_length < 0)
        goto done; /* delimited by the close: the Python parser's */

    head = new_head(self->head_class);
    if (head == NULL)
        goto error;
    if (set_attr(head, A_status, PyLong_FromLong(status)) < 0)
        goto error;
    if (set_attr(head, A_wire, wire_bytes(&wire)) < 0)
        goto error;
    /* llhttp's should_keep_alive, which the Python parser reports: a response without a
     * length that may have a body reads as delimited by the close (even one to HEAD,
     * which llhttp is not told of). */
    int closing = (minor == '0' ? !keep_alive : close)
                  || (content_length < 0 && status != 204 && status != 304);
    if (self->no_body)
        content_length = 0; /* as the Python parser: a HEAD response has no body */
    if (content_length >= 0
        && set_attr(head, A_content_length, PyLong_FromLongLong(content_length)) < 0)
        goto error;
    if (closing) {
        Py_INCREF(Py_True);
        if (set_attr(head, A_close, Py_True) < 0)
            goto error;
    }
    *head_out = head;
    head = NULL;
    *length = bodiless ? 0 : content_length;
    *bodiless_out = bodiless;
    /* (not after a HEAD response: the Python parser starts afresh after one) */
    self->close_after = closing && !self->no_body;
    result = P_OK;
    goto done;
error:
    result = P_ERROR;
done:
    Py_XDECREF(head);
    return result;
}

static PyObject *
response_decline(ResponseParserObject *self, PyObject *buf, Py_ssize_t pos)
{
    self->fallback = PyObject_CallOneArg(self->fallback_class, self->handler);
    if (self->fallback == NULL)
        return NULL;
    if (self->no_body) {
        self->no_body = 0;
        PyObject *r = PyObject_CallMethodNoArgs(self->fallback, A_expect_no_body);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    return replay(self->fallback, &self->pending, 0, buf, pos, 0);
}

static int
response_end(ResponseParserObject *self)
{
    self->closed = self->close_after;
    self->in_message = 0;
    PyObject *r = PyObject_CallNoArgs(self->on_end);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* As request_data_after_close. */
static PyObject *
response_data_after_close(ResponseParserObject *self)
{
    self->failed = 1;
    if (self->fallback == NULL
        && (self->fallback = PyObject_CallOneArg(self->fallback_class, self->handler)) == NULL)
        return NULL;
    return PyObject_CallMethodNoArgs(self->fallback, A_data_after_close);
}

/* Parses buf (lane_feed's): events to the handler, declines to the Python parser. */
static PyObject *
response_parse(ResponseParserObject *self, PyObject *buf)
{
    const char *base = PyBytes_AS_STRING(buf);
    Py_ssize_t size = PyBytes_GET_SIZE(buf);
    Py_ssize_t pos = 0;
    PyObject *r;
    while (pos < size) {
        if (self->closed) {
            if (!more_after_close(base, &pos, size))
                break;
            goto after_close;
        }
        if (self->in_body != NULL) {
            Py_ssize_t n = size - pos;
            if ((long long)n > self->body_left)
                n = (Py_ssize_t)self->body_left;
            PyObject *chunk = body_chunk(buf, pos, n);
            if (chunk == NULL)
                goto error;
            self->body_left -= n;
            pos += n;
            r = PyObject_CallOneArg(self->on_body, chunk);
            Py_DECREF(chunk);
            if (r == NULL)
                goto error;
            Py_DECREF(r);
            if (self->body_left == 0) {
                Py_CLEAR(self->in_body); /* as the Python parser: after the body, before the end */
                if (response_end(self) < 0)
                    goto error;
            }
            continue;
        }
        Py_ssize_t end = head_end(base + pos, size - pos);
        if (end == 0) {
            if (size - pos > 65536 + 8192
                || (self->pending != NULL && PyList_GET_SIZE(self->pending) >= MAX_HEAD_READS)
                || !head_prefix_ok(base + pos, size - pos, 1, 65536, 65536))
                goto decline; /* an endless head, or not one of ours: llhttp decides */
            if (keep_pending(&self->pending, buf, pos, &self->pending_mid_read) < 0)
                goto error;
            break;
        }
        PyObject *head = NULL;
        long long length = 0;
        int bodiless = 0;
        int rc = parse_response_head(self, base + pos, end, &head, &length, &bodiless);
        if (rc == P_ERROR)
            goto error;
        if (rc == P_DECLINE)
            goto decline;
        Py_CLEAR(self->pending);
        pos += end;
        int head_request = self->no_body;
        self->no_body = 0;
        if (self->on_whole != NULL && size - pos >= length) {
            self->closed = self->close_after;
            r = call_whole(self->on_whole, head, base, &pos, length);
            if (r == NULL)
                goto error;
            Py_DECREF(r);
            if (head_request)
                break;
            continue;
        }
        if (!bodiless) {
            /* as llhttp's parser: a response that may have a body is in its body from its
             * head on, even when its Content-Length is 0 (until the end below) */
            self->body_left = length;
            Py_INCREF(head);
            self->in_body = head;
        }
        self->in_message = 1;
        r = PyObject_CallOneArg(self->on_head, head);
        Py_DECREF(head);
        if (r == NULL)
            goto error;
        Py_DECREF(r);
        if (length <= 0) {
            Py_CLEAR(self->in_body); /* as the Python parser: before the end */
            if (response_end(self) < 0)
                goto error;
        }
        if (head_request)
            break; /* as the Python parser: what follows a HEAD response's head is dropped */
    }
    Py_RETURN_NONE;
decline:
    return response_decline(self, buf, pos);
after_close:
    return response_data_after_close(self);
error:
    self->failed = 1;
    return NULL;
}

static PyObject *
ResponseParser_expect_no_body(ResponseParserObject *self, PyObject *unused)
{
    if (self->fallback != NULL)
        return PyObject_CallMethodNoArgs(self->fallback, A_expect_no_body);
    self->no_body = 1;
    Py_RETURN_NONE;
}

static PyObject *
ResponseParser_finish(ResponseParserObject *self, PyObject *unused)
{
    if (self->fallback != NULL)
        return PyObject_CallMethodNoArgs(self->fallback, A_finish);
    /* Every response of the fast lane is framed by its length: none ends with the stream. */
    Py_RETURN_FALSE;
}

static PyObject *
ResponseParser_get_idle(ResponseParserObject *self, void *closure)
{
    /* (after a failed feed the fallback is only there to raise: the state is ours) */
    if (self->fallback != NULL && !self->failed)
        return PyObject_GetAttr(self->fallback, A_idle);
    return PyBool_FromLong(self->in_body == NULL && self->pending == NULL
                           && !self->in_message);
}

static PyObject *
ResponseParser_get_in_body(ResponseParserObject *self, void *closure)
{
    /* (after a failed feed the fallback is only there to raise: the state is ours) */
    if (self->fallback != NULL && !self->failed)
        return PyObject_GetAttr(self->fallback, A_in_body);
    PyObject *head = self->in_body ? self->in_body : Py_None;
    Py_INCREF(head);
    return head;
}

static PyObject *
ResponseParser_feed(ResponseParserObject *self, PyObject *data)
{
    return lane_feed((LaneObject *)self, data,
                     (PyObject * (*)(LaneObject *, PyObject *))response_parse,
                     (PyObject * (*)(LaneObject *))response_data_after_close);
}

static PyMethodDef ResponseParser_methods[] = {
    {"feed", (PyCFunction)ResponseParser_feed, METH_O,
     "Parse bytes from the upstream; returns None (a 101's tail comes from the Python "
     "parser, which serves upgrades)."},
    {"expect_no_body", (PyCFunction)ResponseParser_expect_no_body, METH_NOARGS,
     "The next response answers a HEAD request."},
    {"finish", (PyCFunction)ResponseParser_finish, METH_NOARGS,
     "End of stream: True when it completed a response delimited by the close."},
    {NULL},
};

static PyGetSetDef ResponseParser_getset[] = {
    {"idle", (getter)ResponseParser_get_idle, NULL,
     "No response is in progress.", NULL},
    {"in_body", (getter)ResponseParser_get_in_body, NULL,
     "The head of the response whose body is arriving, or None.", NULL},
    {"declined", (getter)lane_get_declined, NULL,
     "True once the connection's messages go to the Python parser.", NULL},
    {NULL},
};

static PyTypeObject ResponseParserType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "veloxy.h1._fastpath.ResponseParser",
    .tp_basicsize = sizeof(ResponseParserObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Responses of one upstream connection: the common case in C, the rest "
              "declined to the Python parser (see the module docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ResponseParser_init,
    .tp_dealloc = lane_dealloc,
    .tp_traverse = (traverseproc)ResponseParser_traverse,
    .tp_clear = (inquiry)ResponseParser_clear,
    .tp_methods = ResponseParser_methods,
    .tp_getset = ResponseParser_getset,
};

/* -- module ---------------------------------------------------------------------------------- */

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "veloxy.h1._fastpath",
    .m_doc = "HTTP/1.1 heads of the common case parsed in C; the rest declined to the "
             "Python parsers (h1/parser.py).",
    .m_size = -1,
};

#define INTERN(var, text)                                  \
    do {                                                   \
        if ((var = PyUnicode_InternFromString(text)) == NULL) \
            return NULL;                                   \
    } while (0)

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    init_tables();
    if ((S_COMMA_SP = PyBytes_FromString(", ")) == NULL
        || (S_V10 = PyUnicode_InternFromString("1.0")) == NULL
        || (S_EMPTY = PyBytes_FromStringAndSize(NULL, 0)) == NULL
        || (EMPTY_TUPLE = PyTuple_New(0)) == NULL)
        return NULL;
    for (int i = 0; METHOD_NAMES[i] != NULL; i++)
        if ((METHODS[i] = PyBytes_FromString(METHOD_NAMES[i])) == NULL)
            return NULL;
    INTERN(A_method, "method");
    INTERN(A_target, "target");
    INTERN(A_wire, "wire");
    INTERN(A_host, "host");
    INTERN(A_content_length, "content_length");
    INTERN(A_version, "version");
    INTERN(A_close, "close");
    INTERN(A_forwarded_for, "forwarded_for");
    INTERN(A_status, "status");
    INTERN(A_in_body, "in_body");
    INTERN(A_on_request_head, "on_request_head");
    INTERN(A_on_request_body, "on_request_body");
    INTERN(A_on_request_end, "on_request_end");
    INTERN(A_on_response_head, "on_response_head");
    INTERN(A_on_response_body, "on_response_body");
    INTERN(A_on_response_end, "on_response_end");
    INTERN(A_on_request, "on_request");
    INTERN(A_on_response, "on_response");
    INTERN(A_feed, "feed");
    INTERN(A_join, "join");
    INTERN(A_data_after_close, "data_after_close");
    INTERN(A_finish, "finish");
    INTERN(A_idle, "idle");
    INTERN(A_expect_no_body, "expect_no_body");
    INTERN(K_max_request_line, "max_request_line");
    INTERN(K_max_header_bytes, "max_header_bytes");
    INTERN(K_max_body_bytes, "max_body_bytes");
    if (PyType_Ready(&RequestParserType) < 0 || PyType_Ready(&ResponseParserType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RequestParserType);
    if (PyModule_AddObject(m, "RequestParser", (PyObject *)&RequestParserType) < 0)
        return NULL;
    Py_INCREF(&ResponseParserType);
    if (PyModule_AddObject(m, "ResponseParser", (PyObject *)&ResponseParserType) < 0)
        return NULL;
    return m;
}
