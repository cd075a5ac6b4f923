/*
 * teleport_event_handler_accel: the forwarder's optional compiled accelerator.
 *
 * struct_json(data) turns a serialised google.protobuf.Struct (an audit
 * event's payload) into the JSON the forwarder posts, in one pass over the
 * wire bytes. It returns None for anything it does not
 * handle exactly as the pure-Python path (teleport_event_handler.events) does:
 * a key repeated in one object, NaN or infinite numbers, a Value with more
 * than one kind, unknown fields, nesting deeper than MAX_DEPTH, malformed
 * input. The caller then converts the message in Python.
 *
 * Numbers follow the Python path: a double that is integral and below 2**53
 * in magnitude prints as an integer, any other as the shortest decimal that
 * reads back as the same double.
 *
 * forward_entry(data), further down, turns that JSON into the entry the
 * Forward protocol carries, as teleport_event_handler.forward does in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DEPTH 64
#define MAX_KEYS 512
#define EXACT_INT_LIMIT 9007199254740992.0 /* 2**53 */
/* Below this many input bytes the GIL is kept: a typical event converts in a
 * few microseconds, less than taking the GIL back from a busy sender thread
 * costs (measured: releasing it for every event made the legacy engine slower
 * and used more CPU). Large events still let the other threads run. */
#define RELEASE_GIL_FROM 65536

enum { OK = 0, FALLBACK = -1, NOMEM = -2 };

typedef struct {
    char *buf;
    size_t len, cap;
} out_t;

typedef struct {
    const uint8_t *p, *end;
} rd_t;

typedef struct {
    const uint8_t *key;
    size_t len;
} key_t_;

static int reserve(out_t *o, size_t need) {
    if (o->len + need <= o->cap) return OK;
    size_t cap = o->cap ? o->cap : 1024;
    while (cap < o->len + need) cap *= 2;
    char *grown = realloc(o->buf, cap);
    if (!grown) return NOMEM;
    o->buf = grown;
    o->cap = cap;
    return OK;
}

static int put(out_t *o, const char *s, size_t n) {
    if (reserve(o, n)) return NOMEM;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return OK;
}

static int put_char(out_t *o, char c) { return put(o, &c, 1); }

static int varint(rd_t *r, uint64_t *value) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *value = x;
            return OK;
        }
    }
    return FALLBACK;
}

/* The payload of a length-delimited field whose tag was just read. */
static int bytes_field(rd_t *r, rd_t *inner) {
    uint64_t n;
    if (varint(r, &n) || n > (uint64_t)(r->end - r->p)) return FALLBACK;
    inner->p = r->p;
    inner->end = r->p + n;
    r->p += n;
    return OK;
}

static const char HEX[] = "0123456789abcdef";

/* A JSON string as orjson writes it: UTF-8 as is, '"', '\\' and control
 * characters escaped. The bytes come from a message upb has parsed, which
 * checks that proto3 strings are UTF-8. */
static int json_string(out_t *o, const uint8_t *s, size_t n) {
    if (reserve(o, n + 2)) return NOMEM;
    o->buf[o->len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (put(o, (const char *)s + run, i - run)) return NOMEM;
        run = i + 1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
            case '"': esc[1] = '"'; break;
            case '\\': esc[1] = '\\'; break;
            case '\n': esc[1] = 'n'; break;
            case '\r': esc[1] = 'r'; break;
            case '\t': esc[1] = 't'; break;
            case '\b': esc[1] = 'b'; break;
            case '\f': esc[1] = 'f'; break;
            default:
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = HEX[c >> 4];
                esc[5] = HEX[c & 0xf];
                len = 6;
        }
        if (put(o, esc, len)) return NOMEM;
    }
    if (put(o, (const char *)s + run, n - run)) return NOMEM;
    return put_char(o, '"');
}

static int json_number(out_t *o, double d) {
    char text[40];
    int n;
    if (!isfinite(d)) return FALLBACK;
    if (d == floor(d) && d > -EXACT_INT_LIMIT && d < EXACT_INT_LIMIT) {
        n = snprintf(text, sizeof text, "%lld", (long long)d);
    } else {
        /* The shortest representation that reads back as d (as Python's repr). */
        n = 0;
        for (int precision = 1; precision <= 17; precision++) {
            n = snprintf(text, sizeof text, "%.*g", precision, d);
            if (strtod(text, NULL) == d) break;
        }
        /* Still a float when integral (2**53 and beyond), as JSON readers see it. */
        if (n > 0 && (size_t)n + 2 < sizeof text && !strpbrk(text, ".e")) {
            memcpy(text + n, ".0", 3);
            n += 2;
        }
    }
    if (n <= 0 || (size_t)n >= sizeof text) return FALLBACK;
    return put(o, text, (size_t)n);
}

static int json_struct(out_t *o, rd_t *r, int depth);
static int json_list(out_t *o, rd_t *r, int depth);

/* One google.protobuf.Value: exactly one kind, or none (null). */
static int json_value(out_t *o, rd_t *r, int depth) {
    int seen = 0, rc;
    if (r->p == r->end) return put(o, "null", 4);
    while (r->p < r->end) {
        uint64_t tag, v;
        rd_t inner;
        if (varint(r, &tag)) return FALLBACK;
        if (seen++) return FALLBACK;
        switch (tag) {
            case (1 << 3) | 0: /* null_value */
                if (varint(r, &v)) return FALLBACK;
                rc = put(o, "null", 4);
                break;
            case (2 << 3) | 1: { /* number_value */
                double d;
                if (r->end - r->p < 8) return FALLBACK;
                uint64_t bits = 0;
                for (int i = 7; i >= 0; i--) bits = (bits << 8) | r->p[i];
                memcpy(&d, &bits, sizeof d);
                r->p += 8;
                rc = json_number(o, d);
                break;
            }
            case (3 << 3) | 2: /* string_value */
                if (bytes_field(r, &inner)) return FALLBACK;
                rc = json_string(o, inner.p, (size_t)(inner.end - inner.p));
                break;
            case (4 << 3) | 0: /* bool_value */
                if (varint(r, &v)) return FALLBACK;
                rc = v ? put(o, "true", 4) : put(o, "false", 5);
                break;
            case (5 << 3) | 2: /* struct_value */
                if (bytes_field(r, &inner)) return FALLBACK;
                rc = json_struct(o, &inner, depth + 1);
                break;
            case (6 << 3) | 2: /* list_value */
                if (bytes_field(r, &inner)) return FALLBACK;
                rc = json_list(o, &inner, depth + 1);
                break;
            default:
                return FALLBACK;
        }
        if (rc) return rc;
    }
    return OK;
}

/* google.protobuf.ListValue: repeated Value values = 1. */
static int json_list(out_t *o, rd_t *r, int depth) {
    int rc, first = 1;
    if (depth > MAX_DEPTH) return FALLBACK;
    if ((rc = put_char(o, '['))) return rc;
    while (r->p < r->end) {
        uint64_t tag;
        rd_t item;
        if (varint(r, &tag) || tag != ((1 << 3) | 2) || bytes_field(r, &item)) return FALLBACK;
        if (!first && (rc = put_char(o, ','))) return rc;
        first = 0;
        if ((rc = json_value(o, &item, depth))) return rc;
    }
    return put_char(o, ']');
}

/* google.protobuf.Struct: map<string, Value> fields = 1, each entry a message
 * of key = 1 and value = 2. A key that appears twice falls back (protobuf keeps
 * the last; JSON must not hold both). */
static int json_struct(out_t *o, rd_t *r, int depth) {
    key_t_ keys[MAX_KEYS];
    size_t count = 0;
    int rc;
    if (depth > MAX_DEPTH) return FALLBACK;
    if ((rc = put_char(o, '{'))) return rc;
    while (r->p < r->end) {
        uint64_t tag;
        rd_t entry, key = {NULL, NULL}, value = {NULL, NULL};
        int has_key = 0, has_value = 0;
        if (varint(r, &tag) || tag != ((1 << 3) | 2) || bytes_field(r, &entry)) return FALLBACK;
        while (entry.p < entry.end) {
            if (varint(&entry, &tag)) return FALLBACK;
            if (tag == ((1 << 3) | 2) && !has_key) {
                if (bytes_field(&entry, &key)) return FALLBACK;
                has_key = 1;
            } else if (tag == ((2 << 3) | 2) && !has_value) {
                if (bytes_field(&entry, &value)) return FALLBACK;
                has_value = 1;
            } else {
                return FALLBACK;
            }
        }
        size_t key_len = has_key ? (size_t)(key.end - key.p) : 0;
        if (count == MAX_KEYS) return FALLBACK;
        for (size_t i = 0; i < count; i++) {
            if (keys[i].len == key_len && memcmp(keys[i].key, key.p, key_len) == 0) return FALLBACK;
        }
        keys[count].key = key.p;
        keys[count].len = key_len;
        if (count++ && (rc = put_char(o, ','))) return rc;
        if ((rc = json_string(o, key.p, key_len))) return rc;
        if ((rc = put_char(o, ':'))) return rc;
        if (!has_value) {
            rc = put(o, "null", 4);
        } else {
            rc = json_value(o, &value, depth);
        }
        if (rc) return rc;
    }
    return put_char(o, '}');
}

/* The bytes written, None to fall back, or MemoryError. */
static PyObject *finish(out_t *out, int rc) {
    PyObject *result;
    if (rc == NOMEM) {
        result = PyErr_NoMemory();
    } else if (rc != OK) {
        result = Py_NewRef(Py_None);
    } else {
        result = PyBytes_FromStringAndSize(out->buf, (Py_ssize_t)out->len);
    }
    free(out->buf);
    return result;
}

static PyObject *struct_json(PyObject *self, PyObject *arg) {
    Py_buffer view;
    out_t out = {NULL, 0, 0};
    int rc;
    (void)self;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    rd_t r = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    if (view.len >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        rc = json_struct(&out, &r, 0);
        Py_END_ALLOW_THREADS
    } else {
        rc = json_struct(&out, &r, 0);
    }
    PyBuffer_Release(&view);
    return finish(&out, rc);
}
/* ---- forward_entry: an event's JSON as one Forward-protocol entry ----------
 *
 * forward_entry(data) parses the JSON object the forwarder sends and writes
 * what teleport_event_handler.forward.encode_entry writes for it:
 * msgpack of [EventTime, record], where the record is packed as msgpack-python
 * packs what orjson.loads returns (smallest int and str formats, floats as
 * float64) and the EventTime (ext 0: seconds, nanoseconds, big-endian) is the
 * record's top-level RFC 3339 "time", else now. It returns None for what it
 * does not handle exactly so: invalid JSON or UTF-8, a key repeated in one
 * object, integers beyond 64 bits, nesting deeper than MAX_DEPTH, a "time"
 * that is not plain ASCII or that names an invalid or out-of-range moment. */

typedef struct {
    const uint8_t *p, *end;
    int time_found; /* event_time() of the top-level "time" string, if any */
    uint32_t seconds, nanos;
} js_t;

static int event_time(const char *s, size_t n, uint32_t *seconds, uint32_t *nanos);

static int mp_put_be(out_t *o, uint8_t lead, uint64_t v, int bytes) {
    if (reserve(o, (size_t)bytes + 1)) return NOMEM;
    o->buf[o->len++] = (char)lead;
    for (int i = bytes - 1; i >= 0; i--) o->buf[o->len++] = (char)(v >> (8 * i));
    return OK;
}

static int mp_uint(out_t *o, uint64_t v) {
    if (v < 128) return mp_put_be(o, (uint8_t)v, 0, 0);
    if (v <= 0xff) return mp_put_be(o, 0xcc, v, 1);
    if (v <= 0xffff) return mp_put_be(o, 0xcd, v, 2);
    if (v <= 0xffffffffu) return mp_put_be(o, 0xce, v, 4);
    return mp_put_be(o, 0xcf, v, 8);
}

static int mp_int(out_t *o, int64_t v) {
    if (v >= 0) return mp_uint(o, (uint64_t)v);
    if (v >= -32) return mp_put_be(o, (uint8_t)(int8_t)v, 0, 0);
    if (v >= -128) return mp_put_be(o, 0xd0, (uint64_t)v, 1);
    if (v >= -32768) return mp_put_be(o, 0xd1, (uint64_t)v, 2);
    if (v >= INT32_MIN) return mp_put_be(o, 0xd2, (uint64_t)v, 4);
    return mp_put_be(o, 0xd3, (uint64_t)v, 8);
}

/* A header (str, array or map) for `count`, written in the five bytes
 * reserved at `at` before the body was; the body moves up if it needs fewer. */
static void mp_fix_header(out_t *o, size_t at, uint64_t count, uint8_t fix, unsigned fix_max,
                          uint8_t l8, uint8_t l16, uint8_t l32) {
    uint8_t head[5];
    int n;
    if (count <= fix_max) {
        head[0] = (uint8_t)(fix | count);
        n = 1;
    } else if (l8 && count <= 0xff) {
        head[0] = l8;
        head[1] = (uint8_t)count;
        n = 2;
    } else if (count <= 0xffff) {
        head[0] = l16;
        head[1] = (uint8_t)(count >> 8);
        head[2] = (uint8_t)count;
        n = 3;
    } else {
        head[0] = l32;
        for (int i = 0; i < 4; i++) head[1 + i] = (uint8_t)(count >> (8 * (3 - i)));
        n = 5;
    }
    size_t body = at + 5;
    memmove(o->buf + at + n, o->buf + body, o->len - body);
    memcpy(o->buf + at, head, (size_t)n);
    o->len -= (size_t)(5 - n);
}

static void js_space(js_t *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hex4(const uint8_t *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return FALLBACK;
        *v = (*v << 4) | d;
    }
    return OK;
}

/* Length of the valid UTF-8 sequence at p (no surrogates, overlongs or
 * values past U+10FFFF), or 0. */
static size_t utf8_len(const uint8_t *p, const uint8_t *end) {
    uint8_t c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

static int put_utf8(out_t *o, uint32_t cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) b[0] = (char)cp, n = 1;
    else if (cp < 0x800) b[0] = (char)(0xc0 | (cp >> 6)), b[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    else if (cp < 0x10000)
        b[0] = (char)(0xe0 | (cp >> 12)), b[1] = (char)(0x80 | ((cp >> 6) & 0x3f)),
        b[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    else
        b[0] = (char)(0xf0 | (cp >> 18)), b[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), b[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    return put(o, b, n);
}

/* A JSON string (at its opening quote) as msgpack str; *at and *len locate
 * its decoded bytes in out. */
static int js_string(out_t *o, js_t *j, size_t *at, size_t *len) {
    size_t head = o->len;
    j->p++; /* the opening quote */
    if (reserve(o, 5)) return NOMEM;
    o->len += 5;
    size_t start = o->len;
    for (;;) {
        const uint8_t *run = j->p;
        while (j->p < j->end && *j->p >= 0x20 && *j->p < 0x80 && *j->p != '"' && *j->p != '\\') j->p++;
        if (put(o, (const char *)run, (size_t)(j->p - run))) return NOMEM;
        if (j->p == j->end) return FALLBACK;
        uint8_t c = *j->p;
        if (c == '"') {
            j->p++;
            break;
        }
        if (c < 0x20) return FALLBACK;
        if (c >= 0x80) {
            size_t n = utf8_len(j->p, j->end);
            if (!n) return FALLBACK;
            if (put(o, (const char *)j->p, n)) return NOMEM;
            j->p += n;
            continue;
        }
        /* a backslash */
        if (j->end - j->p < 2) return FALLBACK;
        char e = (char)j->p[1];
        j->p += 2;
        const char *simple = NULL;
        switch (e) {
            case '"': simple = "\""; break;
            case '\\': simple = "\\"; break;
            case '/': simple = "/"; break;
            case 'b': simple = "\b"; break;
            case 'f': simple = "\f"; break;
            case 'n': simple = "\n"; break;
            case 'r': simple = "\r"; break;
            case 't': simple = "\t"; break;
            case 'u': break;
            default: return FALLBACK;
        }
        if (simple) {
            if (put(o, simple, 1)) return NOMEM;
            continue;
        }
        unsigned cp, low;
        if (j->end - j->p < 4 || hex4(j->p, &cp)) return FALLBACK;
        j->p += 4;
        if (cp >= 0xdc00 && cp <= 0xdfff) return FALLBACK;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, &low) ||
                low < 0xdc00 || low > 0xdfff)
                return FALLBACK;
            j->p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        }
        if (put_utf8(o, cp)) return NOMEM;
    }
    *len = o->len - start;
    mp_fix_header(o, head, *len, 0xa0, 31, 0xd9, 0xda, 0xdb);
    *at = o->len - *len;
    return OK;
}

static int js_number(out_t *o, js_t *j) {
    const uint8_t *start = j->p;
    int negative = 0, is_float = 0;
    if (*j->p == '-') negative = 1, j->p++;
    if (j->p == j->end || *j->p < '0' || *j->p > '9') return FALLBACK;
    if (*j->p == '0') {
        j->p++;
    } else {
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    if (j->p < j->end && *j->p == '.') {
        is_float = 1;
        j->p++;
        if (j->p == j->end || *j->p < '0' || *j->p > '9') return FALLBACK;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        is_float = 1;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (j->p == j->end || *j->p < '0' || *j->p > '9') return FALLBACK;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    size_t n = (size_t)(j->p - start);
    if (!is_float) {
        uint64_t v = 0;
        for (const uint8_t *d = start + negative; d < j->p; d++) {
            if (v > (UINT64_MAX - (uint64_t)(*d - '0')) / 10) return FALLBACK;
            v = v * 10 + (uint64_t)(*d - '0');
        }
        if (!negative) return mp_uint(o, v);
        if (v > (uint64_t)INT64_MAX + 1) return FALLBACK;
        return mp_int(o, v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v);
    }
    char text[64];
    if (n >= sizeof text) return FALLBACK;
    memcpy(text, start, n);
    text[n] = 0;
    double d = strtod(text, NULL);
    if (!isfinite(d)) return FALLBACK;
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return mp_put_be(o, 0xcb, bits, 8);
}

static int js_value(out_t *o, js_t *j, int depth);

static int js_literal(out_t *o, js_t *j, const char *word, size_t n, uint8_t code) {
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n)) return FALLBACK;
    j->p += n;
    return mp_put_be(o, code, 0, 0);
}

/* After an array item or object member: 1 when a comma follows (the next item
 * is due), 0 when `close` ends the container, FALLBACK for anything else. */
static int js_after_item(js_t *j, char close) {
    js_space(j);
    if (j->p == j->end) return FALLBACK;
    if (*j->p == close) {
        j->p++;
        return 0;
    }
    if (*j->p++ != ',') return FALLBACK;
    js_space(j);
    return 1;
}

static int js_array(out_t *o, js_t *j, int depth) {
    size_t head = o->len;
    uint64_t count = 0;
    int rc;
    if (depth > MAX_DEPTH) return FALLBACK;
    j->p++;
    if (reserve(o, 5)) return NOMEM;
    o->len += 5;
    js_space(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
    } else {
        for (;;) {
            if ((rc = js_value(o, j, depth))) return rc;
            count++;
            if ((rc = js_after_item(j, ']')) < 0) return rc;
            if (rc == 0) break;
        }
    }
    mp_fix_header(o, head, count, 0x90, 15, 0, 0xdc, 0xdd);
    return OK;
}

static int js_object(out_t *o, js_t *j, int depth) {
    size_t key_at[MAX_KEYS], key_len[MAX_KEYS];
    size_t head = o->len, count = 0;
    int rc;
    if (depth > MAX_DEPTH) return FALLBACK;
    j->p++;
    if (reserve(o, 5)) return NOMEM;
    o->len += 5;
    js_space(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
    } else {
        for (;;) {
            size_t at, len;
            if (j->p == j->end || *j->p != '"') return FALLBACK;
            if (count == MAX_KEYS) return FALLBACK;
            if ((rc = js_string(o, j, &at, &len))) return rc;
            for (size_t i = 0; i < count; i++) {
                if (key_len[i] == len && memcmp(o->buf + key_at[i], o->buf + at, len) == 0) return FALLBACK;
            }
            key_at[count] = at;
            key_len[count++] = len;
            int is_time = depth == 0 && len == 4 && memcmp(o->buf + at, "time", 4) == 0;
            js_space(j);
            if (j->p == j->end || *j->p++ != ':') return FALLBACK;
            js_space(j);
            if (is_time && j->p < j->end && *j->p == '"') {
                /* Read now: the object's header, fixed last, moves the bytes. */
                if ((rc = js_string(o, j, &at, &len))) return rc;
                j->time_found = event_time(o->buf + at, len, &j->seconds, &j->nanos);
                if (j->time_found == FALLBACK) return FALLBACK;
            } else if ((rc = js_value(o, j, depth))) {
                return rc;
            }
            if ((rc = js_after_item(j, '}')) < 0) return rc;
            if (rc == 0) break;
        }
    }
    mp_fix_header(o, head, count, 0x80, 15, 0, 0xde, 0xdf);
    return OK;
}

static int js_value(out_t *o, js_t *j, int depth) {
    size_t at, len;
    if (j->p == j->end) return FALLBACK;
    switch (*j->p) {
        case '{': return js_object(o, j, depth + 1);
        case '[': return js_array(o, j, depth + 1);
        case '"': return js_string(o, j, &at, &len);
        case 't': return js_literal(o, j, "true", 4, 0xc3);
        case 'f': return js_literal(o, j, "false", 5, 0xc2);
        case 'n': return js_literal(o, j, "null", 4, 0xc0);
        default: return js_number(o, j);
    }
}

static int digits(const char *s, int n, int *value) {
    *value = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        *value = *value * 10 + (s[i] - '0');
    }
    return 1;
}

/* Days from 1970-01-01 to a proleptic Gregorian date. */
static int64_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The EventTime of a "time" string, as forward._event_time reads it: 1 and
 * the moment when it matches the RFC 3339 pattern and names a valid moment
 * in range, 0 when it does not match (the caller uses now), FALLBACK when
 * Python's reading could differ (non-ASCII or a newline, an invalid date or
 * offset, a moment out of range). */
static int event_time(const char *s, size_t n, uint32_t *seconds, uint32_t *nanos) {
    int y, mo, d, h, mi, se, zh = 0, zm = 0, sign = 1;
    for (size_t i = 0; i < n; i++) {
        if ((uint8_t)s[i] >= 0x80 || s[i] == '\n') return FALLBACK;
    }
    if (n < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' ||
        !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &se))
        return 0;
    size_t i = 19;
    uint32_t frac = 0;
    if (s[i] == '.') {
        size_t first = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (i - first < 9) frac = frac * 10 + (uint32_t)(s[i] - '0');
            i++;
        }
        if (i == first) return 0;
        for (size_t k = i - first; k < 9; k++) frac *= 10;
    }
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        sign = s[i] == '-' ? -1 : 1;
        if (n - i < 6 || !digits(s + i + 1, 2, &zh) || s[i + 3] != ':' || !digits(s + i + 4, 2, &zm)) return 0;
        i += 6;
    } else {
        return 0;
    }
    if (i != n) return 0;
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > month_days[mo - 1] + (mo == 2 && leap) || h > 23 ||
        mi > 59 || se > 59 || zh > 23 || zm > 59)
        return FALLBACK;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - sign * (zh * 3600 + zm * 60);
    if (t < 0 || t > (int64_t)UINT32_MAX) return FALLBACK;
    *seconds = (uint32_t)t;
    *nanos = frac;
    return 1;
}

/* Bytes before the record: a fixarray of 2, then fixext 8 of type 0. */
#define ENTRY_PREFIX 11

static int forward_entry_into(out_t *o, const uint8_t *data, size_t n) {
    js_t j = {data, data + n, 0, 0, 0};
    int rc;
    if (reserve(o, ENTRY_PREFIX)) return NOMEM;
    o->len = ENTRY_PREFIX;
    js_space(&j);
    if (j.p == j.end || *j.p != '{') return FALLBACK;
    if ((rc = js_object(o, &j, 0))) return rc;
    js_space(&j);
    if (j.p != j.end) return FALLBACK;
    uint32_t seconds = j.seconds, nanos = j.nanos;
    if (!j.time_found) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        seconds = (uint32_t)now.tv_sec;
        nanos = (uint32_t)now.tv_nsec;
    }
    uint8_t *b = (uint8_t *)o->buf;
    b[0] = 0x92;
    b[1] = 0xd7;
    b[2] = 0x00;
    for (int k = 0; k < 4; k++) {
        b[3 + k] = (uint8_t)(seconds >> (8 * (3 - k)));
        b[7 + k] = (uint8_t)(nanos >> (8 * (3 - k)));
    }
    return OK;
}

static PyObject *forward_entry(PyObject *self, PyObject *arg) {
    Py_buffer view;
    out_t out = {NULL, 0, 0};
    int rc;
    (void)self;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (view.len >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        rc = forward_entry_into(&out, (const uint8_t *)view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        rc = forward_entry_into(&out, (const uint8_t *)view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return finish(&out, rc);
}

static PyMethodDef methods[] = {
    {"struct_json", struct_json, METH_O,
     "struct_json(data, /)\n--\n\nThe JSON of a serialised google.protobuf.Struct, or None "
     "when the pure-Python conversion must be used."},
    {"forward_entry", forward_entry, METH_O,
     "forward_entry(data, /)\n--\n\nThe Forward-protocol entry ([EventTime, record], msgpack) of "
     "an event's JSON, or None when the pure-Python encoding must be used."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "teleport_event_handler_accel",
    "Optional compiled accelerator of teleport-event-handler.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_teleport_event_handler_accel(void) { return PyModule_Create(&module); }
