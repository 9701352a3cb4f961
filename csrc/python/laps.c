/* shmproc._laps: a Process worker's lap loop (runtime/runner.py), in C.
 *
 * Why C.  A lap with __preloop__, __loop__ and __postloop__ makes four
 * control-block calls (three shmp_ctl_enter, one shmp_ctl_end_lap: a
 * clock read and a few stores each).  Through cffi each costs ~200-300 ns,
 * and the Python around them (the sections tuple, the `armed` flag, the
 * lap counter) as much again: ~2 us a lap for three empty hooks.  Here the
 * four calls are plain C calls (~20 ns each, through the pointers the
 * native layer hands over: the same functions the cffi module exports,
 * not copies) and the hooks are called with PyObject_CallNoArgs.
 *
 * What stays in Python (Runner.run_laps): everything that is not the
 * plain lap -- a stop asked before the first lap, join_in (the Python loop
 * runs those runs), and what to do when run() returns: a hook's exception
 * (returned, with its traceback, for Runner._failure), an overrun
 * reported by enter/end_lap, a stop.  The loop keeps Runner.run_laps's
 * order exactly: per section enter -> overrun? -> armed -> hook ->
 * disarmed; then the outbox flush if messages are pending, end_lap, the
 * lap counted (runner.lap), the timers' end_lap, the stop bit.
 *
 * `armed`: set while a hook runs.  Runner.on_alarm (the guard's SIGALRM,
 * watchdog.py) raises only when it is set.  CPython runs signal handlers
 * only between bytecodes, i.e. inside a hook here (armed) or in Python
 * code this loop calls with armed clear (flush, timers), never in this C
 * code itself, so the flag needs no atomics: it is read by the same
 * thread, in a handler that runs between our statements.
 *
 * Built against the limited API (abi3), as marks.c and the cffi module.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>

#include "pyhelp.h"
#include "shmp_trace.h"

/* The signatures of shmp_ctl_enter / shmp_ctl_end_lap (csrc/shmproc.h). */
typedef int (*enter_fn)(void *ctl, uint32_t section, uint64_t timeout_ns);
typedef int (*end_lap_fn)(void *ctl);
typedef uint64_t (*start_fn)(const void *ctl);       /* shmp_ctl_section_start_ns */

/* The span of each section, on the run's trace ring (shmp_trace.h), when
 * run() is given one: begun at the stamp enter() just stored (no clock
 * read of our own), ended at the next section's stamp; the last section
 * of a lap ends at one clock read after its hook.  ~10 ns a section.   */
typedef struct {
    shmp_trace_ring *ring;              /* NULL: not tracing */
    uint64_t mask;
    uint32_t pid;
    start_fn section_start;
} tracer;


#define MAX_SECTIONS 3

/* The bits enter/end_lap return (SHMP_CTL_STOP, SHMP_CTL_OVERRAN); checked
 * against the header's values by the caller (_native/control.py).        */
static int STOP_BIT, OVERRAN_BIT;

/* What run() reports (mirrored in _native/control.py). */
enum { R_LAPS = 0, R_STOPPED = 1, R_OVERRAN_ENTER = 2, R_RAISED = 3, R_OVERRAN_END = 4 };

static int armed;

static PyObject *laps_armed(PyObject *self, PyObject *unused)
{
    (void)self; (void)unused;
    return PyBool_FromLong(armed);
}

static PyObject *laps_set_bits(PyObject *self, PyObject *args)
{
    (void)self;
    if (!PyArg_ParseTuple(args, "ii", &STOP_BIT, &OVERRAN_BIT))
        return NULL;
    Py_RETURN_NONE;
}

/* run(ctl, enter, end_lap, sections, laps, obj, runner, pending, flush, trace)
 *   ctl, enter, end_lap: addresses (ints) of the control block and of the
 *     two functions; sections: up to 3 (section, hook, timeout_ns);
 *   laps: how many laps at most (-1: no limit);
 *   obj: the Process (its `timers`, read after each lap);
 *   runner: its `lap` attribute is set after each lap;
 *   pending, flush: the outbox's deque and flush_between_hooks, or None;
 *   trace: None, or (ring address, capacity, pid, address of
 *     shmp_ctl_section_start_ns): a span per section (see `tracer`).
 * Returns (laps done, what, section index, exception or None).           */
static PyObject *laps_run(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long ctl_addr, enter_addr, end_addr;
    PyObject *sections, *obj, *runner, *pending, *flush, *trace;
    long long laps;
    if (!PyArg_ParseTuple(args, "KKKO!LOOOOO", &ctl_addr, &enter_addr, &end_addr,
                          &PyTuple_Type, &sections, &laps, &obj, &runner, &pending, &flush,
                          &trace))
        return NULL;
    tracer tr = {NULL, 0, 0, NULL};
    if (trace != Py_None) {
        unsigned long long ring_addr, start_addr;
        unsigned int capacity, pid;
        if (!PyArg_ParseTuple(trace, "KIIK", &ring_addr, &capacity, &pid, &start_addr))
            return NULL;
        if (ring_addr == 0 || ring_addr % 64 != 0 || start_addr == 0 || capacity < 16 ||
            (capacity & (capacity - 1)) != 0) {
            PyErr_SetString(PyExc_ValueError, "run: a bad trace ring");
            return NULL;
        }
        tr.ring = (shmp_trace_ring *)(uintptr_t)ring_addr;
        tr.mask = capacity - 1;
        tr.pid = pid;
        tr.section_start = (start_fn)(uintptr_t)start_addr;
    }
    if (ctl_addr == 0 || enter_addr == 0 || end_addr == 0) {
        PyErr_SetString(PyExc_ValueError, "run: a null control block or function");
        return NULL;
    }
    void *ctl = (void *)(uintptr_t)ctl_addr;
    enter_fn enter = (enter_fn)(uintptr_t)enter_addr;
    end_lap_fn end_lap = (end_lap_fn)(uintptr_t)end_addr;

    Py_ssize_t n = PyTuple_Size(sections);
    if (n < 0)
        return NULL;
    if (n > MAX_SECTIONS) {
        PyErr_SetString(PyExc_ValueError, "run: at most 3 sections a lap");
        return NULL;
    }
    uint32_t sec[MAX_SECTIONS];
    uint64_t tmo[MAX_SECTIONS];
    PyObject *hook[MAX_SECTIONS];       /* borrowed: `sections` holds them */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyTuple_GetItem(sections, i);
        unsigned int section;
        unsigned long long timeout;
        if (s == NULL || !PyArg_ParseTuple(s, "IOK", &section, &hook[i], &timeout))
            return NULL;
        sec[i] = section;
        tmo[i] = timeout;
    }
    if (pending == Py_None)
        pending = NULL;

    PyObject *lap_name = PyUnicode_InternFromString("lap");
    PyObject *timers_name = PyUnicode_InternFromString("timers");
    PyObject *end_lap_name = PyUnicode_InternFromString("end_lap");
    if (lap_name == NULL || timers_name == NULL || end_lap_name == NULL)
        goto error;
    PyObject *lap_obj = PyObject_GetAttr(runner, lap_name);
    if (lap_obj == NULL)
        goto error;
    long long lap = PyLong_AsLongLong(lap_obj);
    Py_DECREF(lap_obj);
    if (lap == -1 && PyErr_Occurred())
        goto error;

    long long done = 0;
    int what = R_LAPS;
    Py_ssize_t index = 0;
    PyObject *exc = NULL;
    while (laps < 0 || done < laps) {
        for (Py_ssize_t i = 0; i < n; i++) {
            int bits = enter(ctl, sec[i], tmo[i]);
            if (tr.ring != NULL) {
                uint64_t t = tr.section_start(ctl);
                shmp_trace_end_tally_at(tr.ring, tr.mask, t, 0);
                if (bits & OVERRAN_BIT)         /* the section being left overran */
                    shmp_trace_fail_newest(tr.ring, tr.mask);
                else
                    shmp_trace_begin_at(tr.ring, tr.mask, t, sec[i], tr.pid, (uint32_t)lap);
            }
            if (bits & OVERRAN_BIT) {
                what = R_OVERRAN_ENTER;
                index = i;
                goto out;
            }
            armed = 1;
            PyObject *r = PyObject_CallNoArgs(hook[i]);
            armed = 0;
            if (r == NULL) {
                if (tr.ring != NULL)
                    shmp_trace_end_tally_at(tr.ring, tr.mask, pyhelp_clock_ns(), SHMP_SPAN_FAILED);
                what = R_RAISED;
                index = i;
                exc = pyhelp_take_exception();
                goto out;
            }
            Py_DECREF(r);
        }
        if (tr.ring != NULL && n > 0)
            shmp_trace_end_tally_at(tr.ring, tr.mask, pyhelp_clock_ns(), 0);
        if (pending != NULL) {
            int any = PyObject_IsTrue(pending);
            if (any < 0)
                goto error;
            if (any) {
                PyObject *r = PyObject_CallNoArgs(flush);
                if (r == NULL)
                    goto error;
                Py_DECREF(r);
            }
        }
        int bits = end_lap(ctl);
        if (bits & OVERRAN_BIT) {
            if (tr.ring != NULL && n > 0)
                shmp_trace_fail_newest(tr.ring, tr.mask);
            what = R_OVERRAN_END;
            goto out;
        }
        done++;
        PyObject *v = PyLong_FromLongLong(++lap);
        if (v == NULL || PyObject_SetAttr(runner, lap_name, v) < 0) {
            Py_XDECREF(v);
            goto error;
        }
        Py_DECREF(v);
        PyObject *timers = PyObject_GetAttr(obj, timers_name);
        if (timers == NULL)
            goto error;
        if (timers != Py_None) {
            PyObject *r = PyObject_CallMethodObjArgs(timers, end_lap_name, NULL);
            if (r == NULL) {
                Py_DECREF(timers);
                goto error;
            }
            Py_DECREF(r);
        }
        Py_DECREF(timers);
        if (bits & STOP_BIT) {
            what = R_STOPPED;
            goto out;
        }
    }
out:
    Py_DECREF(lap_name);
    Py_DECREF(timers_name);
    Py_DECREF(end_lap_name);
    if (exc == NULL) {
        exc = Py_None;
        Py_INCREF(exc);
    }
    return Py_BuildValue("LinN", done, what, index, exc);
error:
    armed = 0;
    Py_XDECREF(lap_name);
    Py_XDECREF(timers_name);
    Py_XDECREF(end_lap_name);
    return NULL;
}

static PyMethodDef laps_methods[] = {
    {"run", laps_run, METH_VARARGS, "run(...): laps until done, stopped, raised or overran"},
    {"armed", laps_armed, METH_NOARGS, "armed(): is a hook of run() executing?"},
    {"set_bits", laps_set_bits, METH_VARARGS, "set_bits(stop, overran): enter/end_lap's bits"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef laps_module = {
    PyModuleDef_HEAD_INIT, "shmproc._laps",
    "A Process worker's lap loop in C (see csrc/python/laps.c).", -1, laps_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__laps(void)
{
    return PyModule_Create(&laps_module);
}
