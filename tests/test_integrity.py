"""Integrity of the rings under faults: a side's lock holder killed at the
worst instruction, a lock holder stopped while someone waits (Ctrl-C must
still work), segments from another ABI version or another user.

The deaths are placed exactly with the test build's fault points
(tests/faults.py): the child stops itself with SIGSTOP at the point, and
the test SIGKILLs it there.
"""
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import faults
import shmproc
from shmproc import native
from shmproc.errors import CorruptSharedMemoryError
from shmproc.native import EEMPTY, EFULL, OK, ffi, lib

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
    fffi, flib = faults.load()
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
    fffi, flib = faults.load()
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
