"""Integrity of what crosses shared memory: nothing lost, nothing stale,
nothing changed under a reader, nothing leaked to other programs.

Each test here reproduces one defect found by review (issue 10) through the
public API where it can, or by writing into a ring through the native
layer where the defect needs a record no honest producer writes.
"""
import gc
import multiprocessing as mp
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import START_METHODS

import shmproc
from shmproc.wire import blobs
from shmproc import _native as native
from shmproc.common.errors import CorruptSharedMemoryError

# What the workers run lives in integrity_work.py (a spawn worker imports only that).
from integrity_work import (
    _BigResult, _Grumpy, _InterruptsOnce, _ListFds, _blob_state, _count_items, _fork_and_check,
    _in_flight, _interrupts, _list_fds_of_a_program, _queue_user, _with_fields, put_raw,
    second_handle, take_raw,
)

TAG_PICKLE, TAG_BLOB = 0, 3
BIG = 200 * 1024            # larger than a consumer's first scratch buffer (64 KiB), in-band


# ---- 1. a size probe never consumes ----------------------------------------------

def test_empty_item_behind_a_large_one_is_not_lost_to_a_racing_consumer():
    """Consumer A sees a record too large for its buffer; consumer B takes
    that record; A must then get the empty item behind it (the old size
    probe consumed and dropped it)."""
    q = shmproc.Queue()
    q2 = second_handle(q)
    big = b"x" * BIG
    q.put(big)
    q.put(b"")
    real_get = q._get
    raced = []

    def racing_get(ptr, size, tmo):
        rc = real_get(ptr, size, tmo)
        if rc == native.ESMALLBUF and not raced:
            raced.append(True)
            assert q2.get(timeout=5) == big         # B takes the large record first
        return rc

    q._get = racing_get
    try:
        assert q.get(timeout=5) == b""
        assert raced
    finally:
        q.close()
        q2.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_two_consumers_receive_every_item_of_large_and_empty_pairs(method):
    ctx = mp.get_context(method)
    q, out = shmproc.Queue(), shmproc.Queue()
    pairs = 600
    procs = [ctx.Process(target=_count_items, args=(q, out)) for _ in range(2)]
    for p in procs:
        p.start()
    big = b"y" * BIG
    for _ in range(pairs):
        q.put(big)
        q.put(b"" if _ % 2 else "")
    for _ in procs:
        q.put(b"STOP")
    total = out.get(timeout=60) + out.get(timeout=60)
    for p in procs:
        p.join(10)
    q.close()
    out.close()
    assert total == 2 * pairs


# ---- 2. decode exactly the record -------------------------------------------------

def test_zero_length_pickle_record_is_corrupt_not_the_previous_item():
    q = shmproc.Queue()
    try:
        q.put((1, 2, 3))
        assert q.get(timeout=5) == (1, 2, 3)        # leaves its pickle in the scratch buffer
        put_raw(q, b"", TAG_PICKLE)
        with pytest.raises(CorruptSharedMemoryError, match="not a valid pickle"):
            q.get(timeout=5)
    finally:
        q.close()


def test_truncated_pickle_record_is_corrupt_not_the_previous_item():
    q = shmproc.Queue()
    item = list(range(200))
    data = pickle.dumps(item, 5)
    try:
        q.put(item)
        assert q.get(timeout=5) == item
        put_raw(q, data[:len(data) // 2], TAG_PICKLE)
        with pytest.raises(CorruptSharedMemoryError):
            q.get(timeout=5)
        q.put("after")
        assert q.get(timeout=5) == "after"           # the queue goes on
    finally:
        q.close()


def test_get_many_keeps_the_items_around_a_corrupt_record():
    """A batch leaves the ring whole: the items before a bad record come
    back now, the error next, the items after it then, in order."""
    q = shmproc.Queue()
    try:
        q.put((1,))
        put_raw(q, pickle.dumps((2,), 5)[:3], TAG_PICKLE)
        q.put((3,))
        q.put((4,))
        assert q.get_many(timeout=5) == [(1,)]
        with pytest.raises(CorruptSharedMemoryError):
            q.get(timeout=5)
        assert q.get_many(timeout=5) == [(3,), (4,)]
    finally:
        q.close()


def test_an_items_own_error_while_rebuilt_is_raised_as_is():
    q = shmproc.Queue()
    try:
        q.put(_Grumpy())
        with pytest.raises(ValueError, match="refuse"):
            q.get(timeout=5)
    finally:
        q.close()


# ---- 3. an out-of-band item is claimed only after its identity is checked ------------


@pytest.mark.parametrize("change", [
    {"nonce": 12345},                                # another item (a reused pid, a stale record)
    {"size": 1 << 40},                               # a size the segment does not have
])
def test_forged_descriptor_never_writes_to_the_item_it_names(change):
    q = shmproc.Queue()
    try:
        arr = np.arange(300_000, dtype=np.int64)
        q.put(arr)
        desc, tag = take_raw(q)
        assert tag == TAG_BLOB
        put_raw(q, _with_fields(desc, **change), TAG_BLOB)
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)                      # not this item: skipped as lost
        assert q.lost_items == 1
        assert _blob_state(desc) == blobs.PUBLISHED  # nothing was written to it
        put_raw(q, desc, TAG_BLOB)
        got = q.get(timeout=5)
        assert np.array_equal(got, arr)
        q.put(np.full(300_000, -1, dtype=np.int64))   # a reused blob would overwrite `got`
        other = q.get(timeout=5)
        assert np.array_equal(got, arr) and other[0] == -1
    finally:
        q.close()


def test_duplicate_descriptor_is_refused_not_read_twice():
    q = shmproc.Queue()
    try:
        q.put(np.ones(100_000))
        desc, _ = take_raw(q)
        put_raw(q, desc, TAG_BLOB)
        put_raw(q, desc, TAG_BLOB)
        first = q.get(timeout=5)
        with pytest.raises(CorruptSharedMemoryError, match="already claimed"):
            q.get(timeout=5)
        assert first.sum() == 100_000
    finally:
        q.close()


@pytest.mark.parametrize("desc", [
    b"",
    b"\0" * 10,
    blobs.DESC.pack(os.getpid(), 0, 64, 1 << 20, 0, 0, 1),         # main part beyond the size
    blobs.DESC.pack(os.getpid(), 0, 1 << 20, 0, 0, 1, 1) + blobs.DESC_BUF.pack(64, 1 << 21),
    blobs.DESC.pack(os.getpid(), 0, 1 << 20, 0, 0, 1 << 30, 1),    # absurd buffer count
    blobs.DESC.pack(-5, 3, 1 << 20, 0, 0, 0, 1),
])
def test_malformed_descriptors_are_corrupt(desc):
    q = shmproc.Queue()
    try:
        put_raw(q, desc, TAG_BLOB)
        with pytest.raises(CorruptSharedMemoryError):
            q.get(timeout=5)
    finally:
        q.close()


# ---- 4. a fork child's view never changes under it -----------------------------------


def test_queue_view_inherited_by_a_fork_child_never_changes():
    q = shmproc.Queue()
    n = 400_000
    q.put(np.arange(n, dtype=np.int64))
    view = q.get(timeout=5)
    box = [view]
    del view

    def parent_drops_and_reuses():
        box.clear()
        gc.collect()
        for _ in range(2):                          # same size: would reuse a released blob
            q.put(np.full(n, -7, dtype=np.int64))
            assert q.get(timeout=5)[0] == -7

    try:
        assert _fork_and_check(box, np.arange(n, dtype=np.int64),
                               parent_drops_and_reuses) == 0
    finally:
        q.close()


def test_process_result_view_inherited_by_a_fork_child_never_changes():
    p = _BigResult(5)
    p.start()
    result = p.result
    box = [result]
    del result, p

    def parent_drops_and_reuses():
        box.clear()
        gc.collect()
        again = _BigResult(9)                       # would reuse the first run's arena
        again.start()
        assert again.result[0] == 9

    assert _fork_and_check(box, np.full(500_000, 5, dtype=np.int64),
                           parent_drops_and_reuses) == 0


def test_fork_child_that_drops_its_view_gives_the_lease_back():
    """The child's count is given back when its copy dies, so the producer
    can reuse the blob once both processes dropped their views."""
    q = shmproc.Queue()
    q.put(np.zeros(300_000))
    view = q.get(timeout=5)
    fd = next(s.blob.fd for s in blobs.pool.in_flight)
    pid = os.fork()
    if pid == 0:
        view = None                     # noqa: F841 - drop the child's copy
        gc.collect()
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    del view
    gc.collect()
    state = next(s.blob.load_word(0) for s in blobs.pool.in_flight if s.blob.fd == fd)
    assert state == blobs.RELEASED
    q.close()


# ---- 5. a failed put retracts its item and never stalls exit ------------------------------


@pytest.mark.parametrize("how", ["nowait", "timeout", "closed"])
def test_failed_large_put_is_retracted(how):
    q = shmproc.Queue(maxsize=1)
    try:
        q.put(1)
        before = _in_flight()
        for _ in range(20):
            if how == "closed":
                q._ring.mark_closed()
                with pytest.raises(RuntimeError):
                    q.put(np.ones(100_000))
            else:
                with pytest.raises(queue.Full):
                    if how == "nowait":
                        q.put(np.ones(100_000), block=False)
                    else:
                        q.put(np.ones(100_000), timeout=0.01)
        assert _in_flight() == before
        assert len(blobs.pool.free) >= 1              # the blob waits for reuse, not a reader
    finally:
        q.close()


def test_large_put_interrupted_by_ctrl_c_is_retracted():
    q = shmproc.Queue(maxsize=1)
    q.put(1)
    before = _in_flight()
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            q.put(np.ones(100_000), timeout=20)
    finally:
        timer.cancel()
        q.close()
    assert _in_flight() == before


def _run_script(code, timeout):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], timeout=timeout,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - start


def test_exit_is_not_stalled_by_failed_puts():
    took = _run_script("""
        import queue, numpy as np, shmproc
        q = shmproc.Queue(maxsize=1)
        q.put(1)
        for _ in range(5):
            try:
                q.put(np.ones(100_000), block=False)
            except queue.Full:
                pass
    """, timeout=30)
    assert took < 15


def test_exit_is_not_stalled_by_a_consumer_that_died_before_opening():
    """The consumer took the record from the ring and died before opening
    the blob: the producer gives up on it shortly instead of waiting
    EXIT_FLUSH_TIMEOUT (60 s)."""
    took = _run_script("""
        import os, numpy as np, shmproc
        from shmproc import _shmp_cffi as _cffi
        q = shmproc.Queue()
        q.put(np.ones(100_000))
        pid = os.fork()
        if pid == 0:
            buf = bytearray(4096)
            out = _cffi.ffi.new("uint32_t[2]")
            rc = q._ring.get_into(_cffi.ffi.from_buffer(buf), len(buf), 10**9, out, out + 1)
            if rc != 0:
                os._exit(3)                      # the record was not taken: the test is void
            os.kill(os.getpid(), 9)              # dies between taking and opening
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), status
    """, timeout=40)
    assert took < 20


# ---- 7. shared memory never leaks into unrelated programs --------------------------------------


@pytest.mark.parametrize("method", START_METHODS)
def test_no_shmproc_descriptor_reaches_an_exec_ed_program(method):
    p = _ListFds()
    p.config.start_method = method
    p.start()
    listing = p.result
    assert "memfd:shmproc" not in listing, listing

    with shmproc.Pool(workers=1, start_method=method) as pool:
        listing = pool.map(_list_fds_of_a_program, [0])[0]
    assert "memfd:shmproc" not in listing, listing

    ctx = mp.get_context(method)
    q, out = shmproc.Queue(), shmproc.Queue()
    child = ctx.Process(target=_queue_user, args=(q, out))
    child.start()
    q.put("go")
    listing = out.get(timeout=60)
    child.join(30)
    q.close()
    out.close()
    assert "memfd:shmproc" not in listing, listing


def test_a_queue_closed_here_cannot_be_sent():
    q = shmproc.Queue()
    q.close()
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(q)


def test_exit_is_not_stalled_when_no_reader_holds_the_queue():
    """Nobody else holds the queue: its large item can never be read, so
    the producer exits without waiting EXIT_FLUSH_TIMEOUT."""
    took = _run_script("""
        import numpy as np, shmproc
        q = shmproc.Queue()
        q.put(np.ones(100_000))
    """, timeout=40)
    assert took < 20


def test_exit_waits_for_a_live_reader_and_stops_when_it_dies():
    """A reader holds the queue (and could still read): the producer waits;
    when that reader dies, the producer exits about a second later."""
    took = _run_script("""
        import os, signal, time, numpy as np, shmproc
        q = shmproc.Queue()
        pid = os.fork()
        if pid == 0:
            time.sleep(3)               # holds the queue, never reads, then dies
            os.kill(os.getpid(), signal.SIGKILL)
        q.put(np.ones(100_000))
        start = time.monotonic()
        from shmproc.wire import blobs
        blobs.pool.flush_at_exit()
        waited = time.monotonic() - start
        assert 2 < waited < 10, waited
        os.waitpid(pid, 0)
    """, timeout=60)
    assert took < 30


# ---- found by review: edges of the fixes above ---------------------------------------------


def test_get_many_after_a_lost_item_and_a_bad_item_keeps_the_rest():
    q = shmproc.Queue()
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        put_raw(q, blobs.DESC.pack(dead.pid, 5, 1 << 16, 10, TAG_PICKLE, 0, 1), TAG_BLOB)   # lost
        q.put(_Grumpy())
        for x in ("A", "B", "C"):
            q.put(x)
        time.sleep(0.05)
        with pytest.raises(ValueError, match="refuse"):
            q.get_many(timeout=5)
        assert q.get_many(timeout=5) == ["A", "B", "C"]
        assert q.lost_items == 1
    finally:
        q.close()


def test_get_many_interrupted_mid_batch_keeps_the_whole_batch():
    _interrupts.clear()
    q = shmproc.Queue()
    try:
        q.put("a")
        q.put(_InterruptsOnce("b"))
        q.put("c")
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            q.get_many(timeout=5)
        got = []
        while len(got) < 3:
            got += q.get_many(timeout=5)
        assert got == ["a", "b", "c"]
    finally:
        q.close()


def test_a_put_interrupted_after_its_record_is_in_keeps_its_item(monkeypatch):
    """Ctrl-C (or a section's timeout) landing after the descriptor went
    into the ring: the item is delivered, so its blob must not be taken
    back and reused under the reader."""
    q = shmproc.Queue()
    real = shmproc.common.faults.point

    def interrupt_after_put(name):
        if name == "queue.blob_put":
            raise KeyboardInterrupt
        real(name)

    monkeypatch.setattr(shmproc.common.faults, "point", interrupt_after_put)
    try:
        with pytest.raises(KeyboardInterrupt):
            q.put(np.full(1 << 18, 7, dtype=np.int64))
        monkeypatch.setattr(shmproc.common.faults, "point", real)
        got = q.get(timeout=5)
        q.put(np.full(1 << 18, 9, dtype=np.int64))         # would reuse a retracted blob
        assert q.get(timeout=5)[0] == 9
        assert got[0] == 7 and got[-1] == 7
    finally:
        q.close()


def test_pool_bookkeeping_names_a_blob_by_descriptor_and_nonce():
    """The pool forgets or re-publishes a task's blob by (fd, nonce): a blob
    reused under the same descriptor number for another task is left alone."""
    token = blobs.FlushToken()
    token.wait = False
    d1, s1 = blobs.encode_blob(b"x" * 200_000, TAG_PICKLE, [], token)
    main, _, bufs = blobs.decode(d1, False)
    del main, bufs
    gc.collect()                                           # released: reusable
    blobs.pool.sweep()
    d2, s2 = blobs.encode_blob(b"y" * 200_000, TAG_PICKLE, [], token)
    assert s2.blob.fd == s1.blob.fd and s2.nonce != s1.nonce
    assert not blobs.pool.republish(s1.blob.fd, s1.nonce)
    blobs.pool.discard(s1.blob.fd, s1.nonce)
    main, _, _ = blobs.decode(d2, False)
    assert bytes(main[:3]) == b"yyy"
    del main
    gc.collect()
    blobs.pool.drop(token)
