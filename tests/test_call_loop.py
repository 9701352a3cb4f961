"""The pool worker's loop of plain calls in C (csrc/python/callloop.c),
driven in this process on real rings: what it runs itself, what it hands
back to the Python loop and in what state, and its bad input.  The pool
tests run it through the public API (test_pool*.py); the last tests here
check that a pool really uses it and that its hand-backs work end to end.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys

import pytest

import shmproc
from shmproc import _native as native
from shmproc.channels.queue import Queue
from shmproc.channels.records import TAG_BYTES, TAG_PICKLE
from shmproc.runtime import call_loop
from shmproc.runtime.pool_worker import RUNNING
from shmproc.wire import blobs, taskwire
from shmproc.wire.taskwire import FLAG_TELLS, OP_CALL, OP_DEF, R_VALUE

pytestmark = [pytest.mark.skipif(native.serve_calls is None, reason="built without the C loop"),
              pytest.mark.asan]

SLOT = 3


def add(a, b=10):
    return a + b


def boom(x):
    raise ValueError(f"boom {x}")


def listed(x):
    return [x, x]


class MyInt(int):
    pass


def my_int(x):
    return MyInt(x)


def text(n):
    return "x" * n


class Rig:
    """A task queue and a result queue as a pool makes them, a control
    block's lap word, and serve()'s context over them."""

    def __init__(self, max_tasks=-1, result_capacity=1 << 16, inband_max=None):
        self.task_q = Queue(capacity=1 << 20, _producers="one", _consumers="one")
        self.result_q = Queue(capacity=result_capacity, _consumers="one")
        self.ctl = native.ControlArray.create(1)
        self.pctl = self.ctl.control(0)
        self.plain = {1: add, 2: boom, 3: listed, 4: my_int, 5: text}
        self.spans = native.null_writer(os.getpid())
        self.token = blobs.FlushToken()
        native.set_call_wire(OP_CALL, R_VALUE, TAG_BYTES, taskwire.HEADER_SIZE, RUNNING,
                             native.EINTR, native.EEMPTY)
        if inband_max is None:
            inband_max = self.result_q._inband_max
        self.ctx = (*native.loop_handles(self.task_q._cons, self.result_q._prod),
                    self.pctl.lap_address(), max_tasks, SLOT, inband_max, 0,
                    native.CONTENDED_NS, self.plain, pickle.loads, pickle.dumps,
                    self.spans.begin, self.spans.end)

    def call(self, ident, fn_id, *args, **kwargs):
        rec = taskwire.encode(OP_CALL, ident, (fn_id, args, kwargs or None), self.token)
        self.task_q.put(rec)
        return rec

    def raw(self, data, tag=TAG_BYTES):
        assert self.task_q._cons.put(data, len(data), tag, 0) == native.OK

    def serve(self, k=0):
        return native.serve_calls(self.ctx, k, 0)

    def results(self):
        out = []
        while self.result_q.qsize():
            out.append(self.result_q.get(timeout=1))
        return out

    def close(self):
        self.task_q.close()
        self.result_q.close()
        self.ctl.close()
        # A closed queue keeps its mapping while the object lives (a waiting
        # thread may still read it): let go of them here.
        self.task_q = self.result_q = self.ctl = self.pctl = None


@pytest.fixture
def rig():
    made = []

    def make(**kw):
        r = Rig(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
    made.clear()


def decode(rec):
    op, flags, slot, us, ident = taskwire.HEADER.unpack_from(rec)
    return op, flags, slot, ident, pickle.loads(rec[taskwire.HEADER_SIZE:])


# ---- what it runs itself --------------------------------------------------------------------

def test_a_scalar_call_is_run_and_its_record_is_the_one_flush_makes(rig):
    r = rig(max_tasks=1)
    r.call(41, 1, 1, b=2)
    st, k, last_work, a, b, c = r.serve()
    assert (st, k, a, b, c) == (call_loop.ST_RECYCLE, 1, None, None, None)
    assert last_work > 0
    [rec] = r.results()
    assert decode(rec) == (R_VALUE, 0, SLOT, 41, 3)
    assert r.pctl.lap() == 1 << 2               # item 0 finished, none running


def test_max_tasks_counts_from_the_k_it_is_given(rig):
    r = rig(max_tasks=7)
    r.call(100, 1, 0)
    st, k, *_ = r.serve(k=6)
    assert (st, k) == (call_loop.ST_RECYCLE, 7)
    assert [decode(x)[3:] for x in r.results()] == [(100, 10)]
    assert r.pctl.lap() == 7 << 2


def test_more_than_one_record_queued_goes_to_the_python_batch(rig):
    r = rig()
    r.call(1, 1, 1)
    r.call(2, 1, 2)
    st, k, *rest = r.serve(k=4)
    assert (st, k) == (call_loop.ST_BATCH, 4)
    assert r.task_q.qsize() == 2 and not r.results()


# ---- what it hands back ---------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: taskwire.encode(OP_CALL, 9, (1, (1,), None), blobs.FlushToken(), flags=FLAG_TELLS),
    lambda: taskwire.encode(OP_DEF, 9, b"fn", blobs.FlushToken()),
    lambda: b"\x03\x00short",                                    # OP_CALL, shorter than a header
    lambda: b"",
], ids=["flagged", "not-a-call", "short", "empty"])
def test_a_record_that_is_not_a_plain_call_comes_back_untouched(rig, make):
    r = rig()
    rec = make()
    r.raw(rec)
    st, k, last_work, a, b, c = r.serve(k=2)
    assert (st, k, a, b) == (call_loop.ST_RECORD, 2, TAG_BYTES, rec)
    assert r.pctl.lap() == 0                    # nothing started


def test_a_record_of_another_tag_comes_back_with_its_tag(rig):
    r = rig()
    data = pickle.dumps("item")
    r.raw(data, tag=TAG_PICKLE)
    st, _, _, a, b, _ = r.serve()
    assert (st, a, b) == (call_loop.ST_RECORD, TAG_PICKLE, data)


@pytest.mark.parametrize("payload", [
    b"\x80\x05garbage",                         # does not unpickle
    pickle.dumps((1, (1,))),                    # not (fn_id, args, kwargs)
    pickle.dumps((99, (1,), None)),             # a function this worker does not know
    pickle.dumps((1, [1], None)),               # args not a tuple
    pickle.dumps((1, (1,), [("b", 2)])),        # kwargs not a dict
    pickle.dumps([1, (1,), None]),              # not a tuple
], ids=["garbage", "two-fields", "unknown-fn", "args-list", "kwargs-list", "list"])
def test_a_call_it_cannot_decode_comes_back_as_call_fast_leaves_it(rig, payload):
    r = rig()
    rec = taskwire.HEADER.pack(OP_CALL, 0, 0, 1, 77) + payload
    r.raw(rec)
    st, k, _, a, b, _ = r.serve(k=3)
    assert (st, k, a, b) == (call_loop.ST_RECORD, 3, TAG_BYTES, rec)
    assert r.pctl.lap() == 3 << 2 | RUNNING    # as call_fast: handle() takes over the item
    assert not r.results()


def test_an_exception_comes_back_with_its_traceback(rig):
    r = rig()
    r.call(5, 2, "x")
    st, k, _, a, b, c = r.serve(k=1)
    assert (st, k, a) == (call_loop.ST_RAISED, 1, 5)
    assert isinstance(b, int) and b > 0         # the call's start, for its span
    assert isinstance(c, ValueError) and str(c) == "boom x"
    assert c.__traceback__ is not None and "boom" in repr(c.__traceback__.tb_frame.f_code)
    assert r.pctl.lap() == 1 << 2 | RUNNING
    assert not r.results()


@pytest.mark.parametrize("fn_id, value", [(3, [7, 7]), (4, MyInt(7))], ids=["list", "int-subclass"])
def test_a_value_that_is_not_a_plain_scalar_comes_back_to_be_encoded_in_python(rig, fn_id, value):
    r = rig()
    r.call(6, fn_id, 7)
    st, k, _, a, b, c = r.serve()
    assert (st, k, a, c) == (call_loop.ST_VALUE, 0, 6, value) and type(c) is type(value)
    assert r.pctl.lap() == RUNNING
    assert not r.results()


def test_a_result_too_large_for_the_ring_comes_back_encoded(rig):
    r = rig(inband_max=200)
    r.call(8, 5, 1000)
    st, k, _, a, b, c = r.serve()
    assert (st, k) == (call_loop.ST_PUT, 1)
    assert decode(a) == (R_VALUE, 0, SLOT, 8, "x" * 1000)
    assert not r.results()


def test_a_result_the_full_ring_cannot_take_comes_back_encoded(rig):
    r = rig(result_capacity=4096)
    while r.result_q._prod.put(b"f" * 500, 500, TAG_BYTES, 0) == native.OK:
        pass                                    # fill it
    filled = r.result_q.qsize()
    r.call(9, 1, 1)
    st, k, _, a, *_ = r.serve()
    assert (st, k) == (call_loop.ST_PUT, 1)
    assert decode(a) == (R_VALUE, 0, SLOT, 9, 11)
    assert r.result_q.qsize() == filled


def test_a_record_larger_than_its_buffer_stays_in_the_ring_for_python(rig):
    r = rig()
    rec = r.call(10, 1, b"a" * 100_000, b=b"")
    st, k, *_ = r.serve()
    assert (st, k) == (call_loop.ST_PYGET, 0)
    assert r.task_q.get(timeout=1) == rec       # not consumed


def test_a_signal_handler_that_raises_ends_its_sleep(rig):
    r = rig()

    class Woken(Exception):
        pass

    def handler(signum, frame):
        raise Woken

    old = signal.signal(signal.SIGALRM, handler)
    try:
        # Every 50 ms: one that lands in the few instructions between the
        # loop's last look at the signal flag and its sleep is seen only at
        # the next EINTR (the next signal).  One that lands before, while
        # the loop holds the GIL, runs its handler before the sleep.
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        with pytest.raises(Woken):
            r.serve()                           # the ring is empty: it sleeps
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    r.call(1, 1, 1)                             # and it can be called again
    r.call(2, 1, 2)
    assert r.serve()[0] == call_loop.ST_BATCH


def test_a_signal_that_comes_while_the_loop_holds_the_gil_is_not_lost(rig):
    """A signal delivered while the loop runs C code holding the GIL (here:
    inside a call, through ctypes, which does not look at the signal flag)
    has its handler run before the loop sleeps: it used to wait for a
    wake-up that never came (the signal had no EINTR left to give)."""
    import ctypes
    import functools
    import threading
    import time
    r = rig()
    libc = ctypes.CDLL(None, use_errno=True)
    r.plain[6] = functools.partial(libc.kill, os.getpid(), signal.SIGALRM)

    class Woken(Exception):
        pass

    def handler(signum, frame):
        raise Woken

    old = signal.signal(signal.SIGALRM, handler)
    # Without the fix the loop sleeps until this second signal, sent to
    # this thread, interrupts it.
    backstop = threading.Timer(5.0, signal.pthread_kill,
                               (threading.get_ident(), signal.SIGALRM))
    backstop.start()
    try:
        r.call(1, 6)
        t = time.monotonic()
        with pytest.raises(Woken):
            r.serve()
        assert time.monotonic() - t < 2.5
    finally:
        backstop.cancel()
        backstop.join()
        signal.signal(signal.SIGALRM, old)


def test_a_call_that_calls_serve_again_fails_alone(rig):
    r = rig(max_tasks=2)
    ctx = r.ctx
    r.plain[6] = lambda: native.serve_calls(ctx, 0, 0)
    r.call(11, 6)
    st, _, _, a, _, c = r.serve()
    assert (st, a) == (call_loop.ST_RAISED, 11)
    assert isinstance(c, RuntimeError) and "already running" in str(c)
    r.call(12, 1, 1)
    assert r.serve(k=1)[0] == call_loop.ST_RECYCLE


# ---- bad input ------------------------------------------------------------------------------

def test_bad_contexts_are_refused(rig):
    r = rig()
    ctx = list(r.ctx)
    for index, bad in [(0, 0), (1, 0), (2, 0), (5, 0), (6, 0), (6, ctx[6] + 4)]:
        wrong = list(ctx)
        wrong[index] = bad
        with pytest.raises(ValueError, match="null ring, function or lap word"):
            native.serve_calls(tuple(wrong), 0, 0)
    with pytest.raises(TypeError):
        native.serve_calls(tuple(ctx[:-1]), 0, 0)
    with pytest.raises(TypeError):
        native.serve_calls(ctx, 0, 0)           # a list, not a tuple
    wrong = list(ctx)
    wrong[12] = {}.items()                      # plain must be a dict
    with pytest.raises(TypeError):
        native.serve_calls(tuple(wrong), 0, 0)


def test_a_wire_with_another_header_is_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        native.set_call_wire(OP_CALL, R_VALUE, TAG_BYTES, 24, RUNNING, native.EINTR,
                             native.EEMPTY)
    with pytest.raises(RuntimeError, match="set_wire"):
        native.serve_calls((), 0, 0)
    native.set_call_wire(OP_CALL, R_VALUE, TAG_BYTES, taskwire.HEADER_SIZE, RUNNING,
                         native.EINTR, native.EEMPTY)


# ---- through a pool -------------------------------------------------------------------------

def caller_name():
    return sys._getframe(1).f_code.co_name


def test_a_pool_runs_a_lone_call_in_the_c_loop():
    with shmproc.Pool(1) as pool:
        assert pool.submit(add, 1).result() == 11      # the worker knows add now
        # Called from C, the function's caller frame is call_loop.serve's.
        assert pool.submit(caller_name).result() in ("serve", "call_fast")
        names = {pool.submit(caller_name).result() for _ in range(20)}
    assert "serve" in names


def kind_of(i):
    """Values of every path: scalars (C), containers (Python), errors."""
    if i % 7 == 3:
        raise KeyError(i)
    return (i, str(i)) if i % 5 == 1 else (i if i % 2 else float(i))


def test_stress_every_submit_answered_exactly_once_across_workers():
    scale = float(os.environ.get("SHMPROC_STRESS_SCALE", "1"))
    n = max(200, int(3000 * scale))
    with shmproc.Pool(2) as pool:
        tasks = []
        for i in range(n):
            tasks.append((i, pool.submit(kind_of, i)))
            if i % 97 == 0:                     # now and then a lone one, waited for
                assert pool.submit(add, i).result() == i + 10
        for i, task in tasks:
            if i % 7 == 3:
                with pytest.raises(KeyError):
                    task.result(timeout=60)
            else:
                assert task.result(timeout=60) == ((i, str(i)) if i % 5 == 1 else
                                                   (i if i % 2 else float(i)))
        progress = pool.progress
    lone = len(range(0, n, 97))
    assert progress.done == progress.total == n + lone
    assert progress.failed == len([i for i in range(n) if i % 7 == 3])


def big_text(n):
    return "y" * n


def echo_len(data, extra=0):
    return len(data) + extra


def test_a_pool_hands_back_what_the_c_loop_leaves():
    with shmproc.Pool(1, maxtasksperchild=3) as pool:
        pids = set()
        for i in range(7):
            assert pool.submit(add, i, b=1).result() == i + 1
            pids.add(pool.submit(os.getpid).result())
        assert len(pids) >= 3                  # recycled: ST_RECYCLE ended the workers
        # Records larger than the C loop's buffer (ST_PUT), in the ring and
        # (where the platform passes them) out-of-band.
        for n in (100_000, 8 << 20) if blobs.PEER_FD_OK else (100_000,):
            assert pool.submit(big_text, n).result() == "y" * n
        if blobs.PEER_FD_OK:        # (the portable layer carries no record this large)
            assert pool.submit(echo_len, b"z" * 200_000, extra=1).result() == 200_001  # ST_PYGET
        with pytest.raises(ValueError, match="boom 3"):
            pool.submit(boom, 3).result()
        assert pool.submit(my_int, 4).result() == 4
        assert pool.apply(add, (2,)) == 12


# ---- the poke: a producer wakes a sleeping consumer before it puts ----------------------------

def test_wait_poked_says_what_woke_it(rig):
    r = rig()
    ring = r.task_q._cons
    assert ring.wait_poked(0) == native.ETIMEDOUT      # nothing, no time to wait
    assert ring.poke() == native.OK                     # nobody asleep: nothing happens
    assert ring.wait_poked(20_000_000) == native.ETIMEDOUT
    r.call(1, 1, 1)
    assert ring.wait_poked(-1) == native.OK             # data: at once
    r.task_q.get(timeout=1)
    ring.mark_closed()
    assert ring.wait_poked(-1) == native.ESTATE


def _asleep(ring) -> bool:
    """Wait until a consumer is registered asleep on `ring` (up to 10 s)."""
    deadline = native.now_ns() + 10_000_000_000
    while native.now_ns() < deadline:
        if ring.sleepers():
            return True
        os.sched_yield()
    return False


def test_a_poke_wakes_a_sleeper_in_another_process(rig):
    r = rig()
    ring = r.task_q._cons
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # the sleeper
        code = 1
        try:
            os.close(rfd)
            first = ring.wait_poked(20_000_000_000)
            second = ring.wait_poked(20_000_000_000)
            os.write(wfd, f"{first} {second}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        assert _asleep(ring)
        r.task_q._poke()                                # wakes it, nothing queued
        assert _asleep(ring)                            # asleep again, in its second wait
        r.call(1, 1, 1)                                 # the put wakes it with data
        got = os.read(rfd, 64).decode()
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(rfd)
    assert got == f"{native.EEMPTY} {native.OK}" and status == 0


def test_a_poked_loop_watches_for_the_record_that_follows(rig):
    import threading
    r = rig(max_tasks=1)
    ring = r.task_q._cons

    def pool_side():
        assert _asleep(ring)
        r.task_q._poke()                                # the loop wakes and watches...
        native.spin_politely(lambda: False, native.now_ns() + 500_000)
        r.call(21, 1, 4)                                # ...and takes what follows

    t = threading.Thread(target=pool_side)
    t.start()
    st, k, *_ = r.serve()
    t.join()
    assert (st, k) == (call_loop.ST_RECYCLE, 1)
    assert [decode(x)[3:] for x in r.results()] == [(21, 14)]


# ---- the pool's side: take_value ----------------------------------------------------------

def _result_ctx(r):
    return call_loop.result_context(r.result_q)


def _value_record(ident, value, slot=SLOT, us=7):
    return taskwire.HEADER.pack(R_VALUE, 0, slot, us, ident) + pickle.dumps(value, 5)


def test_take_value_decodes_the_lone_value_it_waits_for(rig):
    r = rig()
    r.result_q.put(_value_record(12, ("a", 1)))
    assert native.take_value(_result_ctx(r), 12, 0, 0) == (0, 7, ("a", 1))
    assert not r.result_q.qsize()


@pytest.mark.parametrize("make", [
    lambda: _value_record(13, 1),                                           # another task's
    lambda: taskwire.HEADER.pack(R_VALUE, 1, SLOT, 0, 12) + b"blob",        # flagged
    lambda: taskwire.HEADER.pack(taskwire.R_ERROR, 0, SLOT, 0, 12) + pickle.dumps((1, 2)),
    lambda: taskwire.HEADER.pack(R_VALUE, 0, SLOT, 0, 12) + b"\x80\x05garbage",   # unpicklable
    lambda: b"\x10short",
], ids=["other-task", "flagged", "error", "garbage", "short"])
def test_take_value_hands_any_other_record_back_whole(rig, make):
    r = rig()
    rec = make()
    r.result_q.put(rec)
    assert native.take_value(_result_ctx(r), 12, 0, 0) == (1, TAG_BYTES, rec)


def test_take_value_hands_back_another_tag_with_it(rig):
    r = rig()
    r.result_q.put("text")
    assert native.take_value(_result_ctx(r), 12, 0, 0) == (1, 2, b"text")   # TAG_STR


def test_take_value_waits_at_most_its_timeout_and_leaves_large_records(rig):
    r = rig()
    t = native.now_ns()
    assert native.take_value(_result_ctx(r), 12, 200_000, 30_000_000) in (native.EEMPTY,
                                                                          native.ETIMEDOUT)
    assert native.now_ns() - t >= 30_000_000
    big = _value_record(12, "x" * 5000)                 # larger than its 4 KiB buffer
    r.result_q.put(big)
    assert native.take_value(_result_ctx(r), 12, 0, 0) == native.ESMALLBUF
    assert r.result_q.get(timeout=1) == big             # not consumed: Python's get takes it


def test_take_value_refuses_bad_contexts(rig):
    r = rig()
    ctx = _result_ctx(r)
    with pytest.raises(ValueError, match="null ring"):
        native.take_value((0,) + ctx[1:], 1, 0, 0)
    with pytest.raises(TypeError):
        native.take_value(ctx[:-1], 1, 0, 0)
    with pytest.raises(TypeError):
        native.take_value(list(ctx), 1, 0, 0)


def bigger_than_the_wait_buffer(n):
    return "w" * n


def test_arguments_a_worker_cannot_be_sent_fail_alone_without_a_hang():
    """Where records cannot go out-of-band (the portable layer), a task
    whose record is larger than its worker's ring fails at submit (or, in
    a map, alone); elsewhere it runs."""
    big = b"z" * 300_000
    with shmproc.Pool(1) as pool:
        assert pool.submit(add, 1).result() == 11
        if blobs.PEER_FD_OK:
            assert pool.submit(echo_len, big).result() == 300_000
            assert pool.map(echo_len, [big, b"a"], chunksize=1) == [300_000, 1]
        else:
            with pytest.raises(shmproc.wire.SerializationError, match="out-of-band"):
                pool.submit(echo_len, big)
            with pytest.raises(shmproc.wire.SerializationError, match="out-of-band"):
                pool.submit(echo_len, big, extra=1)                 # the general path
            with pytest.raises(shmproc.wire.SerializationError, match="out-of-band"):
                pool.map(echo_len, [b"a", big], chunksize=1)
        assert pool.submit(add, 2).result(timeout=30) == 12


def text_of(n):
    return "t" * n


def first_text_of(n):                   # a function the worker meets in a batch (OP_DEF first)
    return "f" * n


def texts_of(n):
    return ["l" * n]


def the_length(s):
    return len(s)


def test_results_a_worker_cannot_send_fail_alone_without_a_crash():
    """Where results cannot go out-of-band (the portable layer), a result
    larger than the result ring carries fails its item alone with
    SerializationError, on every path a result takes (the C loop's
    scalar, a value Python encodes, a lone scalar of a batch, values
    coalesced into one record, a chunk's results), and the worker goes on;
    elsewhere they all arrive."""
    big = 2_000_000
    with shmproc.Pool(1) as pool:
        pid = pool.pids[0]
        local = blobs.PEER_FD_OK
        calls = [(text_of, big), (texts_of, big), (first_text_of, big)]
        for fn, n in calls:
            if local:
                assert len(pool.submit(fn, n).result(timeout=60)) in (n, 1)
            else:
                with pytest.raises(shmproc.wire.SerializationError, match="out-of-band"):
                    pool.submit(fn, n).result(timeout=60)
        # Values of 600 kB: each fits the ring, four together do not.
        assert [len(s) for s in pool.map(text_of, [600_000] * 4, chunksize=1)] == [600_000] * 4
        # A chunk's results too large together go in parts.
        assert [len(s) for s in pool.map(text_of, [300_000] * 12, chunksize=6)] == [300_000] * 12
        if local:
            assert [len(s) for s in pool.map(text_of, [5, big, 5], chunksize=3)] == [5, big, 5]
        else:
            # One item too large alone fails alone: the map raises its error.
            with pytest.raises(shmproc.wire.SerializationError, match="an item of task"):
                pool.map(text_of, [5, big, 5], chunksize=3)
            out = list(pool.imap(the_length, ["a", "bb"]))
            assert out == [1, 2]
        assert pool.submit(add, 2).result(timeout=30) == 12
        assert pool.pids == [pid]                                  # no worker was lost


def lock_or_text(i):
    import threading
    return threading.Lock() if i == 0 else "m" * 600_000


class BigResult(shmproc.processing.Process):
    def __init__(self):
        self.config.num_loops = 1

    def __loop__(self):
        pass

    def __result__(self):
        return "r" * 2_000_000


def test_a_chunk_with_an_item_that_cannot_travel_fails_that_item_alone():
    """An unpicklable item of a chunk becomes its error; the rest, too
    large together where nothing goes out-of-band, still go (in parts)."""
    with shmproc.Pool(1) as pool:
        pid = pool.pids[0]
        with pytest.raises(shmproc.wire.SerializationError, match="item 0"):
            pool.map(lock_or_text, range(6), chunksize=6)
        out = list(pool.imap(lock_or_text, range(1, 4), chunksize=3))
        assert [len(s) for s in out] == [600_000] * 3
        assert pool.pids == [pid]
        assert pool.progress.failed == 1


def test_a_process_task_whose_result_cannot_travel_fails_and_counts():
    with shmproc.Pool(1) as pool:
        pid = pool.pids[0]
        task = pool.submit(BigResult)
        if blobs.PEER_FD_OK:
            assert len(task.result(timeout=60)) == 2_000_000
            assert pool.progress.failed == 0
        else:
            with pytest.raises(shmproc.ResultError, match="out-of-band"):
                task.result(timeout=60)
            assert pool.progress.failed == 1
        assert pool.pids == [pid]


def ones(n):
    import numpy
    return numpy.ones(n)


def total(a):
    return float(a.sum())


def test_large_arrays_go_where_they_can_and_fail_clearly_where_they_cannot():
    """numpy buffers of 256 KiB or more go out-of-band, where the platform
    can hand a segment over.  Where it cannot (the portable layer) they go
    in the record: an array result that fits the result ring arrives, a
    larger one fails alone, and arguments larger than a worker's ring fail
    at submit.  (There, such a result never came, and such arguments failed
    in the worker as a lost record.)"""
    numpy = pytest.importorskip("numpy")
    with shmproc.Pool(1) as pool:
        pid = pool.pids[0]
        assert pool.submit(ones, 100_000).result(timeout=30).sum() == 100_000     # 800 kB
        if blobs.PEER_FD_OK:
            assert pool.submit(ones, 1_000_000).result(timeout=30).sum() == 1_000_000
            assert pool.submit(total, numpy.ones(100_000)).result(timeout=30) == 100_000
        else:
            with pytest.raises(shmproc.wire.SerializationError, match="out-of-band"):
                pool.submit(ones, 1_000_000).result(timeout=30)                  # 8 MB
            with pytest.raises(shmproc.wire.SerializationError, match="out-of-band"):
                pool.submit(total, numpy.ones(100_000))
        assert pool.submit(total, numpy.ones(1000)).result(timeout=30) == 1000
        assert pool.pids == [pid]


def test_a_pool_takes_every_kind_of_lone_result():
    with shmproc.Pool(1) as pool:
        assert pool.submit(add, 1).result() == 11
        assert pool.submit(bigger_than_the_wait_buffer, 10_000).result() == "w" * 10_000
        assert pool.submit(listed, 2).result() == [2, 2]
        with pytest.raises(ValueError, match="boom 5"):
            pool.submit(boom, 5).result()
        assert pool.submit(add, 2).result(timeout=30) == 12


def test_ctrl_c_while_waiting_for_a_lone_result():
    import threading
    import time
    with shmproc.Pool(1) as pool:
        assert pool.submit(add, 1).result() == 11
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                pool.submit(time.sleep, 30).result()
        finally:
            timer.cancel()
        assert time.monotonic() - t < 10


# ---- the hand-written pickles (csrc/python/tinypickle.h) ------------------------------------

from hypothesis import HealthCheck, given, settings            # noqa: E402
from hypothesis import strategies as st                        # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("SHMPROC_FUZZ_EXAMPLES", "300")), deadline=None,
                database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**63, max_value=2**63 - 1), st.integers(),     # beyond 64 bits too
    st.sampled_from([0, 255, 256, 65535, 65536, -1, 2**31 - 1, 2**31, -2**31, -2**31 - 1,
                     2**63 - 1, -2**63, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-0.0, 0.0]),
    st.text(max_size=300), st.binary(max_size=300),
    st.sampled_from(["\ud800", "a\udfffb"]),                    # lone surrogates: pickle's way
    st.complex_numbers(allow_nan=False), st.just(MyInt(3)), st.just([1]))


def same(a, b):
    """Equal, of the same type, NaN equal to NaN, -0.0 apart from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@FUZZ
@given(fn_id=st.integers(min_value=0, max_value=2**40), ident=st.integers(min_value=0, max_value=2**64 - 1),
       args=st.lists(SCALARS, max_size=6).map(tuple))
def test_encode_call_writes_what_pickle_reads_as_the_call(fn_id, ident, args):
    rec = native.encode_call(ident, fn_id, args)
    plain = (int, float, bool, str, bytes, type(None))
    writable = all(type(a) in plain and not (type(a) is int and not -2**63 <= a < 2**63)
                   and not (type(a) is str and any(0xD800 <= ord(c) <= 0xDFFF for c in a))
                   for a in args)
    if rec is None:
        # Not ours: too large, or an argument it does not write.
        assert not writable or len(pickle.dumps((fn_id, args, None), 5)) > 3000
        return
    assert writable
    assert rec[:taskwire.HEADER_SIZE] == taskwire.HEADER.pack(OP_CALL, 0, 0, 1, ident)
    assert same(pickle.loads(rec[taskwire.HEADER_SIZE:]), (fn_id, args, None))


def test_encode_call_refuses_what_it_does_not_write():
    assert native.encode_call(1, 1, ("x" * 5000,)) is None                  # over 4 KiB
    assert native.encode_call(1, 1, (MyInt(3),)) is None
    assert native.encode_call(1, "f", (1,)) is None                        # a fn_id not an int
    assert native.encode_call(1, 2**70, (1,)) is None
    with pytest.raises(TypeError):
        native.encode_call(1, 1, [1])                                      # args not a tuple


@FUZZ
@given(value=SCALARS)
def test_take_value_reads_every_scalar_pickle_writes(rig, value):
    r = rig()
    r.result_q.put(_value_record(12, value))
    got = native.take_value(_result_ctx(r), 12, 0, 0)
    assert got[:2] == (0, 7) and same(got[2], value)


@FUZZ
@given(payload=st.binary(max_size=24) | st.builds(lambda b: b"\x80\x05" + b, st.binary(max_size=12)))
def test_take_value_reads_random_payloads_as_pickle_does_or_hands_them_back(rig, payload):
    r = rig()
    rec = taskwire.HEADER.pack(R_VALUE, 0, SLOT, 7, 12) + payload
    r.result_q.put(rec)
    got = native.take_value(_result_ctx(r), 12, 0, 0)
    try:
        expected = pickle.loads(payload)
    except Exception:                               # noqa: BLE001 - then it comes back whole
        assert got == (1, TAG_BYTES, rec)
        return
    assert got[:2] == (0, 7) and same(got[2], expected)


def call_of(*args):
    return args


def first_of(x):
    return x


def test_a_pool_call_sees_its_arguments_and_returns_its_value_exactly():
    with shmproc.Pool(1) as pool:
        @FUZZ
        @given(args=st.lists(SCALARS, max_size=4).map(tuple))
        def check(args):
            assert same(pool.submit(call_of, *args).result(timeout=60), args)
            if len(args) == 1:          # the value alone: a scalar result's own path
                assert same(pool.submit(first_of, args[0]).result(timeout=60), args[0])

        check()
