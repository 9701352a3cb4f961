"""Integrity of the rings under faults: a side's lock holder killed at the
worst instruction, a lock holder stopped while someone waits (Ctrl-C must
still work), segments from another ABI version or another user.

The deaths are placed exactly with the test build's fault points
(tests/fault_build.py): the child stops itself with SIGSTOP at the point, and
the test SIGKILLs it there.
"""
import multiprocessing as mp
import os
import pickle
import queue
import signal
import time

import pytest

import fault_build
import shmproc
from shmproc import _native as native
from shmproc.common.errors import CorruptSharedMemoryError
from shmproc._native import EEMPTY, EFULL, OK
from shmproc._shmp_cffi import ffi, lib

pytestmark = pytest.mark.asan

FORK = mp.get_context("fork")


def get(ring, cap=4096, timeout=0):
    buf = bytearray(cap)
    out = ffi.new("uint32_t[2]")
    rc = ring.get_into(ffi.from_buffer(buf), cap, timeout, out, out + 1)
    return (rc, bytes(buf[:out[0]])) if rc == OK else (rc, None)


def _state(pid) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0]
    except FileNotFoundError:
        return "gone"


def _wait_stopped(proc, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = _state(proc.pid)
        if state in "Tt":
            return
        if state in ("Z", "X", "gone"):
            raise AssertionError(f"the child ended (exit code {proc.exitcode}) before its fault point")
        time.sleep(0.01)
    raise AssertionError("the child never reached its fault point")


def _child_at_fault(fd, point, op):
    fffi, flib = fault_build.load()
    h = fffi.new("shmp_ring **")
    if flib.shmp_ring_attach(os.dup(fd), h) != 0:
        os._exit(2)
    flib.shmp_fault_arm(point)
    if op == "get":
        buf = fffi.new("char[]", 4096)
        out = fffi.new("uint32_t[2]")
        flib.shmp_ring_get(h[0], buf, 4096, -1, out, out + 1)
    elif op == "get_many":
        buf = fffi.new("char[]", 4096)
        lens, tags, n = fffi.new("uint32_t[8]"), fffi.new("uint32_t[8]"), fffi.new("uint32_t *")
        flib.shmp_ring_get_many(h[0], buf, 4096, 8, -1, lens, tags, n)
    elif op == "put":
        flib.shmp_ring_put(h[0], b"late", 4, 0, -1)
    elif op == "put_many":
        lens = fffi.new("uint32_t[2]", [4, 4])
        done = fffi.new("uint32_t *")
        flib.shmp_ring_put_many(h[0], b"lat1lat2", lens, fffi.NULL, 2, -1, done)
    os._exit(3)                         # not reached: the fault point stops this process


def kill_at(ring, point, op):
    """Run `op` on `ring` in a child and SIGKILL it at fault `point`."""
    fffi, flib = fault_build.load()
    code = getattr(flib, point)
    p = FORK.Process(target=_child_at_fault, args=(ring.fd, code, op))
    p.start()
    try:
        _wait_stopped(p)
    finally:
        p.kill()
        p.join(10)
    assert p.exitcode == -signal.SIGKILL


# ---- 9a: a death between the index store and the count store -----------------

@pytest.mark.parametrize("op", ["get", "get_many"])
def test_consumer_killed_between_head_and_count_leaves_room(op):
    ring = native.Ring.create(4096, multi_producer=True, multi_consumer=True, max_items=1)
    try:
        assert ring.put(b"only", 4, 0, 0) == OK
        assert ring.put(b"more", 4, 0, 0) == EFULL          # maxsize 1 holds
        kill_at(ring, "SHMP_FAULT_CONSUMER_PUBLISHED", op)
        assert ring.used_bytes() == 0                       # the item was taken: head moved
        # No consumer comes to repair anything: the producer alone must
        # find the room (the dead consumer's count is replayed).
        assert ring.put(b"next", 4, 0, 2_000_000_000) == OK
        assert ring.count() == 1
        assert ring.put(b"more", 4, 0, 0) == EFULL
        assert get(ring) == (OK, b"next")
        assert ring.count() == 0
        assert ring.put(b"last", 4, 0, 0) == OK
    finally:
        ring.close()


def test_queue_maxsize_one_survives_a_consumer_killed_mid_get():
    q = shmproc.Queue(maxsize=1)
    try:
        q.put(b"first")
        kill_at(q._ring, "SHMP_FAULT_CONSUMER_PUBLISHED", "get")
        q.put(b"second", timeout=5)                         # raised queue.Full before the fix
        assert q.qsize() == 1
        assert q.get(timeout=5) == b"second"
    finally:
        q.close()


def test_producer_already_waiting_for_room_notices_the_dead_consumer():
    import threading
    q = shmproc.Queue(maxsize=1)
    outcome = []

    def produce():
        try:
            q.put(b"second", timeout=8)
            outcome.append("put")
        except queue.Full:
            outcome.append("full")

    try:
        q.put(b"first")
        th = threading.Thread(target=produce)
        th.start()
        time.sleep(0.3)                         # asleep, waiting for room
        killed = time.monotonic()
        kill_at(q._ring, "SHMP_FAULT_CONSUMER_PUBLISHED", "get")
        th.join(15)
        # Nobody wakes it and no consumer comes: it must find the dead
        # consumer's count itself, well before its own timeout.
        assert outcome == ["put"] and time.monotonic() - killed < 4.0
        assert q.get(timeout=5) == b"second"
    finally:
        q.close()


@pytest.mark.parametrize("op", ["put", "put_many"])
def test_producer_killed_between_tail_and_count_keeps_max_items(op):
    ring = native.Ring.create(4096, multi_producer=True, multi_consumer=True, max_items=1)
    try:
        kill_at(ring, "SHMP_FAULT_PRODUCER_PUBLISHED", op)
        # The dead producer's record is published; the next producer to
        # take the lock completes its count, so the bound still holds.
        assert ring.put(b"over", 4, 0, 0) == EFULL
        assert ring.count() == 1
        rc, data = get(ring)
        assert rc == OK and data.startswith(b"lat")
        assert ring.count() == 0
        assert get(ring)[0] == EEMPTY
        assert ring.put(b"next", 4, 0, 0) == OK
        assert ring.count() == 1
    finally:
        ring.close()


@pytest.mark.parametrize("multi", [True, False])
def test_producer_killed_before_its_wake_up_strands_no_sleeping_consumer(multi):
    import threading
    ring = native.Ring.create(4096, multi_producer=multi, multi_consumer=multi)
    result = []

    def consume():
        t0 = time.monotonic()
        result.append((get(ring, timeout=6_000_000_000), time.monotonic() - t0))

    try:
        th = threading.Thread(target=consume)
        th.start()
        time.sleep(0.3)                         # asleep on the futex by now
        killed = time.monotonic()
        kill_at(ring, "SHMP_FAULT_PRODUCER_PUBLISHED", "put")   # published, no wake-up
        th.join(10)
        (rc, data), _ = result[0]
        assert (rc, data) == (OK, b"late")
        # Before: asleep until its own timeout (6 s), the record in plain view.
        assert time.monotonic() - killed < 3.0
    finally:
        ring.close()


# ---- 9d: Ctrl-C while another process sits on the side lock -------------------

class StoppedLockHolder:
    """A child process stopped while it holds one of `ring`'s side locks: at
    the fault point after its index store, before its unlock (a consumer
    has then taken the first record, a producer has put b"late")."""

    def __init__(self, ring, side="consumer"):
        fffi, flib = fault_build.load()
        point, op = (("SHMP_FAULT_CONSUMER_PUBLISHED", "get") if side == "consumer"
                     else ("SHMP_FAULT_PRODUCER_PUBLISHED", "put"))
        self.proc = FORK.Process(target=_child_at_fault,
                                 args=(ring.fd, getattr(flib, point), op))

    def __enter__(self):
        self.proc.start()
        try:
            _wait_stopped(self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.join(10)


def test_lock_wait_returns_eintr_between_slices():
    ring = native.Ring.create(4096, multi_producer=True, multi_consumer=True)
    try:
        assert ring.put(b"one", 3, 0, 0) == OK
        assert ring.put(b"two", 3, 0, 0) == OK
        with StoppedLockHolder(ring):
            t0 = time.monotonic()
            rc, _ = get(ring, timeout=3_000_000_000)
            waited = time.monotonic() - t0
        # Before: the lock wait ran to its deadline, deaf to signals (ETIMEDOUT).
        assert rc == native.EINTR and waited < 2.0
        # The holder died after taking "one", before its unlock: the next
        # consumer recovers the lock and takes "two".
        assert get(ring, timeout=1_000_000_000) == (OK, b"two")
    finally:
        ring.close()


def _blocked_call(q, side, conn):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import threading
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    try:
        if side == "consumer":
            q.get()
        else:
            q.put(b"blocked")
        conn.send(("returned", 0.0))
    except KeyboardInterrupt:
        conn.send(("interrupted", time.monotonic() - t0))
    os._exit(0)


@pytest.mark.parametrize("side", ["consumer", "producer"])
def test_ctrl_c_interrupts_a_call_blocked_on_a_stopped_lock_holder(side):
    q = shmproc.Queue()
    try:
        q.put(b"one")
        q.put(b"two")
        with StoppedLockHolder(q._ring, side):
            mine, theirs = FORK.Pipe(duplex=False)
            victim = FORK.Process(target=_blocked_call, args=(q, side, theirs))
            victim.start()
            try:
                answered = mine.poll(10)
                outcome = mine.recv() if answered else ("still blocked", None)
            finally:
                victim.kill()
                victim.join(10)
                mine.close()
                theirs.close()
        assert outcome[0] == "interrupted", outcome
        assert outcome[1] < 5.0
    finally:
        q.close()


def test_timeout_bounds_a_get_blocked_on_a_stopped_lock_holder():
    q = shmproc.Queue()
    try:
        q.put(b"one")
        q.put(b"two")
        with StoppedLockHolder(q._ring):
            t0 = time.monotonic()
            with pytest.raises(queue.Empty):
                q.get(timeout=0.5)
            waited = time.monotonic() - t0
        assert 0.4 < waited < 5.0
    finally:
        q.close()


# ---- 10: segments from another ABI version or another user ----------------------

PAGE = 4096


def test_segment_of_another_abi_version_names_both_versions():
    blob = native.Blob.create(PAGE)
    ring = native.Ring.create(4096)
    try:
        for fd in (blob.fd, ring.fd):
            with open(f"/proc/self/fd/{fd}", "r+b", buffering=0) as f:
                f.seek(8)
                f.write((1).to_bytes(4, "little"))          # abi_version: an older shmproc
        with pytest.raises(shmproc.SharedMemoryVersionError,
                           match="ABI version 1, this shmproc speaks version 4") as info:
            native.Blob.attach(blob.fd)
        assert (info.value.found, info.value.expected) == (1, lib.shmp_abi_version())
        assert isinstance(info.value, CorruptSharedMemoryError)
        again = pickle.loads(pickle.dumps(info.value))          # errors travel between processes
        assert (again.found, again.expected, str(again)) == (1, 4, str(info.value))
        with pytest.raises(shmproc.SharedMemoryVersionError, match="version 1"):
            native.Ring.attach(os.dup(ring.fd))
    finally:
        blob.close_fd()
        ring.close()


def _make_segment_as(uid, conn):
    from multiprocessing.reduction import send_handle
    os.setgid(uid)
    os.setuid(uid)
    blob = native.Blob.create(PAGE)
    send_handle(conn, blob.fd, os.getppid())
    conn.poll(20)                           # keep the segment until the parent has it
    os._exit(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_segment_of_another_user_is_refused():
    from multiprocessing.reduction import recv_handle
    mine, theirs = FORK.Pipe()
    p = FORK.Process(target=_make_segment_as, args=(65534, theirs))
    p.start()
    try:
        assert mine.poll(20), "the other user's process sent no descriptor"
        fd = recv_handle(mine)
        mine.send("done")
        try:
            with pytest.raises(shmproc.ForeignSharedMemoryError, match="belongs to user 65534") as info:
                native.Blob.attach(fd)
            assert info.value.owner_uid == 65534
        finally:
            os.close(fd)
    finally:
        p.join(20)
        if p.exitcode is None:
            p.kill()
            p.join(10)
        mine.close()
        theirs.close()


def test_control_block_count_is_bounded_by_the_callers_count():
    ctl = native.ControlArray.create(2)
    try:
        out = ffi.new("shmp_control **")
        with open(f"/proc/self/fd/{ctl.fd}", "r+b", buffering=0) as f:
            f.seek(PAGE)                                    # the shared count
            f.write((1000).to_bytes(4, "little"))
            # The shared count no longer matches ours: an error, and never a
            # block pointer beyond the two blocks that exist.
            assert lib.shmp_ctl_get(ctl._payload, 2, 1, out) == lib.SHMP_ECORRUPT
            assert lib.shmp_ctl_get(ctl._payload, 2, 500, out) == lib.SHMP_EINVAL
            with pytest.raises(CorruptSharedMemoryError):
                native.ControlArray.attach(os.dup(ctl.fd))
            f.seek(PAGE)
            f.write((2).to_bytes(4, "little"))
        other = native.ControlArray.attach(os.dup(ctl.fd))
        assert other.count == 2
        other.close()
    finally:
        ctl.close()
