"""Job: the items of one map / imap / starmap call and their outcomes.

The engine-neutral half of a call: reading the caller's input (a list,
tuple or range is sliced; anything else is read lazily), keeping results
in order (a chunk's values are one list keyed by its first index, so a
chunk costs one dict entry, not one per item), errors by index, and how
far a lazy caller has read.  How items become units and reach workers is
the engine's (backends/local/units.py, backends/ray/pool.py).
"""
from __future__ import annotations

import collections
import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from ..common.timing import ProcessTimers

from .task import deliver_process, writable

__all__ = ["Job", "READ_AHEAD_ITEMS"]

#: A lazy call (imap...) reads at most this many items ahead of its caller.
READ_AHEAD_ITEMS = 4096


class Job:
    """One call's items and outcomes.  `fn` is the engine's handle for the
    function (an id, or a reference in an object store)."""

    # Set in __init__ (said there).
    source: Iterator[Any] | None
    seq: Sequence[Any] | None
    buffered: collections.deque[Any]
    source_error: BaseException | None
    ready: dict[int, list[Any]]
    errors: dict[int, BaseException]
    size_hint: int | None
    _messages: collections.deque[tuple[int, Any]] | None

    def __init__(self, fn: Any, name: str, star: bool, source: Iterator[Any] | None,
                 total: int | None, chunksize: int | None, copy: bool, retries: int,
                 seq: Sequence[Any] | None = None) -> None:
        self.fn = fn
        self.name = name
        self.star = star
        self.retries = retries        # re-runs allowed per item whose worker dies running it
        self.source = source          # iterator of items, or None when all were taken
        self.seq = seq                # a list/tuple/range mapped in chunks: sliced
        self.total = total            # known length, or None while the source runs
        self.chunksize = chunksize    # None: the engine picks
        self.copy = copy
        self.taken = 0                # items taken from the source into units
        self.buffered = collections.deque()   # read from the source, not yet in a unit
        self.handed = 0               # results given to the caller (lazy calls)
        self.lazy = total is None     # imap & co: read the input only as results are taken
        self.source_error = None      # what the source raised, after `taken` items
        self.ready = {}               # index of first item -> list of values
        self.errors = {}              # index -> exception
        self.finished = 0
        self.dropped = False          # cancelled: outcomes are ignored
        self.timeout_ns = 0           # how long one item may run (0: no limit)
        self.tells = False            # Process items whose self.tell reaches listen()
        self.ahead = READ_AHEAD_ITEMS  # how far a lazy call reads ahead (see paused)
        self.size_hint = None         # a lazy call's input length, if it has one (known_total)
        self._messages = None         # (index, message) told and not yet heard

    # -- sink interface (called under the engine's lock) --
    def _sent(self) -> None:
        pass

    def _put(self, index: int, value: Any) -> None:
        if not self.dropped:
            self.ready[index] = [writable(value) if self.copy else value]
        self.finished += 1

    def _put_many(self, index: int, values: list[Any]) -> None:
        if values:
            if not self.dropped:
                self.ready[index] = [writable(v) for v in values] if self.copy else values
            self.finished += len(values)

    def _fail(self, index: int, exc: BaseException) -> None:
        if not self.dropped:
            self.errors[index] = exc
        self.finished += 1

    def _message(self, index: int, obj: Any) -> None:
        if self._messages is None:
            self._messages = collections.deque()
        self._messages.append((index, obj))

    def take_messages(self) -> list[tuple[int, Any]]:
        """Every (index, message) told and not yet heard, oldest first (under the lock)."""
        if not self._messages:
            return []
        out = list(self._messages)
        self._messages.clear()
        return out

    def has_messages(self) -> bool:
        return bool(self._messages)

    def _process_outcome(self, index: int, kind: int, value: Any, timers: ProcessTimers | None,
                         error: Any, lap: int) -> None:
        deliver_process(self, index, kind, value, error)

    def in_order(self) -> list[Any]:
        """Every value received, in item order (a complete job: all of them)."""
        out: list[Any] = []
        for index in sorted(self.ready):
            out.extend(self.ready[index])
        return out

    # -- progress --
    def known_total(self) -> int | None:
        """The call's item count for its progress bar: exact once known;
        for a lazy call over a sized input (a list, range, numpy array),
        that input's length; else None (the bar counts without a total)."""
        if self.total is None and self.source is None:
            return self.taken + len(self.buffered)
        return self.total if self.total is not None else self.size_hint

    def complete(self) -> bool:
        return self.source is None and not self.buffered and self.finished >= self.taken

    def exhausted(self) -> bool:
        return self.dropped or (self.source is None and not self.buffered)

    def paused(self, ahead: int) -> bool:
        """A lazy call whose caller is `ahead` items behind: read no further."""
        self.ahead = ahead
        return self.lazy and self.taken - self.handed >= ahead

    def quiet(self) -> bool:
        """Nothing of it runs or waits to run until its caller takes results:
        every item taken has its outcome, and the input is exhausted or
        the call is paused for its reader (what a listen() waits for)."""
        return self.finished >= self.taken and (
            self.dropped or self.complete() or (self.lazy and self.taken - self.handed >= self.ahead))

    # -- reading the input --
    def read_chunk(self, size: int) -> tuple[int, Sequence[Any]] | None:
        """The next `size` items as (index of the first, items), or None when
        the input is exhausted.  A list, tuple or range gives slices (a
        range's slices are ranges, which cost nothing to send)."""
        if self.dropped or (self.source is None and not self.buffered):
            return None
        if self.seq is not None:
            start = self.taken
            items = self.seq[start:start + size]
            if start + len(items) >= len(self.seq):
                self.seq = self.source = None
            if not items:
                return None
            self.taken += len(items)
            return start, items
        items = list(self.buffered)
        self.buffered.clear()
        if len(items) < size:
            self._read(items, size - len(items))
        elif len(items) > size:
            self.buffered.extend(items[size:])
            del items[size:]
        if not items:
            return None
        index = self.taken
        self.taken += len(items)
        return index, items

    def _read(self, into: list[Any], count: int) -> None:
        if self.source is None:
            return
        before = len(into)
        try:
            into.extend(itertools.islice(self.source, count))
        except Exception as exc:                 # noqa: BLE001 - the caller's iterable failed
            self.source_error = exc
            self.source = None
        if len(into) - before < count:
            self.source = None

    def cancel(self) -> None:
        self.dropped = True
        self.source = None
        self.buffered.clear()
        self.ready.clear()
