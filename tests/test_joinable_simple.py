"""shmproc.JoinableQueue and shmproc.SimpleQueue against multiprocessing's.

Each test names the stdlib behaviour it mirrors.
"""
import multiprocessing as mp
import os
import queue
import signal
import threading
import time

import pytest

import shmproc

# What the workers run lives in joinable_work.py (a spawn worker imports only that).
from joinable_work import _echo_simple, _one_too_many, _take_and_die, _work


# ---- helpers run in child processes (module level: importable under spawn) ----


# ---- JoinableQueue -------------------------------------------------------------------

def test_join_waits_until_every_item_is_done_across_processes(ctx):
    """multiprocessing.JoinableQueue: join() blocks until task_done() was
    called for every item put, whichever processes call it."""
    q = shmproc.JoinableQueue()
    n = 400
    for i in range(n):
        q.put(i)
    assert q.join(timeout=0.05) is False    # nothing done yet
    workers = [ctx.Process(target=_work, args=(q, n // 2)) for _ in range(2)]
    for w in workers:
        w.start()
    assert q.join(timeout=60) is True
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    assert q.empty()
    q.close()


def test_join_returns_at_once_when_nothing_is_unfinished():
    """multiprocessing.JoinableQueue: join() on a queue with no unfinished
    items returns at once."""
    q = shmproc.JoinableQueue()
    t = time.monotonic()
    q.join()
    q.put("x")
    q.get()
    q.task_done()
    q.join()
    assert time.monotonic() - t < 1.0
    q.close()


def test_task_done_too_many_times_raises_value_error(ctx):
    """multiprocessing.JoinableQueue.task_done() raises ValueError('task_done()
    called too many times') when called more times than items were put, in
    any process."""
    q = shmproc.JoinableQueue()
    with pytest.raises(ValueError, match="called too many times"):
        q.task_done()
    out = ctx.Queue()
    q.put(1)
    p = ctx.Process(target=_one_too_many, args=(q, out))
    p.start()
    assert "called too many times" in out.get(timeout=60)
    p.join(30)
    assert q.join(timeout=5)
    q.close()
    out.close()
    out.join_thread()


def test_a_put_that_fails_is_not_counted():
    """multiprocessing.JoinableQueue: an item that was never put (queue.Full)
    is not waited for by join()."""
    q = shmproc.JoinableQueue(maxsize=1)
    q.put(1)
    with pytest.raises(queue.Full):
        q.put_nowait(2)
    with pytest.raises(queue.Full):
        q.put(2, timeout=0.01)
    q.get()
    q.task_done()
    assert q.join(timeout=1)
    q.close()


def test_join_can_be_interrupted():
    """multiprocessing.JoinableQueue.join() is interruptible by Ctrl-C (its
    condition wait is); so is shmproc's, which waits in slices."""
    q = shmproc.JoinableQueue()
    q.put(1)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            q.join()
    finally:
        timer.cancel()
        q.get()
        q.task_done()
        q.close()


def test_a_consumer_that_dies_before_task_done_holds_join(ctx):
    """multiprocessing.JoinableQueue: an item whose consumer died before
    task_done() keeps join() waiting (the stdlib's waits for ever); here
    join(timeout) says so, and a task_done() on its behalf releases it."""
    q = shmproc.JoinableQueue()
    q.put("lost")
    p = ctx.Process(target=_take_and_die, args=(q,))
    p.start()
    p.join(60)
    assert q.join(timeout=0.3) is False
    q.task_done()
    assert q.join(timeout=1) is True
    q.close()


def test_joinable_queue_grows_like_queue():
    """multiprocessing.JoinableQueue is an unbounded Queue: 20,000 puts in
    one process never block, and join() follows every one."""
    q = shmproc.JoinableQueue(capacity=64 * 1024)
    for i in range(20_000):
        q.put_nowait(i)
    for i in range(20_000):
        assert q.get_nowait() == i
        q.task_done()
    assert q.join(timeout=1)
    q.close()


@pytest.mark.parametrize("bad, exc", [("3", TypeError), (1.5, TypeError)])
def test_joinable_bad_maxsize(bad, exc):
    """multiprocessing.JoinableQueue(maxsize="3") raises TypeError."""
    with pytest.raises(exc):
        shmproc.JoinableQueue(bad)


def test_join_timeout_is_checked():
    """A negative or non-number timeout is an error, as Queue.get's is in
    the stdlib (ValueError / TypeError)."""
    q = shmproc.JoinableQueue()
    with pytest.raises(ValueError):
        q.join(timeout=-1)
    with pytest.raises(TypeError):
        q.join(timeout="1")
    q.close()


# ---- SimpleQueue ---------------------------------------------------------------------

def test_simple_queue_basics():
    """multiprocessing.SimpleQueue: put, get in order, empty, close (idempotent)."""
    q = shmproc.SimpleQueue()
    assert q.empty()
    for item in (1, "two", b"three", None, {"four": 4}):
        q.put(item)
    assert not q.empty()
    assert [q.get() for _ in range(5)] == [1, "two", b"three", None, {"four": 4}]
    assert q.empty()
    q.close()
    q.close()


def test_simple_queue_across_processes(ctx):
    """multiprocessing.SimpleQueue passed to a child process: items travel
    both ways, in order."""
    q_in, q_out = shmproc.SimpleQueue(), shmproc.SimpleQueue()
    p = ctx.Process(target=_echo_simple, args=(q_in, q_out))
    p.start()
    for i in range(200):
        q_in.put(i)
    q_in.put(None)
    assert [q_out.get() for _ in range(200)] == list(range(200))
    p.join(30)
    assert p.exitcode == 0
    q_in.close()
    q_out.close()


def test_simple_queue_put_never_blocks():
    """multiprocessing.SimpleQueue.put blocks once its pipe is full (one
    process cannot put 50,000 items and then get them); shmproc's grows."""
    q = shmproc.SimpleQueue()
    for i in range(50_000):
        q.put(i)
    assert [q.get() for _ in range(50_000)] == list(range(50_000))
    q.close()


def test_simple_queue_signature():
    """multiprocessing.SimpleQueue takes no positional argument (TypeError)
    and a keyword-only ctx."""
    with pytest.raises(TypeError):
        shmproc.SimpleQueue(10)
    q = shmproc.SimpleQueue(ctx=mp.get_context("spawn"))
    q.close()
    assert "JoinableQueue" in shmproc.__all__ and "SimpleQueue" in shmproc.__all__
