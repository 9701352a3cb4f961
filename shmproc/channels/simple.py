"""shmproc.SimpleQueue: multiprocessing.SimpleQueue's four calls on an
unbounded shmproc Queue (put never blocks, get waits for an item)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic

from .queue import Queue
from .records import Item

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

__all__ = ["SimpleQueue"]


class SimpleQueue(Generic[Item]):
    """A process-safe FIFO with put, get, empty and close, compatible with
    multiprocessing.SimpleQueue.  ``ctx`` is accepted for the stdlib's
    signature and not needed: the queue works under every start method."""

    def __init__(self, *, ctx: BaseContext | None = None) -> None:
        self._queue: Queue[Item] = Queue()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_simple, (self._queue,)

    def __repr__(self) -> str:
        return f"<shmproc.SimpleQueue {self._queue!r}>"

    def put(self, obj: Item) -> None:
        """Put `obj`; never blocks (the queue grows instead)."""
        self._queue.put(obj)

    def get(self) -> Item:
        """Remove and return the oldest item, waiting for one if need be."""
        return self._queue.get()

    def empty(self) -> bool:
        return self._queue.empty()

    def close(self) -> None:
        """This process will use this handle no more; idempotent."""
        self._queue.close()


def _rebuild_simple(queue: Queue[Any]) -> SimpleQueue[Any]:
    q = SimpleQueue.__new__(SimpleQueue)
    q._queue = queue
    return q
