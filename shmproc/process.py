"""Process: the class users subclass, and its parent-side handle.

    parent                                   worker (runner.py)
    ------                                   ------
    start(): validate config, serialize ──► arena (sparse shared segment)
             create control block ────────► control block: state, stop, lap,
             launch (fork/forkserver/spawn)                section, deadline
    current_lap ◄── read live ──────────────── lap counter (plain stores)
    stop()  ──── stop flag ────────────────►  checked between laps
    wait()  ◄── futex on the state word ────  state DONE / FAILED
    result  ◄── outcome, numpy as views ────  arena (written over the state)

No pipe, queue or Manager carries data: state, control and results live in
two shared segments per run.  multiprocessing only creates the process.
"""
from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
import threading
import time

from . import arenas, native, runner, transfer, wire
from .config import ProcessConfig, default_start_method, validate
from .errors import ProcessCrashedError, ProcessError, ResultError
from .native import lib

__all__ = ["Process"]

_HOOKS = ("__preloop__", "__loop__", "__postloop__", "__onfinish__", "__result__", "__error__")

#: How often a waiting parent checks that the worker is still alive.
_LIVENESS_SLICE_NS = 20_000_000
#: Grace between asking live workers to stop and killing them at exit.
EXIT_GRACE_S = 2.0

_RT = "_shmproc_rt"          # instance attribute holding the runtime (never pickled)
_USER_RESULT = "_shmproc_user_result"   # where a hook's `self.result = ...` goes


class _Runtime:
    """Everything a Process object needs at run time; not part of its state."""

    __slots__ = ("ctl_array", "ctl", "arena", "proc", "ended", "outcome", "decoded",
                 "killed", "crashed", "worker", "pid", "__weakref__")

    def __init__(self):
        self.ctl_array = self.ctl = self.arena = self.proc = None
        self.ended = False
        self.outcome = None           # (kind, value, timers, error, lap) once decoded
        self.decoded = False
        self.killed = False
        self.crashed = None           # ProcessCrashedError
        self.worker = None            # the Runner, when this object lives in the worker
        self.pid = None


class _StopEvent:
    """The legacy `self._stop_event` spelling: .set() is stop(), .is_set() reads the flag."""

    __slots__ = ("_proc",)

    def __init__(self, proc):
        self._proc = proc

    def set(self):
        self._proc.stop()

    def is_set(self) -> bool:
        rt = self._proc.__dict__[_RT]
        ctl = rt.worker.ctl if rt.worker is not None else rt.ctl
        return bool(ctl is not None and ctl.stop_requested)


class Process:
    """Subclass me: write __loop__ (and any of the other hooks), then start().

    Hooks, all optional: __preloop__, __loop__, __postloop__ (each lap, in
    that order), __onfinish__ (once, after the last lap), __result__ (its
    return value is `result`), __error__ (when the run fails for good).
    """

    # -- construction ------------------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _HOOKS:
            if name in cls.__dict__ and not callable(cls.__dict__[name]):
                raise TypeError(f"{cls.__qualname__}.{name} must be a method, "
                                f"not {type(cls.__dict__[name]).__name__}")
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_shmproc_wrapped", False):
            @functools.wraps(init)
            def __init__(self, *args, **kw):
                # Base setup first, once, so self.config exists on the
                # user's first line; no super().__init__() needed.
                if _RT not in self.__dict__:
                    Process.__init__(self)
                init(self, *args, **kw)
            __init__._shmproc_wrapped = True
            cls.__init__ = __init__

    def __init__(self):
        self.__dict__[_RT] = _Runtime()
        self.config = ProcessConfig()
        self.timers = None
        self.error = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop(_RT, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__[_RT] = _Runtime()

    def _rt(self) -> _Runtime:
        rt = self.__dict__.get(_RT)
        if rt is None:                  # a subclass __init__ bypassed ours entirely
            rt = self.__dict__[_RT] = _Runtime()
        return rt

    def _shmproc_bind_worker(self, run):
        self._rt().worker = run

    # -- hooks (defaults) ------------------------------------------------------------
    def __preloop__(self):
        pass

    def __loop__(self):
        pass

    def __postloop__(self):
        pass

    def __onfinish__(self):
        pass

    def __result__(self):
        return None

    def __error__(self):
        return self.error

    # -- parent-side control -------------------------------------------------------------
    def start(self):
        """Validate the config, serialize the object and launch its worker."""
        rt = self._rt()
        if rt.worker is not None:
            raise RuntimeError("start() was called inside the worker process; start Processes "
                               "from the parent")
        if rt.proc is not None and not self._check_ended(rt):
            raise RuntimeError(f"{type(self).__name__} is already running (pid {rt.pid}); "
                               f"wait() for it, or stop() it, before starting it again")
        for name in _HOOKS:
            if not callable(getattr(self, name)):
                raise TypeError(f"{type(self).__name__}.{name} must be callable, "
                                f"not {type(getattr(self, name)).__name__}")
        validate(self.config)
        method = self.config.start_method or default_start_method()
        ctx = mp.get_context(method)
        if method == "forkserver":
            _preload_into_forkserver()
        ctl_array = native.ControlArray.create(1)
        arena = arenas.pool.take()
        try:
            try:
                transfer.write(arena, self, same_main=method == "fork")
            except wire.SerializationError as exc:
                raise _unserializable(self, exc) from exc.__cause__
            ctl = ctl_array.control(0)
            ctl.set_lives(self.config.lives)
            ctl.set_state(lib.SHMP_STATE_STARTING)
            main = threading.current_thread() is threading.main_thread()
            proc = ctx.Process(
                target=runner.worker_entry,
                args=(ctl_array, 0, arena, os.getpid(), type(self).__name__,
                      method != "forkserver", main),
                name=f"shmproc:{type(self).__name__}",
            )
            proc.start()
        except BaseException:
            ctl_array.close()                     # the arena goes back to the pool with its mapping
            raise
        # A fresh run: forget the previous one.
        rt.ctl_array, rt.ctl, rt.arena, rt.proc, rt.pid = ctl_array, ctl, arena, proc, proc.pid
        rt.ended = rt.decoded = rt.killed = False
        rt.outcome = rt.crashed = None
        self.timers = None
        self.error = None
        _live.add(self)
        _ensure_exit_hook()
        return self

    def _check_ended(self, rt) -> bool:
        """Non-blocking: has the worker ended?  Records a crash if it died."""
        if rt.ended or rt.proc is None:
            return True
        if rt.ctl.state >= lib.SHMP_STATE_DONE:
            self._finish(rt)
            return True
        if rt.proc.exitcode is None:            # waitpid(WNOHANG)
            return False
        self._finish(rt)
        return True

    def _finish(self, rt):
        """The worker has ended: it reported (DONE/FAILED), died, or was killed.

        A worker that reported counts as ended at once: all that remains of
        it is interpreter teardown (~2 ms), which the parent need not wait
        for; multiprocessing reaps the process later.
        """
        if rt.ended:
            return
        state = rt.ctl.state
        if rt.killed:
            rt.proc.join()
            rt.ctl.set_state(lib.SHMP_STATE_KILLED)
        elif state < lib.SHMP_STATE_DONE:
            rt.proc.join()
            state = rt.ctl.state                  # it may have reported just before dying
            if state < lib.SHMP_STATE_DONE:
                code = rt.proc.exitcode
                rt.crashed = ProcessCrashedError(
                    exitcode=code, last_lap=rt.ctl.lap(), pid=rt.pid,
                    process_name=type(self).__name__)
                rt.ctl.set_exit(code if code is not None else 0,
                                -code if code and code < 0 else 0)
                rt.ctl.set_state(lib.SHMP_STATE_CRASHED)
        rt.ended = True
        rt.ctl_array.close()                     # descriptors go now, mappings with their views
        _live.discard(self)
        if state in (lib.SHMP_STATE_DONE, lib.SHMP_STATE_FAILED) and not rt.killed:
            self._decode(rt)
        else:
            rt.arena = None                      # nothing to read from it

    def _decode(self, rt):
        if rt.decoded:
            return
        rt.decoded = True
        try:
            (value, timers, error, lap), kind, views = transfer.read(rt.arena)
        except Exception as exc:                 # noqa: BLE001 - e.g. a class missing here
            err = ResultError(f"the worker's result could not be deserialized in the parent: "
                              f"{type(exc).__name__}: {exc}", current_lap=rt.ctl.lap(),
                              original_error=exc, process_name=type(self).__name__)
            rt.outcome = (runner.FAILED_RESULT, err)
            rt.arena = None
            self.error = err
            return
        rt.outcome = (kind, value)
        if not views:
            rt.arena = None          # nothing refers to it: unmap now, not with the object
        self.timers = timers
        if error is not None:
            self.error = error.with_remote_traceback() if isinstance(error, ProcessError) else error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has ended; False if `timeout` seconds pass first."""
        rt = self._rt()
        if rt.worker is not None:
            raise RuntimeError("wait() was called inside the worker process")
        if rt.proc is None or rt.ended:
            return True
        deadline = None if timeout is None else time.monotonic() + native.timeout_ns(timeout) / 1e9
        ctl = rt.ctl
        while True:
            if self._check_ended(rt):
                return True
            slice_ns = _LIVENESS_SLICE_NS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                slice_ns = min(slice_ns, int(left * 1e9) + 1)
            ctl.wait_state(lib.SHMP_STATE_DONE, slice_ns)

    def stop(self):
        """Ask the worker to finish its current lap, then onfinish and result.

        Non-blocking and idempotent; before start() it does nothing.  Inside
        the worker it requests the stop from within a hook.
        """
        rt = self._rt()
        ctl = rt.worker.ctl if rt.worker is not None else rt.ctl
        if ctl is not None and not rt.ended:
            ctl.request_stop()

    def kill(self):
        """SIGKILL the worker now: no onfinish, no result (result is None)."""
        rt = self._rt()
        if rt.worker is not None:
            raise RuntimeError("kill() was called inside the worker process; use stop()")
        if rt.proc is None or rt.ended:
            return
        rt.killed = True
        try:
            os.kill(rt.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._finish(rt)

    # -- state -----------------------------------------------------------------------------
    @property
    def is_alive(self) -> bool:
        rt = self._rt()
        if rt.worker is not None:
            return True
        return rt.proc is not None and not self._check_ended(rt)

    @property
    def pid(self):
        return self._rt().pid

    @property
    def exitcode(self):
        """As multiprocessing's: None while running, negative signal number if killed.

        A worker that reported its outcome is done; until its process has
        finished exiting, the exit status it reported (0) stands in.
        """
        rt = self._rt()
        if rt.proc is None or not self._check_ended(rt):
            return None
        if rt.killed:
            return -signal.SIGKILL
        real = rt.proc.exitcode
        if real is not None:
            return real
        code, sig = rt.ctl.exit_info()
        return -sig if sig else code

    @property
    def current_lap(self) -> int:
        """Laps completed so far: live from shared memory while the worker runs."""
        rt = self._rt()
        if rt.worker is not None:
            return rt.worker.lap
        return rt.ctl.lap() if rt.ctl is not None else 0

    @property
    def _current_lap(self) -> int:
        return self.current_lap

    @property
    def _stop_event(self):
        return _StopEvent(self)

    @property
    def result(self):
        """The value __result__ returned (waits if needed); raises what the run raised."""
        rt = self._rt()
        if rt.worker is not None:
            if _USER_RESULT in self.__dict__:      # the hooks' own `self.result` attribute
                return self.__dict__[_USER_RESULT]
            raise RuntimeError("`result` is read in the parent, after the run; inside the "
                               "worker, return the value from __result__ instead")
        if rt.proc is None:
            return None
        self.wait()
        if rt.killed:
            return None
        if rt.crashed is not None:
            raise rt.crashed
        self._decode(rt)
        kind, value = rt.outcome
        if kind == runner.FAILED_RESULT and isinstance(value, BaseException):
            if isinstance(value, ProcessError):
                value.with_remote_traceback()
            raise value.with_traceback(None)
        return value

    @result.setter
    def result(self, value):
        # Hooks may keep their own `self.result` (concept section 11 does);
        # it stays a worker-side attribute and never shadows the run's result.
        self.__dict__[_USER_RESULT] = value

    def __repr__(self):
        rt = self.__dict__.get(_RT)
        if rt is None or rt.proc is None:
            state = "not started"
        elif rt.worker is not None:
            state = "in worker"
        elif not rt.ended:
            state = f"running pid={rt.pid} lap={self.current_lap}"
        else:
            state = "killed" if rt.killed else "crashed" if rt.crashed else "finished"
        return f"<{type(self).__qualname__} {state}>"


_PRELOAD = ["shmproc.runner", "shmproc.process", "shmproc.pool_worker", "cloudpickle"]


def _preload_into_forkserver():
    """Have the fork server import the runner once, instead of every worker
    importing it (~40 ms each).  Only possible before the server starts;
    modules the user asked to preload are kept."""
    from multiprocessing import forkserver
    server = getattr(forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is not None:
        return
    current = list(getattr(server, "_preload_modules", ["__main__"]))
    missing = [m for m in _PRELOAD if m not in current]
    if missing:
        server.set_forkserver_preload(current + missing)


def _unserializable(proc, exc):
    found = wire.find_unpicklable(proc.__getstate__(), "self")
    name = type(proc).__name__
    if found is None:
        return wire.SerializationError(f"cannot start {name}: its state cannot be serialized: {exc}")
    path, typ, err = found
    return wire.SerializationError(
        f"cannot start {name}: {path} holds a {typ.__module__}.{typ.__qualname__}, which cannot be "
        f"sent to another process ({type(err).__name__}: {err}). Create it inside the worker "
        f"(for example in __preloop__, or lazily on first use) instead of in __init__.")


# ---- shutdown: stop live workers, then kill them ---------------------------------------

# Strong references: a running worker must be stopped at exit even if the
# user dropped its Process object.  Entries leave when the run ends.
_live: "set[Process]" = set()
_exit_hook_registered = False


def _ensure_exit_hook():
    global _exit_hook_registered
    if not _exit_hook_registered:
        # Priority >= 0: runs in multiprocessing's exit function before it
        # joins children, so workers are stopped rather than waited for.
        mp.util.Finalize(None, shutdown_all, exitpriority=100)
        _exit_hook_registered = True


def shutdown_all(grace: float = EXIT_GRACE_S):
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


def _forget_after_fork():
    # A forked child is not responsible for its parent's workers.
    _live.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
