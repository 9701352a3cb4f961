"""The Process API, rule by rule (behavior.md §2-§8)."""
import os
import signal
import sys
import textwrap
import threading
import time
import subprocess

import numpy as np
import pytest

import shmproc
from proc_helpers import wait_gone
from shmproc import processing
from shmproc.processing import (
    MainLoopError, OnFinishError, PostLoopError, PreloopError, Process, ProcessConfig,
    ProcessCrashedError, ProcessError, ResultError, TimeoutConfig, TimeoutError, timesection,
)
from shmproc.wire import SerializationError


# ---- module-level classes: importable under every start method ----------------

class Counter(Process):
    def __init__(self, n=10):
        self.counter = 0
        self.config.num_loops = n

    def __loop__(self):
        self.counter += 1

    def __result__(self):
        return self.counter


class LapLog(Process):
    """Records current_lap as each hook sees it."""

    def __init__(self, n):
        self.config.num_loops = n
        self.log = []

    def __preloop__(self):
        self.log.append(("pre", self.current_lap))

    def __loop__(self):
        self.log.append(("loop", self.current_lap, self._current_lap))

    def __postloop__(self):
        self.log.append(("post", self.current_lap))

    def __onfinish__(self):
        self.log.append(("finish", self.current_lap))

    def __result__(self):
        return self.log + [("result", self.current_lap)]


class Spinner(Process):
    def __loop__(self):
        time.sleep(0.001)

    def __onfinish__(self):
        self.finished = True

    def __result__(self):
        return ("stopped", self.current_lap, self.finished)


class Failing(Process):
    def __init__(self, where, lap=2):
        self.where = where
        self.at = lap
        self.config.num_loops = 5

    def _maybe(self, name):
        if self.where == name and self.current_lap == self.at:
            raise ValueError("bad item")

    def __preloop__(self):
        self._maybe("preloop")

    def __loop__(self):
        self._maybe("loop")

    def __postloop__(self):
        self._maybe("postloop")

    def __onfinish__(self):
        if self.where == "onfinish":
            raise KeyError("finish")

    def __result__(self):
        if self.where == "result":
            raise LookupError("result")
        return "fine"


class LivesProbe(Process):
    def __init__(self, lives, fail_until):
        self.config.lives = lives
        self.config.num_loops = 3
        self.fail_until = fail_until
        self.mutated = False

    def __loop__(self):
        assert not self.mutated, "state was not fresh"
        if self.current_lap == 1:
            self.mutated = True
            if self.config.lives > self.fail_until:
                raise RuntimeError(f"flaky with {self.config.lives} lives")
            self.mutated = False

    def __result__(self):
        return ("done", self.config.lives, self.current_lap)

    def __error__(self):
        return ("gave up", self.config.lives, type(self.error).__name__)


class Sleeper(Process):
    def __init__(self, section, seconds, timeout, lives=1):
        self.section = section
        self.seconds = seconds
        self.config.num_loops = 2
        self.config.lives = lives
        setattr(self.config.timeouts, section, timeout)

    def _nap(self, name):
        if name == self.section:
            time.sleep(self.seconds)

    def __preloop__(self):
        self._nap("preloop")

    def __loop__(self):
        self._nap("loop")

    def __postloop__(self):
        self._nap("postloop")

    def __onfinish__(self):
        self._nap("onfinish")


class Swallower(Process):
    """A hook that catches Exception around a blocking call."""

    def __init__(self):
        self.config.num_loops = 1
        self.config.timeouts.loop = 0.1

    def __loop__(self):
        try:
            time.sleep(3)
        except Exception:
            pass


class TimedAll(Process):
    def __init__(self):
        self.config.num_loops = 4

    @timesection()
    def __preloop__(self):
        pass

    @timesection()
    def __loop__(self):
        time.sleep(0.001)

    @timesection()
    def __onfinish__(self):
        pass

    def __result__(self):
        return (self.timers.loop.num_times, self.timers.full_loop.num_times,
                self.timers.postloop, self.timers.onfinish.num_times)


class ArrayResult(Process):
    def __init__(self, n):
        self.n = n
        self.config.num_loops = 1

    def __result__(self):
        return {"a": np.arange(self.n, dtype=np.float64), "name": "arr"}


class SelfStopper(Process):
    def __init__(self, legacy):
        self.legacy = legacy

    def __loop__(self):
        if self.current_lap == 3:
            if self.legacy:
                self._stop_event.set()
            else:
                self.stop()

    def __result__(self):
        return self.current_lap


class Dies(Process):
    def __init__(self, how):
        self.how = how
        self.config.num_loops = 10

    def __loop__(self):
        if self.current_lap == 4:
            if self.how == "exit":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGSEGV)


class ReadsResultInside(Process):
    def __init__(self):
        self.config.num_loops = 1

    def __loop__(self):
        self.value = self.result


class JoinIn(Process):
    def __init__(self, join_in):
        self.config.join_in = join_in

    def __preloop__(self):
        time.sleep(0.005)

    def __result__(self):
        return self.current_lap


class ErrorReturnsValue(Process):
    def __init__(self):
        self.config.num_loops = 2

    def __loop__(self):
        raise ValueError("x")

    def __error__(self):
        return {"status": "partial", "error": str(self.error)}


class ErrorRaises(Process):
    def __init__(self):
        self.config.num_loops = 2

    def __loop__(self):
        raise ValueError("x")

    def __error__(self):
        raise RuntimeError("in error")


class Unpicklable(Process):
    def __init__(self):
        self.conn = type("Conn", (), {})()
        self.conn.sock = threading.Lock()


class BadResult(Process):
    def __init__(self):
        self.config.num_loops = 1

    def __result__(self):
        return threading.Lock()


class Base(Process):
    def __init__(self, x):
        self.x = x
        self.config.num_loops = 2

    def helper(self):
        return self.x * 10


class Child(Base):
    def __loop__(self):
        self.y = self.helper()

    def __result__(self):
        return (self.x, self.y)


class GrandChild(Child):
    def __init__(self, x, z):
        super().__init__(x)
        self.z = z

    def __result__(self):
        return (self.x, self.y, self.z)


# ---- §2 construction and config ---------------------------------------------------

def test_fresh_object_and_defaults():
    p = Counter()
    assert p.config.num_loops == 10 and p.config.join_in is None and p.config.lives == 1
    t = TimeoutConfig()
    assert (t.preloop, t.loop, t.postloop, t.onfinish) == (30.0, 300.0, 60.0, 60.0)
    assert isinstance(p.config, ProcessConfig)
    assert p.current_lap == 0 and p.is_alive is False and p.timers is None and p.error is None
    assert p.pid is None and p.exitcode is None
    assert p.wait() is True and p.result is None          # not started
    p.stop()                                               # no-op before start
    assert "not started" in repr(p)


def test_inheritance_and_no_super_init():
    assert Child(3).config.num_loops == 2
    c = Child(3)
    c.start()
    assert c.result == (3, 30)
    g = GrandChild(4, "z")
    g.start()
    assert g.result == (4, 40, "z")


@pytest.mark.parametrize("field,value", [
    ("num_loops", -1), ("num_loops", 1.5), ("join_in", -0.1), ("lives", 0), ("lives", "3"),
])
def test_bad_config_is_refused_at_start(field, value):
    p = Counter()
    setattr(p.config, field, value)
    with pytest.raises(ValueError, match=field):
        p.start()
    assert p.pid is None and not p.is_alive              # nothing was started


def test_bad_timeout_is_refused():
    p = Counter()
    p.config.timeouts.loop = 0
    with pytest.raises(ValueError, match="timeouts.loop"):
        p.start()
    p.config.timeouts.loop = None                          # None = no limit
    p.start()
    assert p.result == 10


def test_hook_that_is_not_callable():
    with pytest.raises(TypeError, match="__loop__ must be a method"):
        type("Bad", (Process,), {"__loop__": 5})
    p = Counter()
    p.__loop__ = 3                                         # instance attribute shadows it
    with pytest.raises(TypeError, match="__loop__ must be callable"):
        p.start()


# ---- §3 lifecycle ----------------------------------------------------------------

def test_basic_counter_every_start_method(ctx):
    p = Counter()
    p.config.start_method = ctx.get_start_method()
    p.start()
    assert p.wait(timeout=60) is True
    assert p.result == 10 and p.current_lap == 10
    assert p.is_alive is False and p.exitcode == 0
    assert p.result is p.result                            # decoded once, cached


def test_lap_numbers_seen_by_hooks():
    p = LapLog(2)
    p.start()
    assert p.result == [("pre", 0), ("loop", 0, 0), ("post", 0),
                        ("pre", 1), ("loop", 1, 1), ("post", 1),
                        ("finish", 2), ("result", 2)]


def test_num_loops_zero_runs_no_lap_but_finishes():
    p = LapLog(0)
    p.start()
    assert p.result == [("finish", 0), ("result", 0)]


def test_join_in_zero_and_positive():
    p = JoinIn(0)
    p.start()
    assert p.result == 0
    p = JoinIn(0.15)
    t = time.monotonic()
    p.start()
    laps = p.result
    assert 5 <= laps <= 40 and time.monotonic() - t < 5


def test_stop_lets_the_lap_finish_then_onfinish_and_result():
    p = Spinner()
    p.start()
    time.sleep(0.1)
    live = p.current_lap                                   # read live from shared memory
    assert live > 0 and p.is_alive
    p.stop()
    p.stop()                                               # idempotent
    assert p.wait(timeout=30)
    tag, laps, finished = p.result
    assert tag == "stopped" and finished and laps >= live and p.current_lap == laps


@pytest.mark.parametrize("legacy", [False, True])
def test_stop_from_inside_a_hook(legacy):
    p = SelfStopper(legacy)
    p.start()
    assert p.result == 4                                   # lap 3 completed, then stopped


def test_wait_timeout_returns_false_then_true():
    p = Spinner()
    p.start()
    assert p.wait(timeout=0.05) is False
    p.stop()
    assert p.wait() is True and p.wait() is True


def test_start_twice_and_restart_after_finish():
    p = Spinner()
    p.start()
    with pytest.raises(RuntimeError, match="already running"):
        p.start()
    p.stop()
    p.wait()
    first_pid = p.pid
    p.start()                                              # a new run from the current state
    assert p.pid != first_pid
    p.stop()
    assert p.result[0] == "stopped"


# ---- §4 results ---------------------------------------------------------------------

def test_numpy_result_comes_back_through_shared_memory():
    p = ArrayResult(3_000_000)
    p.start()
    out = p.result
    assert out["name"] == "arr" and out["a"][-1] == 2_999_999
    assert out["a"].flags.writeable                        # a copy-on-write view of the worker's arena
    del p                                                  # the view outlives the handle
    assert out["a"].sum() == sum(range(3_000_000))


def test_unserializable_state_names_the_attribute():
    p = Unpicklable()
    with pytest.raises(SerializationError, match=r"self\.conn\.sock holds a _thread\.lock"):
        p.start()
    assert p.pid is None


def test_unserializable_result_is_a_result_error():
    p = BadResult()
    p.start()
    with pytest.raises(ResultError, match="could not be sent to the parent"):
        p.result


def test_reading_result_inside_the_worker():
    p = ReadsResultInside()
    p.start()
    with pytest.raises(MainLoopError) as info:
        p.result
    assert isinstance(info.value.original_error, RuntimeError)
    assert "inside the worker" in str(info.value.original_error)


# ---- §5 errors --------------------------------------------------------------------

@pytest.mark.parametrize("where,cls,lap", [
    ("preloop", PreloopError, 2), ("loop", MainLoopError, 2), ("postloop", PostLoopError, 2),
    ("onfinish", OnFinishError, 5), ("result", ResultError, 5),
])
def test_section_errors(where, cls, lap):
    p = Failing(where)
    p.start()
    for _ in range(2):                                     # every read raises again
        with pytest.raises(cls) as info:
            p.result
    e = info.value
    assert isinstance(e, ProcessError) and e.current_lap == lap
    assert e.section == f"__{where}__"
    assert type(e.original_error).__name__ in ("ValueError", "KeyError", "LookupError")
    assert "Traceback" in str(e.__cause__)                 # the worker's traceback, chained
    assert p.error is not None and type(p.error) is cls
    if where == "loop":
        assert str(e) == "Error in __loop__ on lap 2: ValueError: bad item"
        assert e.original_error.args == ("bad item",)


def test_error_hook_value_and_error_hook_failure():
    p = ErrorReturnsValue()
    p.start()
    assert p.result == {"status": "partial", "error": "Error in __loop__ on lap 0: ValueError: x"}
    p = ErrorRaises()
    p.start()
    with pytest.raises(MainLoopError):                     # __error__ raised: the run's error
        p.result


def test_errors_are_importable_from_every_surface():
    assert shmproc.processing.MainLoopError is processing.MainLoopError
    from shmproc.common.errors import MainLoopError as direct
    assert direct is MainLoopError
    assert issubclass(TimeoutError, ProcessError) and issubclass(TimeoutError, __builtins__["TimeoutError"]
                                                                 if isinstance(__builtins__, dict)
                                                                 else __builtins__.TimeoutError)


# ---- §6 lives ------------------------------------------------------------------------

def test_lives_retry_with_fresh_state_and_decreasing_lives():
    p = LivesProbe(lives=3, fail_until=1)                  # fails with 3 and 2 lives left
    p.start()
    assert p.result == ("done", 1, 3)


def test_lives_exhausted_runs_error_hook():
    p = LivesProbe(lives=2, fail_until=0)
    p.start()
    assert p.result == ("gave up", 1, "MainLoopError")


# ---- §7 timeouts ----------------------------------------------------------------------

@pytest.mark.parametrize("section,cls_lap", [("preloop", 0), ("loop", 0), ("postloop", 0),
                                             ("onfinish", 2)])
def test_timeouts_interrupt_blocking_hooks(section, cls_lap):
    p = Sleeper(section, 5, 0.2)
    t = time.monotonic()
    p.start()
    with pytest.raises(TimeoutError) as info:
        p.result
    took = time.monotonic() - t
    assert took < 3, f"the 5 s sleep was not interrupted ({took:.1f} s)"
    e = info.value
    assert e.section == f"__{section}__" and e.timeout == 0.2 and e.current_lap == cls_lap


def test_timeout_consumes_a_life():
    p = Sleeper("loop", 5, 0.1, lives=2)
    t = time.monotonic()
    p.start()
    with pytest.raises(TimeoutError):
        p.result
    assert 0.15 < time.monotonic() - t < 4                 # two lives, each cut at 0.1 s


def test_a_hook_that_swallows_the_timeout_still_times_out():
    p = Swallower()
    p.start()
    with pytest.raises(TimeoutError):
        p.result


# ---- §8 timers ---------------------------------------------------------------------------

def test_timesection_timers_in_worker_and_parent():
    p = TimedAll()
    p.start()
    assert p.result == (4, 4, None, 1)
    assert p.timers.loop.num_times == 4 and p.timers.loop.mean >= 0.001
    assert p.timers.preloop.num_times == 4 and p.timers.full_loop.num_times == 4


def test_timesection_on_another_method_is_refused():
    with pytest.raises(ValueError, match="only works on"):
        class Bad(Process):
            @timesection()
            def helper(self):
                pass


# ---- kill and crashes ------------------------------------------------------------------

def test_kill():
    p = Spinner()
    p.start()
    time.sleep(0.05)
    p.kill()
    assert p.is_alive is False and p.result is None and p.exitcode == -signal.SIGKILL
    p.kill()                                               # idempotent


@pytest.mark.parametrize("how,code,sig", [("exit", 3, None), ("segv", -signal.SIGSEGV, "SIGSEGV")])
def test_crash_is_reported(how, code, sig):
    p = Dies(how)
    p.start()
    assert p.wait(timeout=30)
    with pytest.raises(ProcessCrashedError) as info:
        p.result
    e = info.value
    assert e.exitcode == code and e.signal_name == sig and e.last_lap == 4 and e.pid == p.pid
    assert p.exitcode == code


# ---- failure model across the process boundary -------------------------------------------

_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from shmproc.processing import Process

    class Forever(Process):
        def __loop__(self):
            time.sleep(0.01)

    if __name__ == "__main__":
        p = Forever()
        p.start()
        print(p.pid, flush=True)
        {tail}
""")


def test_parent_death_takes_its_workers(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_SCRIPT.format(tail="time.sleep(0.3); os._exit(0)"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    worker = int(out.stdout.split()[0])
    assert wait_gone(worker), "the worker outlived its parent"


def test_ctrl_c_stops_workers_without_orphans(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_SCRIPT.format(tail="time.sleep(60)"))
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as parent:
        worker = int(parent.stdout.readline())
        parent.send_signal(signal.SIGINT)
        assert parent.wait(timeout=30) != 0               # KeyboardInterrupt ended it
    assert wait_gone(worker), "the worker outlived Ctrl-C in the parent"


def test_one_class_object_per_name_on_every_import_surface():
    import shmproc.common.errors
    import shmproc.process
    for name in ("Process", "ProcessConfig", "TimeoutConfig", "ProcessTimers", "timesection",
                 "ProcessError", "PreloopError", "MainLoopError", "PostLoopError",
                 "OnFinishError", "ResultError", "TimeoutError", "ProcessCrashedError"):
        assert getattr(shmproc, name) is getattr(processing, name), name
    assert shmproc.Process is shmproc.process.Process
    assert processing.TimeoutError is shmproc.common.errors.TimeoutError
    from shmproc import circuit, docs, sktime                     # noqa: F401
    assert callable(docs.download) and callable(sktime.Timer)


def test_finished_runs_arenas_are_reused_and_never_while_viewed():
    from shmproc.wire import arenas
    arenas.pool.trim()
    first = ArrayResult(500_000)
    first.start()
    held = first.result["a"]                   # a view: that arena must not be reused
    del first
    second = ArrayResult(500_000)
    second.start()
    out = second.result["a"]
    assert (held == out).all() and held[123] == 123.0
    assert not arenas.pool.kept                 # both arenas are still viewed
    del out, second
    import gc
    gc.collect()
    assert len(arenas.pool.kept) == 1           # released: kept with its pages
    third = Counter(3)
    third.start()
    assert third.result == 3
    assert held[-1] == 499_999.0                # the held view was never overwritten
