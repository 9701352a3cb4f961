"""What test_queue.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_queue.py
imports every name from here.
"""
import numpy as np


def _echo(q_in, q_out):
    while True:
        item = q_in.get()
        if item is None:
            break
        q_out.put(item)


def _put_range(q, n, start=0):
    for i in range(start, start + n):
        q.put(i)


def _put_array_and_exit(q, n):
    q.put(np.arange(n, dtype=np.float64))


def _try_use_closed(q, out):
    try:
        q.put(1)
    except ValueError as exc:
        out.put(str(exc))


def _blocked_get(q):
    q.get()


def _put_forever(q, started):
    started.set()
    i = 0
    while True:
        q.put(("item", i, b"x" * (i % 5000)))
        i += 1
