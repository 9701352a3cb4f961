"""shmproc.Queue: the multiprocessing.Queue surface, large items, bad input."""
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import time

import numpy as np
import pytest

import shmproc
from shmproc.wire import pickling as wire
from shmproc.channels.queue import DEFAULT_CAPACITY

# What the workers run lives in queue_work.py (a spawn worker imports only that).
from queue_work import (
    _blocked_get, _echo, _put_array_and_exit, _put_forever, _put_range, _try_use_closed,
)


# ---- helpers run in child processes (module level: importable under spawn) ----


# ---- the basic contract ---------------------------------------------------------

def test_fifo_and_types_roundtrip():
    q = shmproc.Queue()
    items = [None, 0, -7, 2**100, 3.5, "text", "ünïcødé \ud800", b"", b"raw\x00bytes",
             bytearray(b"ba"), (1, 2), [1, [2]], {"k": {1, 2}}, frozenset({3}),
             np.float32(1.5), np.arange(5), ValueError("boom"), lambda x: x * 2]
    for it in items:
        q.put(it)
    assert q.qsize() == len(items)
    got = [q.get() for _ in items]
    for a, b in zip(items[:-3], got[:-3]):
        assert a == b and type(a) is type(b)
    assert (got[-3] == items[-3]).all()
    assert isinstance(got[-2], ValueError) and got[-2].args == ("boom",)
    assert got[-1](21) == 42
    assert q.empty() and q.qsize() == 0
    q.close()


def test_stdlib_exceptions_and_timeouts():
    q = shmproc.Queue(maxsize=2)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    t = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - t >= 0.045
    q.put(1)
    q.put_nowait(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    t = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert time.monotonic() - t >= 0.045
    assert q.get() == 1 and q.get() == 2
    q.close()


def test_capacity_in_bytes_bounds_small_items_of_a_bounded_queue():
    q = shmproc.Queue(maxsize=10_000, capacity=4096)
    assert q.capacity == 4096
    n = 0
    with pytest.raises(queue.Full):
        while True:
            q.put_nowait(b"z" * 100)
            n += 1
    assert 20 < n < 40                               # ~112 bytes a record in a 4 KiB ring
    assert shmproc.Queue(capacity=5000).capacity == 8192   # rounded up to a power of two
    assert shmproc.Queue().capacity == DEFAULT_CAPACITY
    q.close()


def test_put_many_get_many():
    q = shmproc.Queue()
    q.put_many(range(1000))
    q.put_many([b"a", "b", 3, np.zeros(3)])
    got = []
    while len(got) < 1004:
        got.extend(q.get_many(max_items=300))
    assert got[:1000] == list(range(1000))
    assert got[1000:1003] == [b"a", "b", 3]
    assert (got[1003] == 0).all()
    with pytest.raises(queue.Empty):
        q.get_many(timeout=0.01)
    q.put_many(iter(range(5)))                       # any iterable
    assert q.get_many(max_items=2) == [0, 1]
    assert q.get_many() == [2, 3, 4]
    q.close()


def test_put_many_reports_partial_progress_when_full():
    q = shmproc.Queue(maxsize=3)
    with pytest.raises(queue.Full) as info:
        q.put_many(range(5), block=False)
    assert info.value.args[1] == 3
    assert q.get_many() == [0, 1, 2]
    q.close()


def test_large_items_go_out_of_band_and_arrive_intact():
    q = shmproc.Queue(capacity=64 * 1024)
    big_bytes = os.urandom(200_000)                 # larger than a quarter of the ring
    arr = np.random.default_rng(0).random((512, 300))
    q.put(big_bytes)
    q.put({"a": arr, "meta": "m"})
    assert q.get() == big_bytes
    got = q.get()
    assert got["meta"] == "m" and np.array_equal(got["a"], arr)
    assert got["a"].flags.writeable                 # a zero-copy, copy-on-write view
    q.put(arr)
    copy = q.get(copy=True)
    assert copy.flags.writeable and np.array_equal(copy, arr)
    copy[0, 0] = -1                                 # really private
    q.close()


def test_zero_copy_view_outlives_the_queue():
    q = shmproc.Queue()
    q.put(np.full(100_000, 7, dtype=np.int64))
    arr = q.get()
    q.close()
    del q
    import gc
    gc.collect()
    assert arr.sum() == 700_000                     # mapping alive while the view is


def test_threads_share_a_queue():
    q = shmproc.Queue(capacity=8192)
    out = []

    def consume():
        while True:
            item = q.get()
            if item is None:
                return
            out.append(item)

    threads = [threading.Thread(target=consume) for _ in range(3)]
    for t in threads:
        t.start()
    producers = [threading.Thread(target=_put_range, args=(q, 2000, k * 2000)) for k in range(3)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    for _ in threads:
        q.put(None)
    for t in threads:
        t.join()
    assert sorted(out) == list(range(6000))
    q.close()


# ---- across processes, every start method ----------------------------------------

def test_queue_between_processes(ctx):
    q_in, q_out = shmproc.Queue(), shmproc.Queue()
    p = ctx.Process(target=_echo, args=(q_in, q_out))
    p.start()
    payloads = [1, "two", b"three", np.arange(100_000), {"five": [5]}]
    for x in payloads:
        q_in.put(x)
    got = [q_out.get(timeout=60) for _ in payloads]
    q_in.put(None)
    p.join(30)
    assert p.exitcode == 0
    assert got[:3] == payloads[:3] and got[4] == payloads[4]
    assert np.array_equal(got[3], payloads[3])
    q_in.close()
    q_out.close()


def test_queue_sent_through_a_queue(ctx):
    carrier = shmproc.Queue()
    inner_in, inner_out = shmproc.Queue(), shmproc.Queue()
    p = ctx.Process(target=_echo, args=(carrier, inner_out))
    p.start()
    carrier.put("hi")                    # the echo child relays items of the carrier
    assert inner_out.get(timeout=60) == "hi"
    carrier.put(None)
    p.join(30)
    # pickling a queue outside of process start goes through the resource sharer
    clone = pickle.loads(pickle.dumps(inner_in))
    clone.put(5)
    assert inner_in.get(timeout=5) == 5
    for q in (carrier, inner_in, inner_out, clone):
        q.close()


def test_producer_exit_waits_for_large_items_to_be_picked_up(ctx):
    q = shmproc.Queue()
    p = ctx.Process(target=_put_array_and_exit, args=(q, 300_000))
    p.start()
    time.sleep(0.3)
    assert p.is_alive()                  # holding its large item until someone takes it
    arr = q.get(timeout=60)
    p.join(30)
    assert p.exitcode == 0
    assert arr[-1] == 299_999
    q.close()


def test_large_item_of_a_killed_producer_is_skipped_and_counted():
    ctx = mp.get_context("fork")
    q = shmproc.Queue()
    p = ctx.Process(target=_put_array_and_exit, args=(q, 300_000))
    p.start()
    deadline = time.monotonic() + 30
    while q.qsize() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    q.put("after")
    assert q.get(timeout=5) == "after"   # the lost item was skipped, not an error
    assert q.lost_items == 1
    q.close()


def test_producer_killed_mid_stream_leaves_queue_usable(ctx):
    q = shmproc.Queue(capacity=1 << 16)
    started = ctx.Event()
    p = ctx.Process(target=_put_forever, args=(q, started))
    p.start()
    assert started.wait(60)
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 2000 and time.monotonic() < deadline:
        kind, i, pad = q.get(timeout=30)
        assert (kind, i, pad) == ("item", seen, b"x" * (seen % 5000))
        seen += 1
    os.kill(p.pid, signal.SIGKILL)       # very likely mid-put, holding the producer lock
    p.join(30)
    rest = []
    while True:
        try:
            rest.append(q.get(timeout=0.2))
        except queue.Empty:
            break
    for k, item in enumerate(rest):      # a clean prefix of what it put
        assert item == ("item", seen + k, b"x" * ((seen + k) % 5000))
    for i in range(100):                 # and the queue still works both ways
        q.put(i, timeout=5)
    assert [q.get(timeout=5) for _ in range(100)] == list(range(100))
    q.close()


def test_idle_blocked_get_uses_no_cpu():
    ctx = mp.get_context("fork")
    q = shmproc.Queue()
    p = ctx.Process(target=_blocked_get, args=(q,))
    p.start()
    time.sleep(0.2)

    def cpu_ticks(pid):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])     # utime + stime

    before = cpu_ticks(p.pid)
    time.sleep(1.0)
    used = cpu_ticks(p.pid) - before
    q.put("wake")
    p.join(30)
    assert p.exitcode == 0                            # it did wake up
    assert used <= 2, f"an idle get() used {used} ticks in 1 s"   # 2 ticks = 2% at 100 Hz
    q.close()


# ---- bad input ----------------------------------------------------------------------

def test_constructor_validates():
    with pytest.raises(TypeError, match="maxsize must be an int"):
        shmproc.Queue("3")
    with pytest.raises(ValueError, match="maxsize must be >= 0"):
        shmproc.Queue(-1)
    with pytest.raises(TypeError, match="capacity must be an int"):
        shmproc.Queue(capacity=4096.0)
    with pytest.raises(ValueError, match="capacity must be at least 4096"):
        shmproc.Queue(capacity=100)
    with pytest.raises(ValueError, match="capacity must be at least"):
        shmproc.Queue(capacity=-5)
    with pytest.raises(ValueError, match="capacity must be at most"):
        shmproc.Queue(capacity=1 << 40)


def test_timeouts_and_sizes_validated():
    q = shmproc.Queue()
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        q.get(timeout=-0.5)
    with pytest.raises(TypeError, match="timeout must be a number"):
        q.get(timeout="soon")
    with pytest.raises(ValueError, match="max_items must be >= 1"):
        q.get_many(max_items=0)
    with pytest.raises(TypeError, match="max_items must be an int"):
        q.get_many(max_items=2.5)
    assert q.qsize() == 0                            # nothing was put by the failed calls
    q.close()


def test_unpicklable_item_names_the_type():
    q = shmproc.Queue()
    lock = threading.Lock()
    with pytest.raises(wire.SerializationError, match="_thread.lock"):
        q.put(lock)
    with pytest.raises(TypeError):                   # SerializationError is a TypeError
        q.put({"ok": 1, "bad": lock})
    assert q.empty()
    q.close()


def test_use_after_close():
    q = shmproc.Queue()
    q.put(1)
    q.close()
    q.close()                                        # idempotent
    for call in (lambda: q.put(2), lambda: q.get(), lambda: q.get_nowait(),
                 lambda: q.put_many([1]), lambda: q.get_many(), q.qsize, q.empty, q.full):
        with pytest.raises(ValueError, match="closed"):
            call()
    with pytest.raises(ValueError, match="closed in this process"):
        pickle.dumps(q)
    q.join_thread()                                  # valid after close: nothing pending
    assert "closed" in repr(q)


def test_join_thread_requires_close():
    q = shmproc.Queue()
    with pytest.raises(ValueError, match="only valid after close"):
        q.join_thread()
    q.cancel_join_thread()
    q.close()


def test_queue_passed_to_a_process_after_close():
    ctx = mp.get_context("spawn")
    q = shmproc.Queue()
    q.close()
    p = ctx.Process(target=_try_use_closed, args=(q, shmproc.Queue()))
    with pytest.raises(ValueError, match="closed in this process"):
        p.start()


def test_closed_handle_inherited_by_fork_refuses_use():
    ctx = mp.get_context("fork")
    q, out = shmproc.Queue(), shmproc.Queue()
    q.close()
    p = ctx.Process(target=_try_use_closed, args=(q, out))
    p.start()
    assert "closed" in out.get(timeout=30)
    p.join(30)
    out.close()


def test_released_large_items_reuse_their_segment_and_held_ones_are_never_reused():
    import gc

    from shmproc.wire import blobs
    q = shmproc.Queue()
    q.put(np.ones(100_000))
    held = q.get()                                   # a view the consumer keeps
    q.put(np.full(100_000, 2.0))                     # must not land in held's segment
    second = q.get()
    assert (held == 1).all() and (second == 2).all()
    del second
    gc.collect()                                     # its view died: segment released
    blobs.pool.sweep()
    assert len(blobs.pool.free) == 1
    q.put(np.full(100_000, 3.0))                     # reuses the released segment
    assert len(blobs.pool.free) == 0
    assert (q.get() == 3).all() and (held == 1).all()
    q.close()
