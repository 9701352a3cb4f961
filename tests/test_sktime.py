"""Tests for shmproc.sktime (timing helpers, Timer, TimeThis, timethis, Yawn)."""

import math
import os
import pickle
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import shmproc
from shmproc import sktime
from shmproc.sktime import (
    Timer,
    TimerStats,
    TimeThis,
    Yawn,
    clear_global_timers,
    elapsed,
    get_current_time,
    now,
    sleep,
    timethis,
)

try:
    import cloudpickle
except ImportError:  # pragma: no cover - cloudpickle is a test dependency
    cloudpickle = None

needs_cloudpickle = pytest.mark.skipif(cloudpickle is None, reason="cloudpickle not installed")


# Module-level decorated functions: they must stay picklable by reference.
@timethis()
def module_level_timed(x):
    return x * 2


SHARED_TIMER = Timer()


@timethis(SHARED_TIMER)
def module_level_shared(x):
    return x + 1


def _timer_with(times):
    t = Timer()
    for x in times:
        t.add_time(x)
    return t


# -- now / sleep / elapsed -----------------------------------------------------


def test_now_and_get_current_time_are_wall_clock():
    before = time.time()
    a, b = now(), get_current_time()
    after = time.time()
    assert before <= a <= b <= after
    assert isinstance(a, float)


def test_sleep_sleeps_and_returns_now():
    start = time.time()
    returned = sleep(0.01)
    assert returned - start >= 0.009
    assert abs(returned - time.time()) < 0.5
    assert sleep(0) >= start  # zero is allowed


@pytest.mark.parametrize("bad", [-0.01, -1, float("nan"), float("inf")])
def test_sleep_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        sleep(bad)


@pytest.mark.parametrize("bad", ["1", None, True, [1]])
def test_sleep_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match="number"):
        sleep(bad)


def test_elapsed():
    assert elapsed(1.0, 3.5) == 2.5
    assert elapsed(3.5, 1.0) == 2.5  # absolute value
    assert elapsed(5, 5) == 0
    t = now() - 10
    assert 10 <= elapsed(t) < 11  # t2 defaults to now


def test_elapsed_takes_every_real_number_fast_path_or_not():
    np = pytest.importorskip("numpy")
    assert elapsed(1, 3) == 2 and elapsed(3.5, 1.0) == 2.5
    assert elapsed(np.float64(1.0), 2.0) == 1.0 and elapsed(1.0, np.float32(3.0)) == 2.0
    assert 0 <= elapsed(now()) < 60


@pytest.mark.parametrize("args", [("a",), (1.0, "b"), (True, 1.0), (1.0, False), (None,)])
def test_elapsed_rejects_non_numbers(args):
    with pytest.raises(TypeError):
        elapsed(*args)


# -- Timer: measuring ----------------------------------------------------------


def test_empty_timer_properties():
    t = Timer()
    assert t.num_times == 0
    for name in (
        "most_recent", "result", "most_recent_index", "total_time", "total_time_paused",
        "mean", "median", "min", "max", "fastest_time", "slowest_time",
        "fastest_lap", "slowest_lap", "stdev", "variance",
    ):
        assert getattr(t, name) is None, name
    assert t.get_statistics() is None
    assert t.percentile(50) is None
    assert t.get_time(0) is None


def test_start_stop_records_elapsed():
    t = Timer()
    assert t.start() is t
    assert t.is_running
    time.sleep(0.01)
    d = t.stop()
    assert not t.is_running
    assert 0.009 <= d < 0.5
    assert t.num_times == 1
    assert t.most_recent == d == t.result == t.get_time(0)
    assert t.most_recent_index == 0


def test_stop_or_pause_without_start_raises():
    t = Timer()
    with pytest.raises(RuntimeError, match="start"):
        t.stop()
    with pytest.raises(RuntimeError, match="start"):
        t.pause()
    with pytest.raises(RuntimeError, match="start"):
        t.lap()
    t.start()
    t.stop()
    with pytest.raises(RuntimeError):
        t.stop()  # second stop: nothing running any more


def test_lap_records_and_restarts():
    t = Timer().start()
    time.sleep(0.01)
    first = t.lap()
    assert t.is_running
    second = t.stop()
    assert t.num_times == 2
    assert first >= 0.009
    assert second < first  # the second lap started at the first lap, not at start()


def test_pause_excludes_paused_time():
    t = Timer().start()
    time.sleep(0.01)
    t.pause()
    assert t.is_paused
    time.sleep(0.05)
    t.resume()
    assert not t.is_paused
    time.sleep(0.01)
    d = t.stop()
    assert 0.019 <= d < 0.045
    assert t.total_time_paused >= 0.049


def test_stop_while_paused_excludes_pause():
    t = Timer().start()
    t.pause()
    time.sleep(0.03)
    d = t.stop()
    assert d < 0.02
    assert t.total_time_paused >= 0.029


def test_double_pause_and_bad_resume_warn():
    t = Timer()
    with pytest.warns(UserWarning, match="not paused"):
        t.resume()  # not even running
    t.start()
    with pytest.warns(UserWarning, match="not paused"):
        t.resume()
    t.pause()
    with pytest.warns(UserWarning, match="already paused"):
        t.pause()
    t.resume()
    assert t.stop() >= 0


def test_measurements_are_per_thread():
    t = Timer()
    ready = threading.Barrier(2)
    errors = []
    results = {}

    def worker(name, duration):
        try:
            # This thread has not started anything yet, even if the other has.
            ready.wait()
            with pytest.raises(RuntimeError):
                t.stop()
            t.start()
            ready.wait()  # both threads are now running at the same time
            time.sleep(duration)
            results[name] = t.stop()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=worker, args=("short", 0.01)),
        threading.Thread(target=worker, args=("long", 0.05)),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert t.num_times == 2
    # Had the start state been shared, one stop would have failed or both
    # durations would be measured from the same start.
    assert 0.009 <= results["short"] < 0.045
    assert results["long"] >= 0.049
    assert sorted(t.times) == sorted(results.values())
    assert not t.is_running  # the main thread never started


def test_pause_in_one_thread_does_not_affect_another():
    t = Timer().start()
    other = []

    def worker():
        t.start()
        t.pause()
        other.append(t.is_paused)
        t.stop()

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert other == [True]
    assert not t.is_paused and t.is_running
    t.stop()
    assert t.num_times == 2


def test_concurrent_recording_loses_nothing():
    t = Timer()

    def worker():
        for _ in range(500):
            t.add_time(0.001)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.num_times == 2000


# -- Timer: records and statistics ----------------------------------------------


def test_add_time_and_statistics():
    data = [0.3, 0.1, 0.4, 0.1, 0.5]
    t = _timer_with(data)
    assert t.num_times == 5
    assert t.times == tuple(data)
    assert t.most_recent == 0.5 and t.most_recent_index == 4
    assert t.total_time == pytest.approx(1.4)
    assert t.total_time_paused == 0.0
    assert t.mean == pytest.approx(statistics.mean(data))
    assert t.median == 0.3
    assert t.min == t.fastest_time == 0.1
    assert t.max == t.slowest_time == 0.5
    assert t.fastest_lap == 1  # first of the tied minima
    assert t.slowest_lap == 4
    assert t.stdev == pytest.approx(statistics.stdev(data))
    assert t.variance == pytest.approx(statistics.variance(data))


def test_stdev_and_variance_need_two_samples():
    t = _timer_with([0.2])
    assert t.stdev is None and t.variance is None
    assert t.mean == t.median == 0.2
    t.add_time(0.4)
    assert t.stdev == pytest.approx(math.sqrt(0.02))
    assert t.variance == pytest.approx(0.02)


def test_add_time_validation():
    t = Timer()
    with pytest.raises(ValueError, match=">= 0"):
        t.add_time(-0.1)
    with pytest.raises(ValueError):
        t.add_time(float("nan"))
    for bad in ("0.1", None, True):
        with pytest.raises(TypeError):
            t.add_time(bad)
    t.add_time(0)
    t.add_time(2)  # ints are fine
    assert t.times == (0.0, 2.0)


def test_get_time():
    t = _timer_with([1.0, 2.0, 3.0])
    assert t.get_time(0) == 1.0
    assert t.get_time(2) == 3.0
    assert t.get_time(3) is None
    assert t.get_time(-1) is None  # negative indexes are out of range
    with pytest.raises(TypeError):
        t.get_time(1.0)


def test_percentile_linear_interpolation():
    t = _timer_with([15.0, 20.0, 35.0, 40.0, 50.0])
    # Expected values as numpy.percentile(..., method="linear") gives them.
    assert t.percentile(0) == 15.0
    assert t.percentile(100) == 50.0
    assert t.percentile(50) == 35.0
    assert t.percentile(40) == pytest.approx(29.0)
    assert t.percentile(90) == pytest.approx(46.0)
    assert t.percentile(25) == pytest.approx(20.0)
    assert _timer_with([7.0]).percentile(99) == 7.0


@pytest.mark.parametrize("bad", [-0.1, 100.01, 1000, float("nan")])
def test_percentile_bounds(bad):
    t = _timer_with([1.0])
    with pytest.raises(ValueError, match="between 0 and 100"):
        t.percentile(bad)


@pytest.mark.parametrize("p", [50, 101, -1, "50", None, float("nan")])
def test_percentile_of_an_empty_timer_is_none_for_any_p(p):
    # As the concept's library: nothing recorded, nothing to check p against.
    assert Timer().percentile(p) is None


def test_percentile_is_checked_once_there_are_records():
    t = _timer_with([1.0])
    with pytest.raises(ValueError):
        t.percentile(101)
    with pytest.raises(TypeError):
        t.percentile("50")


def test_get_statistics_is_frozen_snapshot():
    data = [0.2, 0.1, 0.3]
    t = _timer_with(data)
    s = t.get_statistics()
    assert isinstance(s, TimerStats)
    assert s.times == (0.2, 0.1, 0.3)
    assert s.num_times == 3
    # Same values as the properties.
    for name in (
        "num_times", "most_recent", "result", "most_recent_index", "total_time",
        "total_time_paused", "mean", "median", "min", "max", "fastest_time",
        "slowest_time", "fastest_lap", "slowest_lap", "stdev", "variance",
    ):
        assert getattr(s, name) == getattr(t, name), name
    with pytest.raises(AttributeError):
        s.mean = 1.0  # frozen
    t.add_time(9.0)
    assert s.num_times == 3 and s.max == 0.3  # a snapshot, not a live view


def test_reset_clears_records_and_running_state():
    t = _timer_with([1.0, 2.0])
    t.start()
    t.reset()
    assert t.num_times == 0 and t.mean is None
    assert not t.is_running
    with pytest.raises(RuntimeError):
        t.stop()


def test_merge_appends_records():
    a = _timer_with([1.0, 2.0])
    b = _timer_with([3.0])
    assert a.merge(b) is a
    assert a.times == (1.0, 2.0, 3.0)
    assert b.times == (3.0,)  # the other timer is untouched
    a.merge(a)  # merging with itself doubles its records without deadlock
    assert a.num_times == 6
    with pytest.raises(TypeError, match="Timer"):
        a.merge([1.0])


def test_merge_adds_paused_total():
    a = Timer().start()
    a.pause()
    time.sleep(0.01)
    a.stop()
    b = Timer()
    b.add_time(0.5)
    b.merge(a)
    assert b.total_time_paused >= 0.009


# -- Timer: pickling ------------------------------------------------------------


def _check_roundtrip(t, loads, dumps):
    t.start()  # an in-flight measurement is not carried over
    t2 = loads(dumps(t))
    assert t2.times == t.times
    assert t2.total_time_paused == t.total_time_paused
    assert not t2.is_running
    # The copy has working lock and thread-local state of its own.
    t2.start()
    t2.stop()
    t2.add_time(1.0)
    assert t2.num_times == t.num_times + 2
    assert t.is_running  # the original is unaffected
    t.stop()


def test_timer_pickle_roundtrip():
    _check_roundtrip(_timer_with([0.1, 0.2]), pickle.loads, pickle.dumps)


@needs_cloudpickle
def test_timer_cloudpickle_roundtrip():
    _check_roundtrip(_timer_with([0.1, 0.2]), cloudpickle.loads, cloudpickle.dumps)


def test_empty_timer_pickles():
    t2 = pickle.loads(pickle.dumps(Timer()))
    assert t2.num_times == 0 and t2.total_time_paused is None


# -- TimeThis -------------------------------------------------------------------


def test_timethis_context_manager_new_timer():
    with TimeThis() as t:
        assert isinstance(t, Timer) and t.is_running
        time.sleep(0.01)
    assert t.num_times == 1
    assert t.most_recent >= 0.009
    assert not t.is_running


def test_timethis_context_manager_given_timer_accumulates():
    timer = Timer()
    for _ in range(3):
        with TimeThis(timer) as t:
            assert t is timer
    assert timer.num_times == 3


def test_timethis_context_manager_records_on_exception():
    timer = Timer()
    with pytest.raises(KeyError):
        with TimeThis(timer):
            raise KeyError("boom")
    assert timer.num_times == 1


def test_timethis_context_manager_supports_pause_and_manual_stop():
    with TimeThis() as t:
        t.pause()
        time.sleep(0.02)
        t.resume()
    assert t.most_recent < 0.015
    with TimeThis(t):
        t.stop()  # stopping inside the block is not an error on exit
    assert t.num_times == 2


def test_timethis_context_manager_rejects_non_timer():
    with pytest.raises(TypeError, match="Timer"):
        TimeThis("not a timer")


# -- timethis decorator -----------------------------------------------------------


def test_timethis_decorator_per_function_timer():
    @timethis()
    def f(x, y=1):
        """Docstring kept."""
        time.sleep(0.01)
        return x + y

    assert f(1, y=2) == 3
    assert f(1) == 2
    assert isinstance(f.timer, Timer)
    assert f.timer.num_times == 2
    assert f.timer.min >= 0.009
    assert f.__name__ == "f" and f.__doc__ == "Docstring kept."


def test_timethis_decorator_given_timer_and_bare_use():
    timer = Timer()

    @timethis(timer)
    def f():
        return "a"

    @timethis
    def g():
        return "b"

    assert f() == "a" and g() == "b"
    assert f.timer is timer and timer.num_times == 1
    assert isinstance(g.timer, Timer) and g.timer.num_times == 1


def test_timethis_decorator_records_failed_calls():
    @timethis()
    def fails():
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        fails()
    assert fails.timer.num_times == 1


def test_timethis_decorator_handles_recursion():
    @timethis()
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    assert fact(5) == 120
    assert fact.timer.num_times == 5  # every nested call measured separately
    assert fact.timer.slowest_lap == 4  # the outermost call finishes last


def test_timethis_rejects_bad_timer():
    with pytest.raises(TypeError, match="Timer"):
        timethis(42)


def test_clear_global_timers():
    @timethis()
    def f():
        pass

    shared = Timer()

    @timethis(shared)
    def g():
        pass

    f()
    f()
    g()
    clear_global_timers()
    assert f.timer.num_times == 0
    assert shared.num_times == 1  # explicitly passed timers are not global
    f()
    assert f.timer.num_times == 1  # still registered and recording
    clear_global_timers()
    assert f.timer.num_times == 0


def test_decorated_module_level_function_pickles_by_reference():
    assert pickle.loads(pickle.dumps(module_level_timed)) is module_level_timed
    assert pickle.loads(pickle.dumps(module_level_shared)) is module_level_shared
    before = module_level_timed.timer.num_times
    assert module_level_timed(3) == 6
    assert module_level_timed.timer.num_times == before + 1


@needs_cloudpickle
def test_decorated_functions_cloudpickle():
    assert cloudpickle.loads(cloudpickle.dumps(module_level_timed)) is module_level_timed

    @timethis()
    def local(x):
        return x * 3

    local(1)
    copy = cloudpickle.loads(cloudpickle.dumps(local))  # by value: a copy
    assert copy(2) == 6
    assert copy.timer.num_times == 2  # the pickled records plus the new call


def test_timethis_overhead_is_small():
    def plain():
        pass

    timed = timethis(Timer())(plain)
    n = 20000

    def run(fn):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0

    run(timed)  # warm up
    overhead = (run(timed) - run(plain)) / n
    assert overhead < 10e-6, f"timethis overhead {overhead * 1e6:.2f} us per call"
    assert timed.timer.num_times == 2 * n


# -- Yawn ------------------------------------------------------------------------


def test_yawn_sleeps_at_threshold():
    y = Yawn(0.01, 3)
    assert y.yawn() is False
    assert y.yawn() is False
    assert y.get_stats() == {
        "current_yawns": 2,
        "yawn_threshold": 3,
        "total_sleeps": 0,
        "sleep_duration": 0.01,
        "yawns_until_sleep": 1,
    }
    t0 = time.perf_counter()
    assert y.yawn() is True
    assert time.perf_counter() - t0 >= 0.009
    stats = y.get_stats()
    assert stats["current_yawns"] == 0 and stats["total_sleeps"] == 1
    assert stats["yawns_until_sleep"] == 3


def test_yawn_threshold_one_sleeps_every_time():
    y = Yawn(0, 1)
    assert [y.yawn() for _ in range(3)] == [True, True, True]
    assert y.total_sleeps == 3


def test_yawn_log_sleep_prints(capsys):
    y = Yawn(0, 2, log_sleep=True)
    y.yawn()
    assert capsys.readouterr().out == ""
    y.yawn()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("Sleeping for 0")
    quiet = Yawn(0, 1)
    quiet.yawn()
    assert capsys.readouterr().out == ""


def test_yawn_reset():
    y = Yawn(0, 2)
    for _ in range(3):
        y.yawn()
    y.reset()
    assert y.get_stats()["current_yawns"] == 0
    assert y.get_stats()["total_sleeps"] == 0


@pytest.mark.parametrize(
    "args, exc",
    [
        ((-1, 3), ValueError),
        ((float("nan"), 3), ValueError),
        (("1", 3), TypeError),
        ((0.1, 0), ValueError),
        ((0.1, -2), ValueError),
        ((0.1, 2.5), TypeError),
        ((0.1, True), TypeError),
        ((0.1, "3"), TypeError),
    ],
)
def test_yawn_validates_arguments(args, exc):
    with pytest.raises(exc, match="Yawn"):
        Yawn(*args)


def test_yawn_is_thread_safe():
    y = Yawn(0, 7)
    sleeps = []

    def worker():
        sleeps.append(sum(y.yawn() for _ in range(700)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # 2800 yawns at threshold 7 is exactly 400 sleeps with no count lost.
    assert sum(sleeps) == 400
    assert y.get_stats()["total_sleeps"] == 400
    assert y.get_stats()["current_yawns"] == 0


def test_yawn_pickles():
    y = Yawn(0.01, 5)
    y.yawn()
    y.yawn()
    y2 = pickle.loads(pickle.dumps(y))
    assert y2.get_stats() == y.get_stats()
    for _ in range(3):
        last = y2.yawn()  # the recreated lock works
    assert last is True and y2.total_sleeps == 1
    assert y.get_stats()["current_yawns"] == 2  # original untouched
    if cloudpickle is not None:
        assert cloudpickle.loads(cloudpickle.dumps(y)).get_stats() == y.get_stats()


# -- import hygiene ----------------------------------------------------------------


def test_import_does_not_pull_numpy_or_cffi():
    # A fresh interpreter, since this test process may already have them loaded.
    package_parent = str(Path(shmproc.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    code = (
        "import sys, shmproc.sktime, shmproc.circuit, shmproc.docs\n"
        "bad = sorted(m for m in ('numpy', 'cffi', '_cffi_backend') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing shmproc.sktime imported: {out.stdout.strip()}"


def test_public_names():
    for name in (
        "now", "get_current_time", "sleep", "elapsed", "Timer", "TimeThis",
        "timethis", "clear_global_timers", "Yawn",
    ):
        assert name in sktime.__all__ and hasattr(sktime, name)
    assert sktime.__doc__
