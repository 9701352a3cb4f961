"""Pool: warm workers for streams of tasks and batches of Processes.

    caller's thread (map / imap / submit / Task.wait)
      │  _feed: units of work ─► slot i's task ring ─► worker i (pool_worker.py)
      │                                                  │ runs fn(*args) or a
      │                                                  │ Process lifecycle
      └─ _pump: results ◄──── one result ring, shared ◄───┘
                 live counts ◄── control blocks (completed / failed / busy)

There is no dispatcher thread: whichever thread waits drives the pool
(encodes and sends the next units, decodes results, replaces dead
workers), under one lock.  That keeps the hot path free of thread
hand-offs, and it bounds what is in flight by what the caller consumes.

Each worker gets only as much work ahead as it can do in about
WINDOW_NS (from the measured time per item), so short tasks stream in
long batches while long ones stay balanced across workers.  When a
worker dies, the results it managed to send are taken first; then its
control block (the lap word: items finished, and the one running) sorts
the rest of what it had been given.  Finished items are final: never run
again, even when their results died with the worker (those fail with
ProcessCrashedError).  The item that was running fails with
ProcessCrashedError, or, if its call allows `retries`, runs again on a
fresh worker.  Items that never started go to the replacement.  A worker
ended by its guard (a Process task's hook stuck past its timeout, see
watchdog.py) fails that task with the section's TimeoutError instead, or
sends it to the replacement for its next life.
"""
from __future__ import annotations

import collections
import functools
import itertools
import math
import multiprocessing as mp
import os
import pickle
import queue as _stdlib_queue
import threading
import time
import weakref
from concurrent.futures import CancelledError

from . import blobs, native, taskwire, wire
from .config import default_start_method
from .errors import ProcessCrashedError, ProcessError, RemoteTraceback
from .progressbar import ProgressBar
from .queue import Queue
from .pool_worker import DECODING, IDLE, is_process_class as _is_process_class, process_class
from .taskwire import (OP_CALL, OP_CHUNK, OP_DEF, OP_FORGET, OP_RETRY, OP_RUN, OP_STOP,
                       R_CHUNK, R_ERROR, R_PART, R_PROCESS, R_VALUE, R_VALUES)
from .errors import TimeoutError as SectionTimeoutError
from .outcome import FAILED_RESULT, RETRIED, SECTION_NAMES

__all__ = ["Pool", "PoolCalls", "Task", "Progress"]

_dumps = pickle.dumps
_pack = taskwire.HEADER.pack
_MAIN_MARKER = wire._MAIN_MARKER
_NUMBERS = frozenset((int, float, bool, type(None)))

Progress = collections.namedtuple("Progress", "done total failed")
Progress.__doc__ = "Items finished (failed ones included), items accepted, items that failed."

#: Bytes of each worker's task ring, and of the result ring they share.
TASK_RING_BYTES = 1 << 20
RESULT_RING_BYTES = 4 << 20
#: Work queued ahead per worker, in estimated nanoseconds of running time.
WINDOW_NS = 2_000_000
MAX_WINDOW_ITEMS = 1024
#: Largest number of items in one record.
MAX_CHUNK = 1 << 16
#: A lazy call (imap...) reads at most this many items ahead of its caller.
READ_AHEAD_ITEMS = 4096
#: A caller waiting on a few tasks polls this long before sleeping.
SPIN_NS = 200_000
#: How often a waiting caller checks that the workers are alive.
SLICE_S = 0.02
#: Functions remembered by the workers (by id) before the oldest are dropped.
MAX_FUNCTIONS = 256
#: Seconds a stopping worker gets to exit before it is killed.
STOP_GRACE_S = 5.0

_RUNNING, _CLOSED, _TERMINATED = "running", "closed", "terminated"


# ---- units of work -------------------------------------------------------------------

class _Unit:
    """Items sent to one worker as one record: a call, a chunk, or a Process."""

    __slots__ = ("id", "sink", "index", "op", "fn_id", "star", "items", "n", "record", "slot",
                 "stream", "crashes", "cut", "lives")

    def __init__(self, ident, sink, index, op, fn_id, star, items):
        self.id = ident
        self.sink = sink              # the Task or _Job the outcomes go to
        self.index = index            # index of items[0] in the job
        self.op = op
        self.fn_id = fn_id
        self.star = star
        self.items = items            # OP_CHUNK: the items; OP_CALL: [(args, kwargs)]; OP_RUN: [proc]
        self.n = len(items)
        self.record = None            # encoded, once
        self.slot = None
        self.stream = 0               # position of items[0] in its worker's item stream
        self.crashes = 0              # times its worker died while it (one item) was running
        self.cut = False              # its first items were answered (R_PART) and dropped
        self.lives = None             # a Process task's lives left, if not its config's

    def payload(self):
        if self.op == OP_CHUNK:
            return self.fn_id, self.star, self.items
        if self.op == OP_CALL:
            args, kwargs = self.items[0]
            return self.fn_id, args, kwargs
        return self.items[0]

    def encode(self, token) -> bytes:
        if self.record is None:
            op, payload = self.op, self.payload()
            if self.lives is not None:
                op, payload = OP_RETRY, (self.lives, op, payload)
            self.record = taskwire.encode(op, self.id, payload, token,
                                          elapsed_us=self.n)     # the header's count field
        return self.record

    def split(self, ident, start, stop):
        """A new unit for items[start:stop] (re-sent after a crash)."""
        part = _Unit(ident, self.sink, self.index + start, self.op, self.fn_id, self.star,
                     self.items[start:stop])
        part.lives = self.lives
        return part

    def cut_answered(self, m):
        """Its first m items were answered (R_PART): it now holds the rest."""
        self.items = self.items[m:]
        self.index += m
        self.stream += m
        self.n -= m
        self.cut = True


class _Slot:
    """One worker: its process, its task ring, and what it was given."""

    __slots__ = ("index", "proc", "pid", "task_q", "pctl", "rctl", "inflight", "busy_items",
                 "sent_items", "allowance", "fns", "forget")

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


# ---- results: single tasks and jobs ------------------------------------------------

class Task:
    """The handle `Pool.submit` returns: wait(timeout), result, cancel()."""

    _PENDING, _SENT, _DONE, _CANCELLED = range(4)

    def __init__(self, pool, name, proc=None, copy=False, retries=0):
        self._pool = pool
        self._name = name
        self.retries = retries        # re-runs allowed if its worker dies while running it
        self._proc = proc             # submit(proc_instance): gets timers and error back
        self._copy = copy
        self._state = Task._PENDING
        self.dropped = False          # cancelled: outcomes are ignored
        self._value = None
        self._error = None
        self._unit = None

    # -- sink interface (called under the pool lock) --
    def _put(self, index, value):
        self._value = _writable(value) if self._copy else value
        self._state = Task._DONE
        self._unit = None             # no cycle: a result's memory goes with the Task

    def _fail(self, index, exc):
        self._error = exc
        self._state = Task._DONE
        self._unit = None

    def _process_outcome(self, index, kind, value, timers, error, lap):
        if self._proc is not None:
            self._proc.timers = timers
            self._proc.error = error
        _deliver_process(self, index, kind, value, error)

    def _sent(self):
        if self._state == Task._PENDING:
            self._state = Task._SENT

    # -- public --
    def done(self) -> bool:
        """True once the task finished (or was cancelled)."""
        if self._state < Task._DONE:
            self._pool._poll()
        return self._state >= Task._DONE

    @property
    def cancelled(self) -> bool:
        return self._state == Task._CANCELLED

    def cancel(self) -> bool:
        """Cancel the task if no worker has it yet; True if it is (now) cancelled."""
        with self._pool._lock:
            if self._state == Task._PENDING:
                self._state = Task._CANCELLED
                self.dropped = True
                self._pool._drop_pending(self._unit)
            return self._state == Task._CANCELLED

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task finished; False if `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + native.timeout_ns(timeout) / 1e9
        pool = self._pool
        while self._state < Task._DONE:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            pool._wait_step(SLICE_S if left is None else min(left, SLICE_S))
        return True

    @property
    def result(self):
        """The task's return value (waits); raises what the task raised."""
        self.wait()
        if self._state == Task._CANCELLED:
            raise CancelledError(f"task {self._name} was cancelled")
        if self._error is not None:
            raise self._error
        return self._value

    def __repr__(self):
        state = ("pending", "running", "done", "cancelled")[self._state]
        return f"<shmproc.Task {self._name} {state}>"


class _Job:
    """The items of one map / imap / starmap call and their outcomes.

    Values arrive a chunk at a time and are kept as lists keyed by the
    index of their first item, so a chunk costs one dict entry, not one
    per item."""

    def __init__(self, pool, fn_id, name, star, source, total, chunksize, copy, retries):
        self.pool = pool
        self.retries = retries        # re-runs allowed per item whose worker dies running it
        self.fn_id = fn_id
        self.name = name
        self.star = star
        self.source = source          # iterator of items, or None when all were taken
        self.seq = None               # map over a list/tuple/range: sliced into chunks
        self.total = total            # known length, or None while the source runs
        self.chunksize = chunksize    # None: adaptive
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

    def _sent(self):
        pass

    def _put(self, index, value):
        self.ready[index] = [_writable(value) if self.copy else value]
        self.finished += 1

    def _put_many(self, index, values):
        if values:
            self.ready[index] = [_writable(v) for v in values] if self.copy else values
            self.finished += len(values)

    def _fail(self, index, exc):
        self.errors[index] = exc
        self.finished += 1

    def _process_outcome(self, index, kind, value, timers, error, lap):
        _deliver_process(self, index, kind, value, error)

    def known_total(self):
        if self.total is None and self.source is None:
            return self.taken + len(self.buffered)
        return self.total

    def complete(self) -> bool:
        return self.source is None and not self.buffered and self.finished >= self.taken

    def exhausted(self) -> bool:
        return self.dropped or (self.source is None and not self.buffered)

    def paused(self, pool) -> bool:
        """A lazy call whose caller has not taken its results: read no further."""
        if not self.lazy:
            return False
        ahead = max(READ_AHEAD_ITEMS, 2 * (self.chunksize or 1) * len(pool._res.slots))
        return self.taken - self.handed >= ahead

    def take(self, pool, want, max_items):
        """Units for about `want` items (one unit unless items go one per record)."""
        if self.paused(pool):
            return None
        size = self.chunksize or pool._auto_chunk()
        if size > 1 or self.star:
            unit = self.next_unit(pool, max_items)
            return [unit] if unit is not None else None
        if self.dropped:
            return None
        buffered = self.buffered
        if len(buffered) < want:
            self._read(buffered, want - len(buffered))
        count = min(want, len(buffered), max_items)
        if not count:
            return None
        index = self.taken
        self.taken += count
        pool._total += count
        fn_id, ids, pop = self.fn_id, pool._ids, buffered.popleft
        dumps, pack, marker = _dumps, _pack, _MAIN_MARKER
        oob = []                  # buffers pickle wants out-of-band: then the general path
        keep = oob.append
        out = []
        for k in range(count):
            item = pop()
            args = (item,)
            unit = _Unit(next(ids), self, index + k, OP_CALL, fn_id, False, [(args, None)])
            # Encoded here, the common case inline (see taskwire.encode).
            if type(item) in _NUMBERS:              # cannot fail, refer to __main__ or go OOB
                unit.record = pack(OP_CALL, 0, 0, 1, unit.id) + dumps((fn_id, args, None), 5)
            else:
                try:
                    main = dumps((fn_id, args, None), 5, buffer_callback=keep)
                except Exception:                  # noqa: BLE001 - the general path decides
                    main = None
                if oob:
                    oob.clear()
                elif main is not None and marker not in main:
                    unit.record = pack(OP_CALL, 0, 0, 1, unit.id) + main
            out.append(unit)
        return out

    def next_unit(self, pool, max_items):
        """Take the next unit from the source, or None when it is exhausted."""
        if self.dropped or (self.source is None and not self.buffered):
            return None
        size = self.chunksize or pool._auto_chunk()
        size = max(1, min(size, max_items))
        if self.seq is not None:
            # A list, tuple or range: chunks are slices (a range's slices are
            # ranges, which cost nothing to send).
            start = self.taken
            items = self.seq[start:start + size]
            if start + len(items) >= len(self.seq):
                self.seq = self.source = None
            if not items:
                return None
            self.taken += len(items)
            pool._total += len(items)
            return _Unit(pool._new_id(), self, start, OP_CHUNK, self.fn_id, self.star, items)
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
        pool._total += len(items)
        return _Unit(pool._new_id(), self, index, OP_CHUNK, self.fn_id, self.star, items)

    def _read(self, into, count):
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

    def cancel(self):
        self.dropped = True
        self.source = None
        self.buffered.clear()
        self.ready.clear()


def _deliver_process(sink, index, kind, value, error):
    if kind == FAILED_RESULT and isinstance(value, BaseException):
        if isinstance(value, ProcessError):
            value.with_remote_traceback()
        sink._fail(index, value)
    else:
        sink._put(index, value)


def _writable(value):
    """copy=True: private, writable copies of the read-only arrays in `value`."""
    if isinstance(value, memoryview):
        return bytearray(value)
    if type(value).__name__ == "ndarray" and not value.flags.writeable:
        return value.copy()
    if isinstance(value, list):
        return [_writable(v) for v in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(_writable(v) for v in value)
    if isinstance(value, dict) and type(value) is dict:
        return {k: _writable(v) for k, v in value.items()}
    return value


def _remote(exc, tb, what):
    """The worker's exception, raised here with its traceback and task attached."""
    if not isinstance(exc, BaseException):
        exc = RuntimeError(repr(exc))
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    if hasattr(exc, "add_note"):
        exc.add_note(what)
    exc.shmproc_task = what
    return exc


# ---- the pool ---------------------------------------------------------------------------

def _load(slot):
    return slot.busy_items, slot.index


def _positive_int(value, name: str, none_means: str):
    """Validate an option that is an int >= 1 or None; returns it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1 or None ({none_means}), "
                        f"not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _worker_count(workers) -> int:
    if _positive_int(workers, "workers", "one per CPU") is not None:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _check_method(method) -> str:
    if method is None:
        return default_start_method()
    allowed = mp.get_all_start_methods()
    if method not in allowed:
        raise ValueError(f"start_method must be one of {allowed} or None, got {method!r}")
    return method


def _check_chunksize(chunksize):
    return _positive_int(chunksize, "chunksize", "automatic")


def _check_retries(retries, default=None):
    """`retries`: an int >= 0; None means `default` (a call's: the pool's)."""
    if retries is None and default is not None:
        return default
    if isinstance(retries, bool) or not isinstance(retries, int):
        what = "an int >= 0" + (" or None (the pool's)" if default is not None else "")
        raise TypeError(f"retries must be {what}, not {type(retries).__name__}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    return retries


def _name(fn) -> str:
    if isinstance(fn, functools.partial):
        return f"partial({_name(fn.func)})"
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _pickle_function(fn) -> bytes:
    """The callable as one in-band pickle (it is sent to each worker once)."""
    main, bufs = wire.dumps(fn)
    if not bufs:
        return main
    import cloudpickle
    return cloudpickle.dumps(fn, protocol=wire.PROTOCOL)


def _is_process(obj) -> bool:
    return isinstance(obj, process_class())


class _Resources:
    """What must be released when a pool ends, however it ends (also from a
    weakref finalizer, so it must not refer to the Pool itself)."""

    def __init__(self):
        self.slots = []
        self.ctl = None
        self.results = None
        self.token = blobs.FlushToken()
        self.token.wait = False       # a task's arguments matter only while its worker lives
        self.owner = os.getpid()

    def kill(self):
        if os.getpid() != self.owner:
            return                    # a fork child's copy: the workers are the parent's
        slots, self.slots = self.slots, []
        for slot in slots:
            _kill(slot.proc)
        for slot in slots:
            slot.proc.join()
            _close_task_queue(slot.task_q)
        self.release()

    def release(self):
        if self.results is not None:
            self.results.close()
            self.results = None
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        blobs.pool.drop(self.token)


def _close_task_queue(q):
    """Close a worker's task queue once the worker is gone, with the large
    records it never read (the Queue keeps their segments for its reader)."""
    q.close()
    blobs.pool.drop(q._token)


def _kill(proc):
    if proc.exitcode is None:
        try:
            proc.kill()
        except (ProcessLookupError, AttributeError):
            pass


class PoolCalls:
    """The calls every pool has, local or on another backend (ray_pool.py).

    A pool provides _start_job(fn, iterable, chunksize, star, copy, eager,
    retries), _collect(job, bar), _lazy_results(...), _check_open(),
    _register(fn), _lock, and close/join/terminate.
    """

    def map(self, fn, iterable, chunksize: int | None = None, *, progress: bool = False,
            copy: bool = False, retries: int | None = None) -> list:
        """[fn(x) for x in iterable], in parallel; raises the first task error.

        chunksize None picks a batch size (as multiprocessing.Pool.map
        does); progress=True draws a progress bar on stderr; copy=True
        returns writable copies of numpy arrays instead of read-only views;
        retries: how many times an item whose worker dies while running it
        is run again on a fresh worker before it fails with
        ProcessCrashedError (None: the pool's `retries`).  Items that
        finished are never run again.
        """
        job = self._start_job(fn, iterable, chunksize, False, copy, True, retries)
        return self._collect(job, _bar(progress, job))

    def starmap(self, fn, iterable, chunksize: int | None = None, *, progress: bool = False,
                copy: bool = False, retries: int | None = None) -> list:
        """[fn(*args) for args in iterable], in parallel."""
        job = self._start_job(fn, iterable, chunksize, True, copy, True, retries)
        return self._collect(job, _bar(progress, job))

    def imap(self, fn, iterable, chunksize: int | None = None, *, progress: bool = False,
             copy: bool = False, retries: int | None = None):
        """Lazy map: yields results in order as they are ready; reads the
        input only as fast as workers need it.  A failed task raises when
        its turn comes, after the results before it."""
        return self._lazy(fn, iterable, chunksize, False, copy, True, progress, retries)

    def imap_unordered(self, fn, iterable, chunksize: int | None = None, *,
                       progress: bool = False, copy: bool = False, retries: int | None = None):
        """Like imap, but yields results in the order they finish."""
        return self._lazy(fn, iterable, chunksize, False, copy, False, progress, retries)

    def istarmap(self, fn, iterable, chunksize: int | None = None, *, progress: bool = False,
                 copy: bool = False, retries: int | None = None):
        """Lazy starmap, in order."""
        return self._lazy(fn, iterable, chunksize, True, copy, True, progress, retries)

    def _lazy(self, fn, iterable, chunksize, star, copy, ordered, progress, retries):
        """imap & co.: bad arguments fail now; the work starts with the first
        next() (a generator never started runs nothing)."""
        _check_chunksize(chunksize)
        _check_retries(retries, 0)
        if not callable(fn):
            raise TypeError(f"the function to map must be callable, not {type(fn).__name__}")
        with self._lock:
            self._check_open()
            self._register(fn)
        return self._lazy_results(fn, iterable, chunksize, star, copy, ordered, progress, retries)

    def __reduce__(self):
        raise TypeError("a shmproc.Pool belongs to the process that created it and cannot be "
                        "sent to another process; create a Pool where it is used")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            self.join()
        else:
            self.terminate()


class Pool(PoolCalls):
    """Warm worker processes for many tasks: map, imap, starmap, submit.

    `fn` may be any callable (lambdas and closures included) or a Process
    subclass, whose whole lifecycle then runs for each item on a warm
    worker.  Use it as a context manager: leaving the block normally waits
    for submitted tasks (close + join); leaving it with an exception
    terminates the workers.

    retries: how many times a task (an item) whose worker dies while
    running it runs again on a fresh worker before it fails with
    ProcessCrashedError; default 0.  The map calls take their own
    `retries=`; submit uses the pool's.  Tasks that finished never run again.
    """

    def __new__(cls, workers=None, start_method=None, max_tasks_per_worker=None, backend=None,
                retries=0):
        if backend is None or backend == "local":
            return super().__new__(cls)
        from .backends import resolve
        from .local_backend import LocalBackend
        chosen = resolve(backend)
        if isinstance(chosen, LocalBackend):
            return super().__new__(cls)
        # Another backend's pool has the same API; __init__ below is not run for it.
        return chosen.pool(workers, start_method, max_tasks_per_worker, retries)

    def __init__(self, workers: int | None = None, start_method: str | None = None,
                 max_tasks_per_worker: int | None = None, backend=None, retries: int = 0):
        self._retries = _check_retries(retries)
        self._n = _worker_count(workers)
        self._method = _check_method(start_method)
        self._max_tasks = _positive_int(max_tasks_per_worker, "max_tasks_per_worker", "no limit")
        self._ctx = mp.get_context(self._method)
        self._lock = threading.RLock()
        self._status = _RUNNING
        self._ids = itertools.count(1)
        self._fn_ids = itertools.count(1)
        self._functions = collections.OrderedDict()     # id(fn) -> (fn id, fn, pickle)
        self._units = {}                                # id -> unit a worker holds
        self._pending = collections.deque()             # units ready to send
        self._jobs = collections.deque()                # jobs whose source still yields
        self._avg_item_ns = None                        # measured time per item (EWMA)
        self._total = 0
        self._retired_done = 0
        self._retired_failed = 0
        self._crashed = 0
        self._next_check = 0.0
        self._pumper = None                             # see _ensure_pumper
        self._background_error = None
        res = self._res = _Resources()
        weakref.finalize(self, res.kill)
        try:
            res.ctl = native.ControlArray.create(2 * self._n)
            res.results = Queue(capacity=RESULT_RING_BYTES)
            if self._method == "forkserver":
                from .local_backend import preload_into_forkserver
                preload_into_forkserver()
            for i in range(self._n):
                res.slots.append(self._start_worker(i))
        except BaseException:
            res.kill()
            raise
        _live_pools.add(self)
        _ensure_exit_hook()

    # -- workers -------------------------------------------------------------------------
    def _start_worker(self, index) -> _Slot:
        from . import pool_worker
        res = self._res
        pctl, rctl = res.ctl.control(2 * index), res.ctl.control(2 * index + 1)
        pctl.reset()
        rctl.reset()
        pctl.set_state(0)
        task_q = Queue(capacity=TASK_RING_BYTES)
        task_q.cancel_join_thread()        # its large records matter only while the worker lives
        main = threading.current_thread() is threading.main_thread()
        try:
            proc = self._ctx.Process(
                target=pool_worker.main,
                args=(index, res.ctl, task_q, res.results, os.getpid(),
                      self._method != "forkserver", main, self._max_tasks),
                name=f"shmproc:pool-worker-{index}")
            proc.start()
        except BaseException:
            task_q.close()
            raise
        return _Slot(index, proc, task_q, pctl, rctl, self._max_tasks)

    def _check_workers(self):
        for slot in list(self._res.slots):
            if slot.proc.exitcode is not None:
                self._worker_ended(slot)

    def _worker_ended(self, slot):
        """A worker exited (crashed, recycled, or retired after a timeout):
        account, fail or re-send what it held, replace it."""
        self._drain()                            # what it sent before it went
        slot.proc.join()
        # The lap word, as the worker left it (reaped: all its stores are
        # visible): items [0, k) of its stream finished; item k was running,
        # or its record being decoded, unless the phase is IDLE.
        word = slot.pctl.lap()
        k, phase = word >> 2, word & 3
        self._retired_done += k
        self._retired_failed += slot.pctl.lives
        code = slot.proc.exitcode
        resend = []
        for unit in slot.inflight:
            self._units.pop(unit.id, None)
            if unit.sink.dropped:
                continue
            n, lo = unit.n, unit.stream
            # Items [0, done): finished, results lost with the worker.
            # Item `running`, if any: the worker died in it.  The rest never started.
            done = min(n, max(0, k - lo))
            running = k - lo if phase != IDLE and lo <= k < lo + n else None
            if done:
                for i in range(done):
                    unit.sink._fail(unit.index + i, self._crash_error(unit, i, slot, code, True))
                self._crashed += done
            rest = done
            if running is not None:
                if phase == DECODING and n > 1:
                    # It died decoding the record, before any item ran: one
                    # record per item now, so that the item whose arguments
                    # kill a worker fails alone.
                    for i in range(n):
                        part = unit.split(self._new_id(), i, i + 1)
                        part.crashes = unit.crashes
                        resend.append(part)
                    rest = n
                else:
                    if not self._expired_item(unit, running, slot, resend):
                        self._crashed_item(unit, running, slot, code, resend)
                    rest = running + 1
            if rest == 0 and not unit.cut:
                self._resend_whole(unit, resend)          # not started: send it again as it is
                continue
            if rest < n:
                resend.append(unit.split(self._new_id(), rest, n))
            ref = taskwire.blob_ref(unit.record) if unit.record is not None else None
            if ref is not None:
                blobs.pool.discard(*ref)                  # the parts are encoded afresh
        slot.inflight.clear()
        for unit in reversed(resend):
            self._pending.appendleft(unit)
        _close_task_queue(slot.task_q)
        slots = self._res.slots
        i = slots.index(slot)
        if self._status == _TERMINATED:
            slots.pop(i)
            return
        slots[i] = self._start_worker(slot.index)

    def _resend_whole(self, unit, resend):
        ref = taskwire.blob_ref(unit.record) if unit.record is not None else None
        if ref is not None and not blobs.pool.republish(*ref):
            unit.record = None                            # its segment is gone: encode afresh
        resend.append(unit)

    def _crashed_item(self, unit, i, slot, code, resend):
        """Item i of `unit` was running when its worker died: run it again
        on a fresh worker if its call allows another retry, else fail it."""
        retries = unit.sink.retries
        if unit.crashes < retries:
            part = unit.split(self._new_id(), i, i + 1)
            part.crashes = unit.crashes + 1
            resend.append(part)
            return
        self._crashed += 1
        self._retired_done += 1
        unit.sink._fail(unit.index + i, self._crash_error(unit, i, slot, code, False,
                                                           unit.crashes + 1))

    def _expired_item(self, unit, k, slot, resend) -> bool:
        """Item k, a Process, was ended by its worker's guard past a section's
        timeout (watchdog.py): it fails with that section's TimeoutError, or
        with lives left runs again, from its start state, with one life
        fewer.  False if the worker died otherwise."""
        expired = slot.rctl.expired()
        if expired is None:
            return False
        section, timeout_ns, lap = expired
        lives = slot.rctl.lives
        if section in RETRIED and lives > 1:
            part = unit.split(self._new_id(), k, k + 1)
            part.crashes = unit.crashes               # a life used up, not a crash
            part.lives = lives - 1
            resend.append(part)
            return True
        self._crashed += 1                            # counted with the failures
        self._retired_done += 1
        fn = self._function(unit.fn_id) if unit.op != OP_RUN else None
        name = fn.__name__ if fn is not None else type(unit.items[0]).__name__
        unit.sink._fail(unit.index + k, SectionTimeoutError(
            SECTION_NAMES[section], timeout_ns / 1e9, lap, process_name=name))
        return True

    def _crash_error(self, unit, i, slot, code, lost, runs=1):
        """ProcessCrashedError for item i of `unit`, whose worker died: it
        had finished (lost: its result died with the worker), or it was
        running (its `runs`-th run)."""
        name, last_lap = f"pool worker {slot.index}", None
        fn = self._function(unit.fn_id) if unit.op != OP_RUN else None
        if unit.op == OP_RUN or _is_process_class(fn):
            last_lap = slot.rctl.lap() if not lost else None
            name = fn.__name__ if fn is not None else type(unit.items[0]).__name__
        err = ProcessCrashedError(exitcode=code, last_lap=last_lap, pid=slot.pid,
                                  process_name=name)
        what = None
        if lost:
            what = (f"{err}: this task had finished, its result was lost with the worker "
                    f"(finished tasks are not run again)")
        elif runs > 1:
            what = f"{err}; it ran {runs} times (retries={unit.sink.retries}), each run crashed"
        if what is not None:
            err = ProcessCrashedError(what, exitcode=code, last_lap=last_lap, pid=slot.pid,
                                      process_name=name)
        where = (f"in shmproc.Pool task {unit.index + i} "
                 f"({_name(fn) if fn is not None else name}), worker pid {slot.pid}")
        if hasattr(err, "add_note"):              # Python 3.11+
            err.add_note(where)
        err.shmproc_task = where
        return err

    def _function(self, fn_id):
        for fid, fn, _ in self._functions.values():
            if fid == fn_id:
                return fn
        return None

    # -- functions -------------------------------------------------------------------------
    def _register(self, fn) -> int:
        """A function id for `fn`; its pickle goes to each worker before first use."""
        key = id(fn)
        entry = self._functions.get(key)
        if entry is not None and entry[1] is fn:
            self._functions.move_to_end(key)
            return entry[0]
        try:
            data = _pickle_function(fn)
        except wire.SerializationError as exc:
            raise wire.SerializationError(
                f"cannot send {_name(fn)!s} to the pool's workers: {exc}. Define it at module "
                f"level, or make what it refers to picklable.") from exc.__cause__
        fn_id = next(self._fn_ids)
        self._functions[key] = (fn_id, fn, data)
        if len(self._functions) > MAX_FUNCTIONS:
            self._forget_functions()
        return fn_id

    def _forget_functions(self):
        """Drop the oldest functions no task still needs (rare: many distinct ones)."""
        in_use = {u.fn_id for u in self._units.values()} | {u.fn_id for u in self._pending} | \
                 {j.fn_id for j in self._jobs}
        for key, (old_id, _, _) in list(self._functions.items())[:-1]:   # never the newest
            if len(self._functions) <= MAX_FUNCTIONS:
                break
            if old_id in in_use:
                continue
            del self._functions[key]
            for slot in self._res.slots:
                if old_id in slot.fns:
                    slot.fns.discard(old_id)
                    slot.forget.append(old_id)

    def _new_id(self) -> int:
        return next(self._ids)

    # -- dispatch ---------------------------------------------------------------------------
    def _window(self) -> int:
        avg = self._avg_item_ns
        if avg is None:
            return 2
        return max(2, min(MAX_WINDOW_ITEMS, int(WINDOW_NS / max(avg, 1.0))))

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
            out = None if not feed_jobs else job.take(self, want, max_items)
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
        token = self._res.token
        units = self._units
        for slot in slots:
            inflight = slot.inflight
            allowance = slot.allowance
            busy = slot.busy_items
            batch, sent = [], []
            while len(inflight) + len(sent) < 2 or busy < window:
                if allowance is not None and allowance <= 0:
                    break
                taken = self._take(max(1, window - busy), allowance or MAX_CHUNK, feed_jobs)
                if not taken:
                    break
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
                        rec = unit.record or unit.encode(token)
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
            if slot.forget and sent:                     # with the next batch that goes
                batch[:0] = [taskwire.encode_raw(OP_FORGET, fid) for fid in slot.forget]
                slot.forget.clear()
            slot.busy_items = busy
            slot.allowance = allowance
            if sent:
                inflight.extend(sent)
                for unit in sent:
                    if unit.op != OP_CHUNK:
                        unit.sink._sent()
                self._send(slot, batch, sent)

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

    # -- results ------------------------------------------------------------------------------
    def _drain(self):
        while True:
            try:
                records = self._res.results.get_many(block=False, max_items=4096)
            except _stdlib_queue.Empty:
                return
            for rec in records:
                self._on_result(rec)

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
        if type(sink) is not _Job or sink.dropped or len(inflight) < n:
            return False
        for k, ident in enumerate(ids):
            unit = inflight[k]
            if unit.id != ident or unit.sink is not sink or unit.index != start + k:
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
            err = _remote(exc, tb, self._where(unit, 0, slot))
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
            sink._fail(unit.index + k, _remote(exc, tb, self._where(unit, k, slot)))
            start = k + 1
        sink._put_many(unit.index + start, values[start:])

    def _where(self, unit, k, slot):
        fn = self._function(unit.fn_id)
        return (f"in shmproc.Pool task {unit.index + k} ({_name(fn) if fn else 'a Process'}), "
                f"worker pid {slot.pid}")

    # -- driving --------------------------------------------------------------------------------
    def _pump(self, wait_s, feed_jobs=True):
        """Send what can go, take results (waiting up to wait_s for the first)."""
        self._feed(feed_jobs)
        records = ()
        if self._units:
            results = self._res.results
            slots = self._res.slots
            avg = self._avg_item_ns
            if (wait_s and (avg is None or avg < SPIN_NS)
                    and sum(slot.busy_items for slot in slots) <= len(slots)):
                # At most one short task per worker out: a reply is usually
                # tens of microseconds away, and spinning for it beats a futex
                # sleep and wake-up (which costs as much again on a VM).
                qsize, end = results.qsize, native.now_ns() + SPIN_NS
                while not qsize() and native.now_ns() < end:
                    pass
            try:
                if results.qsize() > 1:
                    records = results.get_many(block=False, max_items=4096)
                else:
                    records = (results.get(timeout=wait_s),)      # cheaper for one
            except _stdlib_queue.Empty:
                pass
        elif wait_s:
            time.sleep(min(wait_s, 0.001))
        for rec in records:
            self._on_result(rec)
        now = time.monotonic()
        if not records or now >= self._next_check:
            self._next_check = now + SLICE_S
            self._check_workers()
            self._recycle_spent()
        if records:
            self._feed(feed_jobs)

    def _recycle_spent(self):
        """Workers that used up max_tasks_per_worker exit by themselves: replace them."""
        if self._max_tasks is None:
            return
        for slot in list(self._res.slots):
            if slot.allowance == 0 and not slot.inflight:
                slot.proc.join(STOP_GRACE_S)
                if slot.proc.exitcode is None:
                    _kill(slot.proc)
                self._worker_ended(slot)

    def _wait_step(self, wait_s):
        """Drive the pool for up to wait_s (or return once another thread has)."""
        try:
            if not self._lock.acquire(timeout=max(wait_s, 0.001)):
                return                    # another thread is driving: the caller re-checks
            try:
                if self._background_error is not None:
                    err, self._background_error = self._background_error, None
                    raise err
                if self._status == _TERMINATED:
                    raise RuntimeError("the pool was terminated")
                self._pump(wait_s)
            finally:
                self._lock.release()
        except KeyboardInterrupt:
            self.terminate()
            raise

    def _ensure_pumper(self):
        """Submitted tasks beyond the workers' windows still get sent when
        nobody waits: a helper thread drives the pool until they are done."""
        if self._pumper is None and self._pending:
            self._pumper = threading.Thread(target=self._pump_in_background, daemon=True,
                                            name="shmproc-pool-driver")
            self._pumper.start()

    def _pump_in_background(self):
        try:
            while True:
                with self._lock:
                    if self._status == _TERMINATED or not self._pending:
                        self._pumper = None
                        return
                    self._pump(0.005, feed_jobs=False)   # imap & co. read as their caller takes
                time.sleep(0.0005)              # let a waiting caller take the lock
        except BaseException as exc:            # noqa: BLE001 - handed to the next caller
            with self._lock:
                self._background_error = exc
                self._pumper = None

    def _poll(self):
        with self._lock:
            if self._status != _TERMINATED:
                self._pump(0)

    # -- public API ----------------------------------------------------------------------------
    def _check_open(self):
        if self._status != _RUNNING:
            raise ValueError(f"the pool is {self._status}: no new tasks can be submitted")

    def submit(self, fn, *args, copy: bool = False, **kwargs) -> Task:
        """Run fn(*args, **kwargs) on a worker; returns a Task handle.

        `fn` may be a Process subclass (constructed on the worker with the
        arguments, then run) or an already-built Process object (no
        arguments), whose timers and error are filled in when it is done.
        If its worker dies while running it, it fails with
        ProcessCrashedError, or runs again on a fresh worker up to the
        pool's `retries` times.
        """
        with self._lock:
            self._check_open()
            if _is_process(fn):
                if args or kwargs:
                    raise TypeError("submit(process) takes no arguments: the Process object "
                                    "is already built")
                task = Task(self, type(fn).__name__, proc=fn, copy=copy, retries=self._retries)
                unit = _Unit(self._new_id(), task, 0, OP_RUN, 0, False, [fn])
            elif callable(fn):
                fn_id = self._register(fn)
                task = Task(self, _name(fn), copy=copy, retries=self._retries)
                unit = _Unit(self._new_id(), task, 0, OP_CALL, fn_id, False,
                             [(args, kwargs or None)])
            else:
                raise TypeError(f"submit() needs a callable or a Process, "
                                f"not {type(fn).__name__}")
            try:
                unit.encode(self._res.token)       # an unpicklable argument fails here, not later
            except Exception as exc:               # noqa: BLE001
                raise self._submit_error(fn, unit, exc) from exc
            task._unit = unit
            self._total += 1
            self._pending.append(unit)
            self._feed()
            self._ensure_pumper()
            return task

    def _submit_error(self, fn, unit, exc):
        if unit.op == OP_RUN:
            from .process import unserializable
            return unserializable(fn, exc)
        found = wire.find_unpicklable({"args": unit.items[0][0], "kwargs": unit.items[0][1]},
                                      "call")
        where = ""
        if found is not None:
            path, typ, _ = found
            path = path.replace("call.args", "args").replace("call.kwargs", "kwargs")
            where = f": {path} is a {typ.__module__}.{typ.__qualname__}"
        return wire.SerializationError(
            f"cannot submit {_name(fn)}: its arguments cannot be sent to a worker{where} "
            f"({type(exc).__name__}: {exc})")

    def _start_job(self, fn, iterable, chunksize, star, copy, eager, retries=None):
        chunksize = _check_chunksize(chunksize)
        retries = _check_retries(retries, self._retries)
        if not callable(fn):
            raise TypeError(f"the function to map must be callable, not {type(fn).__name__}")
        with self._lock:
            self._check_open()
            self._register(fn)               # an unpicklable function fails here, in the caller
        total = None
        seq = None
        if eager:
            # As the stdlib: map takes the whole input first (a list, tuple or
            # range as it is).
            items = iterable if type(iterable) in (list, tuple, range) else list(iterable)
            total = len(items)
            if chunksize is None:
                chunksize = max(1, math.ceil(total / (4 * self._n))) if total else 1
            source = iter(items)
            if chunksize > 1 or star:
                seq = items
        else:
            source = iter(iterable)
        with self._lock:                     # registered and queued under one hold
            self._check_open()
            job = _Job(self, self._register(fn), _name(fn), star, source, total, chunksize, copy,
                       retries)
            job.seq = seq
            self._jobs.append(job)
        return job

    def _lazy_results(self, fn, iterable, chunksize, star, copy, ordered, progress, retries):
        job = self._start_job(fn, iterable, chunksize, star, copy, False, retries)
        yield from self._drive(job, ordered, False, _bar(progress, job))

    def _drive(self, job, ordered, fail_fast, bar):
        """Yield the job's results, driving the pool meanwhile."""
        nxt = 0                       # ordered: index of the next result to yield
        try:
            while True:
                with self._lock:
                    if fail_fast and job.errors:
                        raise job.errors[min(job.errors)]
                    ready, error = [], None
                    if ordered:
                        while True:
                            chunk = job.ready.pop(nxt, None)
                            if chunk is not None:
                                ready.append(chunk)
                                nxt += len(chunk)
                            elif nxt in job.errors:
                                error = job.errors.pop(nxt)
                                break
                            else:
                                break
                    else:
                        ready = list(job.ready.values())
                        job.ready.clear()
                        if job.errors:
                            error = job.errors.pop(min(job.errors))
                    drained = job.complete() and not job.ready and not job.errors
                if bar is not None:
                    bar.update(job.finished, job.known_total())
                for chunk in ready:
                    job.handed += len(chunk)
                    yield from chunk
                if error is not None:
                    raise error
                if drained:
                    if job.source_error is not None:
                        raise job.source_error
                    return
                if ready:
                    continue                  # more may have come while the caller had these
                if self._status == _TERMINATED:
                    # Results already in hand were given out above (even after
                    # close() + join()); the rest will never come.
                    raise RuntimeError("the pool was terminated while this map was running")
                self._wait_step(SLICE_S)
        except KeyboardInterrupt:
            self.terminate()
            raise
        finally:
            self._end_job(job)
            if bar is not None:
                bar.close()

    def _collect(self, job, bar):
        """map/starmap: wait for every result (the first error raises), then
        join the chunks in order."""
        try:
            while True:
                with self._lock:
                    if self._status == _TERMINATED:
                        raise RuntimeError("the pool was terminated while this map was running")
                    if job.errors:
                        raise job.errors[min(job.errors)]
                    if job.complete():
                        if job.source_error is not None:
                            raise job.source_error
                        out = []
                        for index in sorted(job.ready):
                            out.extend(job.ready[index])
                        job.ready.clear()
                        return out
                if bar is not None:
                    bar.update(job.finished, job.known_total())
                self._wait_step(SLICE_S)
        except KeyboardInterrupt:
            self.terminate()
            raise
        finally:
            self._end_job(job)
            if bar is not None:
                bar.update(job.finished, job.known_total())
                bar.close()

    def _outcomes(self, fn, items, star, retries=None):
        """Run every item once, whatever fails: (values with None where an
        item failed, {index: exception}).  For the Ray launcher, which
        reports a chunk's items one by one (map stops at the first error;
        running the rest again would run finished items twice)."""
        job = self._start_job(fn, items, None, star, False, True, retries)
        try:
            while True:
                with self._lock:
                    if self._status == _TERMINATED:
                        raise RuntimeError("the pool was terminated while this map was running")
                    if job.complete():
                        values = [None] * job.taken
                        for index, chunk in job.ready.items():
                            values[index:index + len(chunk)] = chunk
                        errors = dict(job.errors)
                        job.ready.clear()
                        job.errors.clear()
                        return values, errors
                self._wait_step(SLICE_S)
        finally:
            self._end_job(job)

    def _end_job(self, job):
        with self._lock:
            if not job.complete() or job.ready or job.errors:
                job.cancel()
                try:
                    self._jobs.remove(job)
                except ValueError:
                    pass

    @property
    def progress(self) -> Progress:
        """Items done / accepted / failed over the pool's life, read live from
        the workers' control blocks."""
        with self._lock:
            done = self._retired_done
            failed = self._retired_failed + self._crashed
            for slot in self._res.slots:
                done += slot.pctl.lap() >> 2          # see pool_worker.IDLE
                failed += slot.pctl.lives
            return Progress(done, self._total, failed)

    @property
    def workers(self) -> int:
        return self._n

    @property
    def pids(self) -> list:
        with self._lock:
            return [slot.pid for slot in self._res.slots]

    def close(self):
        """No more tasks; those already submitted still run (then join())."""
        with self._lock:
            if self._status == _RUNNING:
                self._status = _CLOSED

    def join(self, timeout: float | None = None):
        """Wait for every submitted task, then stop the workers.  Call close() first."""
        if self._status == _RUNNING:
            raise ValueError("join() needs close() (or terminate()) first")
        if self._status == _TERMINATED:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                busy = self._units or self._pending or any(not j.complete() for j in self._jobs)
            if not busy:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"the pool's tasks did not finish within {timeout} s")
            self._wait_step(SLICE_S)
        with self._lock:
            self._stop_workers()

    def _stop_workers(self):
        res = self._res
        for slot in res.slots:
            try:
                slot.task_q.put(taskwire.encode_raw(OP_STOP, 0), timeout=1.0)
            except Exception:                          # noqa: BLE001 - it is killed below
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        for slot in res.slots:
            while slot.proc.exitcode is None and time.monotonic() < deadline:
                self._drain()                          # a worker waits for its results to be read
                slot.proc.join(0.01)
        self._status = _TERMINATED
        _live_pools.discard(self)
        res.kill()

    def terminate(self):
        """Kill the workers now; unfinished tasks are cancelled."""
        with self._lock:
            if self._status == _TERMINATED:
                return
            self._status = _TERMINATED
            _live_pools.discard(self)
            self._res.kill()
            for unit in list(self._units.values()) + list(self._pending):
                if isinstance(unit.sink, Task) and unit.sink._state < Task._DONE:
                    unit.sink._state = Task._CANCELLED
                    unit.sink.dropped = True
                elif isinstance(unit.sink, _Job):
                    unit.sink.cancel()
            for job in self._jobs:
                job.cancel()
            self._units.clear()
            self._pending.clear()
            self._jobs.clear()

    def __repr__(self):
        return (f"<shmproc.Pool workers={self._n} start_method={self._method} "
                f"{self._status} progress={tuple(self.progress)}>")



def _bar(progress, job):
    if not progress:
        return None
    return ProgressBar(job.total, desc=job.name)


# ---- exit: no pool outlives the interpreter --------------------------------------------------

_live_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()
_exit_hook = False


def _ensure_exit_hook():
    global _exit_hook
    if not _exit_hook:
        # Before multiprocessing joins its children at exit (see process.py).
        mp.util.Finalize(None, _terminate_all, exitpriority=100)
        _exit_hook = True


def _terminate_all():
    for pool in list(_live_pools):
        pool.terminate()


def _forget_after_fork():
    _live_pools.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
