"""How the local pool takes its workers' result records.

All workers share one result ring.  A record answers one unit (a value,
a chunk's values and errors, a Process outcome, an error), several
one-item units at once (R_VALUES: the common record of a map with small
items, delivered as one slice when they are consecutive), or the first
items of a chunk still running (R_PART: delivered now, so a crash later
cannot fail them).  Each record also teaches the pool the time per item,
which sizes the work it sends ahead (dispatch.py: _window, _auto_chunk).
"""
from __future__ import annotations

import itertools
import queue as _stdlib_queue

from ...channels.records import TAG_BYTES
from ...common.errors import remote_failure
from ...common.validate import callable_name
from ...runtime import call_loop
from ...wire import taskwire
from ...wire.blobs import LOST
from ...wire.taskwire import (R_CHUNK, R_ERROR, R_INIT_FAILED, R_MESSAGE, R_PART, R_PROCESS,
                              R_VALUE, R_VALUES)
from .units import LocalJob

__all__ = ["ResultIntake"]


class ResultIntake:
    """The local pool's result handling (mixed into LocalPool)."""

    def _drain(self):
        while True:
            try:
                records = self._res.results.get_many(block=False, max_items=4096)
            except _stdlib_queue.Empty:
                return
            for rec in records:
                self._on_result(rec)

    def _take_lone(self, spin_ns, wait_s):
        """The one unit in flight's result, waited for in C (call_loop.take_lone):
        after an idle spell every line of Python is slow, and this is the
        path of a lone submit's result.  Returns (records for _on_result,
        whether the unit was settled here), or None: the Python get must
        look (see take_lone)."""
        [unit] = self._units.values()
        got = call_loop.take_lone(self._res.lone, unit.id, spin_ns, wait_s)
        if got is None:
            return None
        kind = got[0]
        if kind == "value":
            del self._units[unit.id]          # _on_result's R_VALUE, for this one unit
            self._complete(unit, R_VALUE, got[2], got[1])
            return (), True
        if kind == "record":
            tag, rec = got[1], got[2]
            if tag == TAG_BYTES:
                return (rec,), False
            item = self._res.results._decode(memoryview(rec), tag, False)
            return ((), False) if item is LOST else ((item,), False)   # LOST: its worker died
        return (), False                      # nothing came in time

    def _on_result(self, rec):
        op, flags, _, elapsed_us, ident = taskwire.header(rec)
        try:
            body = taskwire.payload(rec, flags)      # always: it releases the segment's hold
        except taskwire.LostRecord:
            # Its worker died before we read its large result: leave the task
            # in flight, so that _worker_ended runs it again.
            return
        except Exception as exc:                      # noqa: BLE001 - e.g. a class missing here
            body = exc
            op = -1 if op != R_VALUES else op
        if op == R_VALUES:                            # several plain values in one record
            # Single-item calls only: _complete's work, inline.
            ids, values = body
            if ids:
                self._learn(elapsed_us * 1000.0 / len(ids))
            if len(ids) > 1 and self._values_in_a_row(ids, values):
                return
            pop = self._units.pop
            for ident, value in zip(ids, values):
                unit = pop(ident, None)
                if unit is None:
                    continue
                slot = unit.slot
                inflight = slot.inflight
                if inflight and inflight[0] is unit:
                    inflight.popleft()
                else:
                    try:
                        inflight.remove(unit)
                    except ValueError:
                        pass
                slot.busy_items -= 1
                sink = unit.sink
                if not sink.dropped:
                    sink._put(unit.index, value)
            return
        if op == R_INIT_FAILED:
            if isinstance(body, tuple):
                self._init_failed(*body)
            else:
                self._init_failed(body, None)
            return
        if op == R_MESSAGE:                           # a Process task told its caller
            unit = self._units.get(ident)
            if unit is not None and isinstance(body, tuple) and len(body) == 2:
                offset, obj = body                    # offset: the item within the record
                if not unit.sink.dropped:
                    unit.sink._message(unit.base + offset, obj)
            return
        if op == R_PART:                              # a chunk's first items; it goes on
            unit = self._units.get(ident)
            if unit is not None:
                self._partial(unit, body, elapsed_us)
            return
        unit = self._units.pop(ident, None)
        if unit is not None:
            self._complete(unit, op, body, elapsed_us)

    def _partial(self, unit, body, elapsed_us):
        """Deliver the first items of a chunk still running; the unit keeps
        the rest (so a crash now cannot fail the delivered ones)."""
        values, errors = body
        m = len(values)
        if not m:
            return
        self._learn(elapsed_us * 1000.0 / m)
        unit.slot.busy_items -= m
        if not unit.sink.dropped:
            self._deliver_chunk(unit, values, errors, unit.slot)
        unit.cut_answered(m)

    def _values_in_a_row(self, ids, values) -> bool:
        """The usual R_VALUES record: consecutive items of one map, at the
        front of their worker's queue.  Delivered as one slice; False (and
        nothing done) otherwise."""
        first = self._units.get(ids[0])
        if first is None:
            return False
        sink, slot, start = first.sink, first.slot, first.index
        inflight, n = slot.inflight, len(ids)
        if type(sink) is not LocalJob or sink.dropped or len(inflight) < n:
            return False
        # The checks of one loop over the units, as comparisons of whole lists (C loops).
        head = list(itertools.islice(inflight, n))
        if ([u.id for u in head] != ids or [u.index for u in head] != list(range(start, start + n))
                or [u.sink for u in head].count(sink) != n):
            return False
        units = self._units
        for ident in ids:
            del units[ident]
        for _ in range(n):
            inflight.popleft()
        slot.busy_items -= n
        sink._put_many(start, values)
        return True

    def _learn(self, per_item_ns):
        """Fold a measured time per item into the running estimate."""
        avg = self._avg_item_ns
        self._avg_item_ns = per_item_ns if avg is None else avg + 0.25 * (per_item_ns - avg)

    def _complete(self, unit, op, body, elapsed_us):
        slot = unit.slot
        if slot.inflight and slot.inflight[0] is unit:
            slot.inflight.popleft()
        else:
            try:
                slot.inflight.remove(unit)
            except ValueError:
                pass
        n = unit.n
        slot.busy_items -= n
        self._learn(elapsed_us * 1000.0 / n)
        sink = unit.sink
        if sink.dropped:
            return
        if op == R_VALUE:
            sink._put(unit.index, body)
        elif op == R_CHUNK:
            values, errors = body
            self._deliver_chunk(unit, values, errors, slot)
        elif op == R_ERROR:
            exc, tb = body
            err = remote_failure(exc, tb, self._where(unit, 0, slot))
            for k in range(n):                # a record that failed as a whole fails its items
                sink._fail(unit.index + k, err)
        elif op == R_PROCESS:
            kind, value, timers, error, lap = body
            sink._process_outcome(unit.index, kind, value, timers, error, lap)
        else:
            err = RuntimeError(f"the result of task {unit.index} could not be read in the "
                               f"parent: {type(body).__name__}: {body}")
            for k in range(n):
                sink._fail(unit.index + k, err)

    def _deliver_chunk(self, unit, values, errors, slot):
        sink = unit.sink
        if not errors:
            sink._put_many(unit.index, values)
            return
        start = 0
        for k in sorted(errors):
            sink._put_many(unit.index + start, values[start:k])
            exc, tb = errors[k]
            sink._fail(unit.index + k, remote_failure(exc, tb, self._where(unit, k, slot)))
            start = k + 1
        sink._put_many(unit.index + start, values[start:])

    def _where(self, unit, k, slot):
        fn = self._function(unit.fn_id)
        return (f"in shmproc.Pool task {unit.index + k} ({callable_name(fn) if fn else 'a Process'}), "
                f"worker pid {slot.pid}")
