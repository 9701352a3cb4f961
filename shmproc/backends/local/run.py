"""The local backend: one worker process per run, on this machine.

    parent (LocalRun)                        worker (runner.py)
    ------                                   ------
    launch: serialize ──────────────────►  arena (sparse shared segment)
            create control block ────────►  control block: state, stop, lap,
            fork/forkserver/spawn                           section, deadline
    lap()   ◄── read live ──────────────────  lap counter (plain stores)
    stop()  ──── stop flag ────────────────►  checked between laps
    wait()  ◄── futex on the state word ────  state DONE / FAILED
    outcome ◄── numpy as views ──────────────  arena (written over the state)

No pipe or Manager carries data: state, control and results live in two
shared segments per run, and tell / listen messages in the run's two
queues (channels/mailbox.py).  multiprocessing only creates the process.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ...channels import mailbox as mailboxes
from ...wire import arenas
from ... import _native as native
from ...runtime import runner
from ...wire import transfer
from ...wire import pickling as wire
from ...wire.fork_copy import copies_like_pickle
from ..base import Backend, Outcome, Run
from .forking import DirectForkProcess
from .forkserver import preload_into_forkserver
from .pool import LocalPool
from .release import Held as _Held, hold_until_released as _hold_until_released, release_ended
from ...common import lifecycle, tracing
from ...common.config import default_start_method
from ...common.errors import ProcessCrashedError, ProcessError, ResultError
from ...common.errors import TimeoutError as SectionTimeoutError
from ...common.outcome import FAILED_RESULT, RETRIED, SECTION_NAMES

if TYPE_CHECKING:
    import asyncio

    from ...common.errors import SerializationError

__all__ = ["LocalBackend", "LocalRun", "LOCAL"]

#: How often a waiting parent checks that the worker is still alive.
_LIVENESS_SLICE_NS = 20_000_000
#: After the worker says FINISHING (its last hooks are next), watch for its
#: report this long before sleeping again: a trivial __result__ reports
#: within tens of microseconds, and a watch that yields costs nothing when
#: the core is wanted elsewhere (it stops at once then).
_REPORT_WATCH_NS = 2_000_000


class LocalRun(Run):
    """A worker process on this machine, read through its control block."""

    _outcome: Outcome | None        # set once it ended

    def __init__(self, obj: Any, serialize_error: Callable[[Any, BaseException], SerializationError],
                 messages: bool = True) -> None:
        method = obj.config.start_method or default_start_method()
        ctx = mp.get_context(method)
        lifecycle.drop_leftovers()                # a fork child's first run: its parent's go now
        if method == "forkserver":
            preload_into_forkserver()
        ctl_array = _spare_control() or native.ControlArray.create(1)
        arena = _spare_arena() or arenas.pool.take()
        trace = None
        try:
            # A span per hook section (csrc/trace.c), for Process.timeline().
            self.trace = self.trace_ring = None
            if tracing.enabled():
                trace = _spare_trace() or native.TraceArea.create(1)
                self.trace, self.trace_ring = trace, trace.ring(0)
            self.origin_ns = native.now_ns()
            # A fork child may run its first life on its own copy of `obj`
            # (wire/fork_copy.py); later lives unpickle the record written
            # here.  With no later life the record would never be read, so
            # none is written: an array in the state then costs the start
            # nothing.  (Such a state is plain data, which always pickles:
            # nothing that start() would refuse gets through.)
            first = obj if method == "fork" and copies_like_pickle(obj) else None
            try:
                if first is not None and obj.config.lives == 1:
                    transfer.clear(arena)
                else:
                    transfer.write(arena, obj, same_main=method == "fork")
            except wire.SerializationError as exc:
                raise serialize_error(obj, exc) from exc.__cause__
            ctl = ctl_array.control(0)
            # tell / listen, both ways (not for a run whose parent is a Ray
            # launcher: nobody there would read or write them).
            self.mailbox = mailboxes.take() if messages else None
            ctl.set_lives(obj.config.lives)
            ctl.set_state(native.STATE_STARTING)
            self.ctx, self.method, self.name = ctx, method, type(obj).__name__
            self._cls = type(obj)
            # Rehearse the arena write in the worker unless this class's
            # last run ended with a lone scalar, which never makes one.
            self._rehearse = not _scalar_last.get(self._cls, False)
            self._scalar = False                  # this run's outcome was (set by _decode)
            self.ctl_array, self.ctl, self.arena = ctl_array, ctl, arena
            self._spawn(first)
            if messages:
                mailboxes.replenish()             # the next run's, while this worker starts up
            _replenish_spares()
        except BaseException:
            ctl_array.close()                     # the arena goes back to the pool with its mapping
            if trace is not None:
                trace.close()
            raise
        self.ended_ = self.killed = self._views = self._stop_asked = self._rehearsed = False
        self._watched = False                     # watched for the report after FINISHING
        self._outcome = None
        self._finishing = threading.Lock()        # kill() and a waiting thread may race to _finish
        self._releasing = threading.Lock()
        self._released = False
        self._held: _Held | None = None           # what release_ended closes if the run is dropped

    def _spawn(self, first: Any = None) -> None:
        """Start a worker on the state in the arena (the first life, or a
        later one after the guard ended a worker stuck past its timeout).
        first: the object itself, for a fork child to copy (first life)."""
        main = threading.current_thread() is threading.main_thread()
        # fork: multiprocessing's Process with a lean child bootstrap (forking.py),
        # and the objects this process made for the run, which the child
        # inherits as they are (its control block and trace ring): made again
        # there, each would cost the fresh child its page faults.
        fork = self.method == "fork"
        make = DirectForkProcess if fork else self.ctx.Process
        proc = make(
            target=runner.worker_entry,
            args=(self.ctl_array, 0, self.arena, os.getpid(), self.name,
                  self.method != "forkserver", main, self.mailbox,
                  self.trace_ring if fork else self.trace, first, self._rehearse,
                  self.ctl if fork else None),
            name=f"shmproc:{self.name}",
        )
        proc.start()
        self.proc, self.pid = proc, proc.pid
        # Signals go through a pidfd: it names this process even after it
        # has been reaped, when its pid may already belong to another.
        self._pidfd = _open_pidfd(proc.pid)

    def _reported(self) -> bool:
        return self.ctl.state >= native.STATE_DONE

    def ended(self) -> bool:
        if self.ended_:
            return True
        if self.ctl.state >= native.STATE_DONE:
            self._finish()
            return True
        if self.proc.exitcode is None:            # waitpid(WNOHANG)
            return False
        self._finish()
        return self.ended_                        # False: a next life started in a new worker

    def _finish(self) -> None:
        """The worker has ended: it reported (DONE/FAILED), died, or was killed.

        A worker that reported counts as ended at once: all that remains of
        it is interpreter teardown (~2 ms), which the parent need not wait
        for; multiprocessing reaps the process later.
        """
        with self._finishing:
            if not self.ended_:
                self._finish_once()

    def _reaped(self) -> None:
        self.proc.join()
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            os.close(fd)

    def _finish_once(self) -> None:
        ctl = self.ctl
        state = ctl.state
        if not self.killed and state >= native.STATE_DONE:
            # It reported: decode and return at once.  What the run still
            # holds goes while the parent next waits (release_ended): after
            # a fork every page the parent writes first traps, so each step
            # moved off this path is time p.result gives back.
            self._outcome = self._decode_outcome()
            self.ended_ns = native.now_ns()
            self.ended_ = True                    # last: ended() promises an outcome
            _hold_until_released(self)
            return
        if self.killed:
            self._reaped()
            self._close_spans(native.SPAN_CRASHED)          # the section it was killed in
            ctl.set_state(native.STATE_KILLED)
            self._outcome = Outcome("killed", None, None, None, ctl.lap(), -signal.SIGKILL)
        else:
            self._reaped()
            state = ctl.state                     # it may have reported just before dying
            expired = ctl.expired() if state < native.STATE_DONE else None
            if state < native.STATE_DONE:                   # the section it died in
                self._close_spans(native.SPAN_CRASHED | (native.SPAN_FAILED if expired else 0))
            if expired is not None:
                if self._expired(*expired):
                    return                        # a next life runs: not ended
            elif state < native.STATE_DONE:
                code = self.proc.exitcode
                crashed = ProcessCrashedError(exitcode=code, last_lap=ctl.lap(), pid=self.pid,
                                              process_name=self.name)
                ctl.set_exit(code if code is not None else 0, -code if code and code < 0 else 0)
                ctl.set_state(native.STATE_CRASHED)
                self._outcome = Outcome("crashed", crashed, None, None, ctl.lap(), code)
        if self._outcome is None:
            self._outcome = self._decode_outcome()
        self._release()
        self.ended_ns = native.now_ns()
        self.ended_ = True                        # last: ended() promises an outcome

    def _release(self) -> None:
        """Close what an ended run holds: the control block's descriptor (its
        mapping goes with the last view), the trace segment (the spans are
        copied first) and the pidfd; the arena goes back to its pool unless
        result views hold it.  Idempotent."""
        with self._releasing:
            if self._released:
                return
            self._released = True
            if self._held is not None:
                self._held.released = True
            self.ctl_array.close()
            if self.trace is not None:
                self.trace.close()
                self.trace_ring = self.trace_ring.snapshot()     # the spans, copied: unmapped now
                self.trace = None
            self._close_pidfd()                   # a worker that reported may still be exiting
            if not self._views:
                self.arena = None                 # back to its pool (views would keep it)

    def _expired(self, section: int, timeout_ns: int, lap: int) -> bool:
        """The guard ended the worker: a hook ran past its timeout and did
        not give way (stuck in C holding the GIL, or it swallowed the
        TimeoutError).  Its state died with it, so lives are applied here:
        with lives left a new worker runs the next life from the state
        serialized at start(), which is still in the arena (the worker only
        writes there when it reports); True then.  Otherwise the outcome is
        that section's TimeoutError (__error__ cannot run: the object it
        would run on is gone)."""
        ctl = self.ctl
        lives = ctl.lives
        if section in RETRIED and lives > 1:
            stop = ctl.stop_requested             # by the parent, or by the dead life's hooks
            ctl.reset()                           # lap, section, deadline, the guard's record
            if stop or self._stop_asked:          # (the latter: a stop() during the reset)
                ctl.request_stop()
            ctl.set_lives(lives - 1)
            ctl.set_state(native.STATE_STARTING)
            self._spawn()
            return True
        err = SectionTimeoutError(SECTION_NAMES[section], timeout_ns / 1e9, lap,
                                  process_name=self.name)
        ctl.set_exit(self.proc.exitcode or 0, 0)
        ctl.set_state(native.STATE_FAILED)
        self._outcome = Outcome("failed", err, None, err, lap, self.proc.exitcode)
        return False

    def _decode(self, arena: Any) -> tuple[Outcome, bool]:
        """The outcome the worker wrote in `arena` (or, a lone scalar, in the
        control block), and whether it holds views of the arena."""
        try:
            # The lap, what the worker reported of its exit, and the scalar.
            lap, code, scalar, value = self.ctl.outcome()
            self._scalar = scalar
            if scalar:
                return Outcome("ok", value, None, None, lap, code), False
            (value, timers, error, _), kind, views = transfer.read(arena)
        except Exception as exc:                 # noqa: BLE001 - e.g. a class missing here
            lap = self.ctl.lap()
            code, sig = self.ctl.exit_info()
            code = -sig if sig else code
            err = ResultError(f"the worker's result could not be deserialized in the parent: "
                              f"{type(exc).__name__}: {exc}", current_lap=lap,
                              original_error=exc, process_name=self.name)
            return Outcome("failed", err, None, err, lap, code), False
        if error is not None and isinstance(error, ProcessError):
            error = error.with_remote_traceback()
        status = "failed" if kind == FAILED_RESULT else "ok"
        return Outcome(status, value, timers, error, lap, code), views

    def _decode_outcome(self) -> Outcome:
        outcome, views = self._decode(self.arena)
        _scalar_last[self._cls] = self._scalar
        self._views = views                      # views keep the arena (and its mapping) alive
        if views:
            arenas.pool.expose(self.arena)
        return outcome

    def wait(self, timeout: float | None) -> bool:
        if self.ended_:
            return True
        deadline = None if timeout is None else time.monotonic() + native.timeout_ns(timeout) / 1e9
        ctl = self.ctl
        while True:
            if self.ended():
                if not self._rehearsed:
                    # It ended before this wait could block: nothing to
                    # rehearse, but ended runs are released at every wait.
                    self._rehearsed = True
                    release_ended()
                return True
            if not self._rehearsed:
                # Time the worker is busy anyway: release what ended runs
                # hold, and take this fork's copy-on-write traps on the
                # outcome's path now, on a sample, rather than after the
                # worker reported (transfer.rehearse_write).
                self._rehearsed = True
                release_ended()
                try:
                    self._decode(transfer.sample())
                    # ... and this run's own objects, made before the fork.
                    memoryview(self.arena.buffer).release()
                    with self._finishing:
                        self._held = _Held(self)          # made now: the end only files it
                except Exception:         # noqa: BLE001 - a rehearsal never fails the wait
                    pass
            slice_ns = _LIVENESS_SLICE_NS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                slice_ns = min(slice_ns, int(left * 1e9) + 1)
            if ctl.state < native.STATE_FINISHING:
                # Woken at FINISHING (shmp_ctl_advance): the run's last hooks
                # are next; then watch for its report awhile, so that our
                # wake-up overlaps them instead of following the report.
                ctl.wait_state(native.STATE_FINISHING, slice_ns)
            elif not self._watched:
                self._watched = True
                native.spin_politely(self._reported,
                                     native.now_ns() + min(_REPORT_WATCH_NS, slice_ns))
            else:
                ctl.wait_state(native.STATE_DONE, slice_ns)

    async def until_ended(self) -> None:
        """The worker's sentinel (readable once it exits) wakes the loop; the
        control block's state is looked at too, since a worker counts as
        ended once it reported, a little before it exits."""
        import asyncio
        loop = asyncio.get_running_loop()
        pause = 0.001
        while not self.ended():
            fd = self.proc.sentinel            # a later life has a new worker: look each time
            woke = loop.create_future()
            loop.add_reader(fd, _set_once, woke)
            try:
                await asyncio.wait_for(woke, pause)
            except asyncio.TimeoutError:
                pass
            finally:
                loop.remove_reader(fd)
            pause = min(2 * pause, 0.05)

    def stop(self) -> None:
        if not self.ended_:
            self._stop_asked = True
            self.ctl.request_stop()

    def stop_requested(self) -> bool:
        return bool(self.ctl.stop_requested)

    def kill(self) -> None:
        with self._finishing:
            if self.ended_:
                return
            self.killed = True
            if self._pidfd is not None:
                try:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                except ProcessLookupError:        # it has exited: nothing to kill
                    pass
            elif self.proc.exitcode is None:
                # No pidfd: signal only a worker not reaped yet.  exitcode
                # reaps it if it has exited (waitpid), so a pid that may be
                # reused is never signalled -- unless a thread reaps it
                # between these two lines (multiprocessing.active_children()
                # elsewhere); pidfds close that gap.
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._finish()

    def lap(self) -> int:
        return self.ctl.lap()

    @property
    def exitcode(self) -> int | None:
        """A worker that reported its outcome is done; until its process has
        finished exiting, the exit status it reported (0) stands in."""
        if not self.ended_:
            return None
        if self.killed:
            return -signal.SIGKILL
        real = self.proc.exitcode
        if real is not None:
            return real
        code, sig = self.ctl.exit_info()
        return -sig if sig else code

    def outcome(self) -> Outcome:
        return self._outcome

    def _close_spans(self, flags):
        if self.trace_ring is not None:
            self.trace_ring.close_open(native.now_ns(), flags)

    def spans(self):
        if self.ended_:
            self._release()                       # the spans are read from their copy
        if self.trace_ring is None:
            raise RuntimeError("this run records no timeline: it was started with "
                               "SHMPROC_TRACE=0 in the environment")
        spans, written = self.trace_ring.read()
        end_ns = self.ended_ns if self.ended_ else native.now_ns()
        return spans, written - len(spans), self.origin_ns, end_ns, self.trace_ring.tallies()


class LocalBackend(Backend):
    """Runs each Process in a worker process on this machine (the default)."""

    name = "local"

    def launch(self, proc: Any, messages: bool = True) -> LocalRun:
        return LocalRun(proc, wire.unserializable, messages)

    def pool(self, workers: int | None, start_method: str | None,
             max_tasks_per_worker: int | None, retries: int = 0, *,
             initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
             task_timeout: float | None = None) -> LocalPool:
        """The engine of a local shmproc.Pool (arguments as Pool's, unchecked)."""
        return LocalPool(workers, start_method, max_tasks_per_worker, retries,
                         initializer, initargs, task_timeout)

    def __repr__(self) -> str:
        return "<shmproc LocalBackend>"


LOCAL = LocalBackend()


# Whether the last run of each Process class ended with a lone scalar (in
# its control block): its next worker then skips rehearsing the arena
# write (runner._run), ~20 page faults a scalar outcome never needs; a
# class whose results need the arena keeps the rehearsal, which takes
# those faults before the hooks instead of after the last one.
_scalar_last: "weakref.WeakKeyDictionary[type, bool]" = weakref.WeakKeyDictionary()

# The next run's control block, trace segment and arena, made (the arena:
# taken from its pool and mapped) while this run's worker starts up, as
# the mailbox is, so a start makes none of them before its fork.
_spares: dict[str, Any] = {}
_spares_lock = lifecycle.lock()


def _spare_control() -> Any:
    return _spares.pop("control", None)           # one C call: atomic under the GIL


def _spare_trace() -> Any:
    return _spares.pop("trace", None)


def _spare_arena() -> Any:
    return _spares.pop("arena", None)


def _replenish_spares() -> None:
    with _spares_lock:                            # never two made for one place
        try:
            if "control" not in _spares:
                _spares["control"] = native.ControlArray.create(1)
            if "trace" not in _spares and tracing.enabled():
                _spares["trace"] = native.TraceArea.create(1)
            if "arena" not in _spares:
                _spares["arena"] = arenas.pool.take()
        except Exception:                         # noqa: BLE001 - the next start() reports it
            pass


def trim_spares() -> None:
    """Close the spare control block and trace segment and let go of the
    spare arena (tests, and memory-conscious callers)."""
    for key in ("control", "trace"):
        spare = _spares.pop(key, None)
        if spare is not None:
            spare.close()
    _spares.pop("arena", None)                    # back to the arena pool as its mapping goes


def _forget_the_parents_spares() -> None:
    global _spares                                # a fork child: the parent closes its own
    old, _spares = _spares, {}
    # The arena goes now, not with the child: one kept from a large result
    # may hold many pages (the arena pool closes its kept ones here too).
    old.pop("arena", None)
    lifecycle.leave_for_later(old)


lifecycle.at_fork(after_in_child=_forget_the_parents_spares)


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for our child `pid` (not reaped yet: only we reap it), or
    None where the system has none (not Linux 5.3+)."""
    if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None
