"""Pool: warm workers for streams of tasks and batches of Processes.

One class whatever runs the work: `Pool(backend=...)` asks the backend
for an engine (the local one, backends/local/pool.py, or Ray's,
backends/ray/pool.py), both built on the one job engine (jobs/engine.py),
and every call goes to it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

from .backends.resolve import resolve as resolve_backend
from .common import validate
from .jobs.asyncresult import AsyncResult, MapResult
from .jobs.engine import Progress
from .jobs.task import DEFAULT_OPTIONS, Task, TaskOptions

if TYPE_CHECKING:
    from .observe.timeline import Timeline
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping
    from multiprocessing.context import BaseContext
    from types import TracebackType
    from typing import ParamSpec, TypeVar

    from typing_extensions import Self

    from .backends.base import Backend
    from .jobs.engine import IMapIterator, JobEngine
    from .jobs.progressbar import ProgressOption
    from .process import Process

    _S = TypeVar("_S")
    _T = TypeVar("_T")
    _P = ParamSpec("_P")

# Each call is typed twice (the @overloads): a Process subclass as `fn`
# runs whole for each item and gives what its __result__ returns (Any); any
# other callable gives what it returns, as the stdlib's Pool is typed.

__all__ = ["Pool", "Task", "Progress", "AsyncResult", "MapResult", "SubmitOptions"]


def _one_of(name: str, value: int | None, alias: str, alias_value: int | None) -> int | None:
    """multiprocessing's argument or shmproc's alias for it, not both."""
    if value is not None and alias_value is not None:
        raise TypeError(f"Pool() got both {name}= and {alias}= (the same option): pass one")
    return value if value is not None else alias_value


class Pool:
    """Warm worker processes for many tasks: map, imap, starmap, submit.

    `fn` may be any callable (lambdas and closures included) or a Process
    subclass, whose whole lifecycle then runs for each item on a warm
    worker.  Use it as a context manager: leaving the block normally waits
    for submitted tasks (close + join); leaving it with an exception
    terminates the workers.

    The arguments are multiprocessing.Pool's, positionally too:
    processes (None: one per CPU; on Ray, per CPU of the cluster);
    initializer(*initargs) runs once in every worker, replacements
    included (if it raises, the pool's tasks and calls raise
    InitializerError); maxtasksperchild: a worker is replaced after this
    many tasks (None: never); context: a multiprocessing context, whose
    start method the workers use.  shmproc's own spellings are accepted as
    keywords: workers= (processes), start_method= ("fork", "forkserver",
    "spawn"; None: the platform's default), max_tasks_per_worker=
    (maxtasksperchild).  backend: None or "local" (this machine), "ray",
    or a backend object such as shmproc.RayBackend(address=...).
    retries: how many times a task (an item) whose worker dies while
    running it runs again on a fresh worker before it fails with
    ProcessCrashedError; default 0.  The map calls take their own
    `retries=`; submit uses the pool's.  Tasks that finished never run again.
    task_timeout: seconds a plain function call (a task, or one item of a
    map) may run; past it the call is interrupted by the worker's watchdog
    and fails with shmproc.TimeoutError (a builtin TimeoutError too), and
    a fresh worker takes that worker's place; the pool goes on.  None: no
    limit.  The map calls and Pool.options take their own.  A Process
    task keeps its own config.timeouts.
    """

    __slots__ = ("_engine", "__weakref__")
    _engine: JobEngine

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
                 maxtasksperchild: int | None = None, context: BaseContext | None = None, *,
                 workers: int | None = None, start_method: str | None = None,
                 max_tasks_per_worker: int | None = None, backend: str | Backend | None = None,
                 retries: int = 0, task_timeout: float | None = None) -> None:
        workers = _one_of("processes", processes, "workers", workers)
        max_tasks = _one_of("maxtasksperchild", maxtasksperchild,
                            "max_tasks_per_worker", max_tasks_per_worker)
        if processes is not None:
            validate.worker_count(processes, "processes")
        if maxtasksperchild is not None and (isinstance(maxtasksperchild, bool) or
                                             not isinstance(maxtasksperchild, int) or
                                             maxtasksperchild < 1):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if context is not None:
            if not hasattr(context, "get_start_method"):
                raise TypeError(f"context must be a multiprocessing context (from "
                                f"multiprocessing.get_context()), not {type(context).__name__}")
            method = context.get_start_method()
            if start_method is not None and start_method != method:
                raise ValueError(f"context uses {method!r} but start_method={start_method!r}")
            start_method = method
        self._engine = resolve_backend(backend).pool(workers, start_method, max_tasks, retries,
                                                     initializer=initializer, initargs=initargs,
                                                     task_timeout=task_timeout)

    # -- calls -----------------------------------------------------------------------------
    @overload
    def map(self, fn: type[Process], iterable: Iterable[Any], chunksize: int | None = None, *,
            progress: ProgressOption = False, copy: bool = False, retries: int | None = None,
            task_timeout: float | None = None,
            on_message: Callable[[int, Any], object] | None = None) -> list[Any]: ...
    @overload
    def map(self, fn: Callable[[_S], _T], iterable: Iterable[_S],
            chunksize: int | None = None, *, progress: ProgressOption = False,
            copy: bool = False, retries: int | None = None,
            task_timeout: float | None = None,
            on_message: Callable[[int, Any], object] | None = None) -> list[_T]: ...
    def map(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: int | None = None, *, progress: ProgressOption = False,
            copy: bool = False, retries: int | None = None,
            task_timeout: float | None = None,
            on_message: Callable[[int, Any], object] | None = None) -> list[Any]:
        """[fn(x) for x in iterable], in parallel; raises the first task error.

        chunksize None picks a batch size (as multiprocessing.Pool.map
        does); progress=True draws a progress bar on stderr (a dict: tqdm's
        options; a callable: called as fn(done, total)); copy=True
        returns numpy arrays as private copies instead of zero-copy
        (copy-on-write) views;
        retries: how many times an item whose worker dies while running it
        is run again on a fresh worker before it fails with
        ProcessCrashedError (None: the pool's `retries`).  Items that
        finished are never run again.  task_timeout: seconds one item may
        run (None: the pool's task_timeout).  on_message: for a Process
        class as `fn`, called as on_message(index, message) in this thread
        for each message an item tells (self.tell), in order per item, as
        they come and before map returns or raises.
        """
        return self._engine.map(fn, iterable, chunksize, progress=progress, copy=copy,
                                retries=retries, task_timeout=task_timeout,
                                on_message=on_message)

    @overload
    def starmap(self, fn: type[Process], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress: ProgressOption = False,
                copy: bool = False, retries: int | None = None,
                task_timeout: float | None = None,
                on_message: Callable[[int, Any], object] | None = None) -> list[Any]: ...
    @overload
    def starmap(self, fn: Callable[..., _T], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress: ProgressOption = False,
                copy: bool = False, retries: int | None = None,
                task_timeout: float | None = None,
                on_message: Callable[[int, Any], object] | None = None) -> list[_T]: ...
    def starmap(self, fn: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress: ProgressOption = False,
                copy: bool = False, retries: int | None = None,
                task_timeout: float | None = None,
                on_message: Callable[[int, Any], object] | None = None) -> list[Any]:
        """[fn(*args) for args in iterable], in parallel (on_message: as map's)."""
        return self._engine.starmap(fn, iterable, chunksize, progress=progress, copy=copy,
                                    retries=retries, task_timeout=task_timeout,
                                    on_message=on_message)

    @overload
    def imap(self, fn: type[Process], iterable: Iterable[Any], chunksize: int | None = None, *,
             progress: ProgressOption = False, copy: bool = False, retries: int | None = None,
             task_timeout: float | None = None) -> IMapIterator[Any]: ...
    @overload
    def imap(self, fn: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int | None = None,
             *, progress: ProgressOption = False, copy: bool = False, retries: int | None = None,
             task_timeout: float | None = None) -> IMapIterator[_T]: ...
    def imap(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: int | None = None, *, progress: ProgressOption = False,
             copy: bool = False, retries: int | None = None,
             task_timeout: float | None = None) -> IMapIterator[Any]:
        """Lazy map: yields results in order as they are ready; reads the
        input only as fast as workers need it.  A failed task raises when
        its turn comes, after the results before it."""
        return self._engine.imap(fn, iterable, chunksize, progress=progress, copy=copy,
                                 retries=retries, task_timeout=task_timeout)

    @overload
    def imap_unordered(self, fn: type[Process], iterable: Iterable[Any],
                       chunksize: int | None = None, *, progress: ProgressOption = False,
                       copy: bool = False, retries: int | None = None,
                       task_timeout: float | None = None) -> IMapIterator[Any]: ...
    @overload
    def imap_unordered(self, fn: Callable[[_S], _T], iterable: Iterable[_S],
                       chunksize: int | None = None, *, progress: ProgressOption = False,
                       copy: bool = False, retries: int | None = None,
                       task_timeout: float | None = None) -> IMapIterator[_T]: ...
    def imap_unordered(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int | None = None, *, progress: ProgressOption = False,
                       copy: bool = False, retries: int | None = None,
                       task_timeout: float | None = None) -> IMapIterator[Any]:
        """Like imap, but yields results in the order they finish."""
        return self._engine.imap_unordered(fn, iterable, chunksize, progress=progress,
                                           copy=copy, retries=retries, task_timeout=task_timeout)

    @overload
    def istarmap(self, fn: type[Process], iterable: Iterable[Iterable[Any]],
                 chunksize: int | None = None, *, progress: ProgressOption = False,
                 copy: bool = False, retries: int | None = None,
                 task_timeout: float | None = None) -> IMapIterator[Any]: ...
    @overload
    def istarmap(self, fn: Callable[..., _T], iterable: Iterable[Iterable[Any]],
                 chunksize: int | None = None, *, progress: ProgressOption = False,
                 copy: bool = False, retries: int | None = None,
                 task_timeout: float | None = None) -> IMapIterator[_T]: ...
    def istarmap(self, fn: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                 chunksize: int | None = None, *, progress: ProgressOption = False,
                 copy: bool = False, retries: int | None = None, task_timeout: float | None = None
                 ) -> IMapIterator[Any]:
        """Lazy starmap, in order."""
        return self._engine.istarmap(fn, iterable, chunksize, progress=progress, copy=copy,
                                     retries=retries, task_timeout=task_timeout)

    @overload
    def aimap(self, fn: type[Process], iterable: Iterable[Any], chunksize: int | None = None, *,
              copy: bool = False, retries: int | None = None,
              task_timeout: float | None = None) -> AsyncIterator[Any]: ...
    @overload
    def aimap(self, fn: Callable[[_S], _T], iterable: Iterable[_S],
              chunksize: int | None = None, *, copy: bool = False, retries: int | None = None,
              task_timeout: float | None = None) -> AsyncIterator[_T]: ...
    def aimap(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
              chunksize: int | None = None, *, copy: bool = False,
              retries: int | None = None,
              task_timeout: float | None = None) -> AsyncIterator[Any]:
        """imap for asyncio: `async for r in pool.aimap(fn, items)` yields
        results in order without blocking the event loop (no thread per
        call: the pool's one background driver wakes the loop).  The
        iterable is read by that driver, as far ahead as the workers need."""
        return self._engine.aimap(fn, iterable, chunksize, copy=copy, retries=retries,
                                  task_timeout=task_timeout)

    @overload
    def aimap_unordered(self, fn: type[Process], iterable: Iterable[Any],
                        chunksize: int | None = None, *, copy: bool = False,
                        retries: int | None = None,
                        task_timeout: float | None = None) -> AsyncIterator[Any]: ...
    @overload
    def aimap_unordered(self, fn: Callable[[_S], _T], iterable: Iterable[_S],
                        chunksize: int | None = None, *, copy: bool = False,
                        retries: int | None = None,
                        task_timeout: float | None = None) -> AsyncIterator[_T]: ...
    def aimap_unordered(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
                        chunksize: int | None = None, *, copy: bool = False,
                        retries: int | None = None, task_timeout: float | None = None
                        ) -> AsyncIterator[Any]:
        """aimap, in the order results finish."""
        return self._engine.aimap_unordered(fn, iterable, chunksize, copy=copy, retries=retries,
                                            task_timeout=task_timeout)

    @overload
    def submit(self, fn: type[Process] | Process, /, *args: Any,
               **kwargs: Any) -> Task[Any]: ...
    @overload
    def submit(self, fn: Callable[_P, _T], /, *args: _P.args,
               **kwargs: _P.kwargs) -> Task[_T]: ...
    def submit(self, fn: Callable[..., Any] | Process, /, *args: Any,
               **kwargs: Any) -> Task[Any]:
        """Run fn(*args, **kwargs) on a worker; returns a Task, which is a
        concurrent.futures.Future (result(timeout), exception(), done(),
        cancel(), add_done_callback(), as_completed, asyncio.wrap_future).

        Every keyword goes to `fn`; per-call options go through
        pool.options(...).submit(...).  `fn` may be a Process subclass
        (constructed on the worker with the arguments, then run) or an
        already-built Process object (no arguments), whose timers and error
        are filled in when it is done.  If its worker dies while running it,
        it fails with ProcessCrashedError, or runs again on a fresh worker
        up to the pool's `retries` times.
        """
        return self._engine._submit(fn, args, kwargs, DEFAULT_OPTIONS)

    def options(self, *, copy: bool = False, retries: int | None = None,
                task_timeout: float | None = None) -> SubmitOptions:
        """Per-call options for submit: pool.options(retries=2).submit(fn, x).
        copy=True: the result's numpy arrays come as private writable copies;
        retries: re-runs if the worker dies (None: the pool's); task_timeout:
        seconds the call may run (None: the pool's)."""
        if not isinstance(copy, bool):
            raise TypeError(f"copy must be True or False, not {copy!r}")
        validate.retries(retries, 0)
        timeout_ns = None if task_timeout is None else validate.task_timeout(task_timeout)
        return SubmitOptions(self._engine, TaskOptions(copy=copy, retries=retries,
                                                       timeout_ns=timeout_ns))

    # -- multiprocessing.Pool's asynchronous calls --------------------------------------------
    @overload
    def apply(self, func: type[Process], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] = {}) -> Any: ...     # noqa: B006
    @overload
    def apply(self, func: Callable[..., _T], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] = {}) -> _T: ...      # noqa: B006
    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] = {}) -> Any:         # noqa: B006 - the stdlib's signature
        """func(*args, **kwds) on a worker; waits for and returns its result
        (multiprocessing.Pool.apply)."""
        return self._engine.apply(func, args, kwds)

    @overload
    def apply_async(self, func: type[Process], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] = {},                            # noqa: B006
                    callback: Callable[[Any], object] | None = None,
                    error_callback: Callable[[BaseException], object] | None = None
                    ) -> AsyncResult[Any]: ...
    @overload
    def apply_async(self, func: Callable[..., _T], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] = {},                            # noqa: B006
                    callback: Callable[[_T], object] | None = None,
                    error_callback: Callable[[BaseException], object] | None = None
                    ) -> AsyncResult[_T]: ...
    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] = {},                            # noqa: B006
                    callback: Callable[[Any], object] | None = None,
                    error_callback: Callable[[BaseException], object] | None = None
                    ) -> AsyncResult[Any]:
        """func(*args, **kwds) on a worker; an AsyncResult at once
        (multiprocessing.Pool.apply_async: get(timeout), wait(timeout),
        ready(), successful(); callback(value) or error_callback(exception)
        run once in this process)."""
        return self._engine.apply_async(func, args, kwds, callback, error_callback)

    @overload
    def map_async(self, func: type[Process], iterable: Iterable[Any],
                  chunksize: int | None = None,
                  callback: Callable[[list[Any]], object] | None = None,
                  error_callback: Callable[[BaseException], object] | None = None
                  ) -> MapResult[Any]: ...
    @overload
    def map_async(self, func: Callable[[_S], _T], iterable: Iterable[_S],
                  chunksize: int | None = None,
                  callback: Callable[[list[_T]], object] | None = None,
                  error_callback: Callable[[BaseException], object] | None = None
                  ) -> MapResult[_T]: ...
    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                  chunksize: int | None = None,
                  callback: Callable[[list[Any]], object] | None = None,
                  error_callback: Callable[[BaseException], object] | None = None
                  ) -> MapResult[Any]:
        """map() returning a MapResult at once; get() gives the list
        (multiprocessing.Pool.map_async)."""
        return self._engine.map_async(func, iterable, chunksize, callback, error_callback)

    @overload
    def starmap_async(self, func: type[Process], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[list[Any]], object] | None = None,
                      error_callback: Callable[[BaseException], object] | None = None
                      ) -> MapResult[Any]: ...
    @overload
    def starmap_async(self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[list[_T]], object] | None = None,
                      error_callback: Callable[[BaseException], object] | None = None
                      ) -> MapResult[_T]: ...
    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[list[Any]], object] | None = None,
                      error_callback: Callable[[BaseException], object] | None = None
                      ) -> MapResult[Any]:
        """starmap() returning a MapResult at once (multiprocessing.Pool.starmap_async)."""
        return self._engine.starmap_async(func, iterable, chunksize, callback, error_callback)

    # -- state -------------------------------------------------------------------------------
    @property
    def progress(self) -> Progress:
        """Items done / accepted / failed over the pool's life."""
        return self._engine.progress

    @property
    def workers(self) -> int:
        return self._engine.workers

    @property
    def pids(self) -> list[int]:
        return self._engine.pids

    def timeline(self) -> "Timeline":
        """What the workers did: a Timeline with a span per finished task
        (worker, start, end, label, ok), its summary(), to_chrome_trace()
        and plot().  Recorded all along in shared memory (the newest 4095
        tasks per worker); works during the run, after close() or
        terminate(), and is empty on a pool that ran nothing."""
        record = getattr(self._engine, "trace_spans", None)
        if record is None:
            raise NotImplementedError(
                f"timeline() is recorded by the local backend's workers; the "
                f"{self._engine.__class__.__name__} has none (on Ray, ray.timeline() shows "
                f"its tasks)")
        from .observe.recorded import pool_timeline
        return pool_timeline(**record())

    def close(self) -> None:
        """No more tasks; those already submitted still run (then join())."""
        self._engine.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for every submitted task, then stop the workers.  Call close() first.
        As multiprocessing's, it returns after the async results' callbacks ran."""
        self._engine.join(timeout)
        self._engine._fire_async()

    def terminate(self) -> None:
        """Kill the workers now; unfinished tasks are cancelled."""
        self._engine.terminate()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            self.join()
        else:
            self.terminate()

    def __reduce__(self) -> str | tuple[Any, ...]:
        return self._engine.__reduce__()

    def __repr__(self) -> str:
        return repr(self._engine)


class SubmitOptions:
    """What Pool.options(...) returns: submit with those options."""

    __slots__ = ("_engine", "_options")
    _engine: JobEngine
    _options: TaskOptions

    def __init__(self, engine: JobEngine, options: TaskOptions) -> None:
        self._engine = engine
        self._options = options

    @overload
    def submit(self, fn: type[Process] | Process, /, *args: Any,
               **kwargs: Any) -> Task[Any]: ...
    @overload
    def submit(self, fn: Callable[_P, _T], /, *args: _P.args,
               **kwargs: _P.kwargs) -> Task[_T]: ...
    def submit(self, fn: Callable[..., Any] | Process, /, *args: Any,
               **kwargs: Any) -> Task[Any]:
        """Pool.submit with these options."""
        return self._engine._submit(fn, args, kwargs, self._options)

    def __repr__(self) -> str:
        return f"<shmproc.Pool options {self._options!r}>"
