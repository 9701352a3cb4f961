"""Executor: a concurrent.futures.Executor on shmproc's pool.

    with shmproc.Executor(max_workers=4) as ex:
        futures = [ex.submit(fn, x) for x in items]
        for f in concurrent.futures.as_completed(futures): ...

submit returns a real concurrent.futures.Future, so as_completed, wait,
asyncio.wrap_future and loop.run_in_executor take it: it is the pool's
own Task (jobs/task.py), set by the pool with no thread per task.  Where the stdlib breaks, this
one goes on: a task whose worker dies fails with WorkerCrashedError, which
is both shmproc's ProcessCrashedError and the stdlib's BrokenProcessPool,
and the executor stays usable (the worker is replaced).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from .common.errors import InitializerError, ProcessCrashedError
from .jobs.engine import IMapIterator, _Wait
from .jobs.task import TaskOptions
from .pool import Pool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from multiprocessing.context import BaseContext
    from typing import ParamSpec, TypeVar

    from .jobs.task import Task

    _T = TypeVar("_T")
    _P = ParamSpec("_P")

__all__ = ["Executor", "ProcessPoolExecutor", "WorkerCrashedError", "BrokenInitializerError"]


class WorkerCrashedError(ProcessCrashedError, BrokenProcessPool):
    """A task's worker died while running it (the executor goes on)."""


class BrokenInitializerError(InitializerError, BrokenProcessPool):
    """The executor's initializer raised in a worker: as the stdlib, the
    executor is broken; its futures fail with this."""


def _as_stdlib(exc: BaseException) -> BaseException:
    """shmproc's errors for a dead worker or initializer, as the stdlib types them too."""
    if isinstance(exc, ProcessCrashedError) and not isinstance(exc, BrokenProcessPool):
        new = WorkerCrashedError(str(exc), exitcode=exc.exitcode, last_lap=exc.last_lap,
                                 pid=exc.pid, process_name=exc.process_name)
        new.__cause__ = exc
        return new
    if isinstance(exc, InitializerError) and not isinstance(exc, BrokenProcessPool):
        broken = BrokenInitializerError(str(exc))
        broken.__cause__ = exc.__cause__
        return broken
    return exc


class Executor(concurrent.futures.Executor):
    """concurrent.futures.ProcessPoolExecutor's signature and behaviour, on
    shmproc's pool: Executor(max_workers=None, mp_context=None,
    initializer=None, initargs=(), max_tasks_per_child=None)."""

    def __init__(self, max_workers: int | None = None, mp_context: BaseContext | None = None,
                 initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
                 *, max_tasks_per_child: int | None = None) -> None:
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(f"max_workers must be an int or None, not "
                                f"{type(max_workers).__name__}")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        self._pool = Pool(max_workers, initializer, initargs, max_tasks_per_child, mp_context)
        self._shutdown = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Task[_T]:
        """fn(*args, **kwargs) on a worker; a concurrent.futures.Future at
        once (a shmproc Task, set by the pool: no thread per task)."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            return self._pool._engine._submit(fn, args, kwargs, _STDLIB_ERRORS)

    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[_T]:
        """Results of fn over the iterables, in order, as concurrent.futures'
        map: every item is taken now, results come lazily; TimeoutError if
        one is not ready `timeout` seconds after the call; a task's error
        raises when its turn comes."""
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            engine = self._pool._engine
            # A starmap: fn goes to each worker once, not with every item.
            job = engine._start_job(fn, zip(*iterables), chunksize, True, False, True)
        wait = _Wait()
        results: IMapIterator[_T] = IMapIterator(engine._drive(job, True, None, wait), wait)
        return _results(results, end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; with wait, return once every submitted task ran and
        the workers are gone.  cancel_futures: drop tasks no worker started."""
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            # Tasks no worker has started are dropped: their futures raise
            # CancelledError (as the stdlib's); started ones run to the end.
            self._pool._engine._cancel_waiting_tasks()
        self._pool.close()
        if wait:
            self._pool.join()
        else:
            threading.Thread(target=self._pool.join, name="shmproc-executor-shutdown",
                             daemon=True).start()


_STDLIB_ERRORS = TaskOptions(on_error=_as_stdlib)

#: The stdlib's name, for `from shmproc import ProcessPoolExecutor`.
ProcessPoolExecutor = Executor


def _results(results: IMapIterator[_T], end: float | None) -> Iterator[_T]:
    try:
        while True:
            left = None if end is None else max(0.0, end - time.monotonic())
            try:
                value = results.next(left)
            except StopIteration:
                return
            except multiprocessing.TimeoutError:
                raise concurrent.futures.TimeoutError from None
            except Exception as exc:                # noqa: BLE001 - typed as the stdlib's too
                raise _as_stdlib(exc) from None
            yield value
    finally:
        results.close()

