"""What test_executor.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_executor.py
imports every name from here.
"""
import os
import time


def square(x):
    return x * x


def fail(x):
    raise ValueError(f"bad {x}")


def die(_):
    os._exit(7)


def nap(s):
    time.sleep(s)
    return s


def refuse():
    raise OSError("no database")
