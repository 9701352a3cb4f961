"""Process: the class users subclass, and its parent-side handle.

The handle is backend-neutral: start(on=...) asks a backend (backends/)
for a Run, and wait / stop / kill / result / current_lap read that Run.
The local backend (local_backend.py) forks a worker that runs runner.py;
the Ray backend runs the same runner on a cluster node.
"""
from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from .backends.resolve import resolve as resolve_backend
from .common import lifecycle
from .common.config import ProcessConfig, validate
from .channels.mailbox import Mailbox
from .common.errors import NotRunningError, ProcessError
from .common.outcome import HOOK_NAMES, default_hook

if TYPE_CHECKING:
    from .observe.timeline import Timeline
    import collections
    from collections.abc import Generator

    from typing_extensions import Self

    from .backends.base import Backend, Run
    from .common.timing import ProcessTimers

__all__ = ["Process"]

_HOOKS = HOOK_NAMES

#: Grace between asking live workers to stop and killing them at exit.
EXIT_GRACE_S = 2.0

_NUMBERS = (int, float)       # timeouts listen's hot path checks inline (others: native.timeout_ns)
_RT = "_shmproc_rt"          # instance attribute holding the runtime (never pickled)
_USER_RESULT = "_shmproc_user_result"   # where a hook's `self.result = ...` goes


class _Runtime:
    """Everything a Process object needs at run time; not part of its state."""

    __slots__ = ("run", "collected", "worker", "inbox", "__weakref__")
    run: Run | None
    collected: bool
    worker: Any
    inbox: collections.deque[Any] | None

    def __init__(self) -> None:
        self.run = None               # the backends.Run of the latest start()
        self.collected = False        # its outcome's timers/error copied onto the object
        self.worker = None            # the Runner, when this object lives in the worker
        self.inbox = None             # the parent's: the run's Mailbox.inbox (listen's hot path)


class _StopEvent:
    """The legacy `self._stop_event` spelling: .set() is stop(), .is_set() reads the flag."""

    __slots__ = ("_proc",)

    def __init__(self, proc: Process) -> None:
        self._proc = proc

    def set(self) -> None:
        self._proc.stop()

    def is_set(self) -> bool:
        rt = self._proc.__dict__[_RT]
        if rt.worker is not None:
            return bool(rt.worker.ctl.stop_requested)
        return rt.run is not None and rt.run.stop_requested()


class Process:
    """Subclass me: write __loop__ (and any of the other hooks), then start().

    Hooks, all optional: __preloop__, __loop__, __postloop__ (each lap, in
    that order), __onfinish__ (once, after the last lap), __result__ (its
    return value is `result`), __error__ (when the run fails for good).
    """

    __shmproc_process__ = True      # outcome.PROCESS_MARK: the worker side tells a Process by it

    # What a run's hooks and its parent read and write (set in __init__ and by a run).
    config: ProcessConfig           # how it runs: laps, lives, timeouts, start method
    timers: ProcessTimers | None    # @timesection()'s timings, back from the worker
    error: ProcessError | None      # why the run failed (set when it ended), or None

    # -- construction ------------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _HOOKS:
            if name in cls.__dict__ and not callable(cls.__dict__[name]):
                raise TypeError(f"{cls.__qualname__}.{name} must be a method, "
                                f"not {type(cls.__dict__[name]).__name__}")
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_shmproc_wrapped", False):
            @functools.wraps(init)
            def __init__(self: Process, *args: Any, **kw: Any) -> None:
                # Base setup first, once, so self.config exists on the
                # user's first line; no super().__init__() needed.
                if _RT not in self.__dict__:
                    Process.__init__(self)
                init(self, *args, **kw)
            __init__._shmproc_wrapped = True        # type: ignore[attr-defined]
            cls.__init__ = __init__                 # type: ignore[method-assign]

    def __init__(self) -> None:
        self.__dict__[_RT] = _Runtime()
        self.config = ProcessConfig()
        self.timers = None
        self.error = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop(_RT, None)
        state.pop("tell", None)         # the worker's shortcut (see _shmproc_bind_worker)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__[_RT] = _Runtime()

    def _rt(self) -> _Runtime:
        rt = self.__dict__.get(_RT)
        if rt is None:                  # a subclass __init__ bypassed ours entirely
            rt = self.__dict__[_RT] = _Runtime()
        return rt

    def _shmproc_fork_copy(self) -> Self:
        """In a fork worker, the object its first life runs on, made from
        the fork's copy of it as unpickling would make it (wire/fork_copy.py):
        this copy itself, with a fresh runtime, when the class keeps
        Process's own __getstate__/__setstate__; else copy.copy, so the
        class's own run."""
        cls = type(self)
        if cls.__getstate__ is Process.__getstate__ and cls.__setstate__ is Process.__setstate__:
            d = self.__dict__
            d.pop("tell", None)                 # what __getstate__ drops
            d[_RT] = _Runtime()                 # what __setstate__ makes
            return self
        import copy
        return copy.copy(self)

    def _shmproc_bind_worker(self, run: Any) -> None:
        self._rt().worker = run
        # A stream of self.tell() is the hot path of messages: unless the
        # class overrides tell, the instance's `tell` is the outbox's own,
        # so a message costs no handle code (~0.2 us of ~0.5).
        outbox = getattr(run, "outbox", None)
        if outbox is not None and type(self).tell is Process.tell:
            self.__dict__["tell"] = outbox.tell

    # -- hooks (defaults) ------------------------------------------------------------
    # Marked so that a run skips the empty ones without importing this class.
    @default_hook
    def __preloop__(self) -> None:
        pass

    @default_hook
    def __loop__(self) -> None:
        pass

    @default_hook
    def __postloop__(self) -> None:
        pass

    def __onfinish__(self) -> None:
        pass

    def __result__(self) -> Any:
        return None

    def __error__(self) -> Any:
        return self.error

    # -- parent-side control -------------------------------------------------------------
    def start(self, on: str | Backend | None = None) -> Self:
        """Validate the config, serialize the object and launch its worker.

        `on` picks where it runs: None or "local" (a process on this
        machine), "ray" or a shmproc.RayBackend(...) (a Ray cluster).
        """
        rt = self._rt()
        if rt.worker is not None:
            raise RuntimeError("start() was called inside the worker process; start Processes "
                               "from the parent")
        if rt.run is not None and not self._check_ended(rt):
            raise RuntimeError(f"{type(self).__name__} is already running (pid {rt.run.pid}); "
                               f"wait() for it, or stop() it, before starting it again")
        backend = resolve_backend(on)
        for name in _HOOKS:
            if not callable(getattr(self, name)):
                raise TypeError(f"{type(self).__name__}.{name} must be callable, "
                                f"not {type(getattr(self, name)).__name__}")
        validate(self.config)
        run = backend.launch(self)
        # A fresh run: forget the previous one.
        rt.run, rt.collected = run, False
        rt.inbox = run.mailbox.inbox if run.mailbox is not None else None
        self.timers = None
        self.error = None
        _live.add(self)
        _ensure_exit_hook()
        return self

    def _check_ended(self, rt: _Runtime) -> bool:
        """Non-blocking: has the run ended?  Collects its timers and error once."""
        if rt.collected or rt.run is None:
            return True
        if not rt.run.ended():
            return False
        self._collect(rt)
        return True

    def _collect(self, rt: _Runtime) -> None:
        if rt.collected:
            return
        rt.collected = True
        _live.discard(self)
        out = rt.run.outcome()          # type: ignore[union-attr]  # a run, or collected already
        if out.status in ("ok", "failed"):
            self.timers = out.timers
            self.error = out.error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has ended; False if `timeout` seconds pass first."""
        rt = self._rt()
        if rt.worker is not None:
            raise RuntimeError("wait() was called inside the worker process")
        if rt.run is None or rt.collected:
            return True
        if not rt.run.wait(timeout):
            return False
        self._collect(rt)
        return True

    def stop(self) -> None:
        """Ask the worker to finish its current lap, then onfinish and result.

        Non-blocking and idempotent; before start() it does nothing.  Inside
        the worker it requests the stop from within a hook.
        """
        rt = self._rt()
        if rt.worker is not None:
            rt.worker.ctl.request_stop()
        elif rt.run is not None and not rt.collected:
            rt.run.stop()

    def kill(self) -> None:
        """SIGKILL the worker now: no onfinish, no result (result is None)."""
        rt = self._rt()
        if rt.worker is not None:
            raise RuntimeError("kill() was called inside the worker process; use stop()")
        if rt.run is None or rt.collected:
            return
        rt.run.kill()
        self._collect(rt)

    def timeline(self) -> "Timeline":
        """What the worker did: a Timeline with a span per hook section
        (__preloop__, __loop__, __postloop__ of each lap with its lap number,
        then __onfinish__, __result__ or __error__), recorded in shared
        memory (the newest 4095); ok is False for a hook that raised, timed
        out or died with its worker.  Its totals() hold each hook's count and
        time over every lap, however many spans were dropped.  During the run
        it holds the sections done so far; before start() it is empty."""
        rt = self._rt()
        if rt.worker is not None:
            raise RuntimeError("timeline() is read in the parent; inside the worker the "
                               "run is not over")
        from .observe.recorded import process_timeline
        if rt.run is None:
            return process_timeline((), lost=0, origin_ns=0, end_ns=0, tallies=())
        record = rt.run.spans()
        if record is None:
            raise NotImplementedError(
                f"timeline() is recorded by the local backend's workers; "
                f"{type(rt.run).__name__} runs record none")
        spans, lost, origin_ns, end_ns, tallies = record
        return process_timeline(spans, lost=lost, origin_ns=origin_ns, end_ns=end_ns,
                                tallies=tallies)

    # -- state -----------------------------------------------------------------------------
    @property
    def is_alive(self) -> bool:
        rt = self._rt()
        if rt.worker is not None:
            return True
        return rt.run is not None and not self._check_ended(rt)

    @property
    def pid(self) -> int | None:
        """The worker's process id (on its node, for a cluster backend)."""
        rt = self._rt()
        return rt.run.pid if rt.run is not None else None

    @property
    def exitcode(self) -> int | None:
        """As multiprocessing's: None while running, negative signal number if killed.

        A worker that reported its outcome is done; until its process has
        finished exiting, the exit status it reported (0) stands in.
        """
        rt = self._rt()
        if rt.run is None or not self._check_ended(rt):
            return None
        return rt.run.exitcode

    @property
    def current_lap(self) -> int:
        """Laps completed so far: live from shared memory while the worker runs."""
        rt = self._rt()
        if rt.worker is not None:
            return rt.worker.lap        # type: ignore[no-any-return]  # the Runner's count
        return rt.run.lap() if rt.run is not None else 0

    @property
    def _current_lap(self) -> int:
        return self.current_lap

    # -- messages: tell / listen ----------------------------------------------------------
    def tell(self, obj: object) -> None:
        """Send `obj` to the other side: from the parent to the running
        worker, or from inside a hook to the parent.  Never waits for the
        reader; order is kept.  Messages the worker sent stay listenable
        after it ended; those it never read are counted in `unread`."""
        rt = self._rt()
        worker = rt.worker
        if worker is not None:
            if worker.outbox is not None:             # a local run: coalesced (outbox.py)
                worker.outbox.tell(obj)
                return
            Mailbox.tell(self._worker_mailbox(rt).to_parent, obj, "parent")
            return
        box = self._parent_mailbox(rt, "tell")
        if self._check_ended(rt):
            raise NotRunningError(f"{type(self).__name__} has ended: no worker would read this "
                                  f"message (tell while it runs; start() it again for a new run)")
        Mailbox.tell(box.to_worker, obj, "worker")

    def listen(self, timeout: float | None = None) -> Any:
        """The next message from the other side, or None once `timeout`
        seconds pass.  With timeout=None it waits until a message comes, or
        until none can come (in the parent: the run ended and everything it
        sent was read; in the worker: stop() was asked)."""
        rt = self.__dict__.get(_RT) or self._rt()
        inbox = rt.inbox
        if inbox and (timeout is None or (type(timeout) in _NUMBERS and timeout >= 0)):
            return inbox.popleft()                    # the hot path of a stream (parent)
        worker = rt.worker
        if worker is None:
            box = self._parent_mailbox(rt, "listen")  # raises: not started, or not here
            return box.receive(timeout, lambda: self._check_ended(rt))
        ctl = worker.ctl
        inbox = self._worker_inbox(rt)
        self._flush_told(worker)
        return Mailbox.listen(inbox, timeout, lambda: bool(ctl.stop_requested))

    async def alisten(self, timeout: float | None = None) -> Any:
        """listen() in an asyncio loop, without blocking it or using a thread."""
        rt = self._rt()
        worker = rt.worker
        if worker is not None:
            ctl = worker.ctl
            inbox = self._worker_inbox(rt)
            self._flush_told(worker)
            return await Mailbox.alisten(inbox, timeout, lambda: bool(ctl.stop_requested))
        box = self._parent_mailbox(rt, "alisten")
        return await box.areceive(timeout, lambda: self._check_ended(rt))

    @staticmethod
    def _flush_told(worker: Any) -> None:
        """Before the worker waits for the parent: what it told goes out
        (the parent may be waiting for it to answer)."""
        outbox = worker.outbox
        if outbox is not None and outbox.pending:
            outbox.flush()

    @property
    def unread(self) -> int:
        """Messages the parent told that the worker has not read (so far, or
        ever, once the run ended).  0 before start()."""
        rt = self._rt()
        if rt.worker is not None:
            raise RuntimeError("unread is read in the parent")
        box = rt.run.mailbox if rt.run is not None else None
        return box.to_worker.qsize() if box is not None else 0

    def _parent_mailbox(self, rt: _Runtime, what: str) -> Mailbox:
        if rt.run is None:
            raise NotRunningError(f"{what}() before start(): start {type(self).__name__} first")
        box = rt.run.mailbox
        if box is None:
            raise NotImplementedError(
                f"{what}() is not available for a {type(self).__name__} running on "
                f"{type(rt.run).__name__}: tell/listen work for Processes started on this "
                f"machine; on Ray, pass the worker a ray.util.queue.Queue instead")
        return box

    def _worker_mailbox(self, rt: _Runtime) -> Any:
        box = rt.worker.mailbox
        if box is None:
            raise NotImplementedError(
                "tell()/listen() are not available here: inside an item of Pool.map / starmap "
                "called without on_message= (pass on_message=fn: fn(index, message) hears what "
                "items tell; or use imap, imap_unordered or map_async, whose listen() hears it, "
                "or submit the Process: task.listen()), or a Process running on Ray (pass it a "
                "ray.util.queue.Queue); or give it a shmproc.Queue")
        return box

    def _worker_inbox(self, rt: _Runtime) -> Any:
        inbox = self._worker_mailbox(rt).to_worker
        if inbox is None:
            raise NotImplementedError(
                "listen() inside a Pool task: a submitted task can tell its caller "
                "(task.listen() hears it) but not hear from it; pass what it needs as "
                "arguments, or give it a shmproc.Queue")
        return inbox

    def __await__(self) -> Generator[Any, None, Any]:
        """`await p` in an asyncio loop: the result, as `p.result` gives it
        (or raises), without blocking the loop."""
        return self._result_when_ended().__await__()

    async def _result_when_ended(self) -> Any:
        rt = self._rt()
        if rt.worker is not None:
            raise RuntimeError("a Process is awaited in the parent, after start(); inside the "
                               "worker, return the value from __result__ instead")
        if rt.run is None:
            raise RuntimeError(f"{type(self).__name__} was never started: call start() before "
                               f"awaiting it")
        if not self._check_ended(rt):
            await rt.run.until_ended()
        return self.result

    @property
    def _stop_event(self) -> _StopEvent:
        return _StopEvent(self)

    @property
    def result(self) -> Any:
        """The value __result__ returned (waits if needed); raises what the run raised."""
        rt = self._rt()
        if rt.worker is not None:
            if _USER_RESULT in self.__dict__:      # the hooks' own `self.result` attribute
                return self.__dict__[_USER_RESULT]
            raise RuntimeError("`result` is read in the parent, after the run; inside the "
                               "worker, return the value from __result__ instead")
        if rt.run is None:
            return None
        self.wait()
        status, value = rt.run.outcome()[:2]
        if status == "killed":
            return None
        if status == "crashed":
            raise value
        if status == "failed" and isinstance(value, BaseException):
            if isinstance(value, ProcessError):
                value.with_remote_traceback()
            raise value.with_traceback(None)
        return value

    @result.setter
    def result(self, value: Any) -> None:
        # Hooks may keep their own `self.result` (concept section 11 does);
        # it stays a worker-side attribute and never shadows the run's result.
        self.__dict__[_USER_RESULT] = value

    def __repr__(self) -> str:
        rt = self.__dict__.get(_RT)
        if rt is not None and rt.worker is not None:
            state = "in worker"
        elif rt is None or rt.run is None:
            state = "not started"
        elif not rt.collected:
            state = f"running pid={rt.run.pid} lap={self.current_lap}"
        else:
            status = rt.run.outcome().status
            state = status if status in ("killed", "crashed") else "finished"
        return f"<{type(self).__qualname__} {state}>"


# ---- shutdown: stop live workers, then kill them ---------------------------------------

# Strong references: a running worker must be stopped at exit even if the
# user dropped its Process object.  Entries leave when the run ends.
_live: "set[Process]" = set()


def _ensure_exit_hook() -> None:
    # Before multiprocessing joins its children: workers are stopped, not waited for.
    lifecycle.at_exit(shutdown_all, lifecycle.STOP_WORKERS)


def shutdown_all(grace: float = EXIT_GRACE_S) -> None:
    """Stop every live worker, wait up to `grace` seconds, then kill the rest.

    Runs at interpreter exit (Ctrl-C included).  A second KeyboardInterrupt
    during the grace period kills at once.
    """
    procs = [p for p in list(_live) if p.is_alive]
    _live.difference_update(procs)
    if not procs:
        return
    for p in procs:
        p.stop()
    try:
        deadline = time.monotonic() + grace
        for p in procs:
            p.wait(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.is_alive:
                p.kill()


def _forget_after_fork() -> None:
    # A forked child is not responsible for its parent's workers.
    _live.clear()


lifecycle.at_fork(after_in_child=_forget_after_fork)
