"""The worker side of a Pool: a warm process that runs tasks until told to stop.

    task ring (this worker's own) ──► decode ──► fn(*args) / Process lifecycle
                                                      │
    result ring (shared by the pool's workers) ◄── encode, a batch at a time
                                                   (result_out.py)

Two control blocks per worker (see pool.py):
  * the pool block: its lap word is this worker's progress through the
    stream of items it is sent, (k << 2) | phase (see IDLE, RUNNING,
    DECODING below), stored once per item; lives = items that failed.
    The parent reads it for live progress and, when the worker dies, to
    sort what it had given the worker into items that finished (never
    run again: their results, if lost, fail), the item that was running
    (fails, or is re-run if the call allows retries) and items that never
    started (sent to the replacement worker).
  * the runner block: what a Process task's lifecycle uses, exactly as a
    started Process uses its own (laps, section deadlines for the
    watchdog's timeouts).

A worker in which a section timeout was raised asynchronously (SIGALRM
in the middle of whatever the hook was doing, possibly inside a library
holding a lock) reports that task and exits: the pool replaces it, so no
later task runs in an interpreter that may be left inconsistent.
"""
from __future__ import annotations

import itertools
import os
import pickle
import queue
import sys

from ..wire import blobs
from .. import _native as native
from ..wire import taskwire
from ..wire import pickling as wire
from ..common import lifecycle, signals
from ..common.errors import ProcessError
from ..common.errors import TimeoutError as TaskTimeoutError
from ..common.outcome import CALL, FAILED_RESULT, HOOK_NAMES, is_process_class
from ..wire.taskwire import (FLAG_TELLS, OP_CALL, OP_CHUNK, OP_DEF, OP_FORGET, OP_LIMIT, OP_RETRY,
                             OP_RUN, OP_STOP, R_CHUNK, R_ERROR, R_INIT_FAILED, R_PART, R_PROCESS,
                             R_VALUE)
from . import call_loop
from .failures import BrokenFn as _BrokenFn, format_exception as _format, error_payload
from .main_globals import adopt
from .result_out import ResultOut
from .task_mailbox import TaskMailbox
from .watchdog import EXIT_ORPHANED, Watchdog

_now = native.now_ns
_unpack = taskwire.HEADER.unpack_from
_loads = pickle.loads
_HS = taskwire.HEADER_SIZE

#: Values that may share a record (R_VALUES): they cannot fail to unpickle
#: in the parent, so one bad value can never take the others' ids with it.
_SCALARS = frozenset((int, float, complex, bool, str, bytes, type(None)))

#: Phases of the pool block's lap word, (k << 2) | phase, where k counts
#: the items of this worker's stream that finished.  Only the worker writes
#: it, with one plain store per transition (Control.lap_word).
IDLE = 0        # items [0, k) finished, none is running
RUNNING = 1     # item k is running: its arguments being rebuilt, fn running, or
                # its result being encoded (a crash in any of these is its crash)
DECODING = 2    # a record of several items, the first of them item k, is being
                # decoded: none of its items started
#: Results are sent at least this often while a batch or a chunk runs (the
#: latency bound; also about the most finished work whose results die with a
#: crashed worker: those items fail, they are never run again).
FLUSH_NS = 1_000_000
#: After finishing work, watch the task ring this long before sleeping.
LINGER_NS = 100_000
#: Items of a chunk run in blocks of 1..MAX_BLOCK, sized to take between
#: BLOCK_MIN_NS and BLOCK_MAX_NS each.
MAX_BLOCK = 4096
BLOCK_MIN_NS = 200_000
BLOCK_MAX_NS = 2_000_000
#: Records taken from the task ring per call.
BATCH = 256


class PoolWorker(ResultOut):
    def __init__(self, slot, ctl_array, task_q, result_q, parent_pid, direct_child, max_tasks,
                 orphan_signal=False, trace=None):
        self.slot = slot
        # A span per task on this slot's trace ring (csrc/python/spans.c):
        # begin(label, start) / end(failed) -> end stamp, a few stores each.
        # Tracing off, it records nothing (its pid is never written).  A
        # worker built by the parent before the fork (see build) makes its
        # own writer in the child (in_child).
        self.trace_ring = trace.ring(slot) if trace is not None else None
        self.spans = (self.trace_ring.writer(os.getpid()) if trace is not None
                      else native.null_writer(0))
        self.pctl = ctl_array.control(2 * slot)
        self.rctl = ctl_array.control(2 * slot + 1)
        self.ctl_array = ctl_array
        self.task_q = task_q
        self.result_q = result_q
        # Where results cannot go out-of-band (the portable layer), the
        # largest record the result ring carries; None elsewhere.  A result
        # larger than that fails alone (taskwire.fits), as one that cannot
        # be pickled does, instead of the put ending this worker.
        self.result_limit = None if blobs.PEER_FD_OK else result_q._inband_max
        self.max_tasks = max_tasks
        self.fns = {}                   # fn id -> callable (or Process subclass)
        self.plain = {}                 # the same, only the plain callables
        self.fast_ids, self.fast_values, self.fast_ns = [], [], 0   # see call_fast
        self.block = 1                  # items per block in chunk()
        self.progress = self.pctl.lap_word()   # the pool block's lap word: see IDLE
        self.completed = 0              # items of our stream that finished (k)
        self.failed = 0
        self.retiring = False           # a timeout was raised in a hook: exit after this task
        self.token = blobs.FlushToken()     # results: wait at exit until the parent opened them
        self.out = []                   # encoded results not yet sent
        self.runner = None              # the Runner of the Process task running now
        # The guard thread ends a call stuck past a timeout, and an orphan.  A
        # worker whose parent's death already kills it (orphan_signal:
        # PR_SET_PDEATHSIG, see main) starts it only once it has a timeout to
        # enforce: a pool of many workers then starts no thread per worker.
        self.dog = Watchdog(self.rctl, (), parent_pid, direct_child, lazy=orphan_signal)
        self.lives_next = None          # lives left for the next Process task (OP_RETRY)
        self.limit_ns = 0               # task_timeout of plain calls (OP_LIMIT; 0: none)
        self.task_ident = None          # the flagged record running now (its items' self.tell goes there)
        self.task_offset = 0            # which item of that record is running
        self.timing = False             # a plain call runs under limit_ns now
        # The C loop's fixed arguments (None where it cannot run).
        self.loop_ctx = call_loop.context(self, LINGER_NS, RUNNING)

    def in_child(self):
        """A worker built by the parent (see build), now in its own process:
        its spans carry this process's id."""
        if self.trace_ring is not None:
            self.spans = self.trace_ring.writer(os.getpid())
            if self.loop_ctx is not None:
                self.loop_ctx = call_loop.with_spans(self.loop_ctx, self.spans)

    # -- timeouts of Process tasks: the guard signals, the runner raises ---------------
    def _on_alarm(self, signum, frame):
        r = self.runner
        if r is None:
            # A plain call past its task_timeout: raise only if the guard
            # signals for the call running now (its start stamp).
            rctl = self.rctl
            if self.timing and rctl.section_start_ns == rctl.alarm_start_ns:
                self.timing = False
                self.retiring = True            # as below: a fresh worker takes over
                raise _CallTimeout()
            return
        if r is not None:
            try:
                r.on_alarm(signum, frame)
            except BaseException:
                # The timeout is raised wherever the hook was, maybe inside a
                # library between taking a lock and the try that releases it
                # (queue.Queue's, in Condition.__enter__; a logging handler
                # that hands records to a queue): this interpreter may be
                # wedged for the next task.  Finish this one, then let a
                # fresh worker take over.
                self.retiring = True
                raise

    # -- the loop -------------------------------------------------------------------------
    def run(self):
        signals.set_handler(signals.SIGALRM, self._on_alarm)
        if not self.dog.lazy:
            self._start_guard()
        pctl = self.pctl
        pctl.set_pid(os.getpid())
        pctl.set_state(native.STATE_RUNNING)
        task_q, now = self.task_q, native.now_ns
        task_q._sleep_until_woken()
        get, get_many, qsize = task_q.get, task_q.get_many, task_q.qsize
        last_work = 0
        loop_ctx = self.loop_ctx
        try:
            while True:
                records = None
                if loop_ctx is not None and call_loop.usable(self):
                    # The common case in C until something else comes
                    # (csrc/python/callloop.c): a plain call, a scalar result.
                    records, last_work = call_loop.serve(self, loop_ctx, last_work)
                if records is None:
                    if not qsize() and now() - last_work < LINGER_NS:
                        # Just busy: the next task often follows within
                        # microseconds; watching the ring beats a futex sleep and wake.
                        native.spin_politely(qsize, last_work + LINGER_NS)
                    try:
                        if qsize() > 1:
                            records = get_many(block=False, max_items=BATCH)
                        else:
                            # About to sleep: what the fork left of the parent's
                            # goes now, off any task's path (lifecycle.py).
                            if not qsize():
                                lifecycle.drop_leftovers()
                            # Sleeps until the pool sends something: no periodic
                            # wake-up (if the pool's process dies, PR_SET_PDEATHSIG
                            # or the guard ends us).
                            records = (get(),)
                    except queue.Empty:
                        continue
                flushed = now()
                for rec in records:
                    if (rec[0] == OP_CALL and rec[1] == 0 and not self.limit_ns
                            and self.call_fast(rec)):
                        pass
                    elif not self.handle(rec):
                        self.flush()
                        return
                    if self.retiring:
                        # The records after this one never started: the
                        # parent gives them to this worker's replacement.
                        self.flush()
                        return
                    if (self.out or self.fast_ids) and now() - flushed > FLUSH_NS:
                        self.flush()
                        flushed = now()
                self.flush()
                last_work = now()
                if self.max_tasks is not None and self.completed >= self.max_tasks:
                    return                      # recycled: the parent starts a fresh worker
        finally:
            self.dog.stop()
            pctl.set_state(native.STATE_DONE)

    def _start_guard(self):
        if not self.dog.start():
            os._exit(EXIT_ORPHANED)                 # the parent is already gone

    def _arm(self, timeouts_s):
        """The guard's limits for what runs next (starting it if need be)."""
        if not self.dog.arm(timeouts_s):
            os._exit(EXIT_ORPHANED)

    def call_fast(self, rec) -> bool:
        """The common record, a plain function call with small arguments,
        without the general path's layers; False if it is not one."""
        start = _now()
        ident = _unpack(rec)[4]
        k = self.completed
        self.progress[0] = k << 2 | RUNNING          # from here on a crash is this item's
        try:
            fn_id, args, kwargs = _loads(rec[_HS:])
        except Exception:                    # noqa: BLE001 - handle() reports it
            return False
        fn = self.plain.get(fn_id)
        if fn is None:
            return False
        spans = self.spans
        spans.begin(fn_id, start)
        try:
            value = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as exc:         # noqa: BLE001 - the task's failure, not ours
            self._send(R_ERROR, ident, error_payload(exc), spans.end(True) - start)
            self._done()
            self._failed()
            return True
        end = spans.end()
        if type(value) not in _SCALARS:      # only values that surely unpickle in the parent
            self._send(R_VALUE, ident, value, end - start)   # done once it is encoded
            self._done()
            return True
        self.completed = k = k + 1           # a scalar: encoding it cannot fail or crash
        self.progress[0] = k << 2
        self.fast_ids.append(ident)
        self.fast_values.append(value)
        self.fast_ns += end - start
        return True

    # -- one record -----------------------------------------------------------------------
    def handle(self, rec) -> bool:
        op, flags, _, count, ident = taskwire.header(rec)     # count: items in a task record
        if op == OP_STOP:
            return False
        k = self.completed
        if op == OP_DEF:
            # A function that crashes the worker as it is rebuilt: blamed on
            # the next item, as if its record were being decoded.
            self.progress[0] = k << 2 | DECODING
            try:
                fn = adopt(wire.loads(taskwire.raw_payload(rec)))
            except Exception as exc:         # noqa: BLE001 - reported by each call
                fn = _BrokenFn(RuntimeError(
                    f"the function could not be rebuilt in the worker: "
                    f"{type(exc).__name__}: {exc}"))
            self.progress[0] = k << 2
            self.fns[ident] = fn
            if not is_process_class(fn):
                self.plain[ident] = fn
            return True
        if op == OP_FORGET:
            self.fns.pop(ident, None)
            self.plain.pop(ident, None)
            return True
        if op == OP_LIMIT:
            self.limit_ns = ident
            if ident:
                self._arm((ident / 1e9,))
            return True
        start = native.now_ns()
        # Rebuilding a one-item record's arguments is part of running that
        # item; a record of several items is only being decoded (if that
        # crashes, the parent sends its items again one per record).
        self.progress[0] = k << 2 | (DECODING if count > 1 else RUNNING)
        try:
            body = taskwire.payload(rec, flags)
        except Exception as exc:             # noqa: BLE001 - e.g. an argument's class is missing
            err = RuntimeError(f"task {ident}'s arguments could not be rebuilt in the worker: "
                               f"{type(exc).__name__}: {exc}")
            self._send(R_ERROR, ident, error_payload(err), 0)
            self._done(max(1, count))        # every item of the record fails with it
            for _ in range(max(1, count)):
                self._failed()
            return True
        if op == OP_RETRY:                   # a Process task's next life: pool.py _expired_item
            self.lives_next, op, body = body
        if op == OP_CALL:
            fn_id, args, kwargs = body
            self.task_ident = ident if flags & FLAG_TELLS else None
            self.spans.begin(fn_id, start)
            try:
                self.call(ident, self._fn(fn_id), args, kwargs, start)
            finally:
                self.task_ident = None
        elif op == OP_CHUNK:
            fn_id, star, items = body
            self.task_ident = ident if flags & FLAG_TELLS else None
            try:
                self.chunk(ident, self._fn(fn_id), fn_id, star, items, start)
            finally:
                self.task_ident = None
        elif op == OP_RUN:
            label, obj = body
            self.task_ident = ident if flags & FLAG_TELLS else None
            self.spans.begin(label, start)
            try:
                out = self.run_process(obj)
            finally:
                self.task_ident = None
            self.spans.end(out[0] == FAILED_RESULT)
            self._send(R_PROCESS, ident, out, native.now_ns() - start)
            self._done()
            self.flush()            # a lifecycle's outcome leaves at once (see _process_chunk)
        return True

    def _fn(self, fn_id):
        fn = self.fns.get(fn_id)
        if fn is None:          # a bug of ours: fail the task, keep the worker
            return _BrokenFn(RuntimeError(f"function {fn_id} was never sent to this worker"))
        return fn

    def call(self, ident, fn, args, kwargs, start):
        """One call; ends the span handle() began for it."""
        spans = self.spans
        if is_process_class(fn):
            out = self.run_process(self.construct(fn, args, kwargs))
            self._send(R_PROCESS, ident, out, spans.end(out[0] == FAILED_RESULT) - start)
            self._done()
            self.flush()            # a lifecycle's outcome leaves at once (see _process_chunk)
            return
        try:
            if self.limit_ns:
                value = self.timed(fn, args, kwargs)
            else:
                value = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as exc:         # noqa: BLE001 - the task's failure, not ours
            self._send(R_ERROR, ident, error_payload(exc), spans.end(True) - start)
            self._done()
            self._failed()
            return
        # Done only once its result is encoded: a crash while encoding it
        # (the OOM killer on a huge result) is then blamed on this task.
        self._send(R_VALUE, ident, value, spans.end() - start)
        self._done()

    def timed(self, fn, args, kwargs):
        """fn(*args, **kwargs) under the task timeout: the guard (watchdog.py)
        watches the call as a section of the runner block, signals past its
        deadline, and ends the worker if the call does not unwind."""
        rctl = self.rctl
        self._arm((self.limit_ns / 1e9,))     # a Process task may have changed it
        rctl.enter(CALL, self.limit_ns)
        self.timing = True
        try:
            value = fn(*args, **kwargs) if kwargs else fn(*args)
        except _CallTimeout:
            raise self._timeout(fn) from None
        finally:
            self.timing = False
            overran = rctl.leave() & native.CTL_OVERRAN
        if overran:                              # it swallowed the signal, then returned late
            self.retiring = True
            raise self._timeout(fn)
        return value

    def _timeout(self, fn):
        limit = self.limit_ns / 1e9
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        return TaskTimeoutError("call", limit, message=f"{name} ran longer than its task "
                                f"timeout of {limit:g} s and was interrupted",
                                process_name=name)

    def chunk(self, ident, fn, label, star, items, start):
        n = len(items)
        if is_process_class(fn):
            self._process_chunk(ident, fn, label, star, items, start)
            return
        if self.limit_ns:
            self._timed_chunk(ident, fn, label, star, items, start)
            return
        # Items run in blocks through map() in C.  Each item's start is
        # published as it is taken (native marked(): a store in C as the
        # iterator hands the item out), so the parent can tell, if this
        # worker dies, which items finished, which one was running and
        # which never started.  Between two items of a block the finished
        # one still reads as running: a worker killed from outside at that
        # instant has it blamed.  Blocks grow while they take under
        # BLOCK_MIN_NS and shrink past BLOCK_MAX_NS; results go out at
        # least every FLUSH_NS (R_PART).
        # Each item's span is recorded the same way (spans.items: the
        # previous item's span ends and the next one's begins as it is
        # handed out), the last of a block when map() returns or raises.
        mapper = itertools.starmap if star else map
        progress, marked, now = self.progress, self.pctl.marked, _now
        spans = self.spans
        values, errors, sent = [], {}, 0
        base, it = self.completed, iter(items)
        block = self.block
        part_start = start
        while len(values) < n:
            b = min(block, n - len(values))
            batch = spans.items(marked(it, (base + len(values)) << 2 | RUNNING, 4, b), label, b)
            t0 = now()
            try:
                values.extend(mapper(fn, batch))
            except BaseException as exc:     # noqa: BLE001 - the item after the last value failed
                spans.end(True)
                errors[len(values)] = error_payload(exc)
                values.append(None)
                self._failed()
            t1 = spans.end()
            self.completed = base + len(values)
            progress[0] = self.completed << 2
            dt = t1 - t0
            if dt < BLOCK_MIN_NS and block < MAX_BLOCK:
                block *= 2
            elif dt > BLOCK_MAX_NS and block > 1:
                block //= 2
            if t1 - part_start > FLUSH_NS and len(values) < n:
                sent = self._send_part(R_PART, ident, values, errors, sent, part_start)
                self.flush()
                part_start = now()
        self.block = block
        self._send_part(R_CHUNK, ident, values, errors, sent, part_start)

    def _timed_chunk(self, ident, fn, label, star, items, start):
        """A chunk under a task timeout: one timed call per item.  After a
        timeout the worker retires: what ran is sent now (R_PART), the
        items after it go to the replacement worker."""
        values, errors, n = [], {}, len(items)
        progress, spans = self.progress, self.spans
        for item in items:
            progress[0] = self.completed << 2 | RUNNING
            spans.begin(label)
            try:
                values.append(self.timed(fn, tuple(item) if star else (item,), None))
            except BaseException as exc:     # noqa: BLE001 - the item's failure
                spans.end(True)
                errors[len(values)] = error_payload(exc)
                values.append(None)
                self._failed()
            spans.end()
            self.completed += 1
            progress[0] = self.completed << 2
            if self.retiring and len(values) < n:
                self._send_part(R_PART, ident, values, errors, 0, start)
                return
        self._send_part(R_CHUNK, ident, values, errors, 0, start)

    def _process_chunk(self, ident, fn, label, star, items, start):
        """A chunk of Process classes, one lifecycle per item; each item's
        outcome is sent as it ends (R_PART)."""
        values, errors, sent = [], {}, 0
        progress, n = self.progress, len(items)
        part_start = start
        for item in items:
            progress[0] = self.completed << 2 | RUNNING
            self.task_offset = len(values)
            args = tuple(item) if star else (item,)
            self.spans.begin(label)
            kind, value, timers, error, lap = self.run_process(self.construct(fn, args, {}))
            self.spans.end(kind == FAILED_RESULT)
            if kind == 2 and isinstance(value, BaseException):
                errors[len(values)] = (value, "")
                values.append(None)
            else:
                values.append(value)
            self._done()
            if self.retiring and len(values) < n:
                # The rest of the chunk goes to the replacement worker.
                self._send_part(R_PART, ident, values, errors, sent, part_start)
                return
            if len(values) < n:
                # Each lifecycle's outcome leaves at once: the next one may
                # run for a long time, or end this worker (a crash, its
                # guard), and a finished task is never run again.
                sent = self._send_part(R_PART, ident, values, errors, sent, part_start)
                self.flush()
                part_start = _now()
        self._send_part(R_CHUNK, ident, values, errors, sent, part_start)

    # -- Process tasks ----------------------------------------------------------------------
    def construct(self, cls, args, kwargs):
        try:
            return cls(*args, **kwargs) if kwargs else cls(*args)
        except BaseException as exc:         # noqa: BLE001 - reported as the task's error
            return _ConstructionFailed(cls, exc)

    def run_process(self, obj):
        """Run a Process object's whole lifecycle here; (kind, value, timers, error, lap)."""
        from ..common.config import validate
        from .runner import Runner
        name = type(obj).__name__
        lives, self.lives_next = self.lives_next, None
        if isinstance(obj, _ConstructionFailed):       # Cls(item) raised: that is the error
            self._failed()
            return FAILED_RESULT, obj.exc, None, None, 0
        try:
            if lives is not None:
                obj.config.lives = lives
            validate(obj.config)
            for hook in HOOK_NAMES:
                if not callable(getattr(obj, hook)):
                    raise TypeError(f"{name}.{hook} must be callable")
            snapshot = None
            if obj.config.lives > 1:
                main, bufs = wire.dumps(obj)
                snapshot = (main, [bytearray(b.raw()) for b in bufs])
        except BaseException as exc:         # noqa: BLE001
            self._failed()
            return FAILED_RESULT, exc, None, None, 0
        rctl = self.rctl
        rctl.reset()
        rctl.set_state(native.STATE_RUNNING)
        runner = Runner(rctl, None, name)
        runner.dog = self.dog
        if self.task_ident is not None:
            runner.mailbox = TaskMailbox(self, self.task_ident, self.task_offset)
            self.task_offset = 0
        if snapshot is not None:
            runner.rebuild = lambda: wire.loads(snapshot[0], [bytearray(b) for b in snapshot[1]])
        t = obj.config.timeouts
        self._arm((t.preloop, t.loop, t.postloop, t.onfinish))
        self.runner = runner
        try:
            kind, (value, timers, error, lap) = runner.execute(obj)
        except BaseException as exc:         # noqa: BLE001 - a bug of ours: report it
            err = ProcessError(f"the shmproc runner failed: {type(exc).__name__}: {exc}",
                               current_lap=runner.lap, traceback_text=_format(exc),
                               process_name=name)
            kind, value, timers, error, lap = FAILED_RESULT, err, None, err, runner.lap
        finally:
            self.runner = None
            rctl.leave()
        if kind == FAILED_RESULT:
            self._failed()
        rctl.set_state(native.STATE_DONE if kind != FAILED_RESULT else native.STATE_FAILED)
        return kind, value, timers, error, lap


class _CallTimeout(BaseException):
    """Raised by the SIGALRM handler into a plain call past its task timeout
    (a BaseException, so that `except Exception` in the call lets it pass)."""


class _ConstructionFailed:
    def __init__(self, cls, exc):
        self.name = cls.__name__
        self.exc = exc


def _initialize(init, result_q) -> bool:
    """Run the pool's initializer (a pickled (fn, args)); False if it raised,
    after telling the parent why."""
    try:
        fn, args = pickle.loads(init)
        adopt(fn)(*args)
        return True
    except BaseException as exc:             # noqa: BLE001 - the parent reports it
        record = taskwire.encode(R_INIT_FAILED, 0, error_payload(exc), None)
        result_q.put(record, timeout=5.0)
        return False


def build(slot, ctl_array, task_q, result_q, parent_pid, direct_child, use_pdeathsig, max_tasks,
          trace=None) -> PoolWorker:
    """A worker's PoolWorker, made by the parent before it forks the worker
    (main's `built`): every object made in a fresh fork child lands on a
    page it shares with its parent, and each first write there copies that
    page.  Made in the parent, ~100 fewer page faults per worker."""
    return PoolWorker(slot, ctl_array, task_q, result_q, parent_pid, direct_child, max_tasks,
                      orphan_signal=direct_child and use_pdeathsig, trace=trace)


def main(slot, ctl_array, task_q, result_q, parent_pid, direct_child, use_pdeathsig, max_tasks,
         init=None, trace=None, built=None):
    """The target of a pool worker process (`init`: the pool's initializer,
    pickled; `built`: under fork, its PoolWorker, see build)."""
    if built is None:                  # (a fork child ignores SIGINT from its first line: forking.py)
        signals.set_handler(signals.SIGINT, signals.SIG_IGN)  # Ctrl-C is the parent's to handle
    if direct_child and use_pdeathsig:
        if not native.parent_death_signal(signals.SIGKILL, parent_pid):
            os._exit(EXIT_ORPHANED)
    if init is not None and not _initialize(init, result_q):
        sys.stdout.flush()
        os._exit(1)
    worker = built
    if worker is None:
        worker = build(slot, ctl_array, task_q, result_q, parent_pid, direct_child,
                       use_pdeathsig, max_tasks, trace)
    else:
        worker.in_child()
    try:
        worker.run()
    finally:
        sys.stdout.flush()
