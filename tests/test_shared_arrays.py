"""shmproc.share / empty_shared: one copy of an array for every process (issue 13).

mpire's shared_objects and joblib's memmapping give workers a large input
without a copy per task; these tests prove shmproc's does the same through
a Process, every task of a Pool.map, and a Queue (writes through a
writable share are seen by the other processes: the memory is the same),
and that its lifetime survives crashes without leaking.
"""
import os
import pickle
import signal
import time

import numpy as np
import pytest

import shmproc
from shmproc.processing import Process


class SumAndMark(Process):
    """Reads a shared input, writes into a shared output."""

    def __init__(self, data, out):
        self.data, self.out = data, out
        self.config.num_loops = 1

    def __loop__(self):
        self.out[0] = self.data.sum()
        self.out[1] = float(self.data.flags.writeable)

    def __result__(self):
        return bool(getattr(self.data, "shared", False))


def fill(args):
    out, i = args
    out[i] = i * i
    return out.shared


def slice_sum(args):
    data, lo, hi = args
    return float(data[lo:hi].sum())


def write_through_slice(view):
    view[:] = 7
    return view.shape


def holds_and_dies(arr, q):
    q.put(float(arr[0]))
    time.sleep(30)


@pytest.fixture(params=["fork", "spawn"])
def method(request):
    return request.param


def test_share_gives_a_read_only_array_that_pickles_as_a_reference():
    src = np.arange(1_000_000, dtype=np.float64)
    a = shmproc.share(src)
    assert isinstance(a, np.ndarray) and a.shared and not a.flags.writeable
    np.testing.assert_array_equal(a, src)
    assert len(pickle.dumps(a, protocol=5)) < 1000          # a reference, not 8 MB
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 1
    with pytest.raises(ValueError):
        a.flags.writeable = True                            # the buffer itself is read-only
    doubled = a * 2                                          # new memory: by value
    assert not doubled.shared and pickle.loads(pickle.dumps(doubled))[3] == 6


def test_a_process_sees_the_same_memory(method):
    data = shmproc.share(np.ones(100_000))
    out = shmproc.empty_shared(2)
    p = SumAndMark(data, out)
    p.config.start_method = method
    assert p.start().result is True
    assert out[0] == 100_000 and out[1] == 0.0              # written by the worker, read-only input


def test_every_pool_task_maps_the_same_memory(method):
    """100 tasks, each given the shared input and output: results land in
    the one output array (no per-task copy could do that)."""
    out = shmproc.empty_shared(100, np.int64)
    data = shmproc.share(np.arange(10_000, dtype=np.float64))
    with shmproc.Pool(2, start_method=method) as pool:
        assert all(pool.map(fill, [(out, i) for i in range(100)], chunksize=1))
        sums = pool.map(slice_sum, [(data, i * 100, i * 100 + 100) for i in range(100)])
    np.testing.assert_array_equal(out, np.arange(100) ** 2)
    assert sums == [float(np.arange(i * 100, i * 100 + 100).sum()) for i in range(100)]


def test_a_slice_travels_as_a_view_of_the_segment(method):
    whole = shmproc.empty_shared((10, 10), np.int32)
    with shmproc.Pool(1, start_method=method) as pool:
        assert pool.submit(write_through_slice, whole[2:4, 5:]).result() == (2, 5)
    assert (whole[2:4, 5:] == 7).all() and whole.sum() == 7 * 10


def test_through_a_queue_between_processes(method):
    import multiprocessing as mp
    q = shmproc.Queue()
    shared = shmproc.empty_shared(3)
    shared[:] = [1, 2, 3]
    ctx = mp.get_context(method)
    child = ctx.Process(target=_double_from_queue, args=(q,))
    child.start()
    q.put(shared)
    child.join(60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(shared, [2, 4, 6])


def _double_from_queue(q):
    arr = q.get(timeout=60)
    arr *= 2


def test_a_holder_that_crashes_frees_nothing_early():
    import multiprocessing as mp
    arr = shmproc.share(np.full(1000, 3.0))
    q = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=holds_and_dies, args=(arr, q))
    child.start()
    assert q.get(timeout=30) == 3.0
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert arr.sum() == 3000.0                 # the parent's hold is intact
    # (the no_leaks fixture checks that no segment outlives the test)


@pytest.mark.parametrize("bad, error", [(np.array([object()]), TypeError),
                                        ("text", TypeError)])
def test_what_cannot_be_shared(bad, error):
    if isinstance(bad, str):
        with pytest.raises(error, match="writable"):
            shmproc.share(np.zeros(2), writable=bad)
        return
    with pytest.raises(error, match="Python objects"):
        shmproc.share(bad)
    with pytest.raises(error, match="Python objects"):
        shmproc.empty_shared(3, object)


def test_a_stale_reference_is_refused_not_misread():
    """A reference whose sender is gone cannot be opened: a clear error."""
    arr = shmproc.share(np.zeros(10))
    func, args = arr.__reduce_ex__(5)
    pid, fd, nonce, nbytes, writable = args[0]
    forged = (pid, fd, nonce ^ 0xFF, nbytes, writable)
    from shmproc.wire import shared
    shared._segments.pop(nonce ^ 0xFF, None)
    with pytest.raises(shmproc.CorruptSharedMemoryError, match="does not match"):
        func(forged, *args[1:])
    gone = (2 ** 22 + 12345, fd, nonce, nbytes, writable)
    with pytest.raises(shmproc.SharedMemoryError, match="no longer holds"):
        func((gone[0], gone[1], gone[2] ^ 0xF0, gone[3], gone[4]), *args[1:])
