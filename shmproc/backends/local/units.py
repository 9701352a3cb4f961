"""The local pool's units of work: what one record to one worker carries.

A unit is a call, a chunk of a map, or a Process, encoded once into a
task record (wire/taskwire.py, the one encoder: encode for any record,
encode_calls for a batch of one-item calls, the hot path of a map with
chunksize 1).  LocalJob cuts a Job's items into units.  A _Slot is one worker and what it was given.
"""
from __future__ import annotations

import collections
import itertools

from ...jobs.job import READ_AHEAD_ITEMS, Job
from ...wire import taskwire
from ...wire.taskwire import OP_CALL, OP_CHUNK, OP_RETRY, fits

__all__ = ["Unit", "Slot", "LocalJob", "CallRun", "fits"]


class Unit:
    """Items sent to one worker as one record: a call, a chunk, or a Process."""

    __slots__ = ("id", "sink", "index", "op", "fn_id", "star", "items", "kwargs", "n", "record",
                 "slot", "stream", "crashes", "cut", "lives", "flags", "base")

    def __init__(self, ident, sink, index, op, fn_id, star, items, kwargs=None):
        self.id = ident
        self.sink = sink              # the Task or _Job the outcomes go to
        self.index = index            # index of items[0] in the job
        self.op = op
        self.fn_id = fn_id
        self.star = star
        # OP_CHUNK: the items; OP_CALL: the call's args tuple, with its
        # kwargs dict (or None) beside it -- no tuple around them: each one
        # more object per item for the collector to track (a map with
        # chunksize 1 makes a unit per item); OP_RUN: [proc] (fn_id: its
        # span label).
        self.items = items
        self.kwargs = kwargs
        self.n = 1 if op == OP_CALL else len(items)
        self.record = None            # encoded, once
        self.slot = None
        self.stream = 0               # position of items[0] in its worker's item stream
        self.crashes = 0              # times its worker died while it (one item) was running
        self.cut = False              # its first items were answered (R_PART) and dropped
        self.lives = None             # a Process task's lives left, if not its config's
        self.flags = 0                # taskwire.FLAG_TELLS: Process items whose tells reach the sink
        self.base = index             # index of its record's first item (cut_answered moves index)

    def payload(self):
        if self.op == OP_CHUNK:
            return self.fn_id, self.star, self.items
        if self.op == OP_CALL:
            return self.fn_id, self.items, self.kwargs
        return self.fn_id, self.items[0]      # OP_RUN: (span label, the Process)

    def encode(self, token, limit=None) -> bytes:
        """Its record (made once); limit: see fits()."""
        if self.record is None:
            op, payload = self.op, self.payload()
            if self.lives is not None:
                op, payload = OP_RETRY, (self.lives, op, payload)
            self.record = fits(taskwire.encode(op, self.id, payload, token,
                                               elapsed_us=self.n,     # the header's count field
                                               flags=self.flags), limit)
        return self.record

    def split(self, ident, start, stop):
        """A new unit for items[start:stop] (re-sent after a crash)."""
        items = self.items if self.op == OP_CALL else self.items[start:stop]   # a call is one item
        part = Unit(ident, self.sink, self.index + start, self.op, self.fn_id, self.star, items,
                    self.kwargs)
        part.lives = self.lives
        part.flags = self.flags
        return part

    def cut_answered(self, m):
        """Its first m items were answered (R_PART): it now holds the rest."""
        self.items = self.items[m:]
        self.index += m
        self.stream += m
        self.n -= m
        self.cut = True


class Slot:
    """One worker: its process, its task ring, and what it was given."""

    __slots__ = ("index", "proc", "pid", "task_q", "pctl", "rctl", "inflight", "busy_items",
                 "sent_items", "allowance", "fns", "forget", "limit_ns")

    def __init__(self, index, proc, task_q, pctl, rctl, allowance):
        self.index = index
        self.proc = proc
        self.pid = proc.pid
        self.task_q = task_q
        self.pctl = pctl
        self.rctl = rctl
        self.inflight = collections.deque()    # units sent, in order, not yet answered
        self.busy_items = 0
        self.sent_items = 0
        self.allowance = allowance             # items left before it is recycled (None: no limit)
        self.fns = set()                       # function ids this worker knows
        self.forget = []                       # function ids to drop with the next batch
        self.limit_ns = 0                      # the task timeout it applies (OP_LIMIT; -1: unsure)


class CallRun(list):
    """Units of one-item calls of one job, in item order (what LocalJob.take
    gives for chunksize 1): the dispatcher packs them in one pass."""

    __slots__ = ("sink", "fn_id")

    def __init__(self, sink, fn_id):
        super().__init__()
        self.sink = sink
        self.fn_id = fn_id


class LocalJob(Job):
    """A Job whose items go to local workers as task records."""

    @property
    def fn_id(self):
        return self.fn

    def take(self, pool, want, max_items):
        """Units for about `want` items (one unit unless items go one per record)."""
        ahead = max(READ_AHEAD_ITEMS, 2 * (self.chunksize or 1) * len(pool._res.slots))
        if self.paused(ahead):
            return None
        size = self.chunksize or pool._auto_chunk()
        if size > 1 or self.star:
            unit = self.next_unit(pool, max_items)
            return [unit] if unit is not None else None
        if self.dropped:
            return None
        if self.tells:                # Process items that tell: one record each, flagged
            unit = self.next_unit(pool, 1)
            return [unit] if unit is not None else None
        buffered = self.buffered
        if len(buffered) < want:
            self._read(buffered, want - len(buffered))
        count = min(want, len(buffered), max_items)
        if not count:
            return None
        index = self.taken
        self.taken += count
        pool._total += count
        pop = buffered.popleft
        items = [pop() for _ in range(count)]
        ids = list(itertools.islice(pool._ids, count))
        fn_id = self.fn_id
        records = taskwire.encode_calls(fn_id, items, ids)
        out = CallRun(self, fn_id)
        append = out.append
        for k in range(count):
            unit = Unit(ids[k], self, index + k, OP_CALL, fn_id, False, (items[k],))
            unit.record = records[k]      # None: Unit.encode takes the general path later
            append(unit)
        return out

    def next_unit(self, pool, max_items):
        """Take the next unit from the source, or None when it is exhausted."""
        size = self.chunksize or pool._auto_chunk()
        got = self.read_chunk(max(1, min(size, max_items)))
        if got is None:
            return None
        index, items = got
        pool._total += len(items)
        unit = Unit(pool._new_id(), self, index, OP_CHUNK, self.fn_id, self.star, items)
        if self.tells:
            unit.flags = taskwire.FLAG_TELLS
        return unit
