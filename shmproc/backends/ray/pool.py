"""RayPool: shmproc.Pool's API with its workers on a Ray cluster.

    caller (map / imap / submit)      dispatcher thread              launcher actor (per slot)
      │ units: chunks of items ──►     keeps <= DEPTH calls per  ──►   pool_run: a local
      │                                slot in flight, each a          one-worker shmproc.Pool
      │                                batch of ~20 ms of units;       (crash isolation,
      └ results, in order ◄─────────   refills as results come  ◄──    Process lifecycles)
                                       back (ray.wait)

Each slot is a launcher actor holding the backend's resources; its
local pool runs the items in a forked worker, so a task that crashes
fails alone (ProcessCrashedError) exactly as on the local backend.  A
launcher that dies (node lost, actor killed) is replaced and its units
are sent again, once.  Values come back through Ray's object store.
"""
from __future__ import annotations

import collections
import itertools
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from ...jobs.task import TaskOptions
    from .cluster import _Launcher

from ...common import validate
from ...common.errors import ProcessCrashedError, SerializationError, remote_failure
from ...common.validate import callable_name
from ...jobs.engine import RUNNING, TERMINATED, JobEngine, Progress
from ...jobs.job import READ_AHEAD_ITEMS, Job
from ...jobs.task import Task
from ...wire import pickling as wire
from .cluster import _cluster, _first_line

__all__ = ["RayPool"]

#: Units in flight per slot: one running, one queued behind it (hides a round trip).
DEPTH = 2
#: Seconds of work an imap unit aims for when chunksize is None.
LAZY_UNIT_S = 0.02
MAX_LAZY_CHUNK = 4096
#: Units one actor call may carry (see _next_batch).
MAX_BATCH_UNITS = 64
#: Functions the driver keeps registered (and their pickles in the object store).
MAX_FUNCTIONS = 256
#: How long the dispatcher waits on results before looking for new work.
POLL_S = 0.005
SLICE_S = 0.05
#: How long an idle dispatcher sleeps; new work wakes it at once.
IDLE_S = 1.0
#: Units sent again after their launcher died, before they fail.
MAX_RESENDS = 1
#: Function keys, unique in this process: launchers outlive pools and keep functions by key.
_fn_keys = itertools.count(1)


class _Slot:
    __slots__ = ("launcher", "inflight", "index")

    launcher: Any                   # a _Launcher, None while it is replaced

    def __init__(self, index: int, launcher: _Launcher) -> None:
        self.index, self.launcher, self.inflight = index, launcher, 0


class _Unit:
    __slots__ = ("sink", "index", "kind", "fn", "items", "star", "resends")

    def __init__(self, sink: Any, index: int, kind: str, fn: Any, items: Any,
                 star: bool) -> None:
        self.sink, self.index, self.kind, self.fn = sink, index, kind, fn
        self.items, self.star, self.resends = items, star, 0


class _Fn:
    """A function as the launchers get it: a key and its pickle in the object store."""

    __slots__ = ("key", "ref", "name")

    def __init__(self, key: int, ref: Any, name: str) -> None:
        self.key, self.ref, self.name = key, ref, name


class RayJob(Job):
    """A Job whose chunks go to launchers; `outstanding` counts its units
    sent or waiting (an item after a failure in a unit never runs, so
    completion is counted by units, not items)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.outstanding = 0

    def complete(self) -> bool:
        return self.source is None and not self.buffered and self.outstanding == 0


class RayPool(JobEngine):
    """shmproc.Pool's API (map, imap, imap_unordered, starmap, istarmap,
    submit) with one launcher actor per worker on a Ray cluster."""

    _TELLS = False                # the launcher runs Process items without a mailbox
    _inflight: dict[Any, tuple[_Slot, list[_Unit], float, _Launcher]]

    def __init__(self, backend: Any, workers: int | None, start_method: str | None,
                 max_tasks_per_worker: int | None, retries: int = 0,
                 initializer: Callable[..., object] | None = None, initargs: Any = (),
                 task_timeout: float | None = None) -> None:
        if start_method is not None:
            validate.start_method(start_method)
        max_tasks = validate.positive_int(max_tasks_per_worker, "max_tasks_per_worker",
                                          "no limit")
        # Each launcher runs a one-worker local pool with these retries: an
        # item whose worker dies while running it runs again there, as locally.
        retries = validate.retries(retries)
        init = validate.initializer(initializer, initargs)
        # Each launcher's local pool runs it in its worker (pickled once, here).
        self._init = None if init is None else wire.pickle_function(init)
        n = validate.positive_int(workers, "workers", "one per CPU of the cluster")
        self._backend = backend
        ray = self._ray = backend.connect()
        if n is None:
            cpus = ray.cluster_resources().get("CPU", 1.0)
            per = backend.spec.get("CPU", 1.0)
            n = max(1, int(cpus // per)) if per > 0 else max(1, int(cpus))
        self._init_engine(n, retries, validate.task_timeout(task_timeout))
        self._cond = threading.Condition(self._lock)
        self._pending = collections.deque()
        self._inflight = {}                 # ref -> (slot, units, sent at, launcher)
        self._functions: collections.OrderedDict[int, tuple[Any, _Fn]] = collections.OrderedDict()
        self._broken: BaseException | None = None   # why the pool cannot go on (see _break)
        self._replacing = False
        self._total = self._done = self._failed = 0
        self._item_s: float | None = None   # measured seconds per item (EWMA)
        self._events = [0]                  # see _wake
        launchers = _cluster.acquire(backend.spec, backend.runtime_env, n, backend.start_timeout)
        self._slots = [_Slot(i, launcher) for i, launcher in enumerate(launchers)]
        try:
            ray.get([s.launcher.actor.pool_open.remote(start_method, max_tasks, self._retries,
                                                       self._init)
                     for s in self._slots], timeout=backend.start_timeout)
        except BaseException:
            _cluster.release(launchers, broken=True)
            raise
        self._method = start_method or "fork"
        self._max_tasks = max_tasks
        _cluster.pools.add(self)
        # A pool dropped without close() or terminate() still gives its launchers back.
        self._finalizer = weakref.finalize(self, _abandon, self._ray, self._slots)
        self._thread = threading.Thread(target=_dispatch, args=(weakref.ref(self),),
                                        name="shmproc-ray-pool", daemon=True)
        self._thread.start()

    # -- functions ----------------------------------------------------------------------------
    def _register(self, fn: Callable[..., Any]) -> _Fn:
        entry = self._functions.get(id(fn))
        if entry is not None and entry[0] is fn:
            self._functions.move_to_end(id(fn))
            return entry[1]
        blob = wire.pickle_function(fn)            # an unpicklable function fails here
        handle = _Fn(next(_fn_keys), self._ray.put(blob), callable_name(fn))
        self._functions[id(fn)] = (fn, handle)
        while len(self._functions) > MAX_FUNCTIONS:
            # Units in flight keep their own handle; launchers ask again if they forgot.
            self._functions.popitem(last=False)
        return handle

    # -- dispatching (dispatcher thread, and callers that add work) --------------------------------
    def _fill(self) -> None:
        """Give every slot with room its next batch of units."""
        for slot in self._slots:
            while slot.launcher is not None and slot.inflight < DEPTH:
                batch = self._next_batch()
                if not batch:
                    return
                self._send(slot, batch)

    def _next_batch(self) -> list[_Unit]:
        """Units for one actor call: as many as make about LAZY_UNIT_S of
        measured work (one while nothing is measured), so that one-item
        units (chunksize=1, submit) share the call's ~ms cost."""
        unit = self._next_unit()
        if unit is None:
            return []
        batch = [unit]
        if self._item_s is None:
            return batch
        work = self._item_s * len(unit.items)
        while len(batch) < MAX_BATCH_UNITS and work < LAZY_UNIT_S:
            unit = self._next_unit()
            if unit is None:
                break
            batch.append(unit)
            work += self._item_s * len(unit.items)
        return batch

    def _next_unit(self) -> _Unit | None:
        while self._pending:
            unit = self._pending.popleft()
            if not _dropped(unit):
                return unit
        for _ in range(len(self._jobs)):
            job = self._jobs[0]
            self._jobs.rotate(-1)                  # round robin between running maps
            if job.paused(READ_AHEAD_ITEMS):
                continue                           # its caller is behind: read no further
            size = job.chunksize or self._lazy_chunk()
            got = job.read_chunk(size)
            if job.exhausted():
                self._jobs.remove(job)
            if got is not None:
                job.outstanding += 1        # type: ignore[attr-defined]  # a RayJob
                self._total += len(got[1])
                return _Unit(job, got[0], "chunk", job.fn, got[1], job.star)
        return None

    def _lazy_chunk(self) -> int:
        if self._item_s is None:
            return 1
        return max(1, min(MAX_LAZY_CHUNK, int(LAZY_UNIT_S / max(self._item_s, 1e-7))))

    def _send(self, slot: _Slot, batch: list[_Unit], with_function: bool = False) -> None:
        known = slot.launcher.known
        wire = []
        for unit in batch:
            fn = unit.fn
            key, ref = 0, None
            if fn is not None:
                key = fn.key
                if with_function or key not in known:
                    ref = [fn.ref]
                    known.add(key)
            retries = unit.sink.retries           # a Task's may be None: the pool's
            wire.append((unit.kind, key, ref, unit.items, unit.star, retries,
                         unit.sink.timeout_ns))
            if isinstance(unit.sink, Task):
                unit.sink._sent()
        try:
            ref_out = slot.launcher.actor.pool_run.remote(wire)
        except Exception as exc:                   # noqa: BLE001 - an item Ray cannot pickle
            if len(batch) > 1:
                for unit in batch:                 # find it: the others go on
                    self._send(slot, [unit], with_function)
            else:
                self._unsendable(batch[0], exc)
            return
        self._inflight[ref_out] = (slot, batch, time.monotonic(), slot.launcher)
        slot.inflight += 1

    def _unsendable(self, unit: _Unit, exc: BaseException) -> None:
        if isinstance(unit.sink, RayJob):
            unit.sink.outstanding -= 1
        self._total -= len(unit.items) - 1
        self._failed += 1
        self._done += 1
        err = SerializationError(f"task {unit.index} cannot be sent to a worker: "
                                 f"{type(exc).__name__}: {_first_line(exc)}")
        unit.sink._fail(unit.index, err)

    def _complete(self, ref: Any) -> None:
        slot, batch, sent, launcher = self._inflight.pop(ref)
        slot.inflight -= 1
        ray = self._ray
        try:
            replies = ray.get(ref)
        except ray.exceptions.RayActorError as exc:    # the launcher (or its node) died
            if slot.launcher is launcher:
                slot.launcher = None               # the dispatcher replaces it, unlocked
                _cluster.release([launcher], broken=True)
            why = f"{type(exc).__name__}: {_first_line(exc)}"
            for unit in batch:
                self._lost(unit, why)
            return
        except Exception as exc:                   # noqa: BLE001 - e.g. a value that cannot load here
            for unit in batch:
                if isinstance(unit.sink, RayJob):
                    unit.sink.outstanding -= 1
                self._total -= len(unit.items) - 1
                self._failed += 1
                self._done += 1
                unit.sink._fail(unit.index, RuntimeError(
                    f"the result of task {unit.index} could not be read in the parent: "
                    f"{type(exc).__name__}: {_first_line(exc)}"))
            return
        n = sum(len(unit.items) for unit in batch)
        per = (time.monotonic() - sent) / n
        self._item_s = per if self._item_s is None else 0.7 * self._item_s + 0.3 * per
        missing = []
        for unit, reply in zip(batch, replies):
            if reply[0] == "missing":              # the launcher let the function go
                missing.append(unit)
            else:
                self._outcome(slot, unit, reply)
        if missing:
            self._send(slot, missing, with_function=True)

    def _outcome(self, slot: _Slot, unit: _Unit, reply: Any) -> None:
        sink = unit.sink
        if isinstance(sink, RayJob):
            sink.outstanding -= 1
        extra = reply[-1]
        if unit.kind == "process" and extra is not None:
            sink._proc.timers, sink._proc.error = extra
            if hasattr(extra[1], "with_remote_traceback"):
                extra[1].with_remote_traceback()      # the Process's own error, as locally
        if reply[0] == "ok":
            self._deliver(sink, unit.index, reply[1])
            return
        if reply[0] == "errors":                   # a chunk whose items failed here and there
            _, values, errors, _ = reply
            start = 0
            for k, exc, tb in errors:
                if k > start:
                    self._deliver(sink, unit.index + start, values[start:k])
                self._fail(sink, unit, slot, k, exc, tb)
                start = k + 1
            if start < len(values):
                self._deliver(sink, unit.index + start, values[start:])
            return
        _, k, values, exc, tb, _ = reply
        self._total -= len(unit.items) - k - 1     # items after a failure in a unit never run
        if values:
            self._deliver(sink, unit.index, values)
        self._fail(sink, unit, slot, k, exc, tb)

    def _fail(self, sink: Any, unit: _Unit, slot: _Slot, k: int, exc: Any,
              tb: str | None) -> None:
        exc = remote_failure(exc, tb, self._where(unit, k, slot))
        self._failed += 1
        self._done += 1
        sink._fail(unit.index + k, exc)

    def _deliver(self, sink: Any, index: int, values: list[Any]) -> None:
        self._done += len(values)
        sink._put_many(index, values)

    def _where(self, unit: _Unit, k: int, slot: _Slot) -> str:
        what = unit.fn.name if unit.fn is not None else "a Process"
        where = slot.launcher or _Gone
        return (f"in shmproc.Pool task {unit.index + k} ({what}), Ray launcher pid "
                f"{where.pid} on {where.node}")

    def _replace_launchers(self) -> None:
        """Called by the dispatcher without the lock: new launchers for slots
        whose launcher died.  A slot that cannot get one is dropped; a pool
        left with none is broken."""
        with self._lock:
            empty = [slot for slot in self._slots if slot.launcher is None]
            if not empty or self._status == TERMINATED:
                return
        backend = self._backend
        for slot in empty:
            try:
                fresh = _cluster.acquire(backend.spec, backend.runtime_env, 1,
                                         backend.start_timeout)[0]
                self._ray.get(fresh.actor.pool_open.remote(self._method, self._max_tasks,
                                                           self._retries, self._init),
                              timeout=backend.start_timeout)
            except Exception as exc:               # noqa: BLE001 - the slot is lost
                with self._lock:
                    self._slots.remove(slot)
                    if not self._slots:
                        self._break(ProcessCrashedError(
                            f"every worker of this Ray pool was lost and none could be "
                            f"replaced ({type(exc).__name__}: {_first_line(exc)})"))
                continue
            with self._lock:
                if self._status == TERMINATED:
                    _cluster.release([fresh])
                    return
                slot.launcher = fresh
                self._wake()

    def _lost(self, unit: _Unit, why: str) -> None:
        """A unit whose launcher died: send it again, or fail it."""
        if _dropped(unit):
            if isinstance(unit.sink, RayJob):
                unit.sink.outstanding -= 1
            return
        if unit.resends < MAX_RESENDS and self._slots and self._status != TERMINATED:
            unit.resends += 1
            self._pending.appendleft(unit)
            return
        if isinstance(unit.sink, RayJob):
            unit.sink.outstanding -= 1
        err = ProcessCrashedError(
            f"the Ray actor running shmproc.Pool task {unit.index} died ({why})",
            process_name=unit.fn.name if unit.fn is not None else "a Process")
        self._failed += 1
        self._done += 1
        unit.sink._fail(unit.index, err)

    def _wake(self) -> None:
        """Wake the dispatcher and waiting callers (under the lock).  The
        counter lets an idle dispatcher see work that came while it was
        not yet waiting."""
        self._events[0] += 1
        self._cond.notify_all()

    # -- what the job engine and Task need ------------------------------------------------------
    def _poll(self) -> None:
        pass                                        # the dispatcher thread delivers

    def _change(self) -> int:
        return self._events[0]

    def _wait_step(self, wait_s: float, seen: Any = None) -> None:
        with self._cond:
            if seen is None or self._events[0] == seen:     # nothing came since the caller looked
                self._cond.wait(wait_s)

    def _new_job(self, fn: Any, name: str, star: bool, source: Iterator[Any],
                 total: int | None, chunksize: int | None, copy: bool, retries: int,
                 seq: Any) -> RayJob:
        return RayJob(fn, name, star, source, total, chunksize, copy, retries, seq)

    def _job_added(self, job: Job) -> None:
        self._fill()
        self._wake()

    def _results_taken(self, job: Job | None) -> None:
        self._wake()                                # the dispatcher may read further now

    def _break(self, exc: BaseException) -> None:
        """The pool cannot go on (its dispatcher failed, or it lost every worker):
        fail what is waiting, refuse new work, wake everyone (under the lock)."""
        if self._broken is None:
            self._broken = exc
        err = self._broken
        for _, batch, _, _ in self._inflight.values():
            for unit in batch:
                _fail_unit(unit, err)
        for unit in self._pending:
            _fail_unit(unit, err)
        self._inflight.clear()
        self._pending.clear()
        for job in self._jobs:
            job.source = None
        self._wake()

    def _lost_cluster(self) -> None:
        """Ray was shut down under this pool."""
        with self._lock:
            self._break(RuntimeError("Ray was shut down while this pool was open"))
            self._status = TERMINATED
            self._finalizer.detach()

    def _check_broken(self) -> None:
        if self._broken is not None:
            raise RuntimeError(f"this Ray pool cannot go on: {type(self._broken).__name__}: "
                               f"{self._broken}") from self._broken

    def _drop_pending(self, unit: Any) -> None:
        try:
            self._pending.remove(unit)
        except ValueError:
            pass

    # -- public API ----------------------------------------------------------------------------------
    def _submit(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                options: TaskOptions) -> Task[Any]:
        """See shmproc.Pool.submit; options: a TaskOptions."""
        import cloudpickle
        with self._lock:
            self._check_open()
            if self._submit_kind(fn, args, kwargs) == "process":
                task: Task[Any] = Task(self, type(fn).__name__, fn, options.retries, options)
                unit = _Unit(task, 0, "process", None, [fn], False)
                payload = fn
            else:
                task = Task(self, callable_name(fn), None, options.retries, options)
                unit = _Unit(task, 0, "call", self._register(fn), [(args, kwargs or None)], False)
                payload = unit.items
            try:
                cloudpickle.dumps(payload, protocol=5)  # fail here, in the caller, not on a node
            except Exception as exc:                  # noqa: BLE001
                if unit.kind == "process":
                    raise wire.unserializable(fn, SerializationError(str(exc))) from exc
                raise SerializationError(
                    f"cannot submit {callable_name(fn)}: its arguments cannot be sent to a worker "
                    f"({type(exc).__name__}: {exc})") from exc
            task._unit = unit
            task.timeout_ns = self._timeout_ns if options.timeout_ns is None else options.timeout_ns
            self._total += 1
            self._pending.append(unit)
            self._fill()
            self._wake()
            return task

    @property
    def progress(self) -> Progress:
        """Items done / accepted / failed, counted as results reach the driver."""
        with self._lock:
            return Progress(self._done, self._total, self._failed)

    @property
    def pids(self) -> list[int]:
        """Pids of the workers (on their nodes)."""
        refs = [s.launcher.actor.pool_pids.remote() for s in self._slots if s.launcher]
        return [pid for pids in self._ray.get(refs) for pid in pids]

    def _busy(self) -> object:
        return self._inflight or self._pending or any(not j.complete() for j in self._jobs)

    def join(self, timeout: float | None = None) -> None:
        """Wait for every submitted task, then give the workers back.  Call close() first."""
        if self._status == RUNNING:
            raise ValueError("join() needs close() (or terminate()) first")
        self._read_lazy_jobs_to_the_end()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._status != TERMINATED and self._broken is None and self._busy():
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"the pool's tasks did not finish within {timeout} s")
                self._cond.wait(SLICE_S)
            if self._status == TERMINATED:
                return
            self._status = TERMINATED
            self._wake()
        self._give_back("pool_close")

    def terminate(self) -> None:
        """Kill the workers' running tasks now; unfinished tasks are cancelled."""
        with self._lock:
            if self._status == TERMINATED:
                return
            self._status = TERMINATED
            for _, batch, _, _ in self._inflight.values():
                for unit in batch:
                    _cancel(unit)
            for unit in self._pending:
                _cancel(unit)
            for job in self._jobs:
                job.cancel()
            self._pending.clear()
            self._jobs.clear()
            self._wake()
        self._run_due()                   # the cancelled Tasks' done-callbacks
        self._give_back("pool_terminate")

    def _give_back(self, how: str) -> None:
        self._finalizer.detach()
        _cluster.pools.discard(self)
        launchers = [s.launcher for s in self._slots if s.launcher is not None]
        if not _cluster.usable():                  # Ray is gone: nothing to give back
            return
        try:
            self._ray.get([getattr(l.actor, how).remote() for l in launchers], timeout=30)
            broken = False
        except Exception:                          # noqa: BLE001 - do not reuse them
            broken = True
        self._inflight.clear()
        _cluster.release(launchers, broken=broken)
        for s in self._slots:
            s.launcher = None

    def __repr__(self) -> str:
        return (f"<shmproc.Pool backend=ray workers={self._n} {self._status} "
                f"progress={tuple(self.progress)}>")


class _Gone:
    pid = node = "?"


def _dropped(unit: _Unit) -> bool:
    sink = unit.sink
    return sink.dropped if isinstance(sink, RayJob) else sink.cancelled()


def _fail_unit(unit: _Unit, err: BaseException) -> None:
    sink = unit.sink
    if isinstance(sink, Task):
        if not sink._finished():
            sink._fail(0, err)
    elif not sink.dropped:
        sink.outstanding = 0
        sink.source = None
        sink._fail(unit.index, err)


def _abandon(ray: Any, slots: list[_Slot]) -> None:
    launchers = [s.launcher for s in slots if s.launcher is not None]
    if not _cluster.usable():
        return
    try:
        ray.get([l.actor.pool_terminate.remote() for l in launchers], timeout=30)
        broken = False
    except Exception:                              # noqa: BLE001 - do not reuse them
        broken = True
    _cluster.release(launchers, broken=broken)


def _cancel(unit: _Unit) -> None:
    sink = unit.sink
    if isinstance(sink, Task):
        sink._cancel()
    else:
        sink.cancel()


def _dispatch(pool_ref: weakref.ref[RayPool]) -> None:
    """The dispatcher thread: whatever goes wrong in it breaks the pool
    (callers get the error) instead of leaving them waiting for ever."""
    try:
        _dispatch_loop(pool_ref)
    except BaseException as exc:                   # noqa: BLE001 - handed to the callers
        pool = pool_ref()
        if pool is not None:
            with pool._lock:
                pool._break(exc)


def _dispatch_loop(pool_ref: weakref.ref[RayPool]) -> None:
    """Send work to slots with room, take results as they come, replace
    launchers that died."""
    while True:
        pool = pool_ref()
        if pool is None:
            return
        pool._replace_launchers()
        with pool._lock:
            if pool._status == TERMINATED or pool._broken is not None:
                return
            pool._fill()
            refs = list(pool._inflight)
            seen = pool._events[0]
            ray, cond, events = pool._ray, pool._cond, pool._events
            idle_s = SLICE_S if any(s.launcher is None for s in pool._slots) else IDLE_S
        del pool                                   # no strong reference while waiting
        if not refs:
            with cond:
                if events[0] == seen:              # nothing came since the look above
                    cond.wait(idle_s)
            continue
        try:
            ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_S)
            if ready and len(refs) > 1:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        except Exception:                          # noqa: BLE001 - Ray shut down
            return
        pool = pool_ref()
        if pool is None:
            return
        with pool._lock:
            if pool._status == TERMINATED:
                return
            for ref in ready:
                if ref in pool._inflight:
                    pool._complete(ref)
            if ready:
                pool._wake()
        if ready and (pool._async_pending or pool._due or pool._ajobs):
            pool._fire_async()                     # callbacks run here, outside the lock
        del pool
