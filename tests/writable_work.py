"""What test_writable_results.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_writable_results.py
imports every name from here.
"""
import os
import pickle

import numpy as np
from shmproc import _native as native
from shmproc.processing import Process


N = 400_000                     # 3.2 MB of int64: out-of-band everywhere


def in_shared_memory(arr) -> bool:
    return native.is_private_view(arr.__array_interface__["data"][0])


def fork_sees(view, expected, parent_writes) -> int:
    """Fork a child holding `view`; the parent runs parent_writes(); the
    child checks that its view still equals `expected`, then writes into
    it.  Returns the child's exit code (0: the child saw no change)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                         # child
        os.close(w)
        os.read(r, 1)                                    # the parent has written
        ok = np.array_equal(view, expected)
        view[:] = 12345                                  # must not reach the parent
        os._exit(0 if ok else 1)
    os.close(r)
    try:
        parent_writes()
    finally:
        os.write(w, b"x")
        os.close(w)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def produce(q, acks, n, rounds):
    """Put np.arange(n) `rounds` times, each after the reader's ack."""
    source = np.arange(n, dtype=np.int64)
    for _ in range(rounds):
        q.put(source)
        acks.get(timeout=30)
    # The reader's writes never reached the array it was made from.
    q.put(bool(np.array_equal(source, np.arange(n, dtype=np.int64))))


class Wrapped:
    """A user class whose state travels as a PickleBuffer."""

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        return Wrapped, (pickle.PickleBuffer(self.data),)


def big_array(n):
    return np.arange(n, dtype=np.int64)


def writes_its_argument(a):
    a[:] = 7                    # the worker's own copy-on-write view of the argument
    return int(a.sum())


class BigResult(Process):
    def __init__(self, fill):
        self.fill = fill
        self.config.num_loops = 0

    def __result__(self):
        return np.full(N, self.fill, dtype=np.int64)
