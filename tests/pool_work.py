"""What test_pool.py's pool workers run: its functions and Process classes.

They live here, not in test_pool.py, because a spawn or forkserver worker
imports the module a function or class comes from.  Importing test_pool.py
there would import pytest, numpy and conftest into every such worker
(about half a second each on a busy two-core machine); this module imports
only what the workers need.  test_pool.py imports every name from here.
"""
import logging
import os
import queue
import signal
import threading
import time
import zlib

from shmproc.processing import Process, timesection


def square(x):
    return x * x


def add(a, b):
    return a + b


def pid_of(_):
    return os.getpid()


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fail_on(x, bad=5):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def die_on(x, bad=3):
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def make_lock(_):
    return threading.Lock()


def big_array(n):
    import numpy as np                 # only the workers that run it pay for it
    return np.arange(n, dtype=np.float64)


def array_sum(a):
    return float(a.sum()), a.flags.writeable


class Counter(Process):
    def __init__(self, n):
        self.config.num_loops = n
        self.count = 0

    def __loop__(self):
        self.count += 1

    def __result__(self):
        return self.count


class Trivial(Process):
    def __init__(self, i):
        self.i = i
        self.config.num_loops = 1

    def __result__(self):
        return self.i


class FlakyOnce(Process):
    """Fails its first life (recorded in a file), succeeds in the second."""

    def __init__(self, marker):
        self.marker = marker
        self.config.num_loops = 2
        self.config.lives = 2
        self.laps = 0

    def __loop__(self):
        self.laps += 1
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise RuntimeError("first life fails")

    def __result__(self):
        return self.laps


class Sleepy(Process):
    def __init__(self, seconds):
        self.seconds = seconds
        self.config.num_loops = 1
        self.config.timeouts.loop = 0.2

    def __loop__(self):
        time.sleep(self.seconds)

    def __result__(self):
        return "woke"


class Broken(Process):
    def __init__(self):
        self.config.num_loops = 3

    def __loop__(self):
        if self.current_lap == 1:
            raise KeyError("lap one")


class SelfKill(Process):
    def __init__(self):
        self.config.num_loops = 5

    def __loop__(self):
        if self.current_lap == 2:
            os.kill(os.getpid(), signal.SIGKILL)


class TimedCounter(Counter):
    @timesection()
    def __loop__(self):
        self.count += 1


# A timeout is raised asynchronously, wherever the hook is: here, often
# inside queue.Queue.put between Condition.__enter__'s lock acquire and the
# with block (a non-reentrant lock, left held).  The next task that logs in
# that interpreter would block for ever, so a worker in which a timeout was
# raised reports that task and is replaced.

class QueueingHandler(logging.Handler):
    """Hands each record through a queue.Queue, as logging.handlers.QueueHandler does."""

    def __init__(self):
        super().__init__()
        self.q = queue.Queue()

    def emit(self, record):
        self.q.put(record)
        self.q.get()


chatty_log = logging.getLogger("shmproc.tests.chatty")
chatty_log.propagate = False
chatty_log.setLevel(logging.INFO)
chatty_log.addHandler(QueueingHandler())


class Chatty(Process):
    """Logs until its 2 ms loop timeout interrupts it."""

    def __init__(self, i):
        self.i = i
        self.config.num_loops = 1
        self.config.timeouts.loop = 0.002

    def __loop__(self):
        while True:
            chatty_log.info("item %s", self.i)


def log_once(i):
    chatty_log.info("after %s", i)
    return i


def checksum(data):
    return len(data), zlib.crc32(memoryview(data).cast("B"))


class ExitsWhenPickled:
    def __reduce__(self):
        os._exit(7)


def result_kills_worker(x):
    return ExitsWhenPickled() if x == 1 else x


class RebuildsOnlyInTheParent:
    parent = os.getpid()

    def __reduce__(self):
        return _rebuild_only_in_parent, (RebuildsOnlyInTheParent.parent,)


def _rebuild_only_in_parent(parent):
    if os.getpid() != parent:
        raise RuntimeError("cannot be rebuilt here")
    return RebuildsOnlyInTheParent()
