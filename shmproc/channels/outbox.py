"""A worker's messages to its parent, coalesced: `self.tell` in a hook.

    hook: self.tell(obj) ─ encode (pickle now) ─► pending (deque, this process)
                                                      │ flush: one put_many
    flush points: BATCH_ITEMS / BATCH_BYTES pending,  ▼
    end of each lap, self.listen(), end of the run,  to_parent ring ──► p.listen()
    a fork, and the flusher thread (FLUSH_AFTER_S)

Why coalesce.  A put per message costs a robust lock, a ring put and a
few Python calls (~3 µs); a stream of small messages spends nearly all
its time there.  Appending the encoded record to a deque costs ~0.1 µs,
and one put_many of a few hundred records costs about what one put did.

The wire: one ring record per flush, the pickle of a list.  A message of
an immutable built-in type (bytes, str, int, float, bool, None) goes in
the list as itself; any other is pickled when told (so a later change to
it does not travel, and an unpicklable one fails in tell) and goes in as
the 1-tuple (its pickle,): the list never holds a message's own tuple.  A
message with out-of-band buffers (numpy arrays of 256 KiB or more), or
larger than a quarter of the ring, goes after what is pending as its own
record, the pickle of the 1-tuple (message,).  So the parent reads a list
(a batch) or a tuple (one message): see mailbox.Mailbox._unpack.  Records
stay in the ring (never out-of-band, which would need the worker alive to
be read): a batch is at most BATCH_ITEMS messages and about BATCH_BYTES.

What it costs: a message told but not yet flushed lives only in the
worker.  Things that don't work:
* flushing after every hook only: a hook that tells, then computes for
  an hour, would hold the message for an hour;
* a signal timer (setitimer) that flushes in a handler: the handler runs
  between bytecodes only, i.e. not while the hook sleeps in C, and it
  could interrupt a flush the main thread is doing;
* a flusher thread that swaps the pending list: the main thread may have
  loaded the old list just before the swap and append to it after the
  flusher read it (lost message).
Solution: records go into a deque, which only the telling threads append
to (deque.append is atomic); whoever flushes takes the `lock`, pops from
the left exactly the records it counted, and puts them in order.  A
flusher thread, started on the first tell, looks every FLUSH_AFTER_S / 2
and flushes when records were pending at two looks in a row with no
flush in between: a record waits at most FLUSH_AFTER_S, plus the time the
thread waits for the GIL (the interpreter's switch interval, 5 ms, while
the hook runs Python code; unbounded while the hook sits in C code that
holds the GIL -- then the hook's end flushes it).  After PARK_AFTER empty
looks the thread sleeps until the next tell, so a quiet worker pays
nothing.

So a crash (a segfault, os._exit, SIGKILL, the guard ending a hook stuck
past its timeout) loses at most the messages told in the last
FLUSH_AFTER_S (+ switch interval) of the hook it happened in: everything
told before the end of the previous lap, before the last self.listen(),
or longer ago than that bound has reached the ring, and from there
survives the worker.  A normal end, stop() or an error flushes all.

A section's timeout (SIGALRM, Runner.on_alarm) must not interrupt a flush
half done (records popped, not yet put): a flush in a hook runs with the
runner's `armed` off, so the alarm raises nothing then, and the guard
signals again, backing off (watchdog.py).  The flusher thread never gets
signals (CPython runs handlers in the main thread).

A process forked inside a hook inherits no pending record (the fork hook
flushes first) and has no flusher thread: its tells are put at once.
"""
from __future__ import annotations

import collections
import pickle
import queue as _stdlib_queue
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .queue import Queue

from ..common import lifecycle
from ..common.errors import MessageBacklogError
from ..wire import pickling as wire
from .records import TAG_PICKLE

__all__ = ["Outbox", "FLUSH_AFTER_S", "BATCH_ITEMS", "BATCH_BYTES"]

#: A told message reaches the ring within this long (+ the switch interval),
#: however long the hook that told it goes on.
FLUSH_AFTER_S = 0.01
#: Flush once this many messages are pending...
BATCH_ITEMS = 512
#: ... or this many bytes (of bytes, str and pickled messages; a str counts
#: its characters).  A message larger than this is a batch of its own.
BATCH_BYTES = 16 * 1024
#: Empty looks (PARK_AFTER x FLUSH_AFTER_S / 2 = 0.5 s) before the flusher
#: thread sleeps until the next tell.
PARK_AFTER = 100

#: Sent as themselves: immutable, so nothing can change them after tell.
_AS_IS = frozenset({bytes, str, int, float, bool, type(None)})
_SIZED = (bytes, str)
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_dumps = wire.dumps
_pickle = pickle.dumps


class Outbox:
    """The worker's side of its to_parent queue (one per worker process)."""

    __slots__ = ("q", "runner", "pending", "lock", "batch", "nbytes", "flushes", "parked",
                 "wake", "thread", "closed", "error", "inband_max", "__weakref__")
    pending: collections.deque[Any]
    thread: threading.Thread | None
    error: BaseException | None

    def __init__(self, q: Queue[Any], runner: Any) -> None:
        self.q = q                      # the run's to_parent Queue
        self.runner = runner            # its `armed` is off while a hook's tell flushes
        self.pending = collections.deque()  # messages as themselves, or (pickle,)
        self.lock = threading.Lock()    # one flush at a time, in order
        self.batch = BATCH_ITEMS        # 1 in a forked child: no flusher there
        self.nbytes = 0                 # bytes pending (approximately: threads race on it)
        self.flushes = 0                # flushes done: the flusher's "nothing moved" test
        self.parked = True              # the flusher sleeps (or was never started)
        self.wake: threading.Event | None = None     # made with the flusher thread
        self.thread = None
        self.closed = False
        self.error = None               # a flush by the flusher thread failed: raised by tell
        self.inband_max = q._inband_max
        global _current
        _current = weakref.ref(self)

    # -- the hot path ----------------------------------------------------------------
    def tell(self, obj: Any) -> None:
        """Queue `obj` for the next flush (pickled now unless immutable)."""
        t = type(obj)
        if t in _AS_IS:
            record = obj
            if t in _SIZED:
                n = len(obj)
                if n > 64 and self._sized(obj, n):
                    return
        else:
            data, bufs = _dumps(obj)
            if bufs:
                return self._put_one(obj)
            n = len(data)
            record = (data,)
            if n > 64 and self._sized(record, n):
                return
        pending = self.pending
        pending.append(record)
        if self.parked:
            self._unpark()
        if len(pending) >= self.batch:
            self.flush()

    def _sized(self, record: Any, n: int) -> bool:
        """Count a record's bytes; a large one is put now, on its own (True)."""
        if n <= BATCH_BYTES:
            self.nbytes += n
            if self.nbytes >= BATCH_BYTES:
                self.pending.append(record)
                self.flush()
                return True
            return False
        self.flush()                    # what is pending goes first
        with self.lock:
            self._put(_pickle([record], _PROTOCOL), None)
        return True

    def _put_one(self, obj: object) -> None:
        """A message with out-of-band buffers: after what is pending, at once."""
        data, bufs = _dumps((obj,))
        self.flush()
        with self.lock:
            self._put(data, bufs)

    # -- flushing ----------------------------------------------------------------------
    def flush(self) -> None:
        """Put what is pending, from the main thread inside a hook (or anywhere)."""
        runner = self.runner
        armed = runner.armed
        runner.armed = False            # a section's alarm must not cut a flush in half
        try:
            with self.lock:
                self._flush_locked()
        finally:
            runner.armed = armed
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def flush_between_hooks(self) -> None:
        """Put what is pending; the runner calls it where no alarm can raise."""
        with self.lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        pending = self.pending
        n = len(pending)
        if not n:
            return
        popleft = pending.popleft
        items = [popleft() for _ in range(n)]   # only appends happen meanwhile, on the right
        self.nbytes = 0
        self.flushes += 1
        self._put_batch(items)

    def _put_batch(self, items: list[Any]) -> None:
        record = _pickle(items, _PROTOCOL)
        if len(record) > self.inband_max and len(items) > 1:
            half = len(items) // 2      # keep batches in the ring (never out-of-band)
            self._put_batch(items[:half])
            self._put_batch(items[half:])
            return
        try:
            self._put(record, None)
        except MessageBacklogError:
            self.pending.extendleft(reversed(items))    # kept, in order, for the next flush
            raise

    def _put(self, data: bytes, bufs: Any) -> None:
        try:
            self.q._put_encoded(data, TAG_PICKLE, bufs)
        except _stdlib_queue.Full:
            raise MessageBacklogError(
                f"cannot tell the parent: it has left {self.q.qsize()} batches of messages "
                f"unread and the queue cannot grow further; have it listen() more "
                f"often") from None

    # -- the flusher thread ----------------------------------------------------------------
    def _unpark(self) -> None:
        self.parked = False
        if self.thread is None:
            if self.batch == 1:
                return                  # a forked child: every tell flushes
            self.wake = threading.Event()
            self.thread = threading.Thread(target=self._flusher, name="shmproc-tell-flusher",
                                           daemon=True)
            self.thread.start()
        else:
            self.wake.set()             # type: ignore[union-attr]  # made with the thread

    def _flusher(self) -> None:
        look = FLUSH_AFTER_S / 2
        seen = -1                       # flush count at the last look that found records
        empty = 0
        pending, wake = self.pending, self.wake
        assert wake is not None         # made before this thread started
        while not self.closed:
            time.sleep(look)
            if pending:
                empty = 0
                if seen == self.flushes:            # pending since the last look: flush
                    try:
                        with self.lock:
                            self._flush_locked()
                    except Exception as exc:        # noqa: BLE001 - reported by the next tell
                        self.error = exc
                    seen = -1
                else:
                    seen = self.flushes
                continue
            seen = -1
            empty += 1
            if empty >= PARK_AFTER:
                empty = 0
                self.parked = True
                if not pending:                     # a tell after this sees `parked`
                    wake.wait()
                wake.clear()
                self.parked = False

    def close(self) -> None:
        """The run is over: put everything; the flusher thread ends."""
        self.closed = True
        if self.thread is not None:
            self.wake.set()             # type: ignore[union-attr]  # a parked flusher wakes to see `closed`
        elif not self.pending:
            return                      # nothing told, or all of it put: the common case
        self.flush_between_hooks()

    # -- fork -----------------------------------------------------------------------------------
    def _before_fork(self) -> None:
        self.lock.acquire()             # held across the fork: no flush half done in the child
        try:
            self._flush_locked()
        except Exception as exc:        # noqa: BLE001 - reported by the next tell
            self.error = exc

    def _after_fork_in_parent(self) -> None:
        self.lock.release()

    def _after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        self.wake = None
        self.thread = None
        self.batch = 1                  # no flusher thread here: put each tell at once


_current: weakref.ref[Outbox] | None = None     # this process's Outbox (a worker has one)


def _before_fork() -> None:
    box = _current() if _current is not None else None
    if box is not None:
        box._before_fork()


def _after_fork(in_child: bool) -> None:
    box = _current() if _current is not None else None
    if box is not None:
        if in_child:
            box._after_fork_in_child()
        else:
            box._after_fork_in_parent()


lifecycle.at_fork(before=_before_fork, after_in_parent=lambda: _after_fork(False),
                  after_in_child=lambda: _after_fork(True))
