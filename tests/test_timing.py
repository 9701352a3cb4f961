"""Tests for shmproc.common.timing: ProcessTimers and the @timesection() decorator.

The engine is not involved: a plain class with hooks named like a Process's
stands in for it, and the tests call end_lap() where the engine would.
"""

import functools
import math
import pickle
import time

import cloudpickle
import pytest

from shmproc.sktime import Timer
from shmproc.common.timing import SECTIONS, ProcessTimers, timesection

PICKLERS = [pytest.param(pickle, id="pickle"), pytest.param(cloudpickle, id="cloudpickle")]


class Worker:
    """Stands in for a Process subclass: four timed hooks, one untimed."""

    def __init__(self):
        self.timers = None
        self.calls = []

    @timesection()
    def __preloop__(self):
        self.calls.append("preloop")

    @timesection()
    def __loop__(self, sleep=0.0, fail=None):
        """Loop docstring."""
        self.calls.append("loop")
        if sleep:
            time.sleep(sleep)
        if fail is not None:
            raise fail
        return "loop result"

    @timesection()
    def __postloop__(self):
        self.calls.append("postloop")

    @timesection()
    def __onfinish__(self):
        self.calls.append("onfinish")

    def __result__(self):
        return self.timers


def run_laps(worker, laps):
    for _ in range(laps):
        worker.__preloop__()
        worker.__loop__()
        worker.__postloop__()
        worker.timers.end_lap()


# -- ProcessTimers ----------------------------------------------------------------


def test_sections_constant():
    assert SECTIONS == ("preloop", "loop", "postloop", "onfinish")


def test_fresh_timers():
    t = ProcessTimers()
    assert (t.preloop, t.loop, t.postloop, t.onfinish) == (None, None, None, None)
    assert isinstance(t.full_loop, Timer) and t.full_loop.num_times == 0
    assert repr(t) == "ProcessTimers(full_loop=0)"


def test_record_creates_the_timer_on_first_use():
    t = ProcessTimers()
    t.record("loop", 0.5)
    assert isinstance(t.loop, Timer)
    assert t.loop.times == (0.5,)
    assert t.preloop is None and t.postloop is None and t.onfinish is None
    t.record("loop", 0.25)
    assert t.loop.times == (0.5, 0.25)


def test_record_accepts_every_section_and_ints():
    t = ProcessTimers()
    for i, section in enumerate(SECTIONS):
        t.record(section, i)
        assert getattr(t, section).times == (float(i),)


def test_end_lap_sums_the_lap_sections():
    t = ProcessTimers()
    t.record("preloop", 0.1)
    t.record("loop", 0.2)
    t.record("postloop", 0.3)
    t.end_lap()
    assert t.full_loop.num_times == 1
    assert math.isclose(t.full_loop.most_recent, 0.6)
    t.record("loop", 1.0)  # a lap where only __loop__ is timed
    t.end_lap()
    assert t.full_loop.times[1] == 1.0


def test_end_lap_counts_repeated_calls_in_one_lap():
    t = ProcessTimers()
    t.record("loop", 0.5)
    t.record("loop", 0.25)
    t.end_lap()
    assert t.full_loop.times == (0.75,)


def test_end_lap_with_nothing_timed_adds_nothing():
    t = ProcessTimers()
    t.end_lap()
    assert t.full_loop.num_times == 0
    t.record("loop", 0.1)
    t.end_lap()
    t.end_lap()  # nothing since the previous end_lap
    assert t.full_loop.times == (0.1,)


def test_onfinish_is_not_part_of_a_lap():
    t = ProcessTimers()
    t.record("onfinish", 2.0)
    t.end_lap()
    assert t.full_loop.num_times == 0
    t.record("loop", 0.5)
    t.record("onfinish", 2.0)
    t.end_lap()
    assert t.full_loop.times == (0.5,)


def test_zero_duration_lap_is_recorded():
    t = ProcessTimers()
    t.record("loop", 0.0)
    t.end_lap()
    assert t.full_loop.times == (0.0,)


def test_record_rejects_unknown_sections():
    t = ProcessTimers()
    for bad in ("full_loop", "__loop__", "result", "Loop", "", None, 1):
        with pytest.raises(ValueError, match=r"unknown section .*expected one of 'preloop', 'loop'"):
            t.record(bad, 0.1)
    assert repr(t) == "ProcessTimers(full_loop=0)"


def test_record_rejects_bad_durations():
    t = ProcessTimers()
    with pytest.raises(ValueError, match=">= 0 seconds"):
        t.record("loop", -0.1)
    with pytest.raises(ValueError, match="finite"):
        t.record("loop", math.inf)
    with pytest.raises(TypeError, match="must be a number"):
        t.record("loop", "0.1")
    with pytest.raises(TypeError, match="must be a number"):
        t.record("loop", True)
    assert t.loop is None  # nothing was recorded by the failed calls
    t.end_lap()
    assert t.full_loop.num_times == 0


def test_repr_is_short_and_counts():
    t = ProcessTimers()
    t.record("loop", 0.1)
    t.record("loop", 0.1)
    t.record("onfinish", 0.1)
    t.end_lap()
    assert repr(t) == "ProcessTimers(loop=2, onfinish=1, full_loop=1)"


def test_no_stray_attributes():
    t = ProcessTimers()
    with pytest.raises(AttributeError):
        t.loops = Timer()


@pytest.mark.parametrize("dumper", PICKLERS)
def test_timers_pickle_with_records_and_the_open_lap(dumper):
    t = ProcessTimers()
    t.record("preloop", 0.1)
    t.record("loop", 0.2)
    t.end_lap()
    t.record("onfinish", 0.4)
    t.record("loop", 0.3)  # lap still open when pickled
    back = pickle.loads(dumper.dumps(t))
    assert type(back) is ProcessTimers
    assert back.preloop.times == (0.1,)
    assert back.loop.times == (0.2, 0.3)
    assert back.postloop is None
    assert back.onfinish.times == (0.4,)
    assert back.full_loop.num_times == 1 and math.isclose(back.full_loop.times[0], 0.3)
    back.end_lap()  # the open lap survived the trip
    assert back.full_loop.times[1] == 0.3
    back.record("postloop", 1.0)  # and the copy keeps working
    assert back.postloop.times == (1.0,)
    assert t.postloop is None  # independent of the original


def test_setstate_tolerates_missing_fields():
    t = ProcessTimers.__new__(ProcessTimers)
    t.__setstate__({"loop": None})
    assert isinstance(t.full_loop, Timer)
    t.record("loop", 0.1)
    t.end_lap()
    assert t.full_loop.times == (0.1,)


# -- @timesection() ------------------------------------------------------------------


def test_first_timed_call_creates_timers():
    w = Worker()
    assert w.timers is None
    assert w.__loop__() == "loop result"
    assert isinstance(w.timers, ProcessTimers)
    assert w.timers.loop.num_times == 1
    assert w.timers.preloop is None


def test_works_without_a_timers_attribute():
    class Bare:
        @timesection()
        def __loop__(self):
            pass

    b = Bare()
    b.__loop__()
    assert b.timers.loop.num_times == 1


def test_each_hook_records_into_its_own_section():
    w = Worker()
    run_laps(w, 3)
    w.__onfinish__()
    assert w.calls == ["preloop", "loop", "postloop"] * 3 + ["onfinish"]
    for section in SECTIONS:
        expected = 1 if section == "onfinish" else 3
        assert getattr(w.timers, section).num_times == expected, section
    full = w.timers.full_loop
    assert full.num_times == 3
    for lap in range(3):
        parts = sum(getattr(w.timers, s).times[lap] for s in ("preloop", "loop", "postloop"))
        assert math.isclose(full.times[lap], parts)


def test_measures_the_call_duration():
    w = Worker()
    w.__loop__(sleep=0.02)
    assert 0.02 <= w.timers.loop.most_recent < 1.0


def test_existing_timers_are_reused():
    w = Worker()
    w.timers = existing = ProcessTimers()
    w.__loop__()
    assert w.timers is existing and existing.loop.num_times == 1


def test_a_call_that_raises_is_recorded_and_reraised():
    w = Worker()
    error = KeyError("boom")
    with pytest.raises(KeyError) as info:
        w.__loop__(sleep=0.01, fail=error)
    assert info.value is error
    assert w.timers.loop.num_times == 1
    assert w.timers.loop.most_recent >= 0.01
    w.timers.end_lap()
    assert w.timers.full_loop.num_times == 1


def test_base_exceptions_are_recorded_too():
    # The engine's timeout may arrive as any exception, e.g. raised from a signal handler.
    w = Worker()
    with pytest.raises(KeyboardInterrupt):
        w.__loop__(fail=KeyboardInterrupt())
    assert w.timers.loop.num_times == 1


def test_arguments_and_return_value_pass_through():
    w = Worker()
    assert w.__loop__(0.0, fail=None) == "loop result"


def test_wrapper_keeps_identity_and_carries_the_marker():
    wrapped = Worker.__dict__["__loop__"]
    assert wrapped.__name__ == "__loop__"
    assert wrapped.__qualname__ == "Worker.__loop__"
    assert wrapped.__doc__ == "Loop docstring."
    assert wrapped.__module__ == __name__
    assert callable(wrapped.__wrapped__) and wrapped.__wrapped__ is not wrapped
    for section in SECTIONS:
        assert getattr(Worker.__dict__[f"__{section}__"], "__shmproc_timesection__") == section
    assert not hasattr(Worker.__result__, "__shmproc_timesection__")


def test_applying_twice_records_once():
    class Twice:
        timers = None

        @timesection()
        @timesection()
        def __loop__(self):
            pass

    t = Twice()
    t.__loop__()
    assert t.timers.loop.num_times == 1


def test_subclass_inherits_and_overrides():
    class Child(Worker):
        @timesection()
        def __postloop__(self):
            super().__postloop__()  # the parent's timed hook records as well

    c = Child()
    c.__preloop__()
    c.__postloop__()
    assert c.timers.preloop.num_times == 1
    assert c.timers.postloop.num_times == 2
    assert c.calls == ["preloop", "postloop"]


def test_assigning_something_else_to_timers_is_reported():
    w = Worker()
    w.timers = {"loop": []}
    with pytest.raises(TypeError, match="self.timers must be a shmproc ProcessTimers.*got dict"):
        w.__loop__()


@pytest.mark.parametrize("name", ["__result__", "__error__", "__init__", "helper", "loop", "__loop"])
def test_other_functions_raise_value_error_at_class_definition(name):
    def func(self):
        pass

    func.__name__ = name
    with pytest.raises(ValueError) as info:
        timesection()(func)
    message = str(info.value)
    assert message.startswith(
        "@timesection() only works on __preloop__, __loop__, __postloop__, __onfinish__; "
        "for other functions use shmproc.sktime.timethis()"
    )
    assert name in message


def test_value_error_raised_by_the_class_statement():
    with pytest.raises(ValueError, match="use shmproc.sktime.timethis"):
        class Bad:
            @timesection()
            def helper(self):
                pass


def test_nameless_callables_are_refused():
    with pytest.raises(ValueError, match="only works on __preloop__"):
        timesection()(functools.partial(print))
    with pytest.raises(ValueError, match="only works on __preloop__"):
        timesection()(None)


def test_bare_decorator_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"write @timesection\(\) with parentheses above __loop__"):
        class Bare:
            @timesection
            def __loop__(self):
                pass


def test_arguments_to_the_factory_are_refused():
    with pytest.raises(TypeError, match=r"takes no arguments; write @timesection\(\)"):
        timesection("loop")
    with pytest.raises(TypeError, match=r"takes no arguments"):
        timesection(section="loop")


@pytest.mark.parametrize("dumper", PICKLERS)
def test_worker_with_timers_pickles(dumper):
    w = Worker()
    run_laps(w, 2)
    back = pickle.loads(dumper.dumps(w))
    assert back.timers.loop.num_times == 2 and back.timers.full_loop.num_times == 2
    back.__loop__()  # the decorated methods still record after the trip
    assert back.timers.loop.num_times == 3


def test_cloudpickle_by_value_class_keeps_working():
    # Classes defined in a function travel by value, as user classes in __main__ do.
    def make():
        class Local:
            timers = None

            @timesection()
            def __loop__(self):
                return 7

        return Local()

    back = cloudpickle.loads(cloudpickle.dumps(make()))
    assert back.__loop__() == 7
    assert back.timers.loop.num_times == 1


def test_overhead_per_call_is_small():
    class Empty:
        timers = None

        @timesection()
        def __loop__(self):
            pass

    e = Empty()
    loop = e.__loop__
    n = 5000
    for _ in range(200):  # warm up
        loop()
    t0 = time.perf_counter()
    for _ in range(n):
        loop()
    mean = (time.perf_counter() - t0) / n
    # Generous bound (typical: ~1 µs): catches a gross regression, not noise.
    assert mean < 20e-6, f"@timesection() costs {mean * 1e6:.1f} µs per call"
    assert e.timers.loop.num_times == n + 200
