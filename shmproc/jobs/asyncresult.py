"""AsyncResult: multiprocessing.pool.AsyncResult's interface over a Task
(apply_async) or a Job (map_async, starmap_async).

    get(timeout=None)   the value, or the task's exception; multiprocessing's
                        TimeoutError if not ready in time
    wait(timeout=None)  block until ready (or timeout)
    ready()             finished?
    successful()        finished without an exception? (ValueError if not ready)

callback / error_callback run once, in the parent, before get() returns,
as multiprocessing's do: from whichever thread notices the result first
(the caller waiting on it, or the pool's background driver, which runs
while callbacks are pending so that they fire even if nobody waits).
A callback that raises is reported on stderr and does not break the pool.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import CancelledError
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from .. import _native as native
from .task import SLICE_S, listen

if TYPE_CHECKING:
    from .job import Job
    from .task import Task

TERMINATED = "terminated"     # engine.TERMINATED (engine.py imports this module)

__all__ = ["AsyncResult", "MapResult"]

_T = TypeVar("_T")


class AsyncResult(Generic[_T]):
    """apply_async's handle: one call on a worker."""

    def __init__(self, engine: Any, sink: Any, callback: Callable[[_T], object] | None = None,
                 error_callback: Callable[[BaseException], object] | None = None) -> None:
        for name, fn in (("callback", callback), ("error_callback", error_callback)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, not {type(fn).__name__}")
        self._engine = engine
        self._sink = sink
        self._callback = callback
        self._error_callback = error_callback
        self._fired = callback is None and error_callback is None
        self._firing = False
        self._fire_lock = threading.RLock()

    # -- what each kind of sink says ---------------------------------------------------------
    def _done(self) -> bool:
        finished: bool = self._sink._finished()
        return finished

    def _outcome(self) -> tuple[Any, BaseException | None]:
        """(value, error) once done."""
        task: Task[Any] = self._sink
        if task.cancelled():
            return None, CancelledError(f"task {task._name} was cancelled")
        return task._result, task._exception

    # -- multiprocessing.pool.AsyncResult ------------------------------------------------------
    def ready(self) -> bool:
        if not self._done():
            self._engine._poll()
        if self._done():
            self._fire()
            return True
        return False

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._outcome()[1] is None

    def wait(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + native.timeout_ns(timeout) / 1e9
        engine = self._engine
        while not self._done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            engine._wait_step(SLICE_S if left is None else min(left, SLICE_S))
        self._fire()

    def get(self, timeout: float | None = None) -> _T:
        self.wait(timeout)
        if not self._done():
            raise multiprocessing.TimeoutError
        value, error = self._outcome()
        if error is not None:
            raise error
        return value                         # type: ignore[no-any-return]  # the call's: a _T

    # -- callbacks -------------------------------------------------------------------------------
    def _fire(self) -> None:
        """Run the callback once the result is in: once, whoever calls, and
        a caller returns only after it ran (get() follows the callback, as
        in multiprocessing), unless it is the callback's own thread."""
        if self._fired:
            return
        with self._fire_lock:                # reentrant: a callback may call get()
            if self._fired or self._firing:
                return
            self._firing = True
            try:
                self._run_callback()
            finally:
                self._fired = True

    def _run_callback(self) -> None:
        self._engine._async_pending.discard(self)
        self._settle()
        value, error = self._outcome()
        arg: Any
        fn, arg = (self._callback, value) if error is None else (self._error_callback, error)
        if fn is None:
            return
        try:
            fn(arg)
        except Exception:                    # noqa: BLE001 - as multiprocessing: reported, not raised
            print(f"shmproc: the {'callback' if error is None else 'error_callback'} of "
                  f"{self!r} raised:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)

    def _settle(self) -> None:
        pass

    def __repr__(self) -> str:
        state = "ready" if self._done() else "pending"
        return f"<shmproc.AsyncResult {state}>"


class MapResult(AsyncResult[list[_T]]):
    """map_async / starmap_async's handle: every item's result, in order."""

    def __init__(self, engine: Any, sink: Any,
                 callback: Callable[[list[_T]], object] | None = None,
                 error_callback: Callable[[BaseException], object] | None = None) -> None:
        super().__init__(engine, sink, callback, error_callback)
        self._fired = False             # the job is ended once, callbacks or not

    def _settle(self) -> None:
        if self._sink.complete():
            return
        self._engine._end_job(self._sink)       # failed early: the rest is dropped

    def listen(self, timeout: float | None = None) -> tuple[int, Any] | None:
        """(index, message): the next message a Process item of this call
        told (`self.tell` in its hooks), or None once `timeout` seconds
        pass; with None, waits until one comes or the call is done."""
        engine, job = self._engine, self._sink
        engine._check_tells()
        told: tuple[int, Any] | None = listen(
            engine, job, lambda: job.quiet() or engine._status == TERMINATED, timeout)
        return told

    def _done(self) -> bool:
        # As multiprocessing's: ready at the first error too (the rest still run).
        job = self._sink
        return job.complete() or bool(job.errors) or self._engine._status == TERMINATED

    def _outcome(self) -> tuple[Any, BaseException | None]:
        job: Job = self._sink
        with self._engine._lock:
            if job.errors:
                return None, job.errors[min(job.errors)]
            if job.source_error is not None:
                return None, job.source_error
            if self._engine._status == TERMINATED and not job.complete():
                return None, RuntimeError("the pool was terminated while this map was running")
            return job.in_order(), None
