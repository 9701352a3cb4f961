"""What test_guard.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_guard.py
imports every name from here.
"""
import os
import time

from shmproc import _native as native
from shmproc.processing import Process


FOREVER_IN_C = 10**11


class StuckInC(Process):
    """Stuck in C in `section` on lap `stuck_lap` while its lives are in `stuck_lives`."""

    def __init__(self, section="loop", timeout=0.2, lives=1, stuck_lives=(1,), stuck_lap=0,
                 method=None):
        self.section = section
        self.stuck_lives = tuple(stuck_lives)
        self.stuck_lap = stuck_lap
        self.config.num_loops = 2
        self.config.lives = lives
        self.config.start_method = method
        setattr(self.config.timeouts, section, timeout)
        self.seen = []

    def _maybe_stick(self, name):
        if (name == self.section and self.current_lap == self.stuck_lap
                and self.config.lives in self.stuck_lives):
            sum(range(FOREVER_IN_C))

    def __preloop__(self):
        self._maybe_stick("preloop")

    def __loop__(self):
        self.seen.append((self.config.lives, self.current_lap))
        self._maybe_stick("loop")

    def __onfinish__(self):
        self._maybe_stick("onfinish")

    def __result__(self):
        return self.seen


class StuckFirstLife(Process):
    def __init__(self, marker):
        self.marker = marker
        self.config.num_loops = 1000
        self.config.lives = 2
        self.config.timeouts.loop = 0.2
        self.laps = 0

    def __loop__(self):
        self.laps += 1
        if self.config.lives == 2:
            open(self.marker, "w").close()
            sum(range(FOREVER_IN_C))

    def __result__(self):
        return self.config.lives, self.laps


class IgnoresEverySignal(Process):
    """Swallows the TimeoutError itself (BaseException) and carries on."""

    def __init__(self):
        self.config.num_loops = 1
        self.config.timeouts.loop = 0.2

    def __loop__(self):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                time.sleep(0.01)
            except BaseException:                          # noqa: BLE001 - the point of the test
                pass


class PoolStuck(Process):
    """Item 1 is stuck in C while it has `stuck_lives` lives."""

    def __init__(self, item, lives=1, stuck_lives=(1,)):
        self.item = item
        self.stuck_lives = tuple(stuck_lives)
        self.config.num_loops = 1
        self.config.lives = lives
        self.config.timeouts.loop = 0.2

    def __loop__(self):
        if self.item == 1 and self.config.lives in self.stuck_lives:
            sum(range(FOREVER_IN_C))

    def __result__(self):
        return (self.item, self.config.lives)


class PoolStuckOnce(PoolStuck):
    def __init__(self, item):
        PoolStuck.__init__(self, item, lives=2, stuck_lives=(2,))


class ForksThenSticks(Process):
    """Lap 0 forks a child that outlives the worker's deadline + grace and
    then leaves a mark; lap 1 is stuck in C."""

    def __init__(self, mark):
        self.mark = mark
        self.config.num_loops = 2
        self.config.timeouts.loop = 0.3

    def __loop__(self):
        if self.current_lap == 0:
            if os.fork() == 0:
                code = 1
                try:
                    time.sleep(1.5)                        # past the worker's end
                    code = 0 if not native.guard_running() else 2
                    with open(self.mark, "w") as f:
                        f.write(str(code))
                finally:
                    os._exit(code)
        else:
            sum(range(FOREVER_IN_C))


class ForksQuickly(Process):
    def __init__(self):
        self.config.num_loops = 3
        self.config.timeouts.loop = 5
        self.codes = []

    def __loop__(self):
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        self.codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))

    def __result__(self):
        return self.codes, native.guard_running()


class ExitsAtOnce(Process):
    def __loop__(self):
        os._exit(3)


class NoLimits(Process):
    """Every timeout off, so the guard (lazy under fork) has nothing to enforce
    until __loop__ sets `onfinish_later`; with it, __onfinish__ sticks in C."""

    def __init__(self, onfinish_later=None):
        self.config.num_loops = 1
        self.config.timeouts.preloop = self.config.timeouts.loop = None
        self.config.timeouts.postloop = self.config.timeouts.onfinish = None
        self.later = onfinish_later
        self.seen = []

    def __loop__(self):
        self.seen.append(native.guard_running())
        if self.later:
            self.config.timeouts.onfinish = self.later

    def __onfinish__(self):
        self.seen.append(native.guard_running())
        if self.later:
            sum(range(FOREVER_IN_C))

    def __result__(self):
        return self.seen


class ReportsGuardMode(Process):
    """Default timeouts; laps for `for_s` seconds, then reports the guard's
    mode as __result__ sees it (a deferred guard: tick, or thread once
    the run outlived its promotion)."""

    def __init__(self, for_s=0.0):
        self.for_s = for_s
        self.started = None

    def __preloop__(self):
        if self.started is None:
            self.started = time.monotonic()

    def __loop__(self):
        if time.monotonic() - self.started >= self.for_s:
            self.stop()
        else:
            time.sleep(0.005)

    def __result__(self):
        return native.guard_mode()
