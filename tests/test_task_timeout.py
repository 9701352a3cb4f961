"""Pool(task_timeout=...): plain function calls under a time limit (issue 12).

A call past its limit is interrupted by the worker's watchdog (the same
guard that enforces a Process's section timeouts) and fails with
shmproc.TimeoutError, which is a builtin TimeoutError too; a fresh worker
takes the old one's place and the pool goes on.  The stdlib has no such
limit (multiprocessing.Pool's AsyncResult.get(timeout) only stops waiting
and leaves the call running): these tests mirror get(timeout)'s exception
type and check that, unlike the stdlib, the worker is actually freed.
"""
import builtins
import time

import pytest

import shmproc

# What the workers run lives in timeout_work.py (a spawn worker imports only that).
from timeout_work import SlowLap, nap, spin_in_c, square, swallow


@pytest.fixture(params=["fork", "spawn"])
def method(request):
    return request.param


def test_a_call_past_the_limit_fails_and_the_pool_goes_on(method):
    """AsyncResult.get(timeout) raises a TimeoutError: here the call itself
    is stopped, its worker replaced, and the tasks queued behind it run."""
    with shmproc.Pool(1, start_method=method, task_timeout=0.3) as pool:
        slow = pool.submit(nap, 30)
        rest = [pool.submit(square, i) for i in range(10)]
        started = time.monotonic()
        with pytest.raises(shmproc.TimeoutError) as info:
            slow.result(timeout=20)
        assert time.monotonic() - started < 10
        err = info.value
        assert isinstance(err, builtins.TimeoutError)
        assert "nap" in str(err) and "0.3" in str(err)
        assert [t.result(timeout=30) for t in rest] == [i * i for i in range(10)]
        assert pool.submit(nap, 0.01).result() == 0.01      # under the limit: fine


def test_map_items_each_have_the_limit(method):
    """Pool.map raises a failed item's error (as the stdlib's map does)."""
    with shmproc.Pool(2, start_method=method) as pool:
        with pytest.raises(TimeoutError):
            pool.map(nap, [0.01, 30, 0.01, 0.01], chunksize=2, task_timeout=0.3)
        assert pool.map(square, range(20), task_timeout=5) == [i * i for i in range(20)]
        got = list(pool.imap(nap, [0.01, 0.02], task_timeout=5))
        assert got == [0.01, 0.02]


def test_per_call_override_and_no_limit_after_it(method):
    """pool.options(task_timeout=...) limits one call; the next call, with
    the pool's (no) limit, may run longer."""
    with shmproc.Pool(1, start_method=method) as pool:
        with pytest.raises(shmproc.TimeoutError):
            pool.options(task_timeout=0.2).submit(nap, 30).result(timeout=20)
        assert pool.submit(nap, 0.5).result(timeout=20) == 0.5


def test_a_call_that_swallows_the_interruption_still_fails():
    """A call that catches the interruption and returns late is still past
    its limit: it fails, and its worker is replaced."""
    with shmproc.Pool(1, task_timeout=0.2) as pool:
        first = pool.pids[0]
        with pytest.raises(shmproc.TimeoutError):
            pool.submit(swallow, 30).result(timeout=20)
        assert pool.submit(square, 3).result(timeout=20) == 9
        assert pool.pids[0] != first


def test_a_call_stuck_in_c_is_ended_by_the_guard():
    """C code holding the GIL cannot be interrupted: the worker is ended past
    the limit plus the guard's grace, and the call fails with TimeoutError."""
    with shmproc.Pool(1, task_timeout=0.3) as pool:
        started = time.monotonic()
        with pytest.raises(shmproc.TimeoutError, match="did not unwind"):
            pool.submit(spin_in_c, 0).result(timeout=30)
        assert time.monotonic() - started < 15
        assert pool.submit(square, 4).result(timeout=30) == 16


def test_process_tasks_keep_their_own_timeouts():
    """A Process task runs under its config.timeouts, not task_timeout."""
    with shmproc.Pool(1, task_timeout=0.1) as pool:
        assert pool.submit(SlowLap).result(timeout=30) == "lap"
        with pytest.raises(shmproc.TimeoutError):
            pool.submit(nap, 5).result(timeout=30)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError),
                                        (float("nan"), ValueError), (float("inf"), ValueError),
                                        ("1", TypeError), (True, TypeError)])
def test_bad_task_timeouts_are_refused(bad, error):
    """A task_timeout must be seconds > 0 or None: refused at the call."""
    with pytest.raises(error, match="task_timeout"):
        shmproc.Pool(1, task_timeout=bad)
    with shmproc.Pool(1) as pool:
        with pytest.raises(error, match="task_timeout"):
            pool.options(task_timeout=bad)
        with pytest.raises(error, match="task_timeout"):
            pool.map(square, [1], task_timeout=bad)
        with pytest.raises(error, match="task_timeout"):
            pool.imap(square, [1], task_timeout=bad)
        assert pool.map(square, [3]) == [9]
