"""How a pool worker's results leave it (mixed into pool_worker.PoolWorker).

Results go into `out` as encoded records and leave at flush(): alone, or
several in one put; scalars of single calls run by call_fast wait in
fast_ids / fast_values and go as one R_VALUES record (each alone if that
record cannot be made).  A result that cannot be pickled fails its item
alone (failures.unsendable).  Where nothing goes out-of-band (the portable
layer) a record larger than the result ring carries cannot be put at all
(`result_limit`, taskwire.fits): such a result fails its item alone too,
and a chunk's results too large together go as several parts, instead of
a put that would end the worker.
"""
from __future__ import annotations

import pickle

from .. import _native as native
from ..wire import pickling as wire
from ..wire import taskwire
from ..wire.taskwire import R_CHUNK, R_PART, R_VALUE, R_VALUES, fits
from .failures import error_payload, unsendable

__all__ = ["ResultOut"]

_pack = taskwire.HEADER.pack
_encode = taskwire.encode
_dumps = pickle.dumps


class ResultOut:
    """The sending half of a PoolWorker (see the module doc)."""

    def _coalesce(self):
        """The fast path's values, as one record (each alone if that fails)."""
        ids, values = self.fast_ids, self.fast_values
        self.fast_ids, self.fast_values = [], []
        us = min(self.fast_ns // 1000, 0xFFFFFFFF)
        self.fast_ns = 0
        if len(ids) > 1:
            try:
                self.out.append(fits(_encode(R_VALUES, 0, (ids, values), self.token, self.slot,
                                             us), self.result_limit))
                return
            except Exception:                # noqa: BLE001 - one of them cannot travel
                pass
        for ident, value in zip(ids, values):
            self._send(R_VALUE, ident, value, us * 1000 // len(ids))

    def flush(self):
        if self.fast_ids:
            if len(self.fast_ids) == 1 and not self.out:
                # A lone task's scalar value, the common case after an idle
                # spell: straight into the ring (a scalar always encodes).
                us = min(self.fast_ns // 1000, 0xFFFFFFFF)
                self.fast_ns = 0
                ident, value = self.fast_ids.pop(), self.fast_values.pop()
                rec = _pack(R_VALUE, 0, self.slot, us, ident) + _dumps(value, 5)
                if self.result_limit is not None and len(rec) > self.result_limit:
                    rec = self._fits_or_fails(R_VALUE, ident, value, rec, us)
                self.result_q.put(rec)
                return
            self._coalesce()
        out = self.out
        if len(out) == 1:
            self.result_q.put(out[0])
            out.clear()
        elif out:
            self.out = []
            self.result_q.put_many(out)

    def _done(self, n=1):
        """n items finished (their results are encoded, in self.out)."""
        self.completed += n
        self.progress[0] = self.completed << 2

    def _failed(self):
        self.failed += 1
        self.pctl.set_lives(self.failed)

    def _send(self, op, ident, payload, elapsed_ns):
        us = min(elapsed_ns // 1000, 0xFFFFFFFF)
        try:
            rec = taskwire.encode(op, ident, payload, self.token, self.slot, us)
        except Exception as exc:             # noqa: BLE001 - an unpicklable result
            # (A chunk's: its items that cannot travel become errors, in
            # place, and the rest may still be too large together: below.)
            rec = self._unsendable(op, ident, payload, exc, us)
        limit = self.result_limit
        if limit is not None and len(rec) > limit:
            if op in (R_CHUNK, R_PART):
                self._send_in_parts(op, ident, payload, elapsed_ns, rec)
                return
            rec = self._fits_or_fails(op, ident, payload, rec, us)
        self.out.append(rec)

    def _fits_or_fails(self, op, ident, payload, rec, us):
        """`rec`, or where it is larger than the ring carries (result_limit)
        the record that fails its task alone, with SerializationError."""
        try:
            return fits(rec, self.result_limit)
        except ValueError as exc:
            return self._unsendable(op, ident, payload, exc, us)

    def _send_in_parts(self, op, ident, payload, elapsed_ns, rec):
        """A chunk's results too large for one record (result_limit): the
        first half as a part (R_PART), then the rest as `op`, each split
        again if need be; an item too large alone fails alone."""
        values, errors = payload
        if len(values) == 1:
            try:
                fits(rec, self.result_limit)
            except ValueError as exc:
                if 0 not in errors:
                    self._failed()
                err = wire.SerializationError(
                    f"cannot send the result of an item of task {ident} back to the parent: {exc}")
                self._send(op, ident, ([None], {0: error_payload(err)}), elapsed_ns)
            return
        half = len(values) // 2
        ns = elapsed_ns // 2
        self._send(R_PART, ident, (values[:half], {i: e for i, e in errors.items() if i < half}),
                   ns)
        self._send(op, ident, (values[half:], {i - half: e for i, e in errors.items()
                                               if i >= half}), elapsed_ns - ns)

    def _unsendable(self, op, ident, payload, exc, us):
        return unsendable(op, ident, payload, exc, us, self.token, self.slot, self._failed)

    def _send_part(self, op, ident, values, errors, sent, start) -> int:
        """Send the results of items [sent, len(values)) of a chunk; returns
        len(values).  Those items finished: if encoding crashes, the parent
        fails them (their results are lost) and runs none of them again."""
        end = len(values)
        part = values[sent:] if sent else values
        errs = {i - sent: e for i, e in errors.items() if i >= sent} if errors else errors
        self._send(op, ident, (part, errs), native.now_ns() - start)
        return end
