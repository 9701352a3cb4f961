"""The local engine: a pool of warm worker processes on this machine.

    caller's thread (map / imap / submit / Task.wait)
      │  _feed: units of work ─► slot i's task ring ─► worker i (runtime/pool_worker.py)
      │                                                  │ runs fn(*args) or a
      │                                                  │ Process lifecycle
      └─ _pump: results ◄──── one result ring, shared ◄───┘
                 live counts ◄── control blocks (completed / failed / busy)

There is no dispatcher thread: whichever thread waits drives the pool
(encodes and sends the next units, decodes results, replaces dead
workers), under one lock.  That keeps the hot path free of thread
hand-offs, and it bounds what is in flight by what the caller consumes.

Which worker gets how much work, and when, is dispatch.py's; what
happens when a worker dies, recovery.py's; how results come back,
results.py's; what a call is (map, imap, ordering, errors), jobs/engine.py's.
"""
from __future__ import annotations

import collections
import itertools
import multiprocessing as mp
import os
import queue as _stdlib_queue
import select
import threading
import time
import weakref

from ... import _native as native
from ...channels.queue import Queue
from ...common import lifecycle, tracing, validate
from ...common.errors import InitializerError, remote_failure
from ...common.outcome import is_process_class
from ...common.validate import callable_name
from ...jobs.engine import RUNNING, TERMINATED, JobEngine, Progress
from ...jobs.task import SLICE_S, Task
from ...wire import blobs, taskwire
from ...wire import pickling as wire
from ...wire.taskwire import OP_CALL, OP_RUN, OP_STOP
from ...runtime import call_loop, pool_worker
from .dispatch import Dispatch
from . import forking
from .forking import DirectForkProcess
from .forkserver import preload_into_forkserver
from .recovery import WorkerRecovery
from .release import release_ended
from .resources import Resources, close_task_queue as _close_task_queue, kill_worker as _kill
from .results import ResultIntake
from .units import LocalJob, Slot, Unit

__all__ = ["LocalPool"]


#: Bytes of each worker's task ring, and of the result ring they share.
#: Task rings are small: the window keeps ~2 ms of work ahead per worker,
#: records over a quarter of a ring go out-of-band, and on the portable
#: layer every ring is reserved in /dev/shm when the pool starts (1 MiB
#: task rings cost a 64-worker pool ~8 ms more to create then; on Linux a
#: ring's pages come as first written, csrc/segment.c).
TASK_RING_BYTES = 1 << 18
#: Whatever the pool's size: on Linux its pages come as first written (a
#: 1 MiB ring made a one-worker pool's lifecycle no faster: 3.28 against
#: 3.25 ms), and on the portable layer it bounds the largest result.
RESULT_RING_BYTES = 4 << 20
#: A caller waiting on a few tasks polls this long before sleeping.
SPIN_NS = 200_000
#: Functions remembered by the workers (by id) before the oldest are dropped.
MAX_FUNCTIONS = 256
#: Span labels (function names) remembered for timeline().
MAX_LABELS = 65536
#: The longest a lone result may put off the pool's look at its workers (_pump).
CHECK_DEFER_S = 1.0
#: Seconds a stopping worker gets to exit before it is killed.
STOP_GRACE_S = 5.0


class LocalPool(Dispatch, WorkerRecovery, ResultIntake, JobEngine):
    """The engine of a shmproc.Pool on this machine (see the module doc);
    its arguments are Pool's, checked here."""

    def __init__(self, workers=None, start_method=None, max_tasks_per_worker=None, retries=0,
                 initializer=None, initargs=(), task_timeout=None):
        lifecycle.drop_leftovers()      # a fork child's first pool: its parent's go now
        self._init_engine(validate.worker_count(workers), validate.retries(retries),
                          validate.task_timeout(task_timeout))
        init = validate.initializer(initializer, initargs)
        self._init = None if init is None else wire.pickle_function(init)  # once for every worker
        self._broken = None                             # InitializerError: see _init_failed
        self._method = validate.start_method(start_method)
        self._max_tasks = validate.positive_int(max_tasks_per_worker, "max_tasks_per_worker",
                                                "no limit")
        self._ctx = mp.get_context(self._method)
        self._ids = itertools.count(1)
        self._fn_ids = itertools.count(1)
        self._functions = collections.OrderedDict()     # id(fn) -> (fn id, fn, pickle)
        self._labels = {}                               # fn id -> its name, for timeline()
        self._run_labels = {}                           # a submitted Process's class -> label id
        self._origin_ns = native.now_ns()
        self._ended_ns = None
        self._traced = tracing.enabled()
        self._trace_rings = ()                          # none while tracing is off
        self._units = {}                                # id -> unit a worker holds
        self._pending = collections.deque()             # units ready to send
        self._avg_item_ns = None                        # measured time per item (EWMA)
        self._probe_until = None                        # see dispatch._probing
        self._lone_hint = None                          # the last lone submit's task queue
        self._total = 0
        self._retired_done = 0
        self._retired_failed = 0
        self._crashed = 0
        self._next_check = 0.0
        self._last_check = 0.0                          # see _pump
        self._pumper = None                             # see _ensure_pumper
        self._driver_lock = threading.Lock()
        self._background_error = None
        res = self._res = Resources()
        weakref.finalize(self, res.kill)
        try:
            res.ctl = native.ControlArray.create(2 * self._n)
            # A ring of task spans per worker slot (csrc/trace.c): timeline().
            if self._traced:
                res.trace = native.TraceArea.create(self._n)
                self._trace_rings = [res.trace.ring(i) for i in range(self._n)]
            # Every worker puts, only the pool reads (under its lock): one consumer.
            res.results = Queue(capacity=RESULT_RING_BYTES, _consumers="one")
            res.lone = call_loop.result_context(res.results)    # see _take_lone
            if self._method == "forkserver":
                preload_into_forkserver()
            elif self._method == "fork":
                wire.preload_for_fork_children()
            res.slots.extend(self._start_workers(range(self._n)))
            # Where records cannot go out-of-band, a task's record must fit
            # its worker's ring (taskwire.fits).
            self._record_limit = (None if blobs.PEER_FD_OK
                                  else res.slots[0].task_q._inband_max)
        except BaseException:
            res.kill()
            raise
        _live_pools.add(self)
        _ensure_exit_hook()

    # -- workers -------------------------------------------------------------------------
    def _start_workers(self, indices) -> list:
        """Start workers: everything each needs is made first, then they are
        forked in one tight loop.  Python objects made between two forks
        touch pages the last child still shares, and each such first write
        copies a page: a 64-worker pool spent more on that than on fork."""
        release_ended()                   # no worker inherits an ended run's segments
        made = []
        try:
            for index in indices:
                made.append(self._prepare_worker(index))
            with forking.one_cleanup():
                for _, proc, _, _, _, _ in made:
                    proc.start()
            # After the last fork: each Slot made between two forks would
            # touch pages the previous child still shares.  (So are the
            # parent's copies of the built workers let go of only now, all
            # together, when `made` goes: start() drops its arguments, and
            # freeing a worker's objects between two forks cost ~150 us.)
            return [Slot(index, proc, task_q, pctl, rctl, self._max_tasks)
                    for index, proc, task_q, pctl, rctl, _ in made]
        except BaseException:
            # None of these is in the pool's slots yet: end the ones that
            # started (no orphan) and close every ring made here.
            for _, proc, task_q, _, _, _ in made:
                if getattr(proc, "_popen", None) is not None:
                    _kill(proc)
                    proc.join()
                    _close_task_queue(task_q)
                else:
                    task_q.close()
            raise

    def _start_worker(self, index) -> Slot:
        return self._start_workers([index])[0]

    def _prepare_worker(self, index):
        res = self._res
        pctl, rctl = res.ctl.control(2 * index), res.ctl.control(2 * index + 1)
        pctl.reset()
        rctl.reset()
        pctl.set_state(0)
        # The pool writes (under its lock), this worker reads: lock-free both sides.
        task_q = Queue(capacity=TASK_RING_BYTES, _producers="one", _consumers="one")
        task_q.cancel_join_thread()        # its large records matter only while the worker lives
        main = threading.current_thread() is threading.main_thread()
        # fork: multiprocessing's Process with a lean child bootstrap (forking.py).
        fork = self._method == "fork"
        make = DirectForkProcess if fork else self._ctx.Process
        try:
            args = (index, res.ctl, task_q, res.results, os.getpid(),
                    self._method != "forkserver", main, self._max_tasks)
            # Under fork the worker's objects are made here, not in the child
            # (pool_worker.build); _start_workers lets go of them.
            built = pool_worker.build(*args, res.trace) if fork else None
            proc = make(target=pool_worker.main, args=(*args, self._init, res.trace, built),
                        name=f"shmproc:pool-worker-{index}")
        except BaseException:
            task_q.close()
            raise
        return index, proc, task_q, pctl, rctl, built

    # -- functions -------------------------------------------------------------------------
    def _register(self, fn) -> int:
        """A function id for `fn`; its pickle goes to each worker before first use."""
        key = id(fn)
        entry = self._functions.get(key)
        if entry is not None and entry[1] is fn:
            self._functions.move_to_end(key)
            return entry[0]
        try:
            data = wire.pickle_function(fn)
        except wire.SerializationError as exc:
            raise wire.SerializationError(
                f"cannot send {callable_name(fn)!s} to the pool's workers: {exc}. Define it at module "
                f"level, or make what it refers to picklable.") from exc.__cause__
        fn_id = next(self._fn_ids)
        self._functions[key] = (fn_id, fn, data)
        self._name_label(fn_id, callable_name(fn))
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

    # -- timeline ----------------------------------------------------------------------------
    def _name_label(self, label: int, name: str):
        labels = self._labels
        labels[label] = name
        if len(labels) > MAX_LABELS:              # a new function per call: keep the newest
            for old in list(labels)[:MAX_LABELS // 2]:
                del labels[old]

    def _run_label(self, cls) -> int:
        """The span label of a submitted Process object's class (its record
        carries the label, as a call's carries its function id)."""
        label = self._run_labels.get(cls)
        if label is None:
            label = self._run_labels[cls] = next(self._fn_ids)
            self._name_label(label, cls.__qualname__)
            if len(self._run_labels) > MAX_LABELS:
                self._run_labels.clear()
        return label

    def _close_spans(self, index: int, flags: int):
        """The span a dead (or killed) worker of slot `index` left open ends now."""
        if self._trace_rings:
            self._trace_rings[index].close_open(native.now_ns(), flags)

    def trace_spans(self):
        """What the workers recorded, for Pool.timeline(): a dict of spans
        (slot, start_ns, end_ns, label, ok, pid) on the now_ns clock,
        complete ones only (a task still running has none yet); lost (spans
        overwritten in the bounded rings); origin_ns and end_ns (the pool's
        start, and its end or now); workers."""
        if not self._traced:
            raise RuntimeError("this pool records no timeline: it was made with SHMPROC_TRACE=0 "
                               "in the environment")
        out, lost = [], 0
        with self._lock:
            labels = dict(self._labels)
            end_ns = self._ended_ns or native.now_ns()
        for ring in self._trace_rings:
            spans, written = ring.read()
            lost += written - len(spans)
            index = ring.index
            for start, end, label, flags, pid, _ in spans:
                if end == 0:
                    continue                      # running now
                name = labels.get(label) or f"function #{label}"
                out.append((index, start, end, name, not flags, pid))
        return {"spans": out, "lost": lost, "origin_ns": self._origin_ns, "end_ns": end_ns,
                "workers": self._n}

    # -- driving --------------------------------------------------------------------------------
    def _pump(self, wait_s, feed_jobs=True):
        """Send what can go, take results (waiting up to wait_s for the first)."""
        if self._pending or self._jobs:
            self._feed(feed_jobs)
            wait_s = self._probe_wait(wait_s)     # what waits goes when the probe ends
        records, settled = (), False
        if self._units:
            results = self._res.results
            slots = self._res.slots
            avg = self._avg_item_ns
            # At most one short task per worker out: a reply is usually tens
            # of microseconds away, and spinning for it beats a futex sleep
            # and wake-up (which costs as much again on a VM).
            spin = (wait_s and (avg is None or avg < SPIN_NS) and len(self._units) <= len(slots))
            lone = None
            if wait_s and len(self._units) == 1 and self._res.lone is not None:
                lone = self._take_lone(SPIN_NS if spin else 0, wait_s)
            if lone is not None:
                records, settled = lone
            else:
                if spin:
                    native.spin_politely(results.qsize, native.now_ns() + SPIN_NS)
                try:
                    if results.qsize() > 1:
                        records = results.get_many(block=False, max_items=4096)
                    else:
                        records = (results.get(timeout=wait_s),)      # cheaper for one
                except _stdlib_queue.Empty:
                    pass
        elif wait_s and (self._pending or self._jobs):
            # Work waits and no worker can take it yet (a worker being
            # replaced): look again shortly.  With nothing left at all (the
            # feed above found the last job's input at its end) the caller's
            # own check now finds its call complete: no sleep (it cost every
            # small map whose results all came in one wait 1 ms).
            time.sleep(min(wait_s, 0.001))
        for rec in records:
            self._on_result(rec)
        now = time.monotonic()
        if not (records or settled) or now >= self._next_check:
            # A lone result after an idle spell, nothing else in flight: the
            # look at every worker (a waitpid each, each slow then) is put
            # off, but by at most CHECK_DEFER_S (a worker that died idle is
            # found then, or at the first wait that gets nothing).
            if not settled or self._units or now - self._last_check >= CHECK_DEFER_S:
                self._next_check = now + SLICE_S
                self._last_check = now
                self._check_workers()
            self._recycle_spent()
        if records and (self._pending or self._jobs):
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

    def _wait_step(self, wait_s, seen=None):
        """Drive the pool for up to wait_s (or return once another thread has)."""
        try:
            if not self._lock.acquire(timeout=max(wait_s, 0.001)):
                return                    # another thread is driving: the caller re-checks
            try:
                if self._background_error is not None:
                    err, self._background_error = self._background_error, None
                    raise err
                if self._status == TERMINATED:
                    raise RuntimeError("the pool was terminated")
                self._pump(wait_s)
            finally:
                self._lock.release()
            if self._due:
                self._run_due()
        except KeyboardInterrupt:
            self.terminate()
            raise

    def _ensure_pumper(self):
        """Submitted tasks beyond the workers' windows still get sent, and
        callbacks run and watched Tasks settle, when nobody waits: a helper
        thread drives the pool until they are done.  Its own small lock
        (not the pool's) decides whether it runs, so that a Task may ask
        for it while holding its Future's condition."""
        with self._driver_lock:
            if self._pumper is None and self._driver_needed():
                self._pumper = threading.Thread(target=self._pump_in_background, daemon=True,
                                                name="shmproc-pool-driver")
                self._pumper.start()

    def _driver_needed(self) -> bool:
        return bool(self._pending or self._async_pending or self._watched or self._due
                    or self._ajobs)

    def _pump_in_background(self):
        try:
            while True:
                with self._lock:
                    if self._watched and not (self._units or self._pending):
                        # Nothing in flight: every Task still watched has
                        # ended (one cancelled as something began to watch
                        # it): no reason left to drive the pool for it.
                        for task in list(self._watched):
                            if task._finished():
                                self._watched.discard(task)
                    with self._driver_lock:
                        if self._status == TERMINATED or not self._driver_needed():
                            self._pumper = None
                            return
                    # imap & co. read as their caller takes: only eager calls (and
                    # aimap's, whose caller is an event loop) are fed here.
                    self._pump(0, feed_jobs="eager")
                    results = self._res.results if self._units else None
                self._fire_async()
                # Wait for the next result without the pool's lock: a caller
                # submitting meanwhile must not queue behind this wait (it
                # did, ~30 us a submit while tasks were queued).  The pool
                # may end meanwhile: a closed queue keeps its mapping.
                if results is None or not results._wait_readable(self._probe_wait(0.005)):
                    time.sleep(0.0005)
                results = None
        except BaseException as exc:            # noqa: BLE001 - handed to the next caller
            with self._lock:
                self._background_error = exc
                with self._driver_lock:
                    self._pumper = None

    def _join_driver(self):
        """The pool has ended: its driver thread sees it within one wait
        (5 ms) and exits; wait for that, so nothing of the pool outlives
        terminate() or join() (the thread's last wait holds the result queue)."""
        with self._driver_lock:
            driver = self._pumper
        if driver is not None and driver is not threading.current_thread():
            driver.join(1.0)

    def _async_started(self):
        self._ensure_pumper()

    def _check_broken(self):
        if self._broken is not None:
            raise self._broken

    def _init_failed(self, exc, tb):
        """A worker's initializer raised: no worker of this pool can run a
        task.  Everything waiting fails with InitializerError, and so does
        every later call; the workers are not replaced."""
        if self._broken is not None:
            return
        err = InitializerError(f"the pool's initializer raised in a worker: "
                               f"{type(exc).__name__}: {exc}")
        err.__cause__ = remote_failure(exc, tb, "in the pool's initializer")
        self._broken = err
        for unit in list(self._units.values()) + list(self._pending):
            for k in range(unit.n):
                unit.sink._fail(unit.index + k, err)
        for job in self._jobs:
            job.source = None
            job.buffered.clear()
            job.errors.setdefault(job.taken, err)
        self._units.clear()
        self._pending.clear()

    def _poll(self):
        with self._lock:
            if self._status != TERMINATED:
                self._pump(0)
        if self._due:
            self._run_due()

    # -- public API ----------------------------------------------------------------------------
    def _submit(self, fn, args, kwargs, options) -> Task:
        """See shmproc.Pool.submit; options: a TaskOptions."""
        retries = self._retries if options.retries is None else options.retries
        hint = self._lone_hint
        if hint is not None:
            # The worker the last lone submit went to, likely this one's too:
            # its wake-up (slow after idle) begins now, not after the lock and
            # the slot choice (_submit_direct pokes the one it picks if that
            # is another).  A closed queue keeps its mapping while
            # referenced: always safe.
            hint._poke()
        with self._lock:
            self._check_open()
            task = self._submit_direct(fn, args, kwargs, options, retries, hint)
            if task is not None:
                return task
            if self._submit_kind(fn, args, kwargs) == "process":
                task = Task(self, type(fn).__name__, fn, retries, options)
                unit = Unit(self._new_id(), task, 0, OP_RUN, self._run_label(type(fn)), False,
                            [fn])
                unit.flags = taskwire.FLAG_TELLS
            else:
                fn_id = self._register(fn)
                task = Task(self, fn, None, retries, options)
                unit = Unit(self._new_id(), task, 0, OP_CALL, fn_id, False, args,
                            kwargs or None)
                if is_process_class(fn):
                    unit.flags = taskwire.FLAG_TELLS
            try:
                # An unpicklable argument (or, see taskwire.fits, one too large
                # for this platform) fails here, not later.
                unit.encode(self._res.token, self._record_limit)
            except Exception as exc:               # noqa: BLE001
                raise self._submit_error(fn, unit, exc) from exc
            task._unit = unit
            task.timeout_ns = self._timeout_ns if options.timeout_ns is None else options.timeout_ns
            self._total += 1
            self._pending.append(unit)
            self._feed()
            self._ensure_pumper()
            return task

    def _submit_error(self, fn, unit, exc):
        if unit.op == OP_RUN:
            return wire.unserializable(fn, exc)
        found = wire.find_unpicklable({"args": unit.items, "kwargs": unit.kwargs},
                                      "call")
        where = ""
        if found is not None:
            path, typ, _ = found
            path = path.replace("call.args", "args").replace("call.kwargs", "kwargs")
            where = f": {path} is a {typ.__module__}.{typ.__qualname__}"
        return wire.SerializationError(
            f"cannot submit {callable_name(fn)}: its arguments cannot be sent to a worker{where} "
            f"({type(exc).__name__}: {exc})")

    def _outcomes(self, fn, items, star, retries=None, task_timeout=None):
        """Run every item once, whatever fails: (values with None where an
        item failed, {index: exception}).  For the Ray launcher, which
        reports a chunk's items one by one (map stops at the first error;
        running the rest again would run finished items twice)."""
        job = self._start_job(fn, items, None, star, False, True, retries, task_timeout)
        try:
            while True:
                with self._lock:
                    if self._status == TERMINATED:
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
    def pids(self) -> list:
        with self._lock:
            return [slot.pid for slot in self._res.slots]

    def join(self, timeout: float | None = None):
        """Wait for every submitted task, then stop the workers.  Call close() first."""
        if self._status == RUNNING:
            raise ValueError("join() needs close() (or terminate()) first")
        if self._status == TERMINATED:
            return
        self._read_lazy_jobs_to_the_end()
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
        self._join_driver()
        self._run_due()

    def _stop_workers(self):
        res = self._res
        for slot in res.slots:
            try:
                slot.task_q.put(taskwire.encode_raw(OP_STOP, 0), timeout=1.0)
            except Exception:                          # noqa: BLE001 - it is killed below
                pass
        self._reap(res.slots, time.monotonic() + STOP_GRACE_S)
        self._status = TERMINATED
        _live_pools.discard(self)
        res.kill()
        self._ended()

    def _reap(self, slots, deadline):
        """Wait until these workers exit (or the deadline passes), reading
        results meanwhile: a worker waits for its results to be read.  One
        poll on all their sentinels (readable once a worker is gone), not a
        Process.join(timeout) each: that imports multiprocessing.connection
        (~3 ms) at a pool's first join."""
        poller, left = select.poll(), {}
        for slot in slots:
            if slot.proc.exitcode is None:           # waitpid(WNOHANG)
                poller.register(slot.proc.sentinel, select.POLLIN)
                left[slot.proc.sentinel] = slot
        while left:
            self._drain()
            wait_ms = int((deadline - time.monotonic()) * 1000)
            if wait_ms < 0:
                return                                 # res.kill() ends the rest
            ready = poller.poll(min(wait_ms, 10))
            for fd, _ in ready:
                slot = left.pop(fd, None)
                if slot is not None:
                    poller.unregister(fd)
                    slot.proc.join()                   # it is gone: reap it
            if not ready:
                # A process a task forked inherits its worker's end of the
                # sentinel and may keep it open after the worker exits:
                # ask the kernel too.
                for fd, slot in list(left.items()):
                    if slot.proc.exitcode is not None:         # reaped
                        poller.unregister(fd)
                        del left[fd]

    def _ended(self):
        """The workers are gone: spans they left open were cut short.  The
        spans are copied out and the segment unmapped (timeline() reads the
        copy), so an ended pool holds no shared memory."""
        self._lone_hint = None                     # (holds a ring's mapping)
        for i in range(self._n):
            self._close_spans(i, native.SPAN_CRASHED)
        self._trace_rings = [ring.snapshot() for ring in self._trace_rings]
        self._ended_ns = native.now_ns()

    def terminate(self):
        """Kill the workers now; unfinished tasks are cancelled."""
        with self._lock:
            if self._status == TERMINATED:
                return
            self._status = TERMINATED
            _live_pools.discard(self)
            self._res.kill()
            self._ended()
            for unit in list(self._units.values()) + list(self._pending):
                unit.sink._cancel() if isinstance(unit.sink, Task) else unit.sink.cancel()
            for job in self._jobs:
                job.cancel()
            self._units.clear()
            self._pending.clear()
            self._jobs.clear()
        self._join_driver()
        self._run_due()                   # the cancelled Tasks' done-callbacks

    def __repr__(self):
        return (f"<shmproc.Pool workers={self._n} start_method={self._method} "
                f"{self._status} progress={tuple(self.progress)}>")

    _close_task_queue = staticmethod(_close_task_queue)

    def _new_job(self, fn, name, star, source, total, chunksize, copy, retries, seq):
        return LocalJob(fn, name, star, source, total, chunksize, copy, retries, seq)


# ---- exit: no pool outlives the interpreter --------------------------------------------------

_live_pools: "weakref.WeakSet[LocalPool]" = weakref.WeakSet()


def _ensure_exit_hook():
    lifecycle.at_exit(_terminate_all, lifecycle.STOP_WORKERS)


def _terminate_all():
    for pool in list(_live_pools):
        pool.terminate()


def _forget_after_fork():
    _live_pools.clear()


lifecycle.at_fork(after_in_child=_forget_after_fork)
