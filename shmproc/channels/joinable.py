"""shmproc.JoinableQueue: a Queue that counts unfinished items, as
multiprocessing.JoinableQueue does, across processes.

The count lives in a small shared segment (a Board) every handle maps:

    put        count += 1, then the item goes in (so a consumer that takes
               it and calls task_done() at once never finds the count at 0)
    task_done  count -= 1 by compare-and-swap, refused at 0 (ValueError, as
               the stdlib raises); the store wakes joiners only if any sleep
    join       sleeps on the count word until it reads 0

Things that can't be known: a process killed between its count and its
put (or after taking an item and before task_done) leaves the count high
for good, and join() then waits for ever, as the stdlib's does after such
a death.  join() waits in slices of JOIN_SLICE_S (Ctrl-C works, and a
waker killed before its wake-up delays no one longer than a slice), and
takes an optional timeout (a shmproc extra) to bound the wait.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .. import _native as native
from .._native import EINTR
from .queue import Queue
from .records import Item

__all__ = ["JoinableQueue", "JOIN_SLICE_S"]

#: join() re-reads the count at least this often, woken or not.
JOIN_SLICE_S = 0.2
_COUNT, _WAITERS = 0, 4         # words of the count board
_BOARD_BYTES = 64


class JoinableQueue(Queue[Item]):
    """A Queue with ``task_done()`` and ``join()``, compatible with
    multiprocessing.JoinableQueue across processes (fork, spawn, forkserver)."""

    def __init__(self, maxsize: int = 0, *, capacity: int | None = None) -> None:
        super().__init__(maxsize, capacity=capacity)
        self._tasks = native.Board.create(_BOARD_BYTES)

    if TYPE_CHECKING:           # with-blocks give a JoinableQueue (Queue.__enter__ returns self)
        def __enter__(self) -> JoinableQueue[Item]: ...

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild, args = super().__reduce__()
        return _rebuild_joinable, (rebuild, args, self._tasks)

    def put(self, obj: Item, block: bool = True, timeout: float | None = None) -> None:
        """Put `obj` (as Queue.put) and count it unfinished."""
        self._check_open()
        self._tasks.add(_COUNT, 1)          # before the item can be taken (module doc)
        try:
            super().put(obj, block, timeout)
        except BaseException:
            self._done(1)                   # not put: not unfinished
            raise

    def put_many(self, objs: Iterable[Item], block: bool = True,
                 timeout: float | None = None) -> None:
        """Put each item (one put() each here: every item is counted as it goes in)."""
        for obj in (objs if isinstance(objs, (list, tuple)) else list(objs)):
            self.put(obj, block, timeout)

    def task_done(self) -> None:
        """Mark one item taken from the queue as finished.

        Raises ValueError if called more times than there were items put.
        """
        self._done(1, "task_done() called too many times")

    def _done(self, n: int, too_many: str | None = None) -> None:
        tasks = self._tasks
        while True:
            count = tasks.load(_COUNT)
            if count < n:
                if too_many is None:
                    return
                raise ValueError(too_many)
            # acq_rel CAS; wakes joiners, and makes a syscall only if one sleeps
            if tasks.cas(_COUNT, count, count - n, _WAITERS):
                return

    def join(self, timeout: float | None = None) -> bool:
        """Block until every item put has been marked done with task_done().

        ``timeout`` (seconds; a shmproc extra) bounds the wait: returns True
        when the count reached zero, False when the timeout passed first.
        """
        deadline = None if timeout is None else time.monotonic() + \
            native.timeout_ns(timeout) / 1e9
        tasks = self._tasks
        while True:
            count = tasks.load(_COUNT)
            if count == 0:
                return True
            left = JOIN_SLICE_S if deadline is None else min(JOIN_SLICE_S,
                                                             deadline - time.monotonic())
            if left <= 0:
                return False
            rc = tasks.wait(_COUNT, _WAITERS, count, int(left * 1e9))
            if rc not in (native.OK, native.ETIMEDOUT, EINTR):
                native.check(rc, "waiting on a shmproc.JoinableQueue")

    def close(self) -> None:
        super().close()
        self._tasks.close()                 # the mapping stays for task_done() and join()


def _rebuild_joinable(rebuild: Callable[..., Queue[Any]], args: tuple[Any, ...],
                      tasks: Any) -> JoinableQueue[Any]:
    q = rebuild(*args)
    q.__class__ = JoinableQueue
    q._tasks = tasks                    # type: ignore[attr-defined]
    return q                            # type: ignore[return-value]
