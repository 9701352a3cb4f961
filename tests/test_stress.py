"""Multi-process stress tests of every shared-memory path of the C core.

Sizes scale with SHMPROC_STRESS_SCALE (default 1.0; tests/asan.py runs
them at a smaller scale under AddressSanitizer, where copies are slower).
"""
import multiprocessing as mp
import os
import queue
import random
import struct
import zlib

import pytest

import shmproc
from shmproc import _native as native
from shmproc._native import EEMPTY, OK
from shmproc._shmp_cffi import ffi, lib

pytestmark = [pytest.mark.asan, pytest.mark.slow]

SCALE = float(os.environ.get("SHMPROC_STRESS_SCALE", "1"))
HDR = struct.Struct("<III")          # producer id, sequence number, crc32 of the body
MAX_BODY = 64 * 1024


def _sizes(rnd):
    """Sizes 0 B .. 64 KiB, log-uniform: every scale is hit, mean ~6 KiB."""
    while True:
        yield int(2 ** rnd.uniform(0, 16)) - 1


def _record(pool, pid, seq, size, rnd):
    off = rnd.randrange(0, len(pool) - size + 1)
    body = pool[off:off + size]
    return HDR.pack(pid, seq, zlib.crc32(body)) + body


def _check(rec):
    pid, seq, crc = HDR.unpack_from(rec)
    body = memoryview(rec)[HDR.size:]
    assert zlib.crc32(body) == crc, f"producer {pid} record {seq}: corrupted body"
    return pid, seq


# ---- Queue: several producers, one consumer ------------------------------------

def _queue_producer(q, pid, n, seed):
    rnd = random.Random(seed)
    pool = rnd.randbytes(2 * MAX_BODY)
    sizes = _sizes(rnd)
    seq = 0
    while seq < n:
        if rnd.random() < 0.3:                       # a batch through put_many
            k = min(n - seq, rnd.randrange(1, 64))
            q.put_many([_record(pool, pid, seq + i, next(sizes), rnd) for i in range(k)])
            seq += k
        else:
            q.put(_record(pool, pid, seq, next(sizes), rnd))
            seq += 1


def _drain_checked(q, producers, n, expected_per_producer=None):
    next_seq = [0] * producers
    total = producers * n
    got = 0
    rnd = random.Random(7)
    while got < total:
        items = q.get_many(timeout=120, max_items=rnd.randrange(1, 200)) \
            if rnd.random() < 0.5 else [q.get(timeout=120)]
        for rec in items:
            pid, seq = _check(rec)
            assert seq == next_seq[pid], f"producer {pid}: got {seq}, expected {next_seq[pid]}"
            next_seq[pid] += 1
            got += 1
    return next_seq


@pytest.mark.parametrize("method,n,consumers", [
    ("fork", 100_000, "many"), ("forkserver", 20_000, "many"), ("spawn", 20_000, "many"),
    ("fork", 100_000, "one"), ("spawn", 20_000, "one")])
def test_queue_three_producers_one_consumer(method, n, consumers):
    # consumers="one": the pool's result ring (MPSC): producers locked, consumer lock-free.
    n = max(1000, int(n * SCALE))
    ctx = mp.get_context(method)
    q = shmproc.Queue(capacity=1 << 20, _consumers=consumers)
    procs = [ctx.Process(target=_queue_producer, args=(q, i, n, 100 + i)) for i in range(3)]
    for p in procs:
        p.start()
    try:
        assert _drain_checked(q, 3, n) == [n] * 3     # nothing lost, duplicated or reordered
        with pytest.raises(queue.Empty):
            q.get(timeout=0.1)
    finally:
        for p in procs:
            p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    q.close()


def _queue_consumer(q, out):
    seen = []
    while True:
        items = q.get_many(timeout=120, max_items=50)
        for rec in items:
            if rec == b"STOP":
                out.put(seen)
                return
            seen.append(_check(rec))


def test_queue_two_producers_two_consumers():
    n = max(1000, int(50_000 * SCALE))
    ctx = mp.get_context("fork")
    q, out = shmproc.Queue(capacity=1 << 18), shmproc.Queue()
    prods = [ctx.Process(target=_queue_producer, args=(q, i, n, 200 + i)) for i in range(2)]
    cons = [ctx.Process(target=_queue_consumer, args=(q, out)) for _ in range(2)]
    for p in prods + cons:
        p.start()
    for p in prods:
        p.join(120)
    seen = []
    for _ in cons:                 # one STOP at a time, so each consumer gets exactly one
        q.put(b"STOP")
        seen += out.get(timeout=120)
    for p in cons:
        p.join(60)
    assert sorted(seen) == sorted((pid, s) for pid in range(2) for s in range(n))
    q.close()
    out.close()


# ---- Queue: one producer, one consumer, both sides lock-free (SPSC) ----------------

BIG_EVERY = 50                      # one item in BIG_EVERY goes out-of-band (a blob)


def _spsc_producer(q, n, seed):
    from shmproc.wire.blobs import PEER_FD_OK      # the portable build has no out-of-band items
    rnd = random.Random(seed)
    pool = rnd.randbytes(4 * MAX_BODY)
    sizes = _sizes(rnd)
    seq = 0
    while seq < n:
        big = PEER_FD_OK and seq % BIG_EVERY == BIG_EVERY - 1
        size = 3 * MAX_BODY if big else next(sizes)
        if rnd.random() < 0.3 and size <= MAX_BODY:           # a batch through put_many
            k = min(n - seq, rnd.randrange(1, 64))
            q.put_many([_record(pool, 0, seq + i, next(sizes), rnd) for i in range(k)])
            seq += k
        else:
            q.put(_record(pool, 0, seq, size, rnd), timeout=120)
            seq += 1


@pytest.mark.parametrize("method,n", [("fork", 100_000), ("spawn", 20_000)])
def test_spsc_queue_every_item_once_in_order(method, n):
    n = max(1000, int(n * SCALE))
    ctx = mp.get_context(method)
    # A small ring: producer and consumer both wait on each other often.
    q = shmproc.Queue(capacity=1 << 19, _producers="one", _consumers="one")
    assert lib.shmp_ring_flags(q._ring._h) == 0                 # no side lock at all
    p = ctx.Process(target=_spsc_producer, args=(q, n, 31))
    p.start()
    try:
        assert _drain_checked(q, 1, n) == [n]       # nothing lost, duplicated or reordered
        with pytest.raises(queue.Empty):
            q.get(timeout=0.1)
    finally:
        p.join(60)
    assert p.exitcode == 0
    q.close()


def test_queue_side_options_are_checked():
    with pytest.raises(ValueError, match="_producers must be 'one' or 'many'"):
        shmproc.Queue(_producers="single")
    q = shmproc.Queue(_producers="one", _consumers="many")
    assert lib.shmp_ring_flags(q._ring._h) == lib.SHMP_RING_MULTI_CONSUMER
    q.close()


# ---- the raw SPSC ring: lock-free paths, every producer and consumer call -------

def _ring_producer(ring, n, seed):
    rnd = random.Random(seed)
    pool = rnd.randbytes(2 * MAX_BODY)
    sizes = _sizes(rnd)
    done = ffi.new("uint32_t *")
    seq_out = ffi.new("uint64_t *")
    seq = 0
    while seq < n:
        mode = rnd.random()
        if mode < 0.3:                                # put
            rec = _record(pool, 0, seq, next(sizes), rnd)
            assert ring.put(rec, len(rec), seq % 100, -1) == OK
            seq += 1
        elif mode < 0.6:                              # put_many
            recs = [_record(pool, 0, seq + i, next(sizes), rnd)
                    for i in range(min(n - seq, rnd.randrange(1, 32)))]
            lens = ffi.new("uint32_t[]", [len(r) for r in recs])
            tags = ffi.new("uint32_t[]", [(seq + i) % 100 for i in range(len(recs))])
            assert ring.put_many(b"".join(recs), lens, tags, len(recs), -1, done) == OK
            assert done[0] == len(recs)
            seq += len(recs)
        else:                                         # put_tracked: says which record it was
            rec = _record(pool, 0, seq, next(sizes), rnd)
            assert ring.put_tracked(rec, len(rec), seq % 100, -1, seq_out) == OK
            assert seq_out[0] == seq
            seq += 1


def test_spsc_ring_every_call_across_processes():
    n = max(2000, int(100_000 * SCALE))
    ring = native.Ring.create(1 << 18)                # no locks: the lock-free path
    p = mp.get_context("fork").Process(target=_ring_producer, args=(ring, n, 5))
    p.start()
    rnd = random.Random(9)
    buf = bytearray(1 << 20)
    ptr = ffi.from_buffer(buf)
    out = ffi.new("uint32_t[2]")
    lens, tags, count = ffi.new("uint32_t[64]"), ffi.new("uint32_t[64]"), ffi.new("uint32_t *")
    expect = 0
    while expect < n:
        mode = rnd.random()
        if mode < 0.4:
            assert ring.get_into(ptr, len(buf), 30_000_000_000, out, out + 1) == OK
            recs = [(bytes(buf[:out[0]]), out[1])]
        elif mode < 0.7:
            assert ring.get_many_into(ptr, len(buf), 64, 30_000_000_000, lens, tags, count) == OK
            recs, off = [], 0
            for i in range(count[0]):
                recs.append((bytes(buf[off:off + lens[i]]), tags[i]))
                off += lens[i]
        else:
            rc = ring.get_record(ptr, len(buf), 30_000_000_000)
            assert rc >= 0
            recs = [(bytes(buf[:rc & 0xFFFFFFFF]), rc >> 32)]
        for rec, tag in recs:
            _, seq = _check(rec)
            assert seq == expect and tag == seq % 100
            expect += 1
    p.join(60)
    assert p.exitcode == 0
    assert ring.get_into(ptr, len(buf), 0, out, out + 1) == EEMPTY
    ring.close()


# ---- control blocks and wait/wake across processes --------------------------------

def _worker_laps(ctl_array):
    c = ctl_array.blocks[0]
    lib.shmp_ctl_set_pid(c, os.getpid())
    lib.shmp_ctl_set_state(c, lib.SHMP_STATE_RUNNING)
    while True:
        if lib.shmp_ctl_enter(c, 1, 1_000_000_000):
            break
        lib.shmp_ctl_leave(c)
        if lib.shmp_ctl_end_lap(c):
            break
    lib.shmp_ctl_set_exit(c, 0, 0)
    lib.shmp_ctl_set_state(c, lib.SHMP_STATE_DONE)


def test_control_block_live_laps_and_stop_across_processes():
    ctl = native.ControlArray.create(1)
    c = ctl.blocks[0]
    p = mp.get_context("fork").Process(target=_worker_laps, args=(ctl,))
    p.start()
    assert lib.shmp_ctl_wait_state(c, lib.SHMP_STATE_RUNNING, 30_000_000_000) == OK
    assert lib.shmp_ctl_pid(c) == p.pid
    first = lib.shmp_ctl_lap(c)
    while lib.shmp_ctl_lap(c) < first + 10_000:      # live: the counter moves as we watch
        pass
    assert lib.shmp_ctl_request_stop(c) == OK
    assert lib.shmp_ctl_wait_state(c, lib.SHMP_STATE_DONE, 30_000_000_000) == OK
    final = lib.shmp_ctl_lap(c)
    p.join(30)
    assert final >= first + 10_000 and lib.shmp_ctl_lap(c) == final
    ctl.close()


def _waiter(ctl_array, rounds):
    c = ctl_array.blocks[0]
    for i in range(rounds):
        # wait for the parent's stop flag, acknowledge by moving state, reset
        assert lib.shmp_ctl_wait_stop(c, 30_000_000_000) == OK
        lib.shmp_ctl_clear_stop(c)
        lib.shmp_ctl_set_lap(c, i + 1)


def test_wait_wake_ping_pong_never_loses_a_wakeup():
    rounds = max(200, int(3000 * SCALE))
    ctl = native.ControlArray.create(1)
    c = ctl.blocks[0]
    p = mp.get_context("fork").Process(target=_waiter, args=(ctl, rounds))
    p.start()
    for i in range(rounds):
        lib.shmp_ctl_request_stop(c)
        while lib.shmp_ctl_lap(c) != i + 1:          # the child acknowledged round i
            pass
    p.join(30)
    assert p.exitcode == 0
    ctl.close()


# ---- no lost wake-up: the one wait primitive (csrc/wait.c), every caller ---------
#
# A sleeper re-checks its condition every 200 ms slice even without a
# wake-up, so a lost wake-up is not a hang: it is a wait that ends one whole
# slice after the waker's store.  Each round the waker stamps the time just
# before its store (CLOCK_MONOTONIC is one clock for all processes) and
# the sleeper measures how late it woke; any wait LOST_NS late fails the
# test.  The waker's delay before each store is random around the 20 us
# spin, so stores land while the sleeper spins, while it registers and
# while it sleeps.

LOST_NS = 150_000_000               # a lost wake-up costs a 200 ms slice
WAKE_ROUNDS = max(200, int(2000 * SCALE))
TEN_S = 10_000_000_000
# Blob words (byte offsets): the two events, their waiters words, their stamps.
PING, PING_W, PONG, PONG_W, PING_AT, PONG_AT = 0, 4, 8, 12, 16, 24
U64 = struct.Struct("<Q")


def _pause(rnd):
    r = rnd.random()
    if r < 0.05:
        import time
        time.sleep(0.001)                   # surely asleep in the kernel
    elif r < 0.8:
        end = native.now_ns() + rnd.randrange(0, 60_000)
        while native.now_ns() < end:        # around the spin: while it spins or registers
            pass


def _word64(buf, at):
    # One aligned 8-byte load or store (struct.pack_into zeroes, then writes
    # bytes: another process could read a torn stamp).
    return ffi.cast("uint64_t *", ffi.cast("char *", ffi.from_buffer(buf)) + at)


def _late(buf, at) -> int:
    return native.now_ns() - _word64(buf, at)[0]


def _stamp(buf, at):
    _word64(buf, at)[0] = native.now_ns()


def _word_sleeper(blob, rounds, seed):
    rnd, worst = random.Random(seed), 0
    for i in range(1, rounds + 1):
        while blob.load_word(PING) == i - 1:
            rc = blob.wait_word(PING, PING_W, i - 1, TEN_S)
            assert rc in (OK, native.EINTR), rc
        assert blob.load_word(PING) == i
        worst = max(worst, _late(blob.buffer, PING_AT))
        _pause(rnd)
        _stamp(blob.buffer, PONG_AT)
        blob.store_word(PONG, i, PONG_W)
    os._exit(0 if worst < LOST_NS else 7)


def test_word_wait_never_loses_a_wakeup_across_processes():
    blob = native.Blob.create(4096)
    p = mp.get_context("fork").Process(target=_word_sleeper, args=(blob, WAKE_ROUNDS, 3))
    p.start()
    rnd, worst = random.Random(4), 0
    base = ffi.cast("char *", ffi.from_buffer(blob.buffer))
    try:
        for i in range(1, WAKE_ROUNDS + 1):
            _pause(rnd)
            _stamp(blob.buffer, PING_AT)
            if i % 2:
                blob.store_word(PING, i, PING_W)
            else:                               # the claim path: CAS, then wake
                assert lib.shmp_cas_u32(base + PING, base + PING_W, i - 1, i) == OK
            while blob.load_word(PONG) == i - 1:
                assert blob.wait_word(PONG, PONG_W, i - 1, TEN_S) in (OK, native.EINTR)
            worst = max(worst, _late(blob.buffer, PONG_AT))
    finally:
        p.join(60)
    assert p.exitcode == 0, "the child woke LOST_NS late: a lost wake-up" \
        if p.exitcode == 7 else p.exitcode
    assert worst < LOST_NS, f"woke {worst / 1e6:.0f} ms after the store: a lost wake-up"
    assert blob.load_word(PING_W) == blob.load_word(PONG_W) == 0   # everyone unregistered
    blob.close_fd()


def _stop_sleeper(ctl_array, blob, rounds, seed):
    c = ctl_array.blocks[0]
    rnd, worst = random.Random(seed), 0
    for i in range(1, rounds + 1):
        assert lib.shmp_ctl_wait_stop(c, TEN_S) == OK
        worst = max(worst, _late(blob.buffer, PING_AT))
        lib.shmp_ctl_clear_stop(c)
        _pause(rnd)
        _stamp(blob.buffer, PONG_AT)
        blob.store_word(PONG, i, PONG_W)
    lib.shmp_ctl_set_state(c, lib.SHMP_STATE_DONE)
    os._exit(0 if worst < LOST_NS else 7)


def test_control_waits_never_lose_a_wakeup_across_processes():
    ctl, blob = native.ControlArray.create(1), native.Blob.create(4096)
    c = ctl.blocks[0]
    p = mp.get_context("fork").Process(target=_stop_sleeper, args=(ctl, blob, WAKE_ROUNDS, 5))
    p.start()
    rnd = random.Random(6)
    try:
        for i in range(1, WAKE_ROUNDS + 1):
            _pause(rnd)
            _stamp(blob.buffer, PING_AT)
            lib.shmp_ctl_request_stop(c)
            while blob.load_word(PONG) == i - 1:
                assert blob.wait_word(PONG, PONG_W, i - 1, TEN_S) in (OK, native.EINTR)
            assert _late(blob.buffer, PONG_AT) < LOST_NS
        t0 = native.now_ns()
        assert lib.shmp_ctl_wait_state(c, lib.SHMP_STATE_DONE, TEN_S) == OK
        assert native.now_ns() - t0 < 5_000_000_000
    finally:
        p.join(60)
    assert p.exitcode == 0, "the child woke LOST_NS late: a lost wake-up" \
        if p.exitcode == 7 else p.exitcode
    ctl.close()
    blob.close_fd()


def _ring_echo(ping, pong, rounds, seed):
    rnd, worst = random.Random(seed), 0
    buf = bytearray(64)
    ptr = ffi.from_buffer(buf)
    for i in range(rounds):
        rc = ping.get_record(ptr, 64, TEN_S)        # asleep for data
        assert rc >= 0 and U64.unpack_from(buf, 8)[0] == i, rc
        worst = max(worst, _late(buf, 0))
        _pause(rnd)
        rec = U64.pack(native.now_ns()) + U64.pack(i)
        assert pong.put(rec, 16, 0, TEN_S) == OK
    os._exit(0 if worst < LOST_NS else 7)


@pytest.mark.parametrize("multi,unsliced", [(False, False), (True, False), (False, True)])
def test_ring_data_waits_never_lose_a_wakeup_across_processes(multi, unsliced):
    # unsliced: both sleepers wait for their wake-up alone, with no periodic
    # re-check to hide a lost one (what an idle pool worker does).
    ping = native.Ring.create(4096, multi_producer=multi, multi_consumer=multi)
    pong = native.Ring.create(4096, multi_producer=multi, multi_consumer=multi)
    if unsliced:
        ping.set_wait_slice(0)              # the child's handle, after the fork
        pong.set_wait_slice(0)
    p = mp.get_context("fork").Process(target=_ring_echo, args=(ping, pong, WAKE_ROUNDS, 8))
    p.start()
    rnd = random.Random(9)
    buf = bytearray(64)
    ptr = ffi.from_buffer(buf)
    try:
        for i in range(WAKE_ROUNDS):
            _pause(rnd)
            assert ping.put(U64.pack(native.now_ns()) + U64.pack(i), 16, 0, TEN_S) == OK
            rc = pong.get_record(ptr, 64, TEN_S)
            assert rc >= 0 and U64.unpack_from(buf, 8)[0] == i, rc
            assert _late(buf, 0) < LOST_NS, "a lost wake-up"
    finally:
        p.join(60)
    assert p.exitcode == 0, "the child woke LOST_NS late: a lost wake-up" \
        if p.exitcode == 7 else p.exitcode
    ping.close()
    pong.close()


def _ring_taker(ring, blob, rounds, seed):
    rnd = random.Random(seed)
    buf = bytearray(64)
    ptr = ffi.from_buffer(buf)
    for i in range(rounds):
        _pause(rnd)
        _stamp(blob.buffer, PING_AT)                # just before the head store frees room
        rc = ring.get_record(ptr, 64, TEN_S)
        assert rc >= 0 and U64.unpack_from(buf, 0)[0] == i, rc
    os._exit(0)


@pytest.mark.parametrize("multi", [False, True])
def test_ring_space_waits_never_lose_a_wakeup_across_processes(multi):
    # One 56-byte record fills a 64-byte ring: every put after the first
    # sleeps for space until the consumer takes the record before it.
    ring = native.Ring.create(64, multi_producer=multi, multi_consumer=multi)
    blob = native.Blob.create(4096)
    _stamp(blob.buffer, PING_AT)
    p = mp.get_context("fork").Process(target=_ring_taker, args=(ring, blob, WAKE_ROUNDS, 10))
    p.start()
    worst = 0
    try:
        for i in range(WAKE_ROUNDS):
            assert ring.put(U64.pack(i) + bytes(48), 56, 0, TEN_S) == OK
            if i:
                worst = max(worst, _late(blob.buffer, PING_AT))
    finally:
        p.join(60)
    assert p.exitcode == 0
    assert worst < LOST_NS, f"woke {worst / 1e6:.0f} ms after the room was made: a lost wake-up"
    ring.close()
    blob.close_fd()


def _block_in_get(ring_fd_holder, out):
    ring = ring_fd_holder
    rc = ring.wait_data(-1)
    out.put(rc)


def test_mark_closed_wakes_a_consumer_blocked_in_another_process():
    ring = native.Ring.create(4096)
    out = shmproc.Queue()
    p = mp.get_context("fork").Process(target=_block_in_get, args=(ring, out))
    p.start()
    import time
    time.sleep(0.2)                                   # let it fall asleep on the futex
    ring.mark_closed()
    assert out.get(timeout=30) == native.ESTATE       # woke, saw the ring closed, no hang
    p.join(30)
    ring.close()
    out.close()


class _Burst(shmproc.Process):
    """A short Process exercising control blocks, arenas and numpy results."""

    def __init__(self, i):
        self.i = i
        self.config.num_loops = 50 + i
        self.config.timeouts.loop = 5.0

    def __loop__(self):
        pass

    def __result__(self):
        import numpy as np
        return np.full(1000 + self.i * 300_000, self.i, dtype=np.int32)


def test_many_processes_at_once():
    procs = [_Burst(i) for i in range(max(4, int(12 * SCALE)))]
    for p in procs:
        p.start()
    for p in procs:
        arr = p.result
        assert p.current_lap == 50 + p.i
        assert arr.size == 1000 + p.i * 300_000 and (arr[::997] == p.i).all()
