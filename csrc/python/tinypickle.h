/* A few pickle protocol-5 opcodes, written and read by hand, for the lone
 * call's path (callloop.c).
 *
 * Why.  pickle.dumps / pickle.loads build a Pickler / Unpickler per call
 * (a memo table, an output buffer, a frame): after an idle spell, when
 * every first touch of memory is a cache miss, that costs tens of
 * microseconds for a call's two small ints.  The common call and result
 * are a few scalars; these are written here directly, and what is read
 * here is only what is written here.  Anything else returns "not mine"
 * and the caller uses pickle as before.
 *
 * Written: PROTO 5, the items, STOP -- no FRAME and no memo, which
 * pickle.loads does not need.  Items: int (BININT1, BININT2, BININT,
 * LONG1 up to 8 bytes), float (BINFLOAT), bool (NEWTRUE, NEWFALSE), None,
 * str (SHORT_BINUNICODE, BINUNICODE; strict UTF-8, so no lone surrogate),
 * bytes (SHORT_BINBYTES, BINBYTES), tuples of those (EMPTY_TUPLE,
 * TUPLE1-3, MARK .. TUPLE).
 * Read (tp_read_scalar): PROTO 5, one int / float / bool / None item, STOP:
 * exactly what pickle.dumps writes for those, and nothing else.
 */
#ifndef SHMP_TINYPICKLE_H
#define SHMP_TINYPICKLE_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { TP_INT, TP_FLOAT, TP_BOOL, TP_NONE, TP_STR, TP_BYTES, TP_OTHER };

typedef struct {
    char *p, *end;                      /* the output */
    int full;                           /* something did not fit: the output is void */
} tp_out;

static inline void tp_byte(tp_out *o, int b)
{
    if (o->p < o->end)
        *o->p++ = (char)b;
    else
        o->full = 1;
}

static inline void tp_bytes(tp_out *o, const void *src, size_t n)
{
    if ((size_t)(o->end - o->p) >= n) {
        memcpy(o->p, src, n);
        o->p += n;
    } else {
        o->full = 1;
    }
}

static inline void tp_le(tp_out *o, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        tp_byte(o, (int)(v >> (8 * i)) & 0xFF);
}

/* n bytes after their length: a 1-byte length under `short_op` below 256,
 * else a 4-byte one under `long_op`; 0, or -1 past 2 GiB.               */
static inline int tp_write_sized(tp_out *o, int short_op, int long_op, const char *s,
                                 Py_ssize_t n)
{
    if (n > 0x7FFFFFFF)
        return -1;
    if (n < 256) {
        tp_byte(o, short_op);
        tp_byte(o, (int)n);
    } else {
        tp_byte(o, long_op);
        tp_le(o, (uint64_t)n, 4);
    }
    tp_bytes(o, s, (size_t)n);
    return 0;
}

/* One item; 0, or -1 if it is not one of ours (an error may be set:
 * the caller clears it and falls back to pickle).  `kind`: TP_*.       */
static inline int tp_write_item(tp_out *o, PyObject *v, int kind)
{
    switch (kind) {
    case TP_NONE:
        tp_byte(o, 'N');
        return 0;
    case TP_BOOL:
        tp_byte(o, v == Py_True ? 0x88 : 0x89);
        return 0;
    case TP_INT: {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred()))
            return -1;
        if (x >= 0 && x < 256) {
            tp_byte(o, 'K');
            tp_le(o, (uint64_t)x, 1);
        } else if (x >= 0 && x < 65536) {
            tp_byte(o, 'M');
            tp_le(o, (uint64_t)x, 2);
        } else if (x >= INT32_MIN && x <= INT32_MAX) {
            tp_byte(o, 'J');
            tp_le(o, (uint64_t)(uint32_t)(int32_t)x, 4);
        } else {
            /* LONG1: the shortest two's complement, little-endian. */
            int n = 8;
            while (n > 1) {
                long long top = x >> (8 * (n - 1) - 1);   /* sign of the next-lower length */
                if (top != 0 && top != -1)
                    break;
                n--;
            }
            tp_byte(o, 0x8a);
            tp_byte(o, n);
            tp_le(o, (uint64_t)x, n);
        }
        return 0;
    }
    case TP_FLOAT: {
        double d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        uint64_t bits;
        memcpy(&bits, &d, 8);
        tp_byte(o, 'G');
        for (int i = 7; i >= 0; i--)    /* big-endian */
            tp_byte(o, (int)(bits >> (8 * i)) & 0xFF);
        return 0;
    }
    case TP_STR: {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);    /* fails on a lone surrogate */
        return s == NULL ? -1 : tp_write_sized(o, 0x8c, 'X', s, n);   /* SHORT_BIN/BINUNICODE */
    }
    case TP_BYTES: {
        char *s;
        Py_ssize_t n;
        if (PyBytes_AsStringAndSize(v, &s, &n) < 0)
            return -1;
        return tp_write_sized(o, 'C', 'B', s, n);                     /* SHORT_BIN/BINBYTES */
    }
    default:
        return -1;
    }
}

/* What tp_read_scalar found: a new reference, or NULL (not ours; no error
 * set unless building the value failed).                                */
static inline PyObject *tp_read_scalar(const unsigned char *p, size_t n)
{
    if (n < 4 || p[0] != 0x80 || p[1] != 5 || p[n - 1] != '.')
        return NULL;
    const unsigned char *b = p + 3;     /* the item's argument */
    size_t arg = n - 4;                 /* its length: all between opcode and STOP */
    switch (p[2]) {
    case 'N':
        if (arg == 0)
            Py_RETURN_NONE;
        return NULL;
    case 0x88:
        if (arg == 0)
            Py_RETURN_TRUE;
        return NULL;
    case 0x89:
        if (arg == 0)
            Py_RETURN_FALSE;
        return NULL;
    case 'K':
        return arg == 1 ? PyLong_FromLong(b[0]) : NULL;
    case 'M':
        return arg == 2 ? PyLong_FromLong(b[0] | b[1] << 8) : NULL;
    case 'J':
        if (arg != 4)
            return NULL;
        return PyLong_FromLong((int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 |
                                         (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24));
    case 0x8a: {                        /* LONG1, up to 8 bytes */
        if (arg < 1 || b[0] == 0 || b[0] > 8 || arg != 1u + b[0])
            return NULL;
        uint64_t u = 0;
        for (int i = b[0]; i >= 1; i--)
            u = u << 8 | b[i];
        int bits = 8 * b[0];
        if (bits < 64 && (u >> (bits - 1)) & 1)
            u |= ~0ull << bits;         /* sign-extend */
        return PyLong_FromLongLong((long long)u);
    }
    case 'G': {
        if (arg != 8)
            return NULL;
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++)
            bits = bits << 8 | b[i];
        double d;
        memcpy(&d, &bits, 8);
        return PyFloat_FromDouble(d);
    }
    default:
        return NULL;
    }
}

#endif
