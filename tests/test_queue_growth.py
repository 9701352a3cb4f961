"""An unbounded shmproc.Queue never fills: it grows, and gives memory back.

Each test names the multiprocessing.Queue behaviour it mirrors.  Growth is
forced with small rings (capacity=64 KiB: a few hundred items a ring).
"""
import os
import queue
import signal
import time

import pytest

import shmproc
from shmproc.common.errors import CorruptSharedMemoryError

from conftest import shmproc_fds, shmproc_mappings
from shmproc.wire.blobs import PEER_FD_OK

# What the workers run lives in growth_work.py (a spawn worker imports only that).
from growth_work import ITEM, _consume, _consume_forever, _drain, _produce, _produce_forever

# Growing opens the rings other processes made through their descriptors;
# the portable layer has none, and keeps one ring per queue.
pytestmark = pytest.mark.skipif(not PEER_FD_OK, reason="growing needs peer descriptors")

SMALL = 64 * 1024


# ---- helpers run in child processes (module level: importable under spawn) ----


# ---- one process ----------------------------------------------------------------

def test_fill_then_drain_200k_items_in_one_process():
    """multiprocessing.Queue: an unbounded queue's put never blocks, so one
    process may put 200,000 items and then get them all, in order."""
    q = shmproc.Queue()
    n = 200_000
    for i in range(n):
        q.put_nowait((i, ITEM))
    assert q.qsize() == n and not q.full()
    for i in range(n):
        assert q.get_nowait()[0] == i
    with pytest.raises(queue.Empty):
        q.get_nowait()
    assert q.empty()
    q.close()


def test_batches_grow_too():
    """multiprocessing.Queue.put never raises queue.Full when maxsize <= 0:
    put_many on a full ring goes on in a new one, get_many follows."""
    q = shmproc.Queue(capacity=SMALL)
    q.put_many([(i, ITEM) for i in range(20_000)], block=False)
    got = []
    while len(got) < 20_000:
        got += q.get_many(timeout=1)
    assert [g[0] for g in got] == list(range(20_000))
    q.close()


def test_large_items_travel_across_growth():
    """multiprocessing.Queue carries objects of any size in order: out-of-band
    items put while the queue grows arrive between the small ones."""
    np = pytest.importorskip("numpy")
    q = shmproc.Queue(capacity=SMALL)
    for i in range(3000):
        q.put(np.full(40_000, i) if i % 500 == 0 else i)   # 320 KB: out-of-band
    for i in range(3000):
        item = q.get(timeout=5)
        assert (item[0] == i) if i % 500 == 0 else item == i
    q.close()


def test_memory_comes_back_after_draining():
    """multiprocessing.Queue's buffer shrinks as it is read: after a burst,
    the drained rings are unmapped and their descriptors closed, leaving
    what a fresh queue holds."""
    before = len(shmproc_fds()), shmproc_mappings()
    q = shmproc.Queue(capacity=SMALL)
    fresh = len(shmproc_fds()) - before[0], shmproc_mappings() - before[1]
    for i in range(30_000):
        q.put(ITEM)
    assert len(shmproc_fds()) - before[0] > fresh[0] + 10       # it grew
    for _ in range(30_000):
        q.get_nowait()
    assert q.empty()
    assert (len(shmproc_fds()) - before[0], shmproc_mappings() - before[1]) == fresh
    q.close()


def test_bounded_queue_still_fills():
    """multiprocessing.Queue(maxsize): put_nowait raises queue.Full once
    maxsize items are queued; put with a timeout waits, then raises it."""
    q = shmproc.Queue(maxsize=3)
    for i in range(3):
        q.put_nowait(i)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert [q.get() for _ in range(3)] == [0, 1, 2]
    q.close()


@pytest.mark.parametrize("bad, exc", [("3", TypeError), (2.0, TypeError), (None, TypeError)])
def test_maxsize_not_an_int(bad, exc):
    """multiprocessing.Queue(maxsize="3") raises TypeError."""
    with pytest.raises(exc):
        shmproc.Queue(bad)


# ---- across processes -----------------------------------------------------------

def test_producers_and_consumers_across_growth(ctx):
    """multiprocessing.Queue with several producers and consumers: every
    item is delivered exactly once and each producer's items in order,
    while the queue grows far past one ring."""
    q = shmproc.Queue(capacity=SMALL)
    out = ctx.Queue()
    n, producers, consumers = 15_000, 3, 2
    procs = [ctx.Process(target=_produce, args=(q, k, n)) for k in range(producers)]
    procs += [ctx.Process(target=_consume, args=(q, out, n * producers // consumers))
              for _ in range(consumers)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(consumers)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    every = sorted(x for got in results for x in got)
    assert every == sorted((k, i) for k in range(producers) for i in range(n))
    for got in results:
        for k in range(producers):
            mine = [i for who, i in got if who == k]
            assert mine == sorted(mine)
    assert q.empty() and q.qsize() == 0
    q.close()
    out.close()
    out.join_thread()


def test_memory_comes_back_after_a_cross_process_burst(ctx):
    """multiprocessing.Queue: a producer process may exit once what it put
    is in the queue; here the rings it made are handed to the reader, and
    after the reader drains them this process holds what a fresh queue does."""
    before = len(shmproc_fds())
    q = shmproc.Queue(capacity=SMALL)
    fresh = len(shmproc_fds()) - before
    p = ctx.Process(target=_produce, args=(q, 0, 20_000))
    p.start()
    got = [q.get(timeout=60)[1] for _ in range(20_000)]
    p.join(60)
    assert p.exitcode == 0 and got == list(range(20_000))
    assert q.empty()
    assert len(shmproc_fds()) - before == fresh
    q.close()


@pytest.mark.parametrize("fault", [None, "chain.registered:3", "chain.sealed:3"])
def test_killed_producer_mid_growth_leaks_nothing(ctx, fault):
    """multiprocessing.Queue: a producer killed mid-put never wedges the
    queue.  Here it is killed while growing (at random, or between
    registering a ring and sealing the full one, or just after the seal):
    its own items may be lost, the queue goes on, and once drained nothing
    of the dead producer's rings remains."""
    before = len(shmproc_fds())
    q = shmproc.Queue(capacity=SMALL)
    fresh = len(shmproc_fds()) - before
    started = ctx.Event()
    p = ctx.Process(target=_produce_forever, args=(q, started, fault))
    p.start()
    if fault:
        p.join(60)                          # killed itself at the fault point
        assert p.exitcode == -signal.SIGKILL
    else:
        assert started.wait(60)
        os.kill(p.pid, signal.SIGKILL)
        p.join(60)
    got = [i for _, i, _ in _drain(q)]
    assert got == list(range(len(got)))     # in order, no duplicates; the tail may be lost
    q.put("after")                          # the queue goes on
    assert q.get(timeout=5) == "after"
    assert q.empty()
    assert len(shmproc_fds()) - before == fresh
    q.close()


def test_killed_consumer_mid_growth_leaks_nothing(ctx):
    """multiprocessing.Queue: a consumer killed mid-get costs at most the
    item it was taking; the others are still delivered, and after draining
    nothing remains of the rings the consumer held."""
    before = len(shmproc_fds())
    q = shmproc.Queue(capacity=SMALL)
    fresh = len(shmproc_fds()) - before
    for i in range(10_000):
        q.put(i)
    started = ctx.Event()
    p = ctx.Process(target=_consume_forever, args=(q, started))
    p.start()
    assert started.wait(60)
    time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.join(60)
    got = _drain(q)
    assert got == list(range(10_000 - len(got), 10_000))   # the rest, in order
    assert q.empty()
    assert len(shmproc_fds()) - before == fresh
    q.close()


# ---- damage -----------------------------------------------------------------------

def test_a_forged_link_is_corrupt_shared_memory():
    """Not in the stdlib (its pipe has no links): a seal naming a ring the
    directory does not list raises CorruptSharedMemoryError, not a crash."""
    q = shmproc.Queue(capacity=SMALL)
    q.put(1)
    q._ring.seal(0xDEAD, -1)                # a damaged or forged link to the next ring
    assert q.get(timeout=1) == 1
    with pytest.raises(CorruptSharedMemoryError, match="does not list"):
        q.get(timeout=1)
    q.close()


def test_a_damaged_directory_entry_is_corrupt_shared_memory():
    """A directory entry whose check word does not match raises
    CorruptSharedMemoryError, not a crash."""
    from shmproc.channels import chain
    q = shmproc.Queue(capacity=SMALL)
    for i in range(10_000):
        q.put(i)                            # grown: entries for several rings
    assert len(q._chain.held) > 2
    board = q._chain.board
    off = chain._HEADER + chain._ENTRY * 1 + chain._FIELDS + 16
    board.view[off:off + 8] = (12345).to_bytes(8, "little")     # a capacity, CRC unchanged
    with pytest.raises(CorruptSharedMemoryError):
        for _ in range(10_000):
            q.get(timeout=1)
    q.cancel_join_thread()
    q.close()


def test_qsize_and_empty_count_every_ring_when_another_process_grew_the_queue(ctx):
    """queue.Queue / multiprocessing.Queue: qsize() counts what is queued,
    empty() says whether anything is.  This handle put and took on one ring
    (the quick path: it asks only that ring); another process then grew
    the queue past it: both still count every ring, and once drained the
    queue is back to one ring, with the quick path again."""
    q = shmproc.Queue(capacity=SMALL)
    q.put("first")
    assert q.get(timeout=5) == "first"
    assert q.qsize() == 0 and q.empty()
    n = 3 * SMALL // len(ITEM)                  # well past one ring
    p = ctx.Process(target=_produce, args=(q, 1, n))
    p.start()
    deadline = time.monotonic() + 60
    while q.qsize() < n and time.monotonic() < deadline:   # (it holds the new rings)
        time.sleep(0.01)
    assert q.qsize() == n and not q.empty()
    assert [i for _, i, _ in (q.get(timeout=5) for _ in range(n))] == list(range(n))
    p.join(60)                                  # (it waits at exit until its rings are read)
    assert p.exitcode == 0
    assert q.qsize() == 0 and q.empty()
    assert len(q._chain.held) == 1 and q._only_ring() is not None
    q.put("again")
    assert q.qsize() == 1 and not q.empty()
