"""What test_timeline_recording.py's workers run (importable by spawn
workers without importing pytest)."""
import os
import time

from shmproc.processing import Process


def noop(x):
    return x


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fail_on(x):
    if x == 3:
        raise ValueError(x)
    return x


def die_on(x):
    os._exit(3)


class Laps(Process):
    """n laps of three empty hooks; its result is n."""

    def __init__(self, n):
        self.n = n
        self.config.num_loops = n

    def __preloop__(self):
        pass

    def __loop__(self):
        pass

    def __postloop__(self):
        pass

    def __result__(self):
        return self.n


class Flaky(Process):
    """Its __loop__ raises on lap 1."""

    def __init__(self):
        self.config.num_loops = 3

    def __loop__(self):
        if self.current_lap == 1:
            raise ValueError("lap 1")

    def __result__(self):
        return "never"


class SlowLaps(Process):
    def __loop__(self):
        time.sleep(0.05)


def slow_lap_process():
    return SlowLaps()


def sections_writer(ring, n):
    """Spans a racing reader can check: each one's fields follow from its label."""
    for i in range(n):
        start = 1_000 + 3 * i
        ring.begin(i, start, os.getpid(), i % 1000)
        ring.end(start + 1 + (i % 5), 1 if i % 7 == 0 else 0)
