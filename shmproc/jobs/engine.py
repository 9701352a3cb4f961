"""JobEngine: the one job engine every pool runs, local or on Ray.

It owns what a call is: map / starmap / imap / imap_unordered / istarmap
validate their arguments, become a Job (job.py), and are driven to their
results here, in order or as they finish, with the first error raised in
its turn and a progress bar if asked.  What differs between backends is
only how a unit of items reaches a worker and how its outcome comes back;
an engine subclass provides that:

    _register(fn)            -> a handle for fn (an unpicklable fn fails here)
    _new_job(...)            -> a Job subclass that knows how to cut units
    _job_added(job)          start sending it (the Ray dispatcher is woken)
    _results_taken(job)      a lazy caller took results (it may read further)
    _change()                a counter read under the lock; _wait_step(s, seen)
    _wait_step(s, seen)      wait up to s seconds for something to change
                             (the local engine drives its workers meanwhile)
    _check_broken()          raise if the engine cannot go on
    _pending                 the units not yet sent to a worker
    _submit(fn, args, kwargs, options) -> a Task (jobs/task.py)
    progress, workers, pids, join, terminate

The engine's state (_lock, _status, _jobs, _n, _retries) is set by
_init_engine.  Calls hold _lock only to look and to change state, never
while they wait.
"""
from __future__ import annotations

import collections
import math
import multiprocessing
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, NamedTuple, TypeVar, cast

from ..common import validate
from ..common.outcome import is_process, is_process_class
from .asyncresult import AsyncResult, MapResult
from .job import Job
from . import progressbar
from .task import DEFAULT_OPTIONS, SLICE_S, Task, TaskOptions, listen

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Generator, Iterator, Mapping

    from .progressbar import ProgressOption, Reporter

__all__ = ["JobEngine", "IMapIterator", "Progress", "RUNNING", "CLOSED", "TERMINATED"]

_T = TypeVar("_T")
_R = TypeVar("_R", bound=AsyncResult[Any])


class Progress(NamedTuple):
    done: int
    total: int
    failed: int


Progress.__doc__ = "Items finished (failed ones included), items accepted, items that failed."

RUNNING, CLOSED, TERMINATED = "running", "closed", "terminated"


def _bar(progress: ProgressOption, job: Job) -> Reporter | None:
    return progressbar.make(progress, job.total, job.name)


_TIMED_OUT = object()       # what _drive yields when an IMapIterator.next(timeout) ran out


class _Wait:
    """An imap iterator's state shared with its generator: the deadline of
    the next(timeout) in progress, and the job once the work started."""

    __slots__ = ("deadline", "job", "start")
    deadline: float | None
    job: Job | None
    start: Callable[[], Job] | None

    def __init__(self, start: Callable[[], Job] | None = None) -> None:
        self.deadline = None
        self.job = None
        self.start = start            # () -> the job (what the first next() or listen() does)

    def begin(self) -> Job:
        if self.job is None:
            # The caller's input goes with the job (start is set until then).
            self.job, self.start = self.start(), None     # type: ignore[misc]
        return self.job


class IMapIterator(Generic[_T]):
    """What imap / imap_unordered / istarmap return: an iterator whose
    next(timeout) raises multiprocessing.TimeoutError when no result comes
    in time, as multiprocessing's IMapIterator (the next call goes on).
    The work starts with the first next(); close() (or dropping the
    iterator) drops what is left."""

    __slots__ = ("_gen", "_wait", "_engine")

    def __init__(self, gen: Generator[Any, None, None], wait: _Wait,
                 engine: JobEngine | None = None) -> None:
        self._gen = gen
        self._wait = wait
        self._engine = engine

    def __iter__(self) -> IMapIterator[_T]:
        return self

    def __next__(self) -> _T:
        return self.next()

    def next(self, timeout: float | None = None) -> _T:
        if timeout is not None:
            validate_timeout(timeout)
            self._wait.deadline = time.monotonic() + timeout
        try:
            item = next(self._gen)
        finally:
            self._wait.deadline = None
        if item is _TIMED_OUT:
            raise multiprocessing.TimeoutError
        return item                                # type: ignore[no-any-return]  # a result: a _T

    def listen(self, timeout: float | None = None) -> tuple[int, Any] | None:
        """(index, message): the next message a Process item of this call
        told (`self.tell` in its hooks; index: the item's position in the
        input), or None once `timeout` seconds pass; with None, waits until
        one comes or nothing of the call runs (all done, or paused until
        results are taken).  Starts the work if no next() did."""
        engine = cast("JobEngine", self._engine)   # an imap's (Executor.map's has none)
        engine._check_tells()
        job = self._wait.begin()
        told: tuple[int, Any] | None = listen(
            engine, job, lambda: job.quiet() or engine._status == TERMINATED, timeout)
        return told

    def close(self) -> None:
        self._gen.close()


def _length_of(iterable: Iterable[Any], iterator: Iterator[Any]) -> int | None:
    """len(iterable) for a sized container read lazily (a list, range, numpy
    array): the progress bar's total.  None for an iterator or generator
    (their length is not known without reading them), or when len fails."""
    if iterator is iterable or not hasattr(type(iterable), "__len__"):
        return None
    try:
        n = len(iterable)                    # type: ignore[arg-type]  # it has __len__
    except Exception:                        # noqa: BLE001 - e.g. a 0-d numpy array
        return None
    return n if isinstance(n, int) and n >= 0 else None


def validate_timeout(timeout: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")


def _check_callable(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"the function to map must be callable, not {type(fn).__name__}")


class JobEngine:
    """The calls every pool has; see the module doc for what a subclass adds."""

    # Set by _init_engine (said there).
    _jobs: collections.deque[Job]
    _async_pending: set[AsyncResult[Any]]
    _watched: set[Task[Any]]
    _due: collections.deque[Task[Any]]
    _ajobs: dict[Job, list[Any]]

    if TYPE_CHECKING:
        # What an engine subclass provides (see the module doc).
        _pending: collections.deque[Any]          # the units not yet sent to a worker

        def _register(self, fn: Callable[..., Any]) -> Any: ...
        def _new_job(self, fn: Any, name: str, star: bool, source: Iterator[Any],
                     total: int | None, chunksize: int | None, copy: bool, retries: int,
                     seq: Any) -> Job: ...
        def _wait_step(self, wait_s: float, seen: Any = None) -> None: ...
        def _poll(self) -> None: ...
        def _drop_pending(self, unit: Any) -> None: ...
        def _submit(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                    options: TaskOptions) -> Task[Any]: ...
        @property
        def progress(self) -> Progress: ...
        @property
        def pids(self) -> list[int]: ...
        def join(self, timeout: float | None = None) -> None: ...
        def terminate(self) -> None: ...

    def _init_engine(self, workers: int, retries: int, timeout_ns: int = 0) -> None:
        self._n = workers
        self._retries = retries
        self._timeout_ns = timeout_ns          # the pool's task_timeout (0: none)
        self._lock = threading.RLock()
        self._status = RUNNING
        self._jobs = collections.deque()       # jobs whose source still yields
        self._async_pending = set()            # AsyncResults whose callbacks have not run
        self._watched = set()                  # Tasks something waits on without driving
        self._due = collections.deque()        # settled Tasks whose done-callbacks must run
        self._ajobs = {}                       # aimap jobs -> [wake their loop, results seen]

    # -- the calls -------------------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: int | None = None, *, progress: ProgressOption = False,
            copy: bool = False, retries: int | None = None,
            task_timeout: float | None = None,
            on_message: Callable[[int, Any], object] | None = None) -> list[Any]:
        """The calls below are documented where users read them: shmproc.Pool."""
        progressbar.check(progress)
        self._check_on_message(on_message)
        job = self._start_job(fn, iterable, chunksize, False, copy, True, retries, task_timeout,
                              tells=on_message is not None)
        return self._collect(job, _bar(progress, job), on_message)

    def starmap(self, fn: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress: ProgressOption = False,
                copy: bool = False, retries: int | None = None,
            task_timeout: float | None = None,
            on_message: Callable[[int, Any], object] | None = None) -> list[Any]:
        progressbar.check(progress)
        self._check_on_message(on_message)
        job = self._start_job(fn, iterable, chunksize, True, copy, True, retries, task_timeout,
                              tells=on_message is not None)
        return self._collect(job, _bar(progress, job), on_message)

    def imap(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: int | None = None, *, progress: ProgressOption = False,
             copy: bool = False, retries: int | None = None,
             task_timeout: float | None = None) -> IMapIterator[Any]:
        return self._lazy(fn, iterable, chunksize, False, copy, True, progress, retries,
                          task_timeout)

    def imap_unordered(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int | None = None, *, progress: ProgressOption = False,
                       copy: bool = False, retries: int | None = None,
                       task_timeout: float | None = None) -> IMapIterator[Any]:
        return self._lazy(fn, iterable, chunksize, False, copy, False, progress, retries,
                          task_timeout)

    def istarmap(self, fn: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                 chunksize: int | None = None, *, progress: ProgressOption = False,
                 copy: bool = False, retries: int | None = None,
                 task_timeout: float | None = None) -> IMapIterator[Any]:
        return self._lazy(fn, iterable, chunksize, True, copy, True, progress, retries,
                          task_timeout)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Task[Any]:
        return self._submit(fn, args, kwargs, DEFAULT_OPTIONS)

    # -- asyncio ------------------------------------------------------------------------------
    def aimap(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
              chunksize: int | None = None, *, copy: bool = False, retries: int | None = None,
              task_timeout: float | None = None) -> AsyncGenerator[Any, None]:
        return self._aiter(fn, iterable, chunksize, copy, True, retries, task_timeout)

    def aimap_unordered(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
                        chunksize: int | None = None, *, copy: bool = False,
                        retries: int | None = None,
                        task_timeout: float | None = None) -> AsyncGenerator[Any, None]:
        return self._aiter(fn, iterable, chunksize, copy, False, retries, task_timeout)

    def _aiter(self, fn: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None,
               copy: bool, ordered: bool, retries: int | None,
               task_timeout: float | None) -> AsyncGenerator[Any, None]:
        """Bad arguments fail at the call; the job starts with the first
        __anext__ (an iterator never started runs nothing)."""
        validate.chunksize(chunksize)
        validate.retries(retries, 0)
        validate.task_timeout(task_timeout)
        _check_callable(fn)
        with self._lock:
            self._check_open()
            self._register(fn)
        return self._aresults(fn, iterable, chunksize, copy, ordered, retries, task_timeout)

    async def _aresults(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
                        chunksize: int | None, copy: bool, ordered: bool, retries: int | None,
                        task_timeout: float | None) -> AsyncGenerator[Any, None]:
        from . import aio         # asyncio loads here, not with every pool (~20 ms)
        job = self._start_job(fn, iterable, chunksize, False, copy, False, retries, task_timeout)
        async for value in aio.results(self, job, ordered):
            yield value

    def _watch_job(self, job: Job, notify: Callable[[], None]) -> None:
        """An aimap job: the background driver feeds it and wakes its loop."""
        self._ajobs[job] = [notify, -1]
        self._async_started()

    def _unwatch_job(self, job: Job) -> None:
        self._ajobs.pop(job, None)

    def _notify_ajobs(self) -> None:
        """The driver's thread, after taking results: wake the loops whose
        jobs moved."""
        for job, entry in list(self._ajobs.items()):
            moved = job.finished + len(job.errors)
            if moved != entry[1] or job.complete() or self._status == TERMINATED:
                entry[1] = moved
                entry[0]()

    # -- multiprocessing.Pool's asynchronous calls ----------------------------------------------
    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] = {}) -> Any:     # noqa: B006 - the stdlib's signature
        """func(*args, **kwds) on a worker; waits for and returns its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] = {},                    # noqa: B006
                    callback: Callable[[Any], object] | None = None,
                    error_callback: Callable[[BaseException], object] | None = None
                    ) -> AsyncResult[Any]:
        """func(*args, **kwds) on a worker; returns an AsyncResult at once."""
        task = self.submit(func, *args, **kwds)
        return self._track(AsyncResult(self, task, callback, error_callback))

    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                  chunksize: int | None = None,
                  callback: Callable[[list[Any]], object] | None = None,
                  error_callback: Callable[[BaseException], object] | None = None
                  ) -> MapResult[Any]:
        """map() that returns a MapResult at once; get() gives the list."""
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[list[Any]], object] | None = None,
                      error_callback: Callable[[BaseException], object] | None = None
                      ) -> MapResult[Any]:
        """starmap() that returns a MapResult at once."""
        return self._map_async(func, iterable, chunksize, True, callback, error_callback)

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                   chunksize: int | None, star: bool,
                   callback: Callable[[list[Any]], object] | None,
                   error_callback: Callable[[BaseException], object] | None) -> MapResult[Any]:
        for name, fn in (("callback", callback), ("error_callback", error_callback)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, not {type(fn).__name__}")
        job = self._start_job(func, iterable, chunksize, star, False, True, tells=True)
        return self._track(MapResult(self, job, callback, error_callback))

    def _track(self, result: _R) -> _R:
        if not result._fired:
            with self._lock:
                self._async_pending.add(result)
            self._async_started()
        return result

    def _async_started(self) -> None:
        """Results with callbacks are pending: make sure something drives
        the pool while nobody waits (the local engine starts its driver)."""

    def _watch(self, task: Task[Any]) -> None:
        """Something waits on `task` without calling into it (a done-callback,
        concurrent.futures.wait): drive the pool in the background until it is done."""
        # Called under the Task's own condition (concurrent.futures.wait holds
        # it while it registers): never take the engine's lock here, whose
        # holder settles Tasks under their condition.
        if not task._finished():
            self._watched.add(task)
            self._async_started()

    def _task_settled(self, task: Task[Any]) -> None:
        """A Task finished (under the lock): its done-callbacks run once the
        lock is let go, by whoever drove the pool (see _run_due)."""
        self._watched.discard(task)
        if task._has_callbacks():
            self._due.append(task)
            self._async_started()

    def _run_due(self) -> None:
        """Run the done-callbacks of settled Tasks (never under the lock)."""
        due = self._due
        while due:
            try:
                task = due.popleft()
            except IndexError:                 # another thread took the last one
                return
            task._invoke_callbacks()

    def _cancel_waiting_tasks(self) -> None:
        """Cancel every submitted Task no worker has yet (Executor.shutdown's
        cancel_futures): the engine's _pending holds the units not sent."""
        with self._lock:
            tasks = [unit.sink for unit in self._pending if isinstance(unit.sink, Task)]
        for task in tasks:
            task.cancel()

    def _fire_async(self) -> None:
        """Run the callbacks of pending results that are ready (never under the lock)."""
        self._run_due()
        if self._ajobs:
            self._notify_ajobs()
        for result in list(self._async_pending):
            if result._done():
                result._fire()

    def _lazy(self, fn: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None,
              star: bool, copy: bool, ordered: bool, progress: ProgressOption,
              retries: int | None, task_timeout: float | None = None) -> IMapIterator[Any]:
        """imap & co.: bad arguments fail now; the work starts with the first
        next() (a generator never started runs nothing)."""
        validate.chunksize(chunksize)
        validate.retries(retries, 0)
        validate.task_timeout(task_timeout)
        progressbar.check(progress)
        _check_callable(fn)
        with self._lock:
            self._check_open()
            self._register(fn)
        wait = _Wait(lambda: self._start_job(fn, iterable, chunksize, star, copy, False, retries,
                                             task_timeout, tells=True))
        return IMapIterator(self._lazy_results(ordered, progress, wait), wait, self)

    def _lazy_results(self, ordered: bool, progress: ProgressOption,
                      wait: _Wait) -> Generator[Any, None, None]:
        job = wait.begin()
        yield from self._drive(job, ordered, _bar(progress, job), wait)

    # -- state -----------------------------------------------------------------------------
    @staticmethod
    def _submit_kind(fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """What submit(fn, *args, **kwargs) runs: "process" (a built Process,
        no arguments) or "call"; raises TypeError for anything else."""
        if is_process(fn):
            if args or kwargs:
                raise TypeError("submit(process) takes no arguments: the Process object "
                                "is already built")
            return "process"
        if callable(fn):
            return "call"
        raise TypeError(f"submit() needs a callable or a Process, not {type(fn).__name__}")

    #: Whether Process items may tell (Pool.map & co.'s listen()); see _check_tells.
    _TELLS = True

    def _check_tells(self) -> None:
        if not self._TELLS:
            raise NotImplementedError(
                f"listen() on a {type(self).__name__} call: Process items cannot tell their "
                f"caller on this backend; pass them a ray.util.queue.Queue instead")

    def _check_on_message(self, on_message: Callable[[int, Any], object] | None) -> None:
        if on_message is None:
            return
        if not callable(on_message):
            raise TypeError(f"on_message must be a callable taking (index, message), not "
                            f"{type(on_message).__name__}")
        if not self._TELLS:
            raise NotImplementedError(
                f"map(..., on_message=...) on a {type(self).__name__}: Process items cannot "
                f"tell their caller on this backend; pass them a ray.util.queue.Queue instead")

    def _check_open(self) -> None:
        self._check_broken()
        if self._status != RUNNING:
            raise ValueError(f"the pool is {self._status}: no new tasks can be submitted")

    def _check_broken(self) -> None:
        pass

    def _change(self) -> Any:
        return None

    def _job_added(self, job: Job) -> None:
        pass

    def _results_taken(self, job: Job | None) -> None:
        pass

    def close(self) -> None:
        """No more tasks; those already submitted still run (then join())."""
        with self._lock:
            if self._status == RUNNING:
                self._status = CLOSED

    def _read_lazy_jobs_to_the_end(self) -> None:
        """join(): every submitted call finishes, as multiprocessing's do.  A
        lazy call (imap) whose caller stopped taking results would otherwise
        stay paused for ever; its results wait for the caller, or go with
        the iterator."""
        with self._lock:
            for job in self._jobs:
                job.lazy = False
            self._results_taken(None)

    @property
    def workers(self) -> int:
        return self._n

    # -- one call's life ---------------------------------------------------------------------
    def _start_job(self, fn: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None,
                   star: bool, copy: bool, eager: bool, retries: int | None = None,
                   task_timeout: float | None = None, tells: bool = False) -> Job:
        """tells: the call has a handle whose listen() hears what its
        Process items tell (imap & co., map_async), so they may tell."""
        chunksize = validate.chunksize(chunksize)
        retries = validate.retries(retries, self._retries)
        timeout_ns = validate.task_timeout(task_timeout) or self._timeout_ns
        _check_callable(fn)
        with self._lock:
            self._check_open()
            self._register(fn)               # an unpicklable function fails here, in the caller
        total = None
        seq = None
        if eager:
            # As the stdlib: map takes the whole input first (a list, tuple or
            # range as it is).
            items = iterable if type(iterable) in (list, tuple, range) else list(iterable)
            total = len(items)                  # type: ignore[arg-type]  # a list, tuple or range
            if chunksize is None:
                chunksize = max(1, math.ceil(total / (4 * self._n))) if total else 1
            source = iter(items)
            if chunksize > 1 or star:
                seq = items
        else:
            source = iter(iterable)
            hint = _length_of(iterable, source)
        with self._lock:                     # registered and queued under one hold
            self._check_open()
            job = self._new_job(self._register(fn), validate.callable_name(fn), star, source,
                                total, chunksize, copy, retries, seq)
            job.timeout_ns = timeout_ns
            job.tells = tells and is_process_class(fn)
            if not eager:
                job.size_hint = hint
            self._jobs.append(job)
            self._job_added(job)
        return job

    def _drive(self, job: Job, ordered: bool, bar: Reporter | None,
               wait: _Wait | None = None) -> Generator[Any, None, None]:
        """Yield the job's results, driving the pool meanwhile.  With `wait`
        (an IMapIterator's), yields _TIMED_OUT once its deadline passes with
        no result in, and goes on from there at the next call."""
        nxt = [0]                     # ordered: index of the next result to yield
        try:
            while True:
                with self._lock:
                    ready, error, drained = self._take_ready(job, ordered, nxt)
                    seen = self._change()
                if bar is not None:
                    bar.update(job.finished, job.known_total())
                for chunk in ready:
                    yield from chunk
                if self._over(job, error, drained):
                    return
                if ready:
                    continue                  # more may have come while the caller had these
                self._check_broken()
                if self._status == TERMINATED:
                    # Results already in hand were given out above (even after
                    # close() + join()); the rest will never come.
                    raise RuntimeError("the pool was terminated while this map was running")
                step = SLICE_S
                if wait is not None and wait.deadline is not None:
                    step = wait.deadline - time.monotonic()
                    if step <= 0:
                        yield _TIMED_OUT
                        continue
                    step = min(step, SLICE_S)
                self._wait_step(step, seen)
        except KeyboardInterrupt:
            self.terminate()
            raise
        finally:
            self._end_job(job)
            if bar is not None:
                bar.close()

    def _take_ready(self, job: Job, ordered: bool,
                    nxt: list[int]) -> tuple[list[list[Any]], BaseException | None, bool]:
        """Under the lock: (chunks of results ready to hand out, the error
        whose turn it is or None, whether the job is drained).  nxt[0]: for
        an ordered call, the index of the next result to hand out."""
        ready, error = [], None
        if ordered:
            while True:
                chunk = job.ready.pop(nxt[0], None)
                if chunk is not None:
                    ready.append(chunk)
                    nxt[0] += len(chunk)
                elif nxt[0] in job.errors:
                    error = job.errors.pop(nxt[0])
                    break
                else:
                    break
        else:
            ready = list(job.ready.values())
            job.ready.clear()
            if job.errors:
                error = job.errors.pop(min(job.errors))
        drained = job.complete() and not job.ready and not job.errors
        if ready:
            job.handed += sum(map(len, ready))
            self._results_taken(job)
        return ready, error, drained

    @staticmethod
    def _over(job: Job, error: BaseException | None, drained: bool) -> bool:
        """After handing out what was ready: raise the error whose turn it
        is (the source's once all else is drained); True when the call is done."""
        if error is not None:
            raise error
        if drained:
            if job.source_error is not None:
                raise job.source_error
            return True
        return False

    def _collect(self, job: Job, bar: Reporter | None,
                 on_message: Callable[[int, Any], object] | None = None) -> list[Any]:
        """map/starmap: wait for every result (the first error raises), then
        join the chunks in order.  on_message hears what Process items told,
        in this thread, outside the lock, before the call returns or raises."""
        try:
            while True:
                with self._lock:
                    heard = job.take_messages() if on_message is not None else ()
                    self._check_broken()
                    over = (self._status == TERMINATED or bool(job.errors) or job.complete())
                    seen = self._change()
                for index, message in heard:
                    on_message(index, message)  # type: ignore[misc]  # not None when heard
                if over:
                    with self._lock:
                        if on_message is not None and job.has_messages():
                            continue            # what came with the last results first
                        if self._status == TERMINATED:
                            raise RuntimeError("the pool was terminated while this map was "
                                               "running")
                        if job.errors:
                            raise job.errors[min(job.errors)]
                        if job.source_error is not None:
                            raise job.source_error
                        out = job.in_order()
                        job.ready.clear()
                        return out
                if bar is not None:
                    bar.update(job.finished, job.known_total())
                self._wait_step(SLICE_S, seen)
        except KeyboardInterrupt:
            self.terminate()
            raise
        finally:
            self._end_job(job)
            if bar is not None:
                bar.update(job.finished, job.known_total())
                bar.close()

    def _end_job(self, job: Job) -> None:
        with self._lock:
            if not job.complete() or job.ready or job.errors:
                job.cancel()
                try:
                    self._jobs.remove(job)
                except ValueError:
                    pass

    # -- a pool is the creating process's ------------------------------------------------------
    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a shmproc.Pool belongs to the process that created it and cannot be "
                        "sent to another process; create a Pool where it is used")
