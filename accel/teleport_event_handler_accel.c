/*
 * teleport_event_handler_accel: the forwarder's optional compiled accelerator.
 *
 * struct_json(data) turns a serialised google.protobuf.Struct (an audit
 * event's payload) into the JSON the forwarder posts, in one pass over the
 * wire bytes with the GIL released. It returns None for anything it does not
 * handle exactly as the pure-Python path (teleport_event_handler.events) does:
 * a key repeated in one object, NaN or infinite numbers, a Value with more
 * than one kind, unknown fields, nesting deeper than MAX_DEPTH, malformed
 * input. The caller then converts the message in Python.
 *
 * Numbers follow the Python path: a double that is integral and below 2**53
 * in magnitude prints as an integer, any other as the shortest decimal that
 * reads back as the same double.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_KEYS 512
#define EXACT_INT_LIMIT 9007199254740992.0 /* 2**53 */

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

static PyObject *struct_json(PyObject *self, PyObject *arg) {
    Py_buffer view;
    out_t out = {NULL, 0, 0};
    int rc;
    (void)self;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rd_t r = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    rc = json_struct(&out, &r, 0);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc == NOMEM) {
        free(out.buf);
        return PyErr_NoMemory();
    }
    if (rc != OK) {
        free(out.buf);
        Py_RETURN_NONE;
    }
    PyObject *result = PyBytes_FromStringAndSize(out.buf, (Py_ssize_t)out.len);
    free(out.buf);
    return result;
}

static PyMethodDef methods[] = {
    {"struct_json", struct_json, METH_O,
     "struct_json(data, /)\n--\n\nThe JSON of a serialised google.protobuf.Struct, or None "
     "when the pure-Python conversion must be used."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "teleport_event_handler_accel",
    "Optional compiled accelerator of teleport-event-handler.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_teleport_event_handler_accel(void) { return PyModule_Create(&module); }
