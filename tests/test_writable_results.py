"""Writable zero-copy results (issue 12): numpy arrays from Queue.get, pool
results and Process.result are writable, are still not copied, and a write
reaches nobody else: not the producer, not a fork child holding the same
view, not the producer's next item in the same segment.  wire.detach()
copies a result out of shared memory.

The stdlib behaviour mirrored: multiprocessing.Queue.get, Pool.map and
pickle.loads return writable arrays (they are private copies there).
"""
import gc
import multiprocessing as mp
import pickle

import numpy as np
import pytest
from conftest import START_METHODS, shmproc_mappings

import shmproc
from shmproc import _native as native
from shmproc import wire

# What the workers run lives in writable_work.py (a spawn worker imports only that).
from writable_work import (
    BigResult, N, Wrapped, big_array, fork_sees, in_shared_memory, produce,
    writes_its_argument,
)


# ---- Queue.get ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", START_METHODS)
def test_queue_items_are_writable_and_a_write_reaches_no_later_item(method):
    """mp.Queue.get returns a writable array; so does shmproc's, without a copy."""
    ctx = mp.get_context(method)
    q, acks = shmproc.Queue(), shmproc.Queue()
    child = ctx.Process(target=produce, args=(q, acks, N, 4))
    child.start()
    try:
        kept = None
        for i in range(4):
            got = q.get(timeout=30)
            assert got.flags.writeable and in_shared_memory(got)    # zero-copy and writable
            assert np.array_equal(got, np.arange(N))                # not an earlier round's writes
            got[:] = -1                                             # copy-on-write: ours alone
            if kept is not None:
                assert (kept == -1).all()       # a view held over a later item never changes
            # Rounds 0 and 2 drop their view (the producer may reuse its
            # segment), rounds 1 and 3 keep theirs over the next item.
            kept = got if i % 2 else None
            del got
            gc.collect()
            acks.put(True)
        del kept
        assert q.get(timeout=30) is True                            # the producer's source intact
    finally:
        child.join(30)
        q.close()
        acks.close()
    assert child.exitcode == 0


def test_queue_view_shared_with_a_fork_child_is_private_both_ways():
    q = shmproc.Queue()
    q.put(np.arange(N, dtype=np.int64))
    view = q.get(timeout=5)

    def parent_writes():
        view[:] = -5

    assert fork_sees(view, np.arange(N), parent_writes) == 0       # child saw no parent write
    assert (view == -5).all()                                       # nor the parent the child's
    del view
    q.close()


def test_pickle_buffers_are_writable_and_bytes_stay_bytes():
    """pickle.loads with writable out-of-band buffers gives writable objects;
    a read-only source stays read-only, as pickle makes it; bytes are bytes."""
    q = shmproc.Queue()
    q.put(pickle.PickleBuffer(bytearray(b"a" * 500_000)))
    mv = q.get(timeout=5)
    assert isinstance(mv, memoryview) and not mv.readonly
    mv[0] = ord("b")
    q.put(pickle.PickleBuffer(b"c" * 500_000))                      # a read-only source
    assert q.get(timeout=5).readonly
    frozen = np.arange(N)
    frozen.flags.writeable = False
    q.put(frozen)
    assert not q.get(timeout=5).flags.writeable                     # as pickle.loads(dumps(frozen))
    q.put(b"x" * 5_000_000)
    got = q.get(timeout=5)
    assert type(got) is bytes and len(got) == 5_000_000
    del mv
    q.close()


def test_many_items_leak_no_segment():
    q = shmproc.Queue()
    before = shmproc_mappings()
    for i in range(60):
        q.put({"i": i, "a": np.full(40_000, i, dtype=np.int64)})
        got = q.get(timeout=5)
        assert got["i"] == i and got["a"][0] == i
        got["a"][:] = -1
        del got
        gc.collect()
        # Each item's private view and shared mapping go with it.
        assert shmproc_mappings() <= before + 2
    q.close()


# ---- detach ------------------------------------------------------------------------------------


def test_detach_copies_out_what_lies_in_shared_memory_only():
    q = shmproc.Queue()
    q.put({"a": np.arange(N), "b": [np.ones(N)], "v": pickle.PickleBuffer(bytearray(300_000)),
           "w": Wrapped(bytearray(300_000)), "small": np.arange(3), "n": 1})
    got = q.get(timeout=5)
    assert in_shared_memory(got["a"]) and in_shared_memory(got["b"][0])
    out = wire.detach(got)
    assert not in_shared_memory(out["a"]) and not in_shared_memory(out["b"][0])
    assert out["a"].flags.writeable and out["a"].flags.owndata
    assert np.array_equal(out["a"], np.arange(N)) and np.array_equal(out["b"][0], np.ones(N))
    assert not native.is_private_view(native.buffer_address(out["v"]))
    assert native.is_private_view(native.buffer_address(got["w"].data))
    assert not native.is_private_view(native.buffer_address(out["w"].data))
    assert out["small"] is got["small"] and out["n"] == 1      # nothing shared: the same object
    plain = [np.zeros(4), "s", (1, 2.0)]
    assert wire.detach(plain)[0] is plain[0]
    del got
    gc.collect()
    # Detached values hold no segment: the producer's blob is released.
    from shmproc.wire import blobs
    blobs.pool.sweep()
    assert not any(s.blob.load_word(0) == blobs.OPENED for s in blobs.pool.in_flight)
    q.close()


# ---- pool results --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_results_are_writable_views_and_private(method):
    """multiprocessing.Pool.map returns writable arrays; so does shmproc's, zero-copy."""
    with shmproc.Pool(2, start_method=method) as pool:
        out = pool.map(big_array, [N] * 4, chunksize=1)
        assert all(a.flags.writeable and in_shared_memory(a) for a in out)
        out[0][:] = -1
        assert all(np.array_equal(a, np.arange(N)) for a in out[1:])
        del out
        gc.collect()
        for _ in range(20):         # each worker reuses its released segments
            a = pool.apply(big_array, (N,))
            assert a.flags.writeable and np.array_equal(a, np.arange(N))
            a[:] = -1
            del a
            gc.collect()
        source = np.zeros(N, dtype=np.int64)
        assert pool.map(writes_its_argument, [source, source]) == [7 * N, 7 * N]
        assert not source.any()                                 # the parent's array untouched
        results = pool.map_async(big_array, [N, N]).get(30)
        assert all(r.flags.writeable for r in results)


# ---- Process.result ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", START_METHODS)
def test_process_result_is_writable_and_its_arena_reused_safely(method):
    for fill in range(3):
        p = BigResult(fill)
        p.config.start_method = method
        p.start()
        result = p.result
        assert result.flags.writeable and in_shared_memory(result)
        assert (result == fill).all()
        result[:] = -1              # never reaches the arena the next run reuses
        assert (p.result == -1).all()                 # the same object again, not a new read
        del result, p
        gc.collect()


def test_process_result_shared_with_a_fork_child_is_private_both_ways():
    p = BigResult(5)
    p.start()
    result = p.result
    del p

    def parent_writes():
        result[:] = 9

    assert fork_sees(result, np.full(N, 5), parent_writes) == 0
    assert (result == 9).all()
