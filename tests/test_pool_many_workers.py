"""Pools far larger than the machine (issue 14's bad input): a 256-worker
pool on a 2-core machine starts, runs and shuts down cleanly, and a pool
whose workers are all stuck in long tasks still answers terminate()
promptly.  Under fork (the start method does not change either path)."""
import os
import time

import pytest

import shmproc


def square(x):
    return x * x


def nap(s):
    time.sleep(s)
    return s


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:                 # a zombie is not alive
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc")
def test_256_workers_start_run_and_shut_down_cleanly():
    fds_before = len(os.listdir("/proc/self/fd"))
    with shmproc.Pool(256, start_method="fork") as pool:
        pids = pool.pids
        assert len(set(pids)) == 256
        assert pool.map(square, range(1024), chunksize=1) == [x * x for x in range(1024)]
    assert not [pid for pid in pids if _alive(pid)]
    assert len(os.listdir("/proc/self/fd")) <= fds_before   # every ring and pipe closed


def test_terminate_answers_while_every_worker_is_busy():
    pool = shmproc.Pool(4, start_method="fork")
    tasks = [pool.submit(nap, 60) for _ in range(8)]
    deadline = time.monotonic() + 30
    while not all(t.running() for t in tasks[:4]) and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = pool.pids
    t0 = time.monotonic()
    pool.terminate()
    took = time.monotonic() - t0
    assert took < 2.0, f"terminate() took {took:.2f} s"      # the bound is 1 s; slack for load
    assert not [pid for pid in pids if _alive(pid)]
    assert all(t.cancelled() for t in tasks)
