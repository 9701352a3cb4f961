"""The mailbox of a Process that a Pool runs (submitted, or an item of
imap & co. / map_async): its self.tell reaches the caller's listen()
through the pool's result ring; it cannot hear from its caller."""
from __future__ import annotations

from ..wire import taskwire
from ..wire.taskwire import R_MESSAGE

__all__ = ["TaskMailbox", "TaskOutbox"]


class TaskOutbox:
    """`self.tell` inside a Process task of a Pool (submit, or an item of
    imap & co. / map_async): an R_MESSAGE record, (the item's offset in its
    record, the message), for the caller's listen(), sent at once, after
    the results before it."""

    __slots__ = ("worker", "ident", "offset")

    def __init__(self, worker, ident, offset=0):
        self.worker, self.ident, self.offset = worker, ident, offset

    def put(self, obj, block=False):
        w = self.worker
        record = taskwire.encode(R_MESSAGE, self.ident, (self.offset, obj), w.token, w.slot)
        w.flush()
        w.result_q.put(record)

    def qsize(self) -> int:
        return 0


class TaskMailbox:
    """A Process task's mailbox: it can tell its caller, not hear from it."""

    __slots__ = ("to_parent", "to_worker")

    def __init__(self, worker, ident, offset=0):
        self.to_parent = TaskOutbox(worker, ident, offset)
        self.to_worker = None
