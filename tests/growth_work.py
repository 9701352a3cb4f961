"""What test_queue_growth.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_queue_growth.py
imports every name from here.
"""
import queue


ITEM = b"p" * 100


def _produce(q, who, n):
    for i in range(n):
        q.put((who, i, ITEM))


def _consume(q, out, n):
    got = [q.get(timeout=60)[:2] for _ in range(n)]
    out.put(got)


def _produce_forever(q, started, fault=None):
    if fault:
        from shmproc.common import faults
        faults.arm(fault)
    i = 0
    while True:
        q.put((0, i, ITEM))
        if i == 2000:
            started.set()
        i += 1


def _consume_forever(q, started):
    while True:
        q.get()
        started.set()


def _drain(q):
    got = []
    while True:
        try:
            got.append(q.get(timeout=0.5))
        except queue.Empty:
            return got
