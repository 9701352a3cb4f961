"""How the local pool sends work: which worker gets which units, and when.

Each worker gets only as much work ahead as it can do in about WINDOW_NS
(from the measured time per item), least loaded worker first (ties: the
lowest index, the one most likely still awake), so short tasks stream in
long batches while long ones stay balanced across workers: items of a
millisecond or more go one per worker before any gets a second.  Until
the pool's first item finishes (its length unknown), at most PROBE_SLOTS
workers get one item each, for up to PROBE_NS (_probing).  Submitted
tasks waiting for a window go first, then the items of map calls, which
take turns.  A lone submit of a function the chosen worker knows skips
all of that (_submit_direct).  Mixed into LocalPool; everything here runs
under the pool's lock.
"""
from __future__ import annotations

import queue as _stdlib_queue

from ... import _native as native
from ...common.outcome import is_process_class
from ...jobs.task import _RUNNING, Task
from ...runtime import call_loop
from ...wire import pickling as wire
from ...wire import taskwire
from ...wire.taskwire import OP_CALL, OP_CHUNK, OP_DEF, OP_FORGET, OP_LIMIT, OP_RUN
from .units import CallRun, Unit, fits

__all__ = ["Dispatch", "WINDOW_NS", "MAX_WINDOW_ITEMS", "MAX_CHUNK", "PROBE_SLOTS", "PROBE_NS"]

#: Work queued ahead per worker, in estimated nanoseconds of running time.
WINDOW_NS = 2_000_000
MAX_WINDOW_ITEMS = 1024
#: Largest number of items in one record.
MAX_CHUNK = 1 << 16
#: A pool's first items, before any has finished (how long they take is
#: unknown): at most PROBE_SLOTS workers get work, for up to PROBE_NS.  A
#: worker's first task costs it ~0.3 ms of one-time work (its first
#: function, code paths that run for the first time in the process), so
#: short items run on a few workers instead of warming one worker per two
#: items (a 64-item map on 64 fresh workers: 10 ms -> 2 ms); items that
#: take longer than PROBE_NS then spread as before.
PROBE_SLOTS = 2
PROBE_NS = 1_000_000


def _load(slot):
    return slot.busy_items, slot.index


class Dispatch:
    """The local pool's sending side (mixed into LocalPool)."""

    def _window(self) -> int:
        avg = self._avg_item_ns
        if avg is None:
            return 2
        return max(2, min(MAX_WINDOW_ITEMS, int(WINDOW_NS / max(avg, 1.0))))

    def _probing(self) -> bool:
        """Whether the pool's first items are still being timed (PROBE_NS)."""
        if self._avg_item_ns is not None:
            return False
        if self._probe_until is None:
            self._probe_until = native.now_ns() + PROBE_NS
            return True
        return native.now_ns() < self._probe_until

    def _probe_wait(self, wait_s: float) -> float:
        """wait_s, or less while items wait for the probe's end (_probing):
        then until it ends (and never 0: the caller would spin)."""
        if self._probe_until is None or self._avg_item_ns is not None:
            return wait_s
        left = self._probe_until - native.now_ns()
        return wait_s if left <= 0 else min(wait_s, max(left / 1e9, 0.0002))

    def _auto_chunk(self) -> int:
        """Items per record when the caller did not say: ~1/4 of the window."""
        avg = self._avg_item_ns
        if avg is None:
            return 1
        return max(1, min(4096, int(WINDOW_NS / 4 / max(avg, 1.0))))

    def _take(self, want, max_items, feed_jobs=True):
        """Up to `want` items' worth of units: re-sends first, then new work."""
        pending = self._pending
        if pending:
            out = [pending.popleft()]
            n = out[0].n
            while pending and n < want:
                unit = pending.popleft()
                out.append(unit)
                n += unit.n
            return out
        jobs = self._jobs
        for _ in range(len(jobs)):
            if not jobs:
                break
            job = jobs[0]
            skip = not feed_jobs or (feed_jobs == "eager" and job.lazy
                                     and job not in self._ajobs)
            out = None if skip else job.take(self, want, max_items)
            if job.exhausted():
                jobs.popleft()
            else:
                jobs.rotate(-1)          # jobs take turns: one never starves another
            if out:
                return out
        return None

    def _feed(self, feed_jobs=True):
        """Send units to every worker with room in its window (feed_jobs:
        also new items of map/imap calls, not only submitted tasks)."""
        if not self._pending and not (feed_jobs and self._jobs):
            return
        window = self._window()
        # Least loaded first (ties: lowest index): a lone task goes to the same
        # worker as the last one, which is the one most likely still awake.
        slots = sorted(self._res.slots, key=_load)
        probing = self._probing()
        if probing:
            passes = ((1, 1),)               # one item each to PROBE_SLOTS workers
        elif window <= 2:
            # Items of a millisecond or more, or of unknown length: one per
            # worker first, then a second each (kept queued, so that a
            # worker never waits between two); else 8 long items on 8
            # workers ran two by two on 4 of them.
            passes = ((1, 1), (2, window))
        else:
            passes = ((2, window),)
        # Workers with work, while the first items are timed (_probing).
        working = sum(1 for slot in slots if slot.inflight) if probing else 0
        for least, cap in passes:
            for slot in slots:
                if probing and not slot.inflight:
                    if working >= PROBE_SLOTS:
                        continue
                    working += 1
                self._fill(slot, least, cap, feed_jobs)

    def _fill(self, slot, least, cap, feed_jobs):
        """Send `slot` units until it holds `least` records and `cap` items."""
        token = self._res.token
        units = self._units
        inflight = slot.inflight
        allowance = slot.allowance
        busy = slot.busy_items
        batch, sent, notify = [], [], []
        while len(inflight) + len(sent) < least or busy < cap:
            if allowance is not None and allowance <= 0:
                break
            taken = self._take(max(1, cap - busy), allowance or MAX_CHUNK, feed_jobs)
            if not taken:
                break
            if type(taken) is CallRun and allowance is None:
                busy += self._pack_call_run(taken, slot, batch, sent)
                continue
            for unit in taken:
                if unit.sink.dropped:
                    continue
                if allowance is not None:
                    if allowance <= 0:
                        self._pending.appendleft(unit)
                        continue
                    if unit.n > allowance:
                        self._pending.appendleft(unit.split(self._new_id(), allowance, unit.n))
                        unit = unit.split(unit.id, 0, allowance)
                    allowance -= unit.n
                try:
                    if unit.op != OP_RUN and unit.fn_id not in slot.fns:
                        batch.append(taskwire.encode_raw(OP_DEF, unit.fn_id,
                                                         self._fn_pickle(unit.fn_id)))
                        slot.fns.add(unit.fn_id)
                    rec = unit.record or unit.encode(token, self._record_limit)
                    limit = unit.sink.timeout_ns
                    if limit != slot.limit_ns and unit.op != OP_RUN:
                        batch.append(taskwire.encode_raw(OP_LIMIT, limit))
                        slot.limit_ns = limit
                except Exception as exc:         # noqa: BLE001 - an argument cannot travel
                    if allowance is not None:
                        allowance += unit.n
                    self._unsendable(unit, exc)
                    continue
                batch.append(rec)
                sent.append(unit)
                unit.slot = slot
                unit.stream = slot.sent_items
                slot.sent_items += unit.n
                busy += unit.n
                units[unit.id] = unit
                if unit.op != OP_CHUNK:
                    notify.append(unit.sink)
        if slot.forget and sent:                     # with the next batch that goes
            batch[:0] = [taskwire.encode_raw(OP_FORGET, fid) for fid in slot.forget]
            slot.forget.clear()
        slot.busy_items = busy
        slot.allowance = allowance
        if sent:
            inflight.extend(sent)
            for sink in notify:
                sink._sent()
            notify.clear()
            self._send(slot, batch, sent)

    def _pack_call_run(self, run, slot, batch, sent) -> int:
        """A map's one-item calls (LocalJob.take) into `batch` for `slot`:
        the general loop's work, done once per run where it is the same for
        every unit (one sink, one function, one task timeout).  The hot
        path of map(chunksize=1).  Returns the items added."""
        sink = run.sink
        if sink.dropped:
            return 0
        fn_id = run.fn_id
        if fn_id not in slot.fns:
            batch.append(taskwire.encode_raw(OP_DEF, fn_id, self._fn_pickle(fn_id)))
            slot.fns.add(fn_id)
        limit = sink.timeout_ns
        if limit != slot.limit_ns:
            batch.append(taskwire.encode_raw(OP_LIMIT, limit))
            slot.limit_ns = limit
        token, units, limit = self._res.token, self._units, self._record_limit
        first = stream = slot.sent_items
        for unit in run:
            rec = unit.record                    # (encode_calls made most of them)
            if rec is None or limit is not None:
                try:
                    rec = unit.encode(token, limit) if rec is None else fits(rec, limit)
                except Exception as exc:         # noqa: BLE001 - an argument cannot travel
                    self._unsendable(unit, exc)
                    continue
            batch.append(rec)
            sent.append(unit)
            unit.slot = slot
            unit.stream = stream
            stream += 1
            units[unit.id] = unit
        slot.sent_items = stream
        return stream - first

    def _fn_pickle(self, fn_id) -> bytes:
        for fid, _, data in self._functions.values():
            if fid == fn_id:
                return data
        raise RuntimeError(f"function {fn_id} is no longer registered")

    def _send(self, slot, batch, units):
        try:
            if len(batch) == 1:
                slot.task_q.put(batch[0], block=False)    # cheaper than a batch of one
            else:
                slot.task_q.put_many(batch, block=False)
        except _stdlib_queue.Full as full:
            # The ring is full (huge items): take back what did not go.
            put = full.args[1] if len(full.args) > 1 else 0
            records = set(map(id, batch[put:]))
            back = [u for u in units if id(u.record) in records]
            for unit in reversed(back):
                slot.inflight.remove(unit)
                self._units.pop(unit.id, None)
                n_items = unit.n
                slot.sent_items -= n_items
                slot.busy_items -= n_items
                if slot.allowance is not None:
                    slot.allowance += n_items
                self._pending.appendleft(unit)
            slot.fns.clear()          # definitions may not have gone either: send them again
            slot.limit_ns = -1        # nor the task timeout

    def _unsendable(self, unit, exc):
        found = wire.find_unpicklable(unit.payload(), "args")
        where = f" ({found[0]} holds a {found[1].__module__}.{found[1].__qualname__})" \
            if found else ""
        err = wire.SerializationError(
            f"item {unit.index} cannot be sent to a worker{where}: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        for k in range(unit.n):
            unit.sink._fail(unit.index + k, err)

    def _drop_pending(self, unit):
        try:
            self._pending.remove(unit)
        except ValueError:
            pass

    def _submit_direct(self, fn, args, kwargs, options, retries, poked=None):
        """The common submit, straight onto the ring of the worker _feed would
        pick (an idle one, else the least loaded, if its window has room):
        a function that worker already knows, nothing queued before it, no
        change of task timeout.  None (nothing done) when it is not that
        case: then the general path (_feed) decides.  Under the lock.

        Why: after an idle spell every line of Python runs several times
        slower (cold caches), so the path of a lone task is kept short; and
        a burst of submits pays no dispatcher pass per task."""
        entry = self._functions.get(id(fn))
        if entry is None or entry[1] is not fn or self._pending or self._jobs:
            return None
        slot = None
        for s in self._res.slots:                  # _feed's order: least loaded, lowest index
            if not s.inflight:
                slot = s
                break
            if slot is None or s.busy_items < slot.busy_items:
                slot = s
        if slot is None or (slot.inflight and len(slot.inflight) >= 2
                            and slot.busy_items >= self._window()):
            return None
        fn_id = entry[0]
        timeout_ns = self._timeout_ns if options.timeout_ns is None else options.timeout_ns
        if (fn_id not in slot.fns or slot.limit_ns != timeout_ns or slot.allowance == 0
                or slot.forget):
            return None
        if isinstance(fn, type) and is_process_class(fn):
            return None                   # its tells need the general path's flag
        # The worker may be asleep: wake it now, so that its wake-up (slow
        # after idle, its core asleep too) overlaps the rest of this submit
        # rather than following the put.  No syscall if it is awake.  (`poked`:
        # the queue the caller poked already, before taking the lock.)
        if slot.task_q is not poked:
            slot.task_q._poke()
        self._lone_hint = slot.task_q
        task = Task(self, fn, None, retries, options)
        kwargs = kwargs or None
        unit = Unit(next(self._ids), task, 0, OP_CALL, fn_id, False, args, kwargs)
        try:
            rec = unit.record = fits(
                call_loop.encode_call(unit.id, fn_id, args, self._res.token) if kwargs is None
                else taskwire.encode(OP_CALL, unit.id, (fn_id, args, kwargs), self._res.token,
                                     elapsed_us=1), self._record_limit)
        except Exception as exc:          # noqa: BLE001 - an unpicklable argument fails here
            raise self._submit_error(fn, unit, exc) from exc
        task._unit = unit
        task.timeout_ns = timeout_ns
        task._state = _RUNNING            # on a worker from now on (Future: not cancellable)
        self._total += 1
        unit.slot = slot
        unit.stream = slot.sent_items
        slot.sent_items += 1
        slot.busy_items += 1
        if slot.allowance is not None:
            slot.allowance -= 1
        self._units[unit.id] = unit
        slot.inflight.append(unit)
        if not slot.task_q._put_now(rec):
            # Large, or the ring is full or busy: Queue.put's general path
            # (out-of-band, or queued for later by _send).
            self._send(slot, [rec], [unit])
        if self._pending:
            self._ensure_pumper()
        return task
