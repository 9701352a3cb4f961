/* Small helpers shared by the CPython-API modules in csrc/python/
 * (limited API).  Static inline: each module is its own extension.   */
#ifndef SHMP_PYHELP_H
#define SHMP_PYHELP_H

#include <Python.h>
#include <stdint.h>
#include <time.h>

#ifndef PyBUF_READ
#define PyBUF_READ 0x100
#endif

/* The core's clock (shmp_now_ns): CLOCK_MONOTONIC in ns. */
static inline uint64_t pyhelp_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The exception being raised, normalized, with its traceback attached;
 * the error indicator is cleared. */
static inline PyObject *pyhelp_take_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {                /* cannot happen after a failed call; be safe */
        value = Py_None;
        Py_INCREF(value);
    } else if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

#endif
