/* shmproc._spans: a pool worker's span writer, on its slot's trace ring.
 *
 * Why this is C and not a cffi call: a span is two clock reads and a few
 * stores (csrc/shmp_trace.h), and the worker records one for every task.
 * A cffi call costs ~200 ns, which would be several per cent of a trivial
 * task's whole cost; a method of a CPython type with METH_FASTCALL costs
 * ~40 ns, and an item of a chunk costs nothing but the stores, inside the
 * iterator that hands the items out (the one map() runs in C).
 *
 * A writer made with no ring (owner None, address 0) records nothing: its
 * begin/end only read the clock, its items() hands the items out as
 * they are (a pool made while tracing is off, common/tracing.py).
 *
 * The writer trusts its own copy of the ring's address and capacity,
 * located and checked by the cffi core (shmp_trace_get, through
 * shmproc/_native/trace.py, the only caller); it keeps the mapping's owner
 * alive.  Built against the limited API (abi3), as the cffi module is.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>

#include "shmp_trace.h"

static uint64_t now_ns(void)
{
    /* The clock the core stamps with (platform.c shmp_now_ns): vDSO, no syscall. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- Writer ------------------------------------------------------------ */
typedef struct {
    PyObject_HEAD
    PyObject *owner;              /* keeps the mapping that holds *ring alive */
    shmp_trace_ring *ring;
    uint64_t mask;
    uint32_t pid;
} Writer;

static PyObject *writer_type, *items_type;     /* set at module init */

static int writer_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(((Writer *)self)->owner);
    return 0;
}

static void writer_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(((Writer *)self)->owner);
    ((freefunc)PyType_GetSlot(tp, Py_tp_free))(self);
    Py_DECREF(tp);
}

static int u32_arg(PyObject *o, uint32_t *out)
{
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a span label or lap is a 32-bit unsigned int");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* begin(label, start_ns=0, lap=0) -> start_ns: a new open span (start 0: now). */
static PyObject *writer_begin(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Writer *w = (Writer *)self;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "begin(label, start_ns=0, lap=0)");
        return NULL;
    }
    uint32_t label, lap = 0;
    uint64_t start = 0;
    if (u32_arg(args[0], &label) < 0)
        return NULL;
    if (nargs > 1) {
        start = PyLong_AsUnsignedLongLong(args[1]);
        if (start == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    }
    if (nargs > 2 && u32_arg(args[2], &lap) < 0)
        return NULL;
    if (start == 0)
        start = now_ns();
    if (w->ring != NULL)
        shmp_trace_begin_at(w->ring, w->mask, start, label, w->pid, lap);
    return PyLong_FromUnsignedLongLong(start);
}

/* end(failed=False) -> end_ns: closes the newest span if it is open;
 * end_tally(failed=False) also counts it in its label's tally (a
 * Process's sections, csrc/shmp_trace.h).                              */
static PyObject *end_span(PyObject *self, PyObject *const *args, Py_ssize_t nargs, int tally)
{
    Writer *w = (Writer *)self;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, tally ? "end_tally(failed=False)" : "end(failed=False)");
        return NULL;
    }
    int failed = 0;
    if (nargs == 1 && (failed = PyObject_IsTrue(args[0])) < 0)
        return NULL;
    uint64_t end = now_ns();
    uint32_t flags = failed ? SHMP_SPAN_FAILED : 0;
    if (w->ring != NULL && tally)
        shmp_trace_end_tally_at(w->ring, w->mask, end, flags);
    else if (w->ring != NULL)
        shmp_trace_end_at(w->ring, w->mask, end, flags);
    return PyLong_FromUnsignedLongLong(end);
}

static PyObject *writer_end(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return end_span(self, args, nargs, 0);
}

static PyObject *writer_end_tally(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return end_span(self, args, nargs, 1);
}

/* fail_newest(): mark the newest span failed, open or closed. */
static PyObject *writer_fail_newest(PyObject *self, PyObject *Py_UNUSED(unused))
{
    Writer *w = (Writer *)self;
    if (w->ring != NULL)
        shmp_trace_fail_newest(w->ring, w->mask);
    Py_RETURN_NONE;
}

static PyObject *writer_items(PyObject *self, PyObject *args);

static PyMethodDef writer_methods[] = {
    {"begin", (PyCFunction)(void (*)(void))writer_begin, METH_FASTCALL,
     "begin(label, start_ns=0, lap=0) -> start_ns: begin a span (start_ns 0: now)"},
    {"end", (PyCFunction)(void (*)(void))writer_end, METH_FASTCALL,
     "end(failed=False) -> end_ns: end the newest span, if it is open"},
    {"end_tally", (PyCFunction)(void (*)(void))writer_end_tally, METH_FASTCALL,
     "end_tally(failed=False) -> end_ns: end(), counting the span in its label's tally"},
    {"fail_newest", writer_fail_newest, METH_NOARGS,
     "fail_newest(): mark the newest span failed (a section found overrun once left)"},
    {"items", writer_items, METH_VARARGS,
     "items(iterable, label, count) -> iterator over the next `count` items of iterable that "
     "ends the previous item's span (ok) and begins one for each item as it hands it out; "
     "the caller ends the last (end(failed))"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot writer_slots[] = {
    {Py_tp_dealloc, writer_dealloc},
    {Py_tp_traverse, writer_traverse},
    {Py_tp_methods, writer_methods},
    {Py_tp_doc, "A span writer on one trace ring: see shmproc/_native/trace.py"},
    {0, NULL},
};

static PyType_Spec writer_spec = {
    .name = "shmproc._spans.Writer",
    .basicsize = sizeof(Writer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = writer_slots,
};

/* ---- Items: a chunk's items, a span each ---------------------------------- */
typedef struct {
    PyObject_HEAD
    PyObject *it;
    PyObject *writer;
    uint32_t label;
    Py_ssize_t left;
} Items;

static int items_traverse(PyObject *self, visitproc visit, void *arg)
{
    Items *s = (Items *)self;
    Py_VISIT(s->it);
    Py_VISIT(s->writer);
    return 0;
}

static void items_dealloc(PyObject *self)
{
    Items *s = (Items *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(s->it);
    Py_CLEAR(s->writer);
    ((freefunc)PyType_GetSlot(tp, Py_tp_free))(self);
    Py_DECREF(tp);
}

static PyObject *items_next(PyObject *self)
{
    Items *s = (Items *)self;
    if (s->left <= 0)
        return NULL;              /* the rest stay in s->it for the next block */
    PyObject *item = PyIter_Next(s->it);
    if (item != NULL) {
        Writer *w = (Writer *)s->writer;
        uint64_t t = now_ns();
        /* The item before this one returned (map() asked for the next):
         * its span ends where this one begins.                         */
        shmp_trace_end_at(w->ring, w->mask, t, 0);
        shmp_trace_begin_at(w->ring, w->mask, t, s->label, w->pid, 0);
        s->left--;
    }
    return item;
}

static PyType_Slot items_slots[] = {
    {Py_tp_dealloc, items_dealloc},
    {Py_tp_traverse, items_traverse},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, items_next},
    {0, NULL},
};

static PyType_Spec items_spec = {
    .name = "shmproc._spans.Items",
    .basicsize = sizeof(Items),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = items_slots,
};

static PyObject *writer_items(PyObject *self, PyObject *args)
{
    PyObject *iterable;
    unsigned int label;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "OIn:items", &iterable, &label, &count))
        return NULL;
    PyObject *it = PyObject_GetIter(iterable);
    if (it == NULL || ((Writer *)self)->ring == NULL)
        return it;                /* not recording: the items as they are */
    allocfunc alloc = (allocfunc)PyType_GetSlot((PyTypeObject *)items_type, Py_tp_alloc);
    Items *s = (Items *)alloc((PyTypeObject *)items_type, 0);
    if (s == NULL) {
        Py_DECREF(it);
        return NULL;
    }
    s->it = it;
    Py_INCREF(self);
    s->writer = self;
    s->label = label;
    s->left = count;
    return (PyObject *)s;
}

/* writer(owner, address, capacity, pid) -> Writer */
static PyObject *make_writer(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *owner;
    unsigned long long address;
    unsigned int capacity, pid;
    if (!PyArg_ParseTuple(args, "OKII:writer", &owner, &address, &capacity, &pid))
        return NULL;
    if (address % 64 != 0 || (address == 0) != (owner == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "writer(): the ring's address is misaligned, or "
                        "null with an owner (a writer that records nothing has neither)");
        return NULL;
    }
    if (capacity < 16 || (capacity & (capacity - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "writer(): capacity must be a power of two >= 16");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot((PyTypeObject *)writer_type, Py_tp_alloc);
    Writer *w = (Writer *)alloc((PyTypeObject *)writer_type, 0);
    if (w == NULL)
        return NULL;
    Py_INCREF(owner);
    w->owner = owner;
    w->ring = (shmp_trace_ring *)(uintptr_t)address;     /* NULL: records nothing */
    w->mask = capacity - 1;
    w->pid = pid;
    return (PyObject *)w;
}

/* now() -> the core's clock (shmp_now_ns), without a cffi call's cost:
 * ~30 ns against ~145 ns on the reference VM, and the pool worker and the
 * pool read it several times a task.                                   */
static PyObject *module_now(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    return PyLong_FromUnsignedLongLong(now_ns());
}

static PyMethodDef module_methods[] = {
    {"now", module_now, METH_NOARGS, "now() -> CLOCK_MONOTONIC in ns, the core's clock"},
    {"writer", make_writer, METH_VARARGS,
     "writer(owner, address, capacity, pid) -> a span writer on the trace ring at address"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "shmproc._spans",
    "A pool worker's span writer (see csrc/python/spans.c).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__spans(void)
{
    PyObject *mod = PyModule_Create(&module_def);
    if (mod == NULL)
        return NULL;
    writer_type = PyType_FromSpec(&writer_spec);
    items_type = writer_type ? PyType_FromSpec(&items_spec) : NULL;
    if (items_type == NULL) {
        Py_XDECREF(writer_type);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
