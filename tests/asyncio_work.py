"""What test_asyncio.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_asyncio.py
imports every name from here.
"""
import time

from shmproc.processing import Process


def square(x):
    return x * x


def nap(s):
    time.sleep(s)
    return s


def fails_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def source_that_breaks(n):
    yield from range(n)
    raise KeyError("the source broke")


class Double(Process):
    def __init__(self, n, fail=False):
        self.n, self.fail = n, fail
        self.config.num_loops = 2

    def __loop__(self):
        if self.fail:
            raise OSError("lap failed")

    def __result__(self):
        return 2 * self.n
