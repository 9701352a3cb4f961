"""What test_messages.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_messages.py
imports every name from here.
"""
import os
import time

import numpy as np
from shmproc.processing import Process


class Echo(Process):
    """Answers every message with ("echo", message) until told "bye"."""

    def __init__(self):
        self.config.num_loops = None

    def __loop__(self):
        msg = self.listen(timeout=1.0)
        if isinstance(msg, np.ndarray):
            self.tell(("sum", float(msg.sum()), msg.flags.writeable))
        elif msg == "bye":
            self.stop()
        elif msg is not None:
            self.tell(("echo", msg))

    def __result__(self):
        return "done"


class Streamer(Process):
    """Tells n numbered messages, then ends."""

    def __init__(self, n, payload=b""):
        self.n, self.payload = n, payload
        self.config.num_loops = 1

    def __loop__(self):
        for i in range(self.n):
            self.tell((i, self.payload))


class Ticker(Process):
    """Tells its lap number every lap until stopped."""

    def __init__(self, pause=0.0):
        self.pause = pause
        self.config.num_loops = None

    def __loop__(self):
        self.tell(self.current_lap)
        if self.pause:
            time.sleep(self.pause)


class TellsThenDies(Process):
    """Tells n messages in its first lap; dies in its second."""

    def __init__(self, n):
        self.n = n

    def __loop__(self):
        if self.current_lap == 1:
            os._exit(3)
        for i in range(self.n):
            self.tell(i)


class TellsThenWorks(Process):
    """Tells one message, then computes for `seconds` in the same hook (in
    Python, or asleep), then dies: the flusher thread sends the message."""

    def __init__(self, seconds, how):
        self.seconds, self.how = seconds, how
        self.config.num_loops = 1

    def __loop__(self):
        self.tell("started")
        end = time.monotonic() + self.seconds
        if self.how == "sleep":
            time.sleep(self.seconds)
        else:
            x = 0
            while time.monotonic() < end:
                x += 1
        os._exit(4)


class ReadsOneAndFails(Process):
    """Each life reads one message, reports it, then the first life fails."""

    def __init__(self):
        self.config.lives = 2
        self.config.num_loops = 1

    def __preloop__(self):
        msg = self.listen(timeout=10)
        self.tell(msg)
        if msg == "first":
            raise ValueError("this life fails")


class NeverReads(Process):
    def __init__(self, seconds=0.2):
        self.seconds = seconds
        self.config.num_loops = 1

    def __loop__(self):
        time.sleep(self.seconds)


class WaitsForWord(Process):
    """listen() with no timeout inside a hook: returns None once stop() is asked."""

    def __init__(self):
        self.config.num_loops = None

    def __loop__(self):
        self.tell(("heard", self.listen()))


class BigTeller(Process):
    def __init__(self):
        self.config.num_loops = 1

    def __loop__(self):
        self.tell(np.arange(8 << 20, dtype=np.float64))        # 64 MiB


def _tells_in_a_pool_task(_):
    return None


class TellsInPool(Process):
    def __init__(self, x, listen=False):
        self.x, self.hear = x, listen
        self.config.num_loops = 3

    def __loop__(self):
        if self.hear:
            self.listen(0)
        self.tell((self.x, self.current_lap))

    def __result__(self):
        return "told"


class TellsThenDiesInPool(Process):
    def __init__(self, die):
        self.die = die
        self.config.num_loops = 1

    def __loop__(self):
        self.tell("before")
        if self.die:
            os._exit(9)

    def __result__(self):
        return "told"
