"""What test_task_future.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_task_future.py
imports every name from here.
"""
import time


def square(x):
    return x * x


def nap(s):
    time.sleep(s)
    return s


def fail(x):
    raise ValueError(f"bad {x}")


def keywords(copy=None, retries=None, timeout=None):
    return (copy, retries, timeout)
