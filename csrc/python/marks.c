/* shmproc._marks: an iterator that publishes, as each item is taken, how
 * far it got, with one relaxed atomic store into a shared word.
 *
 * Why this is C and not a cffi call: a pool worker runs the items of a
 * chunk through map() in C, a block at a time, and must publish each
 * item's start (so that, if it dies, the parent can tell finished items
 * from the one that was running and from those that never started).  From
 * Python that costs a call per item (operator.setitem on a memoryview,
 * zipped with the items: ~65 ns on the reference VM, doubling the cost of
 * a trivial item); through cffi ~200 ns.  Here it is a store inside
 * tp_iternext: lost in the noise.
 *
 * This is the only code in shmproc that uses the CPython API; it touches no
 * shmproc structure, only the 64-bit word it is given (the pool block's
 * lap word, located and checked by shmproc/native.py, which is the only
 * caller).  Built against the limited API (abi3), as the cffi module is.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    PyObject *it;                 /* the items */
    PyObject *owner;              /* keeps the mapping that holds *word alive */
    _Atomic uint64_t *word;
    uint64_t next;                /* value stored when the next item is taken */
    uint64_t step;
    Py_ssize_t left;              /* items still to hand out (then: exhausted) */
} Marked;

static int marked_traverse(PyObject *self, visitproc visit, void *arg)
{
    Marked *m = (Marked *)self;
    Py_VISIT(m->it);
    Py_VISIT(m->owner);
    return 0;
}

static void marked_dealloc(PyObject *self)
{
    Marked *m = (Marked *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(m->it);
    Py_CLEAR(m->owner);
    freefunc free_fn = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    free_fn(self);
    Py_DECREF(tp);
}

static PyObject *marked_next(PyObject *self)
{
    Marked *m = (Marked *)self;
    if (m->left <= 0)
        return NULL;              /* the rest of the items stay in m->it for the next block */
    PyObject *item = PyIter_Next(m->it);
    if (item != NULL) {
        m->left--;
        /* Relaxed: the parent reads the word either after this process is
         * reaped (waitpid orders every store it made) or for live
         * progress, where a late value is harmless.  Program order puts
         * this store before the item runs: the caller gets the item only
         * after it. */
        atomic_store_explicit(m->word, m->next, memory_order_relaxed);
        m->next += m->step;
    }
    return item;                  /* NULL: exhausted, or the error PyIter_Next set */
}

static PyType_Slot marked_slots[] = {
    {Py_tp_dealloc, marked_dealloc},
    {Py_tp_traverse, marked_traverse},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, marked_next},
    {Py_tp_doc, "marked(iterator, owner, address, first, step, count): see shmproc/native.py"},
    {0, NULL},
};

static PyType_Spec marked_spec = {
    .name = "shmproc._marks.Marked",
    .basicsize = sizeof(Marked),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = marked_slots,
};

static PyObject *marked_type;     /* set at module init */

static PyObject *marked(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *iterable, *owner;
    unsigned long long address, first, step;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "OOKKKn:marked", &iterable, &owner, &address, &first, &step,
                          &count))
        return NULL;
    if (address == 0 || address % _Alignof(uint64_t) != 0) {
        PyErr_SetString(PyExc_ValueError, "marked(): the word's address is null or misaligned");
        return NULL;
    }
    PyObject *it = PyObject_GetIter(iterable);
    if (it == NULL)
        return NULL;
    allocfunc alloc = (allocfunc)PyType_GetSlot((PyTypeObject *)marked_type, Py_tp_alloc);
    Marked *m = (Marked *)alloc((PyTypeObject *)marked_type, 0);
    if (m == NULL) {
        Py_DECREF(it);
        return NULL;
    }
    m->it = it;
    Py_INCREF(owner);
    m->owner = owner;
    m->word = (_Atomic uint64_t *)(uintptr_t)address;
    m->next = first;
    m->step = step;
    m->left = count;
    return (PyObject *)m;
}

static PyMethodDef methods[] = {
    {"marked", marked, METH_VARARGS,
     "marked(iterable, owner, address, first, step, count) -> iterator over the next `count` "
     "items of iterable that stores first, first+step, ... into the 64-bit word at address "
     "as it hands out each item"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "shmproc._marks", NULL, -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__marks(void)
{
    PyObject *mod = PyModule_Create(&module_def);
    if (mod == NULL)
        return NULL;
    marked_type = PyType_FromSpec(&marked_spec);
    if (marked_type == NULL) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
