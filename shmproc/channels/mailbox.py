"""A running Process's two-way messages: tell / listen.

    parent                                           worker (any hook)
    ------                                           -----------------
    p.tell(obj) ──► to_worker ring ───────────────►  self.listen(timeout)
    p.listen(timeout) ◄─ inbox ◄─ to_parent ring ◄─  Outbox ◄─ self.tell(obj)
                  (batches)                   (coalesced: outbox.py)

Two shmproc Queues per run, one each way (unbounded: they grow).  A
message is pickled once, when it is told; numpy arrays of 256 KiB or more
travel out-of-band and arrive as copy-on-write views, with no copy.
Order is kept per direction.  `tell` never waits for the reader: the
queues grow while the other side does not read and give the memory back
once drained.

Worker -> parent is the streaming direction: the worker's tells are
coalesced (outbox.py: flushed in batches, at the end of each lap, when
it listens, at the end of the run, and at most FLUSH_AFTER_S after a
tell), and the parent takes them a batch at a time into `inbox`.
Parent -> worker is one record per tell and one get per listen, so that
`unread` (the records still in the ring) counts exactly what the worker
never read.

The mailbox outlives the worker: what the worker sent before it ended
(normally, stopped, failed) can still be listened for; after a crash or
kill(), what it had flushed (outbox.py: all but at most the last
FLUSH_AFTER_S of tells); what the parent sent that the worker never read
is counted (`unread`).  A later life of the same run (lives > 1) gets the
same mailbox: messages its failed predecessor did not read go to it.

A large message (out-of-band) needs its sender alive until it is opened:
a worker that ends with large messages unread waits for them at exit
(wire.blobs.EXIT_FLUSH_TIMEOUT), and one that crashed or was killed takes
them with it (the parent's listen skips them; see Queue.lost_items).

Start cost.  Creating the two queues costs ~0.7 ms (their rings' pages
and directories), a sixth of a Process's start -> result.  A run takes a
mailbox made beforehand (`take`), and the parent makes the next one just
after forking the worker (`replenish`), while the worker starts up: a
process that starts Processes one after another never waits for one.
The spare is never used by anyone before (a fork child drops its
parent's), so no state carries between runs.
"""
from __future__ import annotations

import collections
import pickle
import queue as _stdlib_queue
import time
from typing import Any, Callable

from .. import _native as native
from ..common import lifecycle
from ..common.errors import MessageBacklogError
from .queue import Queue
from .records import corrupt_pickle

_loads = pickle.loads


class _Failed:
    """A message of a batch that could not be unpickled: its listen() raises."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

__all__ = ["Mailbox", "SLICE_S", "take", "replenish", "trim"]

#: How often a waiting listen looks whether the other side has ended.
SLICE_S = 0.02

#: Ring size each way; a message bigger than a quarter of it goes out-of-band.
RING_BYTES = 256 * 1024

#: Messages the parent's listen takes from the ring at a time.
INBOX_BATCH = 1024

_NUMBERS = (int, float)


class Mailbox:
    """The two queues of one run; pickled into the worker with the run."""

    __slots__ = ("to_worker", "to_parent", "inbox", "held")
    to_worker: Queue[Any]
    to_parent: Queue[Any]
    inbox: collections.deque[Any]
    held: collections.deque[Any]

    def __init__(self, to_worker: Queue[Any] | None = None,
                 to_parent: Queue[Any] | None = None) -> None:
        if to_worker is None:                     # the parent, making a run's mailbox
            to_worker, to_parent = _queue(), _queue()
            # A large message the worker never opened must not hold up the
            # parent's exit: the worker goes with the parent anyway.
            to_worker.cancel_join_thread()
        self.to_worker = to_worker
        self.to_parent = to_parent                # type: ignore[assignment]  # given with to_worker
        self.inbox = collections.deque()          # the parent's: taken from to_parent, not yet listened
        self.held = collections.deque()           # after a message that failed to unpickle

    # -- the parent: what the worker told ------------------------------------------------
    def receive(self, timeout: float | None, ended: Callable[[], bool]) -> Any:
        """The parent's listen: the next message from the worker, or None
        once `timeout` seconds pass (None: until one comes or `ended()`)."""
        inbox = self.inbox
        if inbox and (timeout is None or (type(timeout) in _NUMBERS and timeout >= 0)):
            return inbox.popleft()                # the hot path of a stream
        tmo = native.timeout_ns(timeout)          # TypeError / ValueError for bad ones
        if inbox or self._release():
            return inbox.popleft()
        deadline = None if tmo < 0 else time.monotonic() + tmo / 1e9
        q = self.to_parent
        while True:
            if self._take(q, False, None):
                return inbox.popleft()
            if ended():
                self._take(q, False, None)        # what came just before the end
                return inbox.popleft() if inbox else None
            step = SLICE_S
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return None
            if self._take(q, True, step):
                return inbox.popleft()

    async def areceive(self, timeout: float | None, ended: Callable[[], bool]) -> Any:
        """receive() for an asyncio loop: looks without blocking, then sleeps
        on the loop (0.2 ms, doubling to 5 ms) until a message comes."""
        import asyncio
        inbox = self.inbox
        tmo = native.timeout_ns(timeout)
        deadline = None if tmo < 0 else time.monotonic() + tmo / 1e9
        pause = 0.0002
        q = self.to_parent
        while True:
            if inbox or self._release() or self._take(q, False, None):
                return inbox.popleft()
            if ended():
                self._take(q, False, None)        # what came just before the end
                return inbox.popleft() if inbox else None
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            await asyncio.sleep(pause if deadline is None else min(pause, deadline - now))
            pause = min(2 * pause, 0.005)

    def _take(self, q: Queue[Any], block: bool, timeout: float | None) -> bool:
        """Move what is in the ring (up to INBOX_BATCH records) into the inbox."""
        try:
            records = q.get_many(block, timeout, max_items=INBOX_BATCH)
        except _stdlib_queue.Empty:
            return False
        for record in records:
            self._unpack(record)
        return self._release()

    def _unpack(self, record: Any) -> None:
        """One record of the worker's (outbox.py): a batch (a list whose
        1-tuples are pickled messages) or one message, in a 1-tuple."""
        into = self.held if self.held else self.inbox
        if type(record) is tuple:
            into.append(record[0])
            return
        if tuple not in map(type, record):
            into.extend(record)                       # the stream: bytes, str, numbers
            return
        for item in record:
            if type(item) is tuple:
                data = item[0]
                try:
                    item = _loads(data)
                except Exception as exc:              # noqa: BLE001 - raised by its listen()
                    item = _Failed(corrupt_pickle(exc, len(data)))
                    into = self.held
            into.append(item)

    def _release(self) -> bool:
        """Move held messages to the inbox up to the next failed one; raise
        that one's error if it is first.  True if the inbox has messages."""
        held = self.held
        if held and type(held[0]) is _Failed:
            raise held.popleft().exc
        inbox = self.inbox
        while held and type(held[0]) is not _Failed:
            inbox.append(held.popleft())
        return bool(inbox)

    # -- either side -------------------------------------------------------------------
    @staticmethod
    def tell(q: Queue[Any], obj: object, who: str) -> None:
        try:
            q.put(obj, block=False)
        except _stdlib_queue.Full:
            raise MessageBacklogError(
                f"cannot tell the {who}: it has left {q.qsize()} messages unread and the "
                f"queue cannot grow further; have it listen() more often") from None

    @staticmethod
    def listen(q: Queue[Any], timeout: float | None, ended: Callable[[], bool]) -> Any:
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
    async def alisten(q: Queue[Any], timeout: float | None, ended: Callable[[], bool]) -> Any:
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

    def close(self) -> None:
        for q in (self.to_worker, self.to_parent):
            q.close()


# -- a mailbox made ahead of its run ------------------------------------------------------
_spare: list[Mailbox] = []


def take() -> Mailbox:
    """A fresh mailbox for a run: the spare made after the last start, or a new one."""
    try:
        return _spare.pop()
    except IndexError:
        return Mailbox()


def replenish() -> None:
    """Make the next run's mailbox now (the parent just forked a worker)."""
    if not _spare:
        try:
            _spare.append(Mailbox())
        except Exception:                   # noqa: BLE001 - the next start() reports it
            pass


def trim() -> None:
    """Close the spare mailbox (tests, and memory-conscious callers)."""
    while _spare:
        try:
            box = _spare.pop()
        except IndexError:
            break
        box.close()


def _drop_spares() -> None:
    global _spare                           # a fork child: they are its parent's
    lifecycle.leave_for_later(_spare)
    _spare = []


lifecycle.at_fork(after_in_child=_drop_spares)


_WAIT = object()       # _look: nothing yet, but more may come


def _look(q: Queue[Any], ended: Callable[[], bool]) -> Any:
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


def _queue() -> Queue[Any]:
    # The locked sides: a queue grows only with them (a single side's room is
    # flow control), and they survive a process killed mid-operation.
    return Queue(capacity=RING_BYTES)
