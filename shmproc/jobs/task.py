"""Task: the handle of one submitted call, and how outcomes reach it.

A Task and a Job (job.py) are *sinks*: the engine that runs the units
(a local pool, a Ray pool) calls _put / _put_many / _fail /
_process_outcome on them under its lock, and the caller's thread reads
them.  The engine a Task belongs to provides _lock, _poll(),
_wait_step(seconds) and _drop_pending(unit).
"""
from __future__ import annotations

import time
from concurrent.futures import CancelledError

from .. import _native as native
from ..common.errors import ProcessError
from ..common.outcome import FAILED_RESULT

__all__ = ["Task", "writable", "deliver_process", "SLICE_S"]

#: How long a waiting caller sleeps before it looks again (and drives its pool).
SLICE_S = 0.02


def writable(value):
    """copy=True: private, writable copies of the read-only arrays in `value`."""
    if isinstance(value, memoryview):
        return bytearray(value)
    if type(value).__name__ == "ndarray" and not value.flags.writeable:
        return value.copy()
    if isinstance(value, list):
        return [writable(v) for v in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(writable(v) for v in value)
    if isinstance(value, dict) and type(value) is dict:
        return {k: writable(v) for k, v in value.items()}
    return value


def deliver_process(sink, index, kind, value, error):
    """A Process task's outcome: its result, or its error with the worker's traceback."""
    if kind == FAILED_RESULT and isinstance(value, BaseException):
        if isinstance(value, ProcessError):
            value.with_remote_traceback()
        sink._fail(index, value)
    else:
        sink._put(index, value)


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
        self._value = writable(value) if self._copy else value
        self._state = Task._DONE
        self._unit = None             # no cycle: a result's memory goes with the Task

    def _put_many(self, index, values):
        self._put(index, values[0])

    def _fail(self, index, exc):
        self._error = exc
        self._state = Task._DONE
        self._unit = None

    def _process_outcome(self, index, kind, value, timers, error, lap):
        if self._proc is not None:
            self._proc.timers = timers
            self._proc.error = error
        deliver_process(self, index, kind, value, error)

    def _sent(self):
        if self._state == Task._PENDING:
            self._state = Task._SENT

    def _cancel(self):
        """The pool ended before the task did: it counts as cancelled."""
        if self._state < Task._DONE:
            self._state = Task._CANCELLED
            self.dropped = True

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
