"""The lone-task path of Pool.submit, and what an idle pool costs (issue 14).

A submit of a function an idle worker already knows goes straight onto
that worker's ring (dispatch.py: _submit_direct) instead of through the
general dispatcher.  These tests drive that path through the public API
and check that it keeps every guarantee of the general one: task
timeouts set and cleared, arguments that cannot travel, a worker dying
under the task, a submitted Process's messages.  Then: an idle pool's
workers sleep until work comes, with no periodic wake-up.
"""
import os
import time

import pytest

import shmproc

# What the workers run lives in direct_work.py (a spawn worker imports only that).
from direct_work import Tells, Unpicklable, die_if, nap, square


@pytest.fixture(params=["fork", "spawn"])
def pool1(request):
    with shmproc.Pool(1, start_method=request.param) as p:
        p.submit(square, 1).result(timeout=30)        # the worker knows square now
        yield p


def test_lone_tasks_get_their_own_results(pool1):
    for i in range(300):
        assert pool1.submit(square, i).result(timeout=30) == i * i
    tasks = [pool1.submit(square, i) for i in range(50)]   # the first direct, the rest queued
    assert [t.result(timeout=30) for t in tasks] == [i * i for i in range(50)]


def test_a_known_function_with_a_new_task_timeout(pool1):
    pool1.submit(nap, 0).result(timeout=30)           # known, with no limit
    with pytest.raises(shmproc.TimeoutError):
        pool1.options(task_timeout=0.2).submit(nap, 30).result(timeout=30)
    pool1.submit(nap, 0).result(timeout=30)           # the replacement worker knows nap
    with pytest.raises(shmproc.TimeoutError):
        pool1.options(task_timeout=0.2).submit(nap, 30).result(timeout=30)
    # ... and the limit is lifted for the next plain call on the same worker
    assert pool1.submit(nap, 0.5).result(timeout=30) == 0.5


def test_arguments_that_cannot_travel_fail_at_submit(pool1):
    with pytest.raises(shmproc.SerializationError, match="args"):
        pool1.submit(square, Unpicklable())
    assert pool1.submit(square, 7).result(timeout=30) == 49


def test_a_worker_dying_under_a_lone_task(pool1, tmp_path):
    pool1.submit(die_if, False).result(timeout=30)
    with pytest.raises(shmproc.ProcessCrashedError):
        pool1.submit(die_if, True).result(timeout=30)
    assert pool1.submit(square, 3).result(timeout=30) == 9
    pool1.submit(die_if, False).result(timeout=30)
    marker = str(tmp_path / "died-once")
    assert pool1.options(retries=1).submit(die_if, True, marker).result(timeout=30) == "alive"


def test_a_process_class_submitted_again_still_tells(pool1):
    for _ in range(2):                                # the second time its id is known
        task = pool1.submit(Tells, 3)
        assert [task.listen(timeout=30) for _ in range(3)] == [0, 1, 2]
        assert task.result(timeout=30) == "told"


def _switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux's /proc")
def test_idle_workers_are_never_woken():
    """After a burst of work, idle workers sleep until the next task: no
    periodic wake-up in the worker or its guard thread (the old loop woke
    five times a second)."""
    with shmproc.Pool(4) as pool:
        pool.map(square, range(100), chunksize=1)
        time.sleep(0.3)                               # let every worker finish lingering
        before = {pid: _switches(pid) for pid in pool.pids}
        time.sleep(1.5)
        after = {pid: _switches(pid) for pid in pool.pids}
        woken = {pid: after[pid] - before[pid] for pid in before}
        assert max(woken.values()) <= 1, woken
        assert pool.map(square, range(10)) == [i * i for i in range(10)]   # and they still wake


def test_a_worker_that_dies_idle_is_replaced_under_a_stream_of_lone_tasks():
    """A lone result puts off the pool's look at its workers (a waitpid
    each, slow after idle), but only for a while: a worker killed while idle
    is found and replaced even when every wait gets its result at once."""
    import signal
    with shmproc.Pool(2, start_method="fork") as pool:
        pool.map(square, range(8), chunksize=1)        # both workers know square
        victim = pool.pids[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        n = 0
        while victim in pool.pids and time.monotonic() < deadline:
            assert pool.submit(square, n).result(timeout=30) == n * n
            n += 1
        assert victim not in pool.pids and len(pool.pids) == 2
        assert pool.map(square, range(6), chunksize=1) == [i * i for i in range(6)]
