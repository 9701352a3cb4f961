"""A running Process's two-way messages: tell / listen.

    parent                                           worker (any hook)
    ------                                           -----------------
    p.tell(obj) ──► to_worker ring ───────────────►  self.listen(timeout)
    p.listen(timeout) ◄── to_parent ring ◄─────────  self.tell(obj)

Two shmproc Queues per run, one each way (unbounded: they grow).  A message is pickled once; numpy arrays of
256 KiB or more travel out-of-band and arrive as copy-on-write views,
with no copy.  Order is kept per direction.  `tell` never waits for the
reader: the queues are unbounded (they grow while the other side does not
read and give the memory back once drained).

The mailbox outlives the worker: what the worker sent before it ended
(normally, stopped, failed, killed or crashed) can still be listened for,
and what the parent sent that the worker never read is counted
(`unread`).  A later life of the same run (lives > 1) gets the same
mailbox: messages its failed predecessor did not read go to it.

A large message (out-of-band) needs its sender alive until it is opened:
a worker that ends with large messages unread waits for them at exit
(wire.blobs.EXIT_FLUSH_TIMEOUT), and one that crashed or was killed takes
them with it (the parent's listen skips them; see Queue.lost_items).
"""
from __future__ import annotations

import queue as _stdlib_queue
import time

from .. import _native as native
from ..common.errors import MessageBacklogError
from .queue import Queue

__all__ = ["Mailbox", "SLICE_S"]

#: How often a waiting listen looks whether the other side has ended.
SLICE_S = 0.02

#: Ring size each way; a message bigger than a quarter of it goes out-of-band.
RING_BYTES = 256 * 1024


class Mailbox:
    """The two queues of one run; pickled into the worker with the run."""

    __slots__ = ("to_worker", "to_parent")

    def __init__(self, to_worker=None, to_parent=None):
        if to_worker is None:                     # the parent, making a run's mailbox
            to_worker, to_parent = _queue(), _queue()
            # A large message the worker never opened must not hold up the
            # parent's exit: the worker goes with the parent anyway.
            to_worker.cancel_join_thread()
        self.to_worker = to_worker
        self.to_parent = to_parent

    def __reduce__(self):
        return Mailbox, (self.to_worker, self.to_parent)

    # -- either side -------------------------------------------------------------------
    @staticmethod
    def tell(q, obj, who: str):
        try:
            q.put(obj, block=False)
        except _stdlib_queue.Full:
            raise MessageBacklogError(
                f"cannot tell the {who}: it has left {q.qsize()} messages unread and the "
                f"queue cannot grow further; have it listen() more often") from None

    @staticmethod
    def listen(q, timeout, ended):
        """The next message on `q`, or None once `timeout` seconds pass
        (None: wait until a message comes or `ended()` says none will)."""
        tmo = native.timeout_ns(timeout)          # TypeError / ValueError for bad ones
        deadline = None if tmo < 0 else time.monotonic() + tmo / 1e9
        while True:
            got = _look(q, ended)
            if got is not _WAIT:
                return got
            step = SLICE_S
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return None
            try:
                return q.get(timeout=step)
            except _stdlib_queue.Empty:
                pass

    @staticmethod
    async def alisten(q, timeout, ended):
        """listen() for an asyncio loop: looks without blocking, then sleeps
        on the loop (0.2 ms, doubling to 5 ms) until a message comes."""
        import asyncio
        tmo = native.timeout_ns(timeout)
        deadline = None if tmo < 0 else time.monotonic() + tmo / 1e9
        pause = 0.0002
        while True:
            got = _look(q, ended)
            if got is not _WAIT:
                return got
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            await asyncio.sleep(pause if deadline is None else min(pause, deadline - now))
            pause = min(2 * pause, 0.005)

    def close(self):
        for q in (self.to_worker, self.to_parent):
            q.close()


_WAIT = object()       # _look: nothing yet, but more may come


def _look(q, ended):
    """Without waiting: the next message; None if none will come any more
    (`ended()`, and nothing came just before the end); else _WAIT.  The end
    is asked only when no message is waiting."""
    try:
        return q.get(block=False)
    except _stdlib_queue.Empty:
        pass
    if not ended():
        return _WAIT
    try:                                    # what came just before the end
        return q.get(block=False)
    except _stdlib_queue.Empty:
        return None


def _queue():
    # The locked sides: a queue grows only with them (a single side's room is
    # flow control), and they survive a process killed mid-operation.
    return Queue(capacity=RING_BYTES)
