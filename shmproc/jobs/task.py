"""Task: the handle of one submitted call, and how outcomes reach it.

A Task is a real concurrent.futures.Future, so as_completed, wait,
asyncio.wrap_future and everything built on Futures take it.  A Task and
a Job (job.py) are *sinks*: the engine that runs the units (a local pool,
a Ray pool) calls _put / _put_many / _fail / _process_outcome on them
under its lock, and the caller's thread reads them.  The engine a Task
belongs to provides _lock, _poll(), _wait_step(seconds),
_drop_pending(unit), _watch(task) and _task_settled(task).

Nobody needs a thread per task: result() and exception() drive the pool
from the caller's thread (the fastest path, no thread hop); a Task that
something else waits on (a done-callback, or concurrent.futures.wait /
as_completed, which register on the Future's _waiters) asks its engine to
drive the pool in the background until it is done.  Done-callbacks never
run under the pool's lock: the engine runs them once it let go of it.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from concurrent.futures import _base as futures_base
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .. import _native as native
from ..common import lifecycle
from ..common.errors import ProcessError
from ..common.outcome import FAILED_RESULT
from ..common.validate import callable_name
from ..wire.detach import detach

if TYPE_CHECKING:
    from ..common.timing import ProcessTimers

__all__ = ["Task", "TaskOptions", "DEFAULT_OPTIONS", "writable", "deliver_process", "listen",
           "SLICE_S"]

#: How long a waiting caller sleeps before it looks again (and drives its pool).
SLICE_S = 0.02

_PENDING = futures_base.PENDING
_RUNNING = futures_base.RUNNING
_FINISHED = futures_base.FINISHED
_CANCELLED = (futures_base.CANCELLED, futures_base.CANCELLED_AND_NOTIFIED)

_T = TypeVar("_T")



def writable(value: Any) -> Any:
    """copy=True: `value` with nothing left in shared memory (wire.detach)
    and no read-only array (Ray's object store gives those): private,
    writable copies of both."""
    return _writable_copies(detach(value))


def _writable_copies(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytearray(value)
    if type(value).__name__ == "ndarray" and not value.flags.writeable:
        return value.copy()
    if isinstance(value, list):
        return [_writable_copies(v) for v in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(_writable_copies(v) for v in value)
    if isinstance(value, dict) and type(value) is dict:
        return {k: _writable_copies(v) for k, v in value.items()}
    return value


def deliver_process(sink: Any, index: int, kind: int, value: Any, error: Any) -> None:
    """A Process task's outcome: its result, or its error with the worker's traceback."""
    if kind == FAILED_RESULT and isinstance(value, BaseException):
        if isinstance(value, ProcessError):
            value.with_remote_traceback()
        sink._fail(index, value)
    else:
        sink._put(index, value)


class TaskOptions:
    """Per-call options of a submit (Pool.options(...).submit): they are not
    keywords of submit itself, which all go to the function."""

    __slots__ = ("copy", "retries", "timeout_ns", "on_error")

    def __init__(self, copy: bool = False, retries: int | None = None,
                 timeout_ns: int | None = None,
                 on_error: Callable[[BaseException], BaseException] | None = None) -> None:
        self.copy = copy              # writable private copies of the result's arrays
        self.retries = retries        # None: the pool's
        self.timeout_ns = timeout_ns  # how long a call may run (0: no limit; None: the pool's)
        self.on_error = on_error      # maps an error before the Future holds it

    def __repr__(self) -> str:
        timeout = None if self.timeout_ns is None else self.timeout_ns / 1e9
        return f"TaskOptions(copy={self.copy}, retries={self.retries}, task_timeout={timeout})"


DEFAULT_OPTIONS = TaskOptions()


class _Watched(list[Any]):
    """A Future's _waiters list that tells the Task when concurrent.futures.wait
    or as_completed start waiting on it: from then on the pool must be
    driven in the background, since those waiters never call into the Task."""

    __slots__ = ("task",)
    task: Task[Any]

    def append(self, waiter: Any) -> None:
        super().append(waiter)
        self.task._watched()

    def remove(self, waiter: Any) -> None:
        super().remove(waiter)
        if not self:
            # The last waiter left (under the Condition, as it came): the
            # Task lets go of this list, so the two hold no cycle and go by
            # reference counting, not at the collector's next sweep.
            self.task.__dict__.pop("_w", None)


def _hold_task_lock() -> None:
    # Held across a fork, so that no other thread holds it in the child
    # (where that thread would not exist to let go).  Cheaper in the child
    # than making a new one: each page a fork child first writes traps.
    Task._condition.acquire()


def _let_go_of_task_lock() -> None:
    Task._condition.release()


class Task(Future[_T]):
    """The handle Pool.submit returns: a concurrent.futures.Future.

    result(timeout), exception(timeout), done(), cancel(), cancelled(),
    running(), add_done_callback(fn) as every Future; wait(timeout) -> bool
    is shmproc's own (block until done without raising).
    """

    _unit: Any
    _messages: collections.deque[Any] | None
    if TYPE_CHECKING:   # concurrent.futures.Future's own, which the engine runs
        def _invoke_callbacks(self) -> None: ...

    # Every Task shares one Condition (reentrant): it is only ever locked,
    # to change or read a state with the waiters list in step, and never
    # waited on with a timeout (result() and exception() wait through the
    # pool; Future's own wait is only reached with timeout 0).  A Condition
    # per Task would be 8 more objects each for the garbage collector, made
    # for every pending Task that as_completed or wait() locks.
    _condition = threading.Condition()
    # _waiters and _done_callbacks, once made (see their properties).
    _w: _Watched | None = None
    _cbs: list[Callable[[Future[Any]], object]] | None = None

    def __init__(self, pool: Any, name: Any, proc: Any = None, retries: int | None = 0,
                 options: TaskOptions = DEFAULT_OPTIONS) -> None:
        # Future.__init__'s fields, but not its Condition (shared: see
        # above), nor _waiters and _done_callbacks, which their properties
        # make on first use: most Tasks are settled and read through the pool
        # without anyone waiting on them, and every object a Task holds is
        # one more for the garbage collector to sweep (many pending Tasks
        # made its sweeps the largest cost of a burst of submits).
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._pool = pool
        self._name = name             # a str, or the callable (named when shown: not per submit)
        self.retries = retries        # re-runs allowed if its worker dies while running it
        self._proc = proc             # submit(proc_instance): gets timers and error back
        self._copy = options.copy
        self._on_error = options.on_error
        self.dropped = False          # cancelled: outcomes are ignored
        self.timeout_ns = 0           # its task timeout (set by the engine; 0: none)
        self._unit = None
        self._messages = None         # what a submitted Process told (self.tell), not yet heard

    # -- sink interface (called under the pool lock) --
    def _put(self, index: int, value: Any) -> None:
        self._settle(writable(value) if self._copy else value, None)

    def _put_many(self, index: int, values: list[Any]) -> None:
        self._put(index, values[0])

    def _fail(self, index: int, exc: BaseException) -> None:
        if self._on_error is not None:
            exc = self._on_error(exc)
        self._settle(None, exc)

    # Future's _waiters and _done_callbacks, made on first use (concurrent.futures
    # reads and appends to them; _waiters is settable only because typing's
    # as_completed protocol says so).  Two threads may ask at once:
    # dict.setdefault (atomic) makes every caller use the same list.
    @property
    def _waiters(self) -> list[Any]:
        waiters = self._w
        if waiters is None:
            made = _Watched()
            made.task = self
            waiters = self.__dict__.setdefault("_w", made)
        return waiters

    @_waiters.setter
    def _waiters(self, waiters: list[Any]) -> None:
        watched = _Watched(waiters)
        watched.task = self
        self.__dict__["_w"] = watched

    @property
    def _done_callbacks(self) -> list[Callable[[Future[Any]], object]]:
        callbacks = self._cbs
        if callbacks is None:
            callbacks = self.__dict__.setdefault("_cbs", [])
        return callbacks

    def _has_callbacks(self) -> bool:
        return bool(self._cbs)

    def _notify(self) -> None:
        """Wake threads waiting on the (held) Condition, if any (none of
        shmproc's own code waits on it)."""
        cond = self._condition
        if cond._waiters:                 # type: ignore[attr-defined]  # threading's own
            cond.notify_all()

    def _settle(self, value: Any, error: BaseException | None) -> None:
        with self._condition:
            if self._state in _CANCELLED or self._state == _FINISHED:
                return                    # cancelled meanwhile: the outcome is ignored
            if error is None:
                self._result = value
                for waiter in self._w or ():
                    waiter.add_result(self)
            else:
                self._exception = error
                for waiter in self._w or ():
                    waiter.add_exception(self)
            self._state = _FINISHED
            self._notify()
        self._unit = None                 # no cycle: a result's memory goes with the Task
        self._pool._task_settled(self)

    def _process_outcome(self, index: int, kind: int, value: Any, timers: ProcessTimers | None,
                         error: Any, lap: int) -> None:
        if self._proc is not None:
            self._proc.timers = timers
            self._proc.error = error
        deliver_process(self, index, kind, value, error)

    def _sent(self) -> None:
        with self._condition:
            if self._state == _PENDING:
                self._state = _RUNNING

    def _cancel(self) -> None:
        """The pool ended before the task did: it counts as cancelled, even
        if a worker had it (a Future cannot be cancelled once running, so
        the state is set here rather than through Future.cancel)."""
        with self._condition:
            if self._state in _CANCELLED or self._state == _FINISHED:
                return
            self._state = futures_base.CANCELLED_AND_NOTIFIED
            self.dropped = True
            for waiter in self._w or ():
                waiter.add_cancelled(self)
            self._notify()
        self._unit = None
        self._pool._task_settled(self)

    def _message(self, index: int, obj: Any) -> None:
        if self._messages is None:
            self._messages = collections.deque()
        self._messages.append(obj)

    def listen(self, timeout: float | None = None) -> Any:
        """The next message a submitted Process task told (`self.tell` in
        its hooks), or None once `timeout` seconds pass; with None, waits
        until one comes or the task is done and all were heard."""
        return listen(self._pool, self, self._finished, timeout)

    def _finished(self) -> bool:
        """Done or cancelled, without driving the pool."""
        return self._state == _FINISHED or self._state in _CANCELLED

    def _watched(self) -> None:
        if not self._finished():
            self._pool._watch(self)

    # -- concurrent.futures.Future -----------------------------------------------------------
    def done(self) -> bool:
        """True once the task finished (or was cancelled)."""
        if not self._finished():
            self._pool._poll()
        return self._finished()

    def cancel(self) -> bool:
        """Cancel the task if no worker has it yet; True if it is (now) cancelled."""
        with self._pool._lock:
            if self._state != _PENDING:
                return self._state in _CANCELLED
            self.dropped = True
            self._pool._drop_pending(self._unit)
            self._unit = None
            # Nobody need drive the pool for it any more (its callbacks run
            # below, from Future.cancel): else a watched Task that was
            # cancelled kept the background driver polling until the pool
            # ended, ~3% of a core.
            self._pool._watched.discard(self)
        super().cancel()
        self.set_running_or_notify_cancel()       # wait()/as_completed learn it now
        return True

    def add_done_callback(self, fn: Callable[[Future[_T]], object]) -> None:
        """fn(task) once the task is done, in this process; at once if it is."""
        super().add_done_callback(fn)
        self._watched()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task finished; False if `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + native.timeout_ns(timeout) / 1e9
        pool = self._pool
        while not self._finished():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            pool._wait_step(SLICE_S if left is None else min(left, SLICE_S))
        return True

    def result(self, timeout: float | None = None) -> _T:
        """The task's return value, waiting up to `timeout` seconds (None:
        for ever); raises what the task raised, CancelledError, or
        TimeoutError (concurrent.futures') if it is not done in time."""
        if self._state != _FINISHED:
            self.wait(timeout)
        if self._state == _FINISHED and self._exception is None:
            # _result is set before _state, under the state lock.
            return self._result           # type: ignore[return-value]  # not None: a _T
        return super().result(timeout=0)  # raises what it holds, or times out

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """What the task raised (None if it returned), waiting as result() does."""
        self.wait(timeout)
        if self._state == _FINISHED:
            return self._exception
        return super().exception(timeout=0)   # cancelled, or not done in time

    def __repr__(self) -> str:
        if self._state in _CANCELLED:
            state = "cancelled"
        else:
            state = {_PENDING: "pending", _RUNNING: "running"}.get(self._state, "done")
        name = self._name if isinstance(self._name, str) else callable_name(self._name)
        return f"<shmproc.Task {name} {state}>"


def listen(engine: Any, sink: Any, over: Callable[[], bool], timeout: float | None) -> Any:
    """The next of `sink._messages` (what Process tasks told), driving
    `engine` meanwhile; None once `timeout` passes, or once over() holds
    and every message was heard (timeout None: waits for one of the two)."""
    deadline = None if timeout is None else time.monotonic() + native.timeout_ns(timeout) / 1e9
    while True:
        if sink._messages:
            return sink._messages.popleft()
        if over():
            return sink._messages.popleft() if sink._messages else None
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        engine._wait_step(SLICE_S if left is None else min(left, SLICE_S))


lifecycle.at_fork(before=_hold_task_lock, after_in_parent=_let_go_of_task_lock,
                  after_in_child=_let_go_of_task_lock)
