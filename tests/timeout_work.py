"""What test_task_timeout.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_task_timeout.py
imports every name from here.
"""
import time

from shmproc.processing import Process


def nap(s):
    time.sleep(s)
    return s


def square(x):
    return x * x


def swallow(s):
    try:
        time.sleep(s)
    except BaseException:           # noqa: BLE001 - a call that eats the interruption
        return "swallowed"
    return "slept"


def spin_in_c(_):
    return sum(range(10 ** 12))     # C code holding the GIL: no handler runs


class SlowLap(Process):
    def __init__(self):
        self.config.num_loops = 1

    def __loop__(self):
        time.sleep(0.4)

    def __result__(self):
        return "lap"
