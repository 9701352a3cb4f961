"""What test_integrity.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_integrity.py
imports every name from here.
"""
import os
import subprocess

import numpy as np
from shmproc.wire import blobs
from shmproc import _native as native
from shmproc import _shmp_cffi as _cffi
from shmproc.channels import queue as queue_mod
from shmproc.processing import Process


class _Fd:
    def __init__(self, fd):
        self.fd = fd

    def detach(self):
        return self.fd


def second_handle(q):
    """Another consumer handle on the same ring, as another process would have."""
    return queue_mod._rebuild_queue(_Fd(os.dup(q._ring.fd)), q.maxsize)


def take_raw(q):
    """Take the next record off the ring as bytes, bypassing decoding."""
    buf = bytearray(1 << 20)
    out = _cffi.ffi.new("uint32_t[2]")
    rc = q._ring.get_into(_cffi.ffi.from_buffer(buf), len(buf), 10**9, out, out + 1)
    assert rc == native.OK
    return bytes(buf[:out[0]]), out[1]


def put_raw(q, data, tag):
    assert q._ring.put(data, len(data), tag, 10**9) == native.OK


def _count_items(q, out):
    n = 0
    while True:
        item = q.get()
        if item == b"STOP":
            break
        n += 1
    out.put(n)


class _Grumpy:
    def __reduce__(self):
        return (_refuse, ())


def _refuse():
    raise ValueError("I refuse to be rebuilt")


def _desc_fields(desc):
    return list(blobs.DESC.unpack_from(desc))


def _with_fields(desc, **changes):
    names = ["pid", "fd", "size", "main_len", "kind", "nbufs", "nonce"]
    fields = _desc_fields(desc)
    for k, v in changes.items():
        fields[names.index(k)] = v
    return blobs.DESC.pack(*fields) + desc[blobs.DESC.size:]


def _blob_state(desc):
    fd = _desc_fields(desc)[1]
    for sent in blobs.pool.in_flight:
        if sent.blob.fd == fd:
            return sent.blob.load_word(0)
    raise AssertionError("blob not in flight")


def _fork_and_check(box, expected, then):
    """Fork a child holding the view in `box`; run `then()` in the parent
    (which drops its own view and makes the producer reuse what it can);
    the child then checks its view still holds `expected`."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)
            os._exit(0 if np.array_equal(box[0], expected) else 3)
        finally:
            os._exit(4)
    os.close(r)
    try:
        then()
    finally:
        os.write(w, b"x")
        os.close(w)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class _BigResult(Process):
    def __init__(self, fill):
        self.fill = fill
        self.config.num_loops = 0

    def __result__(self):
        return np.full(500_000, self.fill, dtype=np.int64)


def _in_flight():
    blobs.pool.sweep()
    return len(blobs.pool.in_flight)


class _ListFds(Process):
    def __init__(self):
        self.config.num_loops = 0

    def __result__(self):
        return subprocess.run(["ls", "-l", "/proc/self/fd/"], close_fds=False,
                              capture_output=True, text=True).stdout


def _list_fds_of_a_program(_):
    return subprocess.run(["ls", "-l", "/proc/self/fd/"], close_fds=False,
                          capture_output=True, text=True).stdout


def _queue_user(q, out):
    q.get(timeout=30)
    out.put(subprocess.run(["ls", "-l", "/proc/self/fd/"], close_fds=False,
                           capture_output=True, text=True).stdout)


_interrupts = []


def _interrupt_once(value):
    if not _interrupts:
        _interrupts.append(1)
        raise KeyboardInterrupt         # stands in for Ctrl-C arriving while an item is rebuilt
    return value


class _InterruptsOnce:
    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (_interrupt_once, (self.value,))
