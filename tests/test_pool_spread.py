"""Which workers a pool's items go to (backends/local/dispatch.py).

* Items of a millisecond or more, or of a length not yet known, go one per
  worker before any worker gets a second: 8 long items on 8 workers run
  side by side (they ran two by two on 4 of them).
* A fresh pool's first items, before any has finished, go to at most
  PROBE_SLOTS workers for up to PROBE_NS: short items then run on a few
  workers instead of warming one worker per item; items still running when
  the probe ends spread (the pool does not wait for a result to send them).
"""
import os
import time

import pytest

import shmproc
from shmproc.backends.local import dispatch


def nap_pid(s):
    time.sleep(s)
    return os.getpid()


def started_pid(s):
    started = time.monotonic()          # one clock for every process on the machine
    time.sleep(s)
    return started, os.getpid()


def pid_of(x):
    return os.getpid(), x


@pytest.mark.parametrize("workers", [2, 4, 8])
def test_long_items_of_unknown_length_run_one_per_worker(workers):
    with shmproc.Pool(workers, start_method="fork") as pool:
        pids = pool.map(nap_pid, [0.2] * workers)
    assert len(set(pids)) == workers


def test_long_items_of_known_length_run_one_per_worker():
    with shmproc.Pool(6, start_method="fork") as pool:
        pool.map(nap_pid, [0.05] * 6)                      # the pool learns: ~50 ms an item
        pids = pool.map(nap_pid, [0.05] * 6)
        more = [pool.submit(nap_pid, 0.05) for _ in range(6)]
        assert len(set(t.result() for t in more)) == 6
    assert len(set(pids)) == 6


def test_a_fresh_pools_short_items_run_on_few_workers(monkeypatch):
    # A probe that cannot time out: what the first result teaches decides.
    # (A window that holds the rest even if a loaded machine makes the
    # first item look slow.)
    monkeypatch.setattr(dispatch, "PROBE_NS", 60 * 10**9)
    monkeypatch.setattr(dispatch, "WINDOW_NS", 10**9)
    with shmproc.Pool(8, start_method="fork") as pool:
        out = pool.map(pid_of, range(40), chunksize=1)
    assert [x for _, x in out] == list(range(40))
    # PROBE_SLOTS workers took the first items; once one came back (short),
    # the rest went to the least loaded worker, in one record run.
    assert len({pid for pid, _ in out}) <= dispatch.PROBE_SLOTS + 1


def test_items_held_by_the_probe_go_without_waiting_for_a_result():
    # The first two items take 1 s: the probe ends long before either
    # returns, and the other two must go then (within the caller's next
    # look, at most ~20 ms; the pump's wait ends with the probe), not after
    # a result.
    with shmproc.Pool(4, start_method="fork") as pool:
        out = pool.map(started_pid, [1.0] * 4, chunksize=1)
    starts = [t for t, _ in out]
    assert len({pid for _, pid in out}) == 4
    assert max(starts) - min(starts) < 0.7


def test_submitted_tasks_during_the_probe_all_complete():
    with shmproc.Pool(4, start_method="fork") as pool:
        tasks = [pool.submit(nap_pid, 0.01) for _ in range(20)]
        assert all(isinstance(t.result(timeout=30), int) for t in tasks)
        asyncs = [pool.apply_async(nap_pid, (0.01,)) for _ in range(10)]
        assert all(isinstance(a.get(timeout=30), int) for a in asyncs)


def test_a_caller_waiting_on_long_items_does_not_spin():
    # Items left beyond the workers' windows once the probe has ended (their
    # length still unknown): the caller sleeps until a result comes, as
    # before the probe, instead of polling with no wait.
    # (It polled until the first result: ~0.5 s of CPU here.)
    with shmproc.Pool(2, start_method="fork") as pool:
        cpu = time.process_time()
        assert len(pool.map(nap_pid, [0.5] * 6, chunksize=1)) == 6
        cpu = time.process_time() - cpu
    assert cpu < 0.2, f"the caller used {cpu:.2f} s of CPU waiting"


def test_a_small_map_whose_results_are_in_returns_without_a_nap(monkeypatch):
    # A new pool's first map of one item: the probe sends it alone, its
    # result comes back, and only the next feed finds the input at its end.
    # The caller's next look then finds the map complete; it napped 1 ms
    # first (a sixth of a one-worker pool's whole life).
    from shmproc.backends.local import pool as local_pool
    naps = []

    class Clock:
        def __getattr__(self, name):
            return getattr(time, name)

        def sleep(self, seconds):
            naps.append(seconds)
            time.sleep(seconds)

    for _ in range(5):
        with shmproc.Pool(1, start_method="fork") as pool:
            monkeypatch.setattr(local_pool, "time", Clock())
            assert [x for _, x in pool.map(pid_of, range(1))] == [0]
            monkeypatch.undo()
    assert naps == []


def text_of(n):
    return "t" * n


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_of_every_size_come_back_whatever_the_result_ring(workers):
    # Results around and beyond the result ring's in-band limit (a quarter
    # of it: larger ones go out-of-band, where they can: not on the
    # portable layer, where the ring bounds the largest result).
    from shmproc.wire import blobs
    sizes = [10, 200_000, 300_000, 700_000, 1_000_000]
    if blobs.PEER_FD_OK:
        sizes += [1_100_000, 3_000_000, 5_000_000]
    with shmproc.Pool(workers, start_method="fork") as pool:
        assert [len(s) for s in pool.map(text_of, sizes, chunksize=1)] == sizes
        assert len(pool.submit(text_of, sizes[-2]).result(timeout=60)) == sizes[-2]
