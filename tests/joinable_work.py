"""What test_joinable_simple.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_joinable_simple.py
imports every name from here.
"""
import os


def _work(q, n):
    for _ in range(n):
        q.get(timeout=30)
        q.task_done()


def _one_too_many(q, out):
    q.get(timeout=30)
    q.task_done()
    try:
        q.task_done()
    except ValueError as exc:
        out.put(str(exc))


def _take_and_die(q):
    q.get(timeout=30)
    os._exit(0)                             # never calls task_done()


def _echo_simple(q_in, q_out):
    while True:
        item = q_in.get()
        if item is None:
            return
        q_out.put(item)
