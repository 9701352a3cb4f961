"""What test_pool_stdlib.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_pool_stdlib.py
imports every name from here.
"""
import time


def square(x):
    return x * x


def fail(x):
    raise ValueError(f"bad {x}")


def fail_on_three(x):
    if x == 3:
        raise KeyError(x)
    return x


def nap(s):
    time.sleep(s)
    return s


_STATE = {}


def remember(value):
    _STATE["value"] = value
    _STATE["runs"] = _STATE.get("runs", 0) + 1


def recall(_=None):
    import os
    return _STATE.get("value"), _STATE.get("runs"), os.getpid()


def refuse():
    raise OSError("no database")
