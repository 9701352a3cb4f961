"""Pool.submit returns a Task that is a concurrent.futures.Future (issue 12).

Each test names the concurrent.futures behaviour it mirrors; they run
under fork and spawn.  The pool is driven with no thread per task: by the
caller's result() or, when something else waits (as_completed, wait,
done-callbacks, asyncio), by the pool's one background driver.
"""
import asyncio
import concurrent.futures as cf
import os
import threading
import time

import pytest

import shmproc

# What the workers run lives in future_work.py (a spawn worker imports only that).
from future_work import fail, keywords, nap, square


@pytest.fixture(params=["fork", "spawn"])
def pool(request):
    with shmproc.Pool(2, start_method=request.param) as p:
        yield p


def test_a_task_is_a_future(pool):
    """concurrent.futures.Future: result(), exception(), done(), running()."""
    task = pool.submit(square, 7)
    assert isinstance(task, cf.Future) and isinstance(task, shmproc.Task)
    assert task.result() == 49
    assert task.done() and not task.running() and not task.cancelled()
    assert task.exception() is None


def test_exception_returns_what_the_task_raised(pool):
    """Future.exception() returns the exception; result() raises it."""
    task = pool.submit(fail, 3)
    exc = task.exception(timeout=60)
    assert isinstance(exc, ValueError) and str(exc) == "bad 3"
    with pytest.raises(ValueError, match="bad 3"):
        task.result()


def test_result_timeout_raises_and_the_task_goes_on(pool):
    """Future.result(timeout) raises concurrent.futures.TimeoutError when not
    done in time; the future is still pending and finishes later."""
    task = pool.submit(nap, 0.5)
    started = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        task.result(timeout=0.05)
    assert time.monotonic() - started < 0.4
    with pytest.raises(cf.TimeoutError):
        task.exception(timeout=0.01)
    assert task.result(timeout=60) == 0.5


def test_as_completed_with_nobody_calling_result(pool):
    """concurrent.futures.as_completed yields each future once it is done;
    it never calls into the future, so the pool must be driven for it."""
    tasks = [pool.submit(square, i) for i in range(200)]
    done = [t.result() for t in cf.as_completed(tasks, timeout=60)]
    assert sorted(done) == sorted(i * i for i in range(200))


def test_wait_first_completed_and_all_completed(pool):
    """concurrent.futures.wait(return_when=FIRST_COMPLETED / ALL_COMPLETED)."""
    slow = pool.submit(nap, 1.0)
    fast = pool.submit(square, 3)
    done, not_done = cf.wait([slow, fast], timeout=30, return_when=cf.FIRST_COMPLETED)
    assert fast in done and slow in not_done
    done, not_done = cf.wait([slow, fast], timeout=30)
    assert not not_done and slow.result() == 1.0


def test_wait_timeout_is_a_bound(pool):
    """concurrent.futures.wait(timeout) returns after `timeout` with what is not done."""
    slow = pool.submit(nap, 1.0)
    started = time.monotonic()
    done, not_done = cf.wait([slow], timeout=0.1)
    assert not done and slow in not_done
    assert time.monotonic() - started < 0.8
    assert slow.result() == 1.0


def test_done_callback_runs_when_nobody_waits(pool):
    """Future.add_done_callback: fn(future) runs once it is done, in this
    process, with no call to result(); at once if it already is."""
    seen = threading.Event()
    got = []

    def callback(future):
        got.append(future.result())
        seen.set()
    task = pool.submit(square, 9)
    task.add_done_callback(callback)
    assert seen.wait(30), "the done-callback never ran"
    assert got == [81]
    late = []
    task.add_done_callback(lambda f: late.append(f.result()))
    assert late == [81]                 # already done: called at once


def test_a_callback_may_submit_and_wait(pool):
    """Callbacks run outside the pool's lock: one may use the pool itself."""
    out = []
    seen = threading.Event()

    def chain(future):
        out.append(pool.submit(square, future.result()).result(timeout=30))
        seen.set()
    pool.submit(square, 3).add_done_callback(chain)
    assert seen.wait(30)
    assert out == [81]


def test_cancel_a_task_no_worker_has(pool):
    """Future.cancel(): True for a pending future, which then raises
    CancelledError and counts as done for wait/as_completed; False once running."""
    blockers = [pool.submit(nap, 0.3) for _ in range(8)]
    last = pool.submit(square, 5)
    assert last.cancel() is True
    assert last.cancelled() and last.done()
    with pytest.raises(cf.CancelledError):
        last.result()
    done, _ = cf.wait([last], timeout=1)
    assert last in done
    assert blockers[0].result() == 0.3
    assert blockers[0].cancel() is False


def test_running_while_a_worker_has_it(pool):
    """Future.running(): True once a worker took the task."""
    task = pool.submit(nap, 0.5)
    deadline = time.monotonic() + 10
    while not task.running() and time.monotonic() < deadline:
        task.done()                     # drives the pool
        time.sleep(0.01)
    assert task.running()
    assert task.result() == 0.5


def test_every_keyword_goes_to_the_function(pool):
    """Executor.submit(fn, /, *args, **kwargs): submit keeps no keyword of its own."""
    assert pool.submit(keywords, copy=1, retries=2, timeout=3).result() == (1, 2, 3)
    assert pool.submit(dict, fn=1).result() == {"fn": 1}


def test_options_carry_the_per_call_settings(pool):
    """Per-call options moved off submit's keywords: pool.options(...).submit."""
    np = pytest.importorskip("numpy")
    arr = pool.options(copy=True).submit(np.ones, 100_000).result()
    assert arr.flags.writeable and arr.sum() == 100_000
    with pytest.raises(TypeError, match="copy"):
        pool.options(copy="yes")
    with pytest.raises(ValueError, match="retries"):
        pool.options(retries=-1)


def test_asyncio_wrap_future(pool):
    """asyncio.wrap_future(concurrent.futures.Future) awaits in a loop."""
    async def main():
        tasks = [asyncio.wrap_future(pool.submit(square, i)) for i in range(50)]
        return await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert asyncio.run(main()) == [i * i for i in range(50)]


def test_terminate_cancels_and_tells_the_callbacks():
    """A pool terminated under its tasks: their futures are cancelled and
    their done-callbacks run (as an executor's on shutdown(cancel_futures))."""
    pool = shmproc.Pool(1)
    called = []
    tasks = [pool.submit(nap, 5) for _ in range(3)]
    for t in tasks:
        t.add_done_callback(called.append)
    time.sleep(0.2)
    pool.terminate()
    assert all(t.cancelled() for t in tasks)
    assert sorted(map(id, called)) == sorted(map(id, tasks))
    with pytest.raises(cf.CancelledError):
        tasks[0].result()


# ---- a Task's waiters and callbacks are made only when something needs them ------------------

def test_a_task_read_through_the_pool_makes_no_waiters_or_callbacks_list():
    """The fast path (submit, then result() or exception()) needs no waiters
    list and no callbacks list, and Tasks share one Condition: a Task then
    holds far fewer objects for the garbage collector to sweep."""
    with shmproc.Pool(2) as pool:
        ok, bad = pool.submit(square, 3), pool.submit(fail, 1)
        assert ok.result(timeout=60) == 9
        assert isinstance(bad.exception(timeout=60), ValueError)
        for task in (ok, bad):
            assert task._w is None and task._cbs is None
        assert ok._condition is bad._condition
        with pytest.raises(ValueError):
            bad.result()
        assert ok.done() and not ok.cancel()
        late = []
        ok.add_done_callback(late.append)         # done already: called at once
        assert late == [ok] and ok._done_callbacks == []


def test_waiters_on_pending_tasks_are_woken():
    """concurrent.futures.wait on a pending Task (which registers a waiter
    under the Future's Condition, as the stdlib's wait does) returns when
    the pool settles it, while another thread reads a second Task."""
    with shmproc.Pool(2) as pool:
        done_early = pool.submit(square, 2)
        assert done_early.result(timeout=60) == 4
        fresh, other = pool.submit(nap, 0.3), pool.submit(nap, 0.3)
        got = []
        waiter = threading.Thread(target=lambda: got.append(cf.wait([fresh], timeout=60)))
        waiter.start()
        assert other.result(timeout=60) == 0.3
        waiter.join(60)
        assert got and got[0].done == {fresh} and fresh.result() == 0.3


def test_a_waiters_list_assigned_to_a_task_still_drives_the_pool():
    """Future._waiters is a settable list in the stdlib's typing (the
    as_completed protocol): a list assigned to a Task is taken in, and a
    waiter appended to it still makes the pool settle the Task."""
    with shmproc.Pool(1) as pool:
        task = pool.submit(nap, 0.2)
        task._waiters = []
        assert cf.wait([task], timeout=60).done == {task}
        assert task.result() == 0.2


def test_a_fork_while_another_thread_holds_the_tasks_lock_waits_and_the_child_can_use_a_pool():
    """os.fork from one thread while another holds the lock every Task
    shares: the fork waits until it is let go (as the stdlib's at-fork
    handlers do for its own locks), so the child never inherits it held
    and a pool in the child settles its Tasks."""
    with shmproc.Pool(1) as pool:
        task = pool.submit(square, 5)
        assert task.result(timeout=60) == 25
        held = threading.Event()

        def hold():
            with type(task)._condition:
                held.set()
                time.sleep(0.3)
        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(60)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    with shmproc.Pool(1) as inner:
                        code = 0 if inner.submit(square, 6).result(timeout=30) == 36 else 2
                finally:
                    os._exit(code)
        finally:
            holder.join(60)
        deadline = time.monotonic() + 60
        while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        status = ended[1]
        if ended[0] == 0:                         # still running: stuck on a held lock
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on a lock another thread held at the fork")
        assert os.waitstatus_to_exitcode(status) == 0


def test_settling_races_with_waiters_arriving_lose_no_wake_up():
    """Threads start waiting (wait, as_completed, Future.result) on Tasks
    just as the pool settles them: every waiter returns, none hangs."""
    with shmproc.Pool(2) as pool:
        for _ in range(20):
            tasks = [pool.submit(square, i) for i in range(50)]
            seen = []

            def use(kind):
                if kind == 0:
                    done, _ = cf.wait(tasks, timeout=60)
                    seen.append(len(done))
                elif kind == 1:
                    seen.append(sum(1 for _ in cf.as_completed(tasks, timeout=60)))
                else:
                    seen.append(sum(1 for t in tasks if t.result(60) is not None))

            threads = [threading.Thread(target=use, args=(k,)) for k in (0, 1, 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(90)
            assert not any(t.is_alive() for t in threads)
            assert seen and all(n == 50 for n in seen), seen


def _driver_running():
    return any(t.name == "shmproc-pool-driver" for t in threading.enumerate())


@pytest.mark.parametrize("watch", ["wait", "callback"])
def test_a_watched_task_that_is_cancelled_stops_the_background_driver(pool, watch):
    """concurrent.futures.wait(timeout=0) or a done-callback makes the pool
    drive itself in the background for that Task; once it is cancelled,
    and the rest is done, the driver ends: it polled (~3% of a core) for
    as long as the pool lived.  The callback runs once."""
    busy = [pool.submit(nap, 0.2) for _ in range(6)]     # every worker's window full
    task = pool.submit(square, 3)
    called = []
    if watch == "wait":
        cf.wait([task], timeout=0)
    else:
        task.add_done_callback(called.append)
    assert task.cancel()
    assert [t.result(timeout=30) for t in busy] == [0.2] * 6
    deadline = time.monotonic() + 5
    while _driver_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _driver_running()
    cpu = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - cpu < 0.02
    assert called == ([task] if watch == "callback" else [])


def test_the_driver_lets_go_of_a_watched_task_that_ended_unseen(pool):
    """A Task can end up watched just as it is cancelled (a waiter
    registers from another thread between the two): with nothing in
    flight, the driver drops such Tasks and ends."""
    task = pool.submit(square, 3)
    assert task.result(timeout=30) == 9
    engine = pool._engine
    with engine._lock:
        engine._watched.add(task)            # what that race leaves behind
    engine._async_started()
    deadline = time.monotonic() + 5
    while (engine._watched or _driver_running()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine._watched and not _driver_running()
