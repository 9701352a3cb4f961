/* shmproc._callloop: a lone plain call's path through a pool, in C: the
 * worker's loop of plain calls (serve) and the pool's wait for the result
 * (take_value, at the end).
 *
 * Why C.  After an idle spell every line of Python runs many times slower
 * than warm (cold caches): the worker's path from its wake-up to the
 * result's put (the ring get, call_fast, flush: ~40 Python calls) cost
 * ~50-170 us there.  This loop does the same work in C and calls into
 * Python only for what must be Python: pickle, the spans, the function.
 *
 * serve(ctx, k, last_work) does what PoolWorker.run, call_fast and flush
 * (runtime/pool_worker.py) do for the common record, and returns to the
 * Python loop with what it has as soon as it meets anything else:
 *
 *   1. linger: watch the task ring's count until linger_ns after the last
 *      work (yielding, as native.spin_politely), then sleep in the ring's
 *      own wait with the GIL released; woken by a poke (the pool pokes as
 *      it begins a lone submit, see shmp_ring_poke), watch the count again;
 *   2. more than one record queued: ST_BATCH (Python takes them in one
 *      get_many and coalesces their results);
 *   3. take one record; one that is not a plain OP_CALL (TAG_BYTES, flags
 *      0, a header's worth of bytes) goes back as ST_RECORD, as does one
 *      whose payload is not (fn_id, args tuple, kwargs dict or None) with
 *      fn_id in `plain` (Python's handle() reports what is wrong with it);
 *   4. store the progress word k << 2 | RUNNING before its payload is
 *      unpickled (a crash from here on is this item's), begin its span,
 *      call it; an exception goes back as ST_RAISED, a value that is not
 *      a scalar (only those surely unpickle in the parent) as ST_VALUE;
 *   5. a scalar: k += 1, store k << 2, end the span, encode the R_VALUE
 *      record exactly as flush() does (taskwire.HEADER, little-endian,
 *      then pickle.dumps(value, 5)) and try once to put it; a record too
 *      large for the ring or a put that did not go goes back as ST_PUT
 *      (Python's put waits for room or sends it out-of-band);
 *   6. max_tasks reached: ST_RECYCLE.
 *
 * The checks on what is read from the ring are the ones call_fast makes:
 * the ring's own record framing, then the header's op, flags and length;
 * the payload is unpickled by the same pickle.loads.  A record larger than
 * the receive buffer is left in the ring (SHMP_ESMALLBUF consumes nothing)
 * and goes to Python's get (ST_PYGET).
 *
 * Built against the limited API (abi3), as laps.c.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pyhelp.h"
#include "tinypickle.h"

/* The signatures of shmp_ring_get_record / shmp_ring_count / shmp_ring_put
 * (csrc/shmproc.h), called through the pointers the native layer hands over. */
typedef int64_t (*get_record_fn)(void *ring, void *dst, uint64_t cap, int64_t timeout_ns);
typedef uint64_t (*count_fn)(const void *ring);
typedef int (*put_fn)(void *ring, const char *data, uint32_t len, uint32_t tag,
                      int64_t timeout_ns);
typedef int (*wait_poked_fn)(void *ring, int64_t timeout_ns);   /* shmp_ring_wait_poked */

/* What serve() reports (mirrored in runtime/pool_worker.py). */
enum { ST_BATCH = 0, ST_RECORD = 1, ST_RAISED = 2, ST_VALUE = 3, ST_PUT = 4,
       ST_RECYCLE = 5, ST_PYGET = 6 };

/* taskwire.py and channels/records.py; checked against them by set_wire(). */
static int OP_CALL = -1, R_VALUE = -1, TAG_BYTES = -1, HS = -1, RUNNING = -1;
static int64_t EINTR_RC = 0, EEMPTY_RC = 0;

/* How long a worker woken by a poke with nothing queued watches the ring:
 * the pool pokes before it builds the task's record, which after an idle
 * spell takes ~50-200 us of cold Python; the watch yields the core each
 * turn and ends at once if somebody else wants it.                      */
#define POKED_WATCH_NS 2000000ull

#define BUF_BYTES (64 * 1024)           /* records up to this size run here */

static char *inbuf, *outbuf;            /* one worker loop per process */
static int busy;                        /* serve() is not re-entrant */
static PyObject *scalar_types[7];       /* exact types whose values always unpickle */
static PyObject *five;                  /* pickle protocol 5 */

static int is_scalar(PyObject *v)
{
    PyObject *t = (PyObject *)Py_TYPE(v);
    for (int i = 0; i < 7; i++)
        if (t == scalar_types[i])
            return 1;
    return 0;
}

/* The TP_* kind of v's exact type (scalar_types: int float complex bool str bytes None). */
static int kind_of(PyObject *v)
{
    static const int kinds[7] = {TP_INT, TP_FLOAT, TP_OTHER, TP_BOOL, TP_STR, TP_BYTES, TP_NONE};
    PyObject *t = (PyObject *)Py_TYPE(v);
    for (int i = 0; i < 7; i++)
        if (t == scalar_types[i])
            return kinds[i];
    return TP_OTHER;
}

static void put_le(char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (char)(v >> (8 * i));
}

/* taskwire.HEADER ("<BBHIQ"): op, flags 0, slot, count or elapsed us, id. */
static void put_header(char *p, int op, unsigned slot, uint64_t n, uint64_t ident)
{
    p[0] = (char)op;
    p[1] = 0;
    put_le(p + 2, slot, 2);
    put_le(p + 4, n > 0xFFFFFFFFull ? 0xFFFFFFFFull : n, 4);
    put_le(p + 8, ident, 8);
}

static uint64_t get_le(const char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

/* set_wire(op_call, r_value, tag_bytes, header_size, running, eintr, eempty) */
static PyObject *cl_set_wire(PyObject *self, PyObject *args)
{
    (void)self;
    long long eintr, eempty;
    if (!PyArg_ParseTuple(args, "iiiiiLL", &OP_CALL, &R_VALUE, &TAG_BYTES, &HS, &RUNNING,
                          &eintr, &eempty))
        return NULL;
    if (eintr >= 0 || eempty >= 0 || eintr == eempty) {
        PyErr_SetString(PyExc_ValueError, "set_wire: EINTR and EEMPTY are distinct negative codes");
        HS = -1;
        return NULL;
    }
    if (HS != 16) {
        PyErr_SetString(PyExc_ValueError, "set_wire: the task header is 16 bytes");
        HS = -1;
        return NULL;
    }
    EINTR_RC = eintr;
    EEMPTY_RC = eempty;
    Py_RETURN_NONE;
}

/* The loop's fixed arguments, parsed from ctx (see serve). */
typedef struct {
    void *task, *result;
    get_record_fn get_record;
    count_fn count;
    put_fn put;
    wait_poked_fn wait_poked;
    uint64_t *lap;
    long long max_tasks;
    unsigned int slot;
    unsigned long long inband_max, linger_ns, contended_ns;
    PyObject *plain, *loads, *dumps, *begin, *end;
} loop_ctx;

static uint64_t now_ns(void)
{
    return pyhelp_clock_ns();
}

/* native.spin_politely on the task ring's count, until end_ns. */
static void watch(count_fn count, void *ring, uint64_t end_ns, uint64_t contended_ns)
{
    while (count(ring) == 0) {
        uint64_t t = now_ns();
        if (t >= end_ns)
            return;
        sched_yield();
        if (now_ns() - t > contended_ns)
            return;                     /* loaded: a futex sleep beats taking turns */
    }
}

static void linger(const loop_ctx *c, uint64_t end_ns)
{
    watch(c->count, c->task, end_ns, c->contended_ns);
}

static PyObject *result(int status, uint64_t k, uint64_t last_work, PyObject *a, PyObject *b,
                        PyObject *c)
{
    if (a == NULL) { a = Py_None; Py_INCREF(a); }
    if (b == NULL) { b = Py_None; Py_INCREF(b); }
    if (c == NULL) { c = Py_None; Py_INCREF(c); }
    return Py_BuildValue("iKKNNN", status, (unsigned long long)k,
                         (unsigned long long)last_work, a, b, c);
}

/* The record in inbuf (len bytes, `tag`) for Python: (tag, bytes). */
static PyObject *give_back(uint64_t k, uint64_t last_work, uint32_t tag, uint32_t len)
{
    PyObject *t = PyLong_FromUnsignedLong(tag);
    PyObject *b = PyBytes_FromStringAndSize(inbuf, len);
    if (t == NULL || b == NULL) {
        Py_XDECREF(t);
        Py_XDECREF(b);
        return NULL;
    }
    return result(ST_RECORD, k, last_work, t, b, NULL);
}

/* A scalar's R_VALUE record in outbuf; its length, or -1 (an error set),
 * or 0 with *big set to the record (too large for outbuf or the ring).   */
static Py_ssize_t encode_value(const loop_ctx *c, PyObject *value, uint64_t ident, uint64_t us,
                               PyObject **big)
{
    /* A small scalar's pickle by hand (tinypickle.h), else pickle.dumps. */
    tp_out o = {outbuf + 16, outbuf + 4096, 0};
    tp_byte(&o, 0x80);
    tp_byte(&o, 5);
    if (tp_write_item(&o, value, kind_of(value)) == 0 && (tp_byte(&o, '.'), !o.full)
            && (unsigned long long)(o.p - outbuf) <= c->inband_max) {
        put_header(outbuf, R_VALUE, c->slot, us, ident);
        return o.p - outbuf;
    }
    PyErr_Clear();
    PyObject *pk = PyObject_CallFunctionObjArgs(c->dumps, value, five, NULL);
    if (pk == NULL)
        return -1;
    char *p;
    Py_ssize_t plen;
    if (PyBytes_AsStringAndSize(pk, &p, &plen) < 0) {
        Py_DECREF(pk);
        return -1;
    }
    char head[16];
    put_header(head, R_VALUE, c->slot, us, ident);
    Py_ssize_t n = plen + HS;
    if ((unsigned long long)n > c->inband_max || n > BUF_BYTES) {
        *big = PyBytes_FromStringAndSize(NULL, n);
        if (*big != NULL) {
            char *d = PyBytes_AsString(*big);
            memcpy(d, head, (size_t)HS);
            memcpy(d + HS, p, (size_t)plen);
        }
        Py_DECREF(pk);
        return *big == NULL ? -1 : 0;
    }
    memcpy(outbuf, head, (size_t)HS);
    memcpy(outbuf + HS, p, (size_t)plen);
    Py_DECREF(pk);
    return n;
}

/* serve(ctx, k, last_work) -> (status, k, last_work, a, b, c)
 *   ctx: (task ring, result ring, get_record, count, put, wait_poked, lap word address,
 *         max_tasks (-1: none), slot, inband_max, linger_ns, contended_ns,
 *         plain, loads, dumps, span_begin, span_end)
 *   k: items of this worker's stream finished; last_work: when it last
 *   worked (now_ns).  What a, b, c hold per status:
 *     ST_RECORD  (tag, record bytes)       ST_RAISED  (ident, start, exception)
 *     ST_VALUE   (ident, start, value)     ST_PUT     (record bytes)
 *     ST_BATCH, ST_RECYCLE, ST_PYGET: nothing                            */
static PyObject *cl_serve(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ctx;
    unsigned long long k, last_work;
    if (!PyArg_ParseTuple(args, "O!KK", &PyTuple_Type, &ctx, &k, &last_work))
        return NULL;
    if (HS < 0) {
        PyErr_SetString(PyExc_RuntimeError, "serve: set_wire() was not called");
        return NULL;
    }
    if (busy) {                         /* a call it runs called serve() again */
        PyErr_SetString(PyExc_RuntimeError, "serve: already running in this process");
        return NULL;
    }
    unsigned long long task, res, get_a, count_a, put_a, wait_a, lap_a;
    loop_ctx c;
    if (!PyArg_ParseTuple(ctx, "KKKKKKKLIKKKO!OOOO", &task, &res, &get_a, &count_a, &put_a,
                          &wait_a, &lap_a, &c.max_tasks, &c.slot, &c.inband_max,
                          &c.linger_ns, &c.contended_ns, &PyDict_Type, &c.plain, &c.loads,
                          &c.dumps, &c.begin, &c.end))
        return NULL;
    if (!task || !res || !get_a || !count_a || !put_a || !wait_a || !lap_a || lap_a % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "serve: a null ring, function or lap word");
        return NULL;
    }
    if (inbuf == NULL) {
        inbuf = malloc(BUF_BYTES);
        outbuf = malloc(BUF_BYTES);
        if (inbuf == NULL || outbuf == NULL) {
            free(inbuf);
            free(outbuf);
            inbuf = outbuf = NULL;
            return PyErr_NoMemory();
        }
    }
    c.task = (void *)(uintptr_t)task;
    c.result = (void *)(uintptr_t)res;
    c.get_record = (get_record_fn)(uintptr_t)get_a;
    c.count = (count_fn)(uintptr_t)count_a;
    c.put = (put_fn)(uintptr_t)put_a;
    c.wait_poked = (wait_poked_fn)(uintptr_t)wait_a;
    c.lap = (uint64_t *)(uintptr_t)lap_a;
    busy = 1;
    PyObject *out = NULL;
    for (;;) {
        if (c.count(c.task) == 0 && now_ns() - last_work < c.linger_ns) {
            /* The next task often follows at once.  Without the GIL, as the
             * Python loop's watch (native.spin_politely): a thread the
             * tasks started runs meanwhile.                               */
            Py_BEGIN_ALLOW_THREADS
            linger(&c, last_work + c.linger_ns);
            Py_END_ALLOW_THREADS
        }
        if (c.count(c.task) > 1) {
            out = result(ST_BATCH, k, last_work, NULL, NULL, NULL);
            break;
        }
        int64_t rc = c.get_record(c.task, inbuf, BUF_BYTES, 0);
        if (rc == EEMPTY_RC) {
            /* Sleep until the pool sends something or pokes (no periodic
             * wake-up: pool_worker.run); poked, watch for the record.
             * First, a signal that came while we held the GIL: its flag is
             * set but no EINTR will come for it, so its handler runs now,
             * not after a wake-up that may never come.                   */
            if (PyErr_CheckSignals() < 0)
                break;                  /* a handler raised: out goes as NULL */
            int w;
            Py_BEGIN_ALLOW_THREADS
            w = c.wait_poked(c.task, -1);
            if (w == EEMPTY_RC)
                linger(&c, now_ns() + POKED_WATCH_NS);
            Py_END_ALLOW_THREADS
            if (w == 0 || w == EEMPTY_RC)
                continue;
            rc = w;                     /* EINTR below; the rest: Python's get reports it */
        }
        if (rc == EINTR_RC) {
            if (PyErr_CheckSignals() < 0)
                break;                  /* a handler raised: out goes as NULL */
            continue;
        }
        if (rc < 0) {                   /* too large for inbuf, closed...: Python's get decides */
            out = result(ST_PYGET, k, last_work, NULL, NULL, NULL);
            break;
        }
        uint32_t len = (uint32_t)(rc & 0xFFFFFFFF), tag = (uint32_t)((uint64_t)rc >> 32);
        if (len > BUF_BYTES) {          /* the ring broke its contract: let Python report it */
            PyErr_Format(PyExc_RuntimeError, "serve: the ring returned %u bytes into a "
                         "buffer of %d", len, BUF_BYTES);
            break;
        }
        uint64_t start = now_ns();
        if ((int)tag != TAG_BYTES || len < (uint32_t)HS || (unsigned char)inbuf[0] != OP_CALL
                || inbuf[1] != 0) {
            out = give_back(k, last_work, tag, len);
            break;
        }
        uint64_t ident = get_le(inbuf + 8, 8);
        __atomic_store_n(c.lap, k << 2 | (uint64_t)RUNNING, __ATOMIC_RELEASE);
        PyObject *mv = PyMemoryView_FromMemory(inbuf + HS, len - HS, PyBUF_READ);
        PyObject *body = mv == NULL ? NULL : PyObject_CallFunctionObjArgs(c.loads, mv, NULL);
        Py_XDECREF(mv);
        PyObject *fn = NULL, *fn_id = NULL, *fargs = NULL, *kwargs = NULL;
        if (body != NULL && PyTuple_Check(body) && PyTuple_Size(body) == 3) {
            fn_id = PyTuple_GetItem(body, 0);
            fargs = PyTuple_GetItem(body, 1);
            kwargs = PyTuple_GetItem(body, 2);
            if (PyTuple_Check(fargs) && (kwargs == Py_None || PyDict_Check(kwargs)))
                fn = PyDict_GetItemWithError(c.plain, fn_id);    /* borrowed */
        }
        if (fn == NULL) {               /* handle() decodes it again and says what is wrong */
            PyErr_Clear();
            Py_XDECREF(body);
            out = give_back(k, last_work, tag, len);
            break;
        }
        PyObject *st = PyLong_FromUnsignedLongLong(start);
        PyObject *r = st == NULL ? NULL : PyObject_CallFunctionObjArgs(c.begin, fn_id, st, NULL);
        Py_XDECREF(r);
        if (r == NULL) {
            Py_XDECREF(st);
            Py_DECREF(body);
            break;
        }
        if (kwargs != Py_None && PyDict_Size(kwargs) == 0)
            kwargs = Py_None;
        PyObject *value = PyObject_Call(fn, fargs, kwargs == Py_None ? NULL : kwargs);
        Py_DECREF(body);
        if (value == NULL || !is_scalar(value)) {
            /* An exception, or a value Python encodes (and checks): both go
             * back with the call's id and start, for its span and record. */
            int status = value == NULL ? ST_RAISED : ST_VALUE;
            PyObject *what = value == NULL ? pyhelp_take_exception() : value;
            PyObject *id = PyLong_FromUnsignedLongLong(ident);
            if (id == NULL) {
                Py_DECREF(st);
                Py_DECREF(what);
                break;
            }
            out = result(status, k, last_work, id, st, what);
            break;
        }
        Py_DECREF(st);
        k += 1;                         /* a scalar: encoding it cannot fail or crash */
        __atomic_store_n(c.lap, k << 2, __ATOMIC_RELEASE);
        PyObject *endr = PyObject_CallNoArgs(c.end);
        uint64_t end_ns = endr == NULL ? 0 : PyLong_AsUnsignedLongLong(endr);
        Py_XDECREF(endr);
        if (endr == NULL || PyErr_Occurred()) {
            Py_DECREF(value);
            break;
        }
        PyObject *big = NULL;
        Py_ssize_t n = encode_value(&c, value, ident, (end_ns - start) / 1000, &big);
        Py_DECREF(value);
        if (n < 0)
            break;
        last_work = now_ns();
        if (n == 0) {
            out = result(ST_PUT, k, last_work, big, NULL, NULL);
            break;
        }
        if (c.put(c.result, outbuf, (uint32_t)n, (uint32_t)TAG_BYTES, 0) != 0) {
            /* no room, or the lock is busy: Python's put waits */
            PyObject *rec = PyBytes_FromStringAndSize(outbuf, n);
            if (rec == NULL)
                break;
            out = result(ST_PUT, k, last_work, rec, NULL, NULL);
            break;
        }
        if (c.max_tasks >= 0 && k >= (unsigned long long)c.max_tasks) {
            out = result(ST_RECYCLE, k, last_work, NULL, NULL, NULL);
            break;
        }
    }
    busy = 0;
    return out;
}

/* take_value(ctx, ident, spin_ns, timeout_ns): the pool's side of a lone
 * call (backends/local/results.py _take_lone): the next record of the
 * result ring, watched for up to spin_ns (yielding; the GIL released),
 * then waited for up to timeout_ns in the ring's own wait.
 *   ctx: (result ring, get_record, count, contended_ns, loads)
 * Returns (0, elapsed_us, value) for an R_VALUE record (flags 0) of task
 * `ident` whose value unpickles; (1, tag, record bytes) for any other
 * record (_on_result reads it); or the ring's status (an int) when
 * nothing was taken: EEMPTY/ETIMEDOUT, EINTR, or a record larger than this
 * call's buffer (the Python get takes it).  The buffer is on the stack:
 * pools in other threads may call at the same time.                     */
#define TAKE_BYTES 4096

static PyObject *cl_take_value(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ctx, *loads;
    unsigned long long ident, spin_ns, ring_a, get_a, count_a, contended;
    long long timeout_ns;
    if (!PyArg_ParseTuple(args, "O!KKL", &PyTuple_Type, &ctx, &ident, &spin_ns, &timeout_ns))
        return NULL;
    if (HS < 0) {
        PyErr_SetString(PyExc_RuntimeError, "take_value: set_wire() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(ctx, "KKKKO", &ring_a, &get_a, &count_a, &contended, &loads))
        return NULL;
    if (!ring_a || !get_a || !count_a) {
        PyErr_SetString(PyExc_ValueError, "take_value: a null ring or function");
        return NULL;
    }
    void *ring = (void *)(uintptr_t)ring_a;
    get_record_fn get_record = (get_record_fn)(uintptr_t)get_a;
    count_fn count = (count_fn)(uintptr_t)count_a;
    char buf[TAKE_BYTES];
    int64_t rc;
    Py_BEGIN_ALLOW_THREADS
    if (spin_ns)                        /* native.spin_politely */
        watch(count, ring, now_ns() + spin_ns, contended);
    rc = get_record(ring, buf, sizeof buf, 0);
    if (rc == EEMPTY_RC && timeout_ns != 0)
        rc = get_record(ring, buf, sizeof buf, timeout_ns);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return PyLong_FromLongLong(rc);
    uint32_t len = (uint32_t)(rc & 0xFFFFFFFF), tag = (uint32_t)((uint64_t)rc >> 32);
    if (len > sizeof buf) {
        PyErr_Format(PyExc_RuntimeError, "take_value: the ring returned %u bytes into a "
                     "buffer of %d", len, TAKE_BYTES);
        return NULL;
    }
    if ((int)tag == TAG_BYTES && len >= (uint32_t)HS && (unsigned char)buf[0] == R_VALUE
            && buf[1] == 0 && get_le(buf + 8, 8) == ident) {
        /* A scalar as pickle.dumps or tinypickle wrote it, by hand; else pickle. */
        PyObject *value = tp_read_scalar((const unsigned char *)buf + HS, len - HS);
        if (value == NULL && !PyErr_Occurred()) {
            PyObject *mv = PyMemoryView_FromMemory(buf + HS, len - HS, PyBUF_READ);
            value = mv == NULL ? NULL : PyObject_CallFunctionObjArgs(loads, mv, NULL);
            Py_XDECREF(mv);
        }
        if (value != NULL)
            return Py_BuildValue("(iKN)", 0, (unsigned long long)get_le(buf + 4, 4), value);
        PyErr_Clear();                  /* _on_result unpickles it again and reports why */
    }
    return Py_BuildValue("(iIy#)", 1, tag, buf, (Py_ssize_t)len);
}

/* encode_call(ident, fn_id, args) -> bytes or None: the OP_CALL record of
 * fn(*args), no kwargs, as taskwire.encode makes it (header, then the
 * pickle of (fn_id, args, None)) but with the pickle written by hand
 * (tinypickle.h): for a pool's lone submit, whose path after an idle
 * spell pays for every allocation.  None when an argument is not a
 * scalar it writes (or the record would pass 4 KiB): taskwire.encode. */
static PyObject *cl_encode_call(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long ident;
    PyObject *fn_id, *cargs;
    if (!PyArg_ParseTuple(args, "KOO!", &ident, &fn_id, &PyTuple_Type, &cargs))
        return NULL;
    if (HS < 0) {
        PyErr_SetString(PyExc_RuntimeError, "encode_call: set_wire() was not called");
        return NULL;
    }
    char rec[4096];
    tp_out o = {rec + HS, rec + sizeof rec, 0};
    Py_ssize_t n = PyTuple_Size(cargs);
    tp_byte(&o, 0x80);
    tp_byte(&o, 5);
    int bad = kind_of(fn_id) != TP_INT || tp_write_item(&o, fn_id, TP_INT) < 0;
    if (n > 3)
        tp_byte(&o, '(');               /* MARK */
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        PyObject *a = PyTuple_GetItem(cargs, i);
        bad = a == NULL || tp_write_item(&o, a, kind_of(a)) < 0;
    }
    if (bad || o.full) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    static const int tuple_op[4] = {')', 0x85, 0x86, 0x87};   /* EMPTY_TUPLE, TUPLE1-3 */
    tp_byte(&o, n <= 3 ? tuple_op[n] : 't');
    tp_byte(&o, 'N');                   /* kwargs */
    tp_byte(&o, 0x87);                  /* (fn_id, args, kwargs) */
    tp_byte(&o, '.');
    if (o.full)
        Py_RETURN_NONE;
    put_header(rec, OP_CALL, 0, 1, ident);      /* the pool's records name no slot; 1 item */
    return PyBytes_FromStringAndSize(rec, o.p - rec);
}

static PyMethodDef cl_methods[] = {
    {"encode_call", cl_encode_call, METH_VARARGS,
     "encode_call(ident, fn_id, args): a lone call's record, its pickle written by hand"},
    {"take_value", cl_take_value, METH_VARARGS,
     "take_value(ctx, ident, spin_ns, timeout_ns): the next result record, a lone value decoded"},
    {"serve", cl_serve, METH_VARARGS, "serve(ctx, k, last_work): plain calls until anything else"},
    {"set_wire", cl_set_wire, METH_VARARGS, "set_wire(...): the wire format's constants"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cl_module = {
    PyModuleDef_HEAD_INIT, "shmproc._callloop",
    "A lone plain call's path through a pool, in C (see csrc/python/callloop.c).", -1,
    cl_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__callloop(void)
{
    PyObject *b = PyImport_ImportModule("builtins");
    if (b == NULL)
        return NULL;
    const char *names[6] = {"int", "float", "complex", "bool", "str", "bytes"};
    for (int i = 0; i < 6; i++) {
        scalar_types[i] = PyObject_GetAttrString(b, names[i]);
        if (scalar_types[i] == NULL) {
            Py_DECREF(b);
            return NULL;
        }
    }
    Py_DECREF(b);
    scalar_types[6] = (PyObject *)Py_TYPE(Py_None);
    Py_INCREF(scalar_types[6]);
    five = PyLong_FromLong(5);
    if (five == NULL)
        return NULL;
    return PyModule_Create(&cl_module);
}
