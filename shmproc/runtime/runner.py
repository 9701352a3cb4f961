"""The worker side of a Process: its lifecycle, run in the child.

    worker_entry (child main thread)
      ├─ copy the serialized object out of the arena (kept for lives)
      ├─ per life: rebuild the object, run laps
      │     lap: [stop? num_loops? join_in?] → preloop → loop → postloop
      │     each section: ctl.enter(section, timeout) — stores only
      ├─ onfinish → result           (or __error__ when the run failed for good)
      └─ write the outcome into the arena, set state DONE/FAILED

The parent sees the lap counter and the current section live in the
control block; nothing else crosses until the outcome.
"""
from __future__ import annotations

import os
import sys
import time

from .. import _native as native
from ..channels.outbox import Outbox
from ..wire import transfer
from ..common import signals
from ..common.errors import ProcessError, ResultError, TimeoutError as SectionTimeoutError
from .watchdog import EXIT_ORPHANED, Watchdog, timeout_ns as _timeout_ns

from ..common.outcome import is_default_hook
from ..common.outcome import (ERROR, FAILED_RESULT, LOOP, OK_RESULT, ONFINISH, POSTLOOP,  # noqa: F401
                      PRELOOP, RESULT, RETRIED, SECTION_NAMES)

STOP = native.CTL_STOP
OVERRAN = native.CTL_OVERRAN


class _Timeout(BaseException):
    """Raised inside a hook by the watchdog's signal; a BaseException so a
    hook's ``except Exception`` does not swallow it."""


class _Failure(Exception):
    def __init__(self, section, error):
        super().__init__(section)
        self.section = section
        self.error = error            # a ProcessError, ready for the parent


def _format(exc) -> str:
    import traceback            # only on failures: keeps worker start-up lean
    return "".join(traceback.format_exception(exc))


class Runner:
    """Runs one Process object's whole lifecycle in this (worker) process."""

    def __init__(self, ctl, arena, name: str):
        self.ctl = ctl
        self.arena = arena            # holds the object serialized at start: lives restart
                                      # from it (nothing writes there before the outcome)
        self.name = name
        self.lap = 0
        self.armed = False            # a hook is executing (timeouts may raise)
        self.obj = None
        self.mailbox = None           # channels.Mailbox of a started Process (tell / listen)
        self.outbox = None            # its coalesced to_parent side (channels/outbox.py)
        self.trace = None             # the run's TraceRing: a span per section (or None)
        self.spans = None             # its writer, for the sections run from Python
        self.dog = None               # the Watchdog (set by _run)

    def rebuild(self):
        """A fresh copy of the object as it was at start (next life)."""
        return transfer.read(self.arena, copy=True)[0]

    # -- timeouts ----------------------------------------------------------------
    def on_alarm(self, signum, frame):
        # The guard (csrc/guard.c) stored the start stamp of the section it
        # signals for: a signal that arrives after that section ended, or
        # between hooks, raises nothing.
        ctl = self.ctl
        if (self.armed or native.laps_armed()) and \
                ctl.section_start_ns == ctl.alarm_start_ns:
            raise _Timeout()

    # -- one section -------------------------------------------------------------
    def _failure(self, section, exc, timeout_s=None):
        lap = self.lap
        if isinstance(exc, _Timeout):
            err = SectionTimeoutError(SECTION_NAMES[section], timeout_s, lap,
                                      process_name=self.name,
                                      traceback_text=_format(exc))
        else:
            err = ProcessError.wrap(SECTION_NAMES[section], exc, lap, process_name=self.name)
        return _Failure(section, err)

    def _overran(self, section, timeout_s):
        err = SectionTimeoutError(SECTION_NAMES[section], timeout_s, self.lap, process_name=self.name)
        return _Failure(section, err)

    # -- the loop ----------------------------------------------------------------
    def run_laps(self, obj):
        """Run laps until a stop condition; raises _Failure."""
        cfg = obj.config
        tmo = cfg.timeouts
        cls = type(obj)
        sections = []
        for sec, attr, limit in ((PRELOOP, "__preloop__", tmo.preloop),
                                 (LOOP, "__loop__", tmo.loop),
                                 (POSTLOOP, "__postloop__", tmo.postloop)):
            if not is_default_hook(getattr(cls, attr)):       # skip the empty defaults
                sections.append((sec, getattr(obj, attr), _timeout_ns(limit), limit))
        if cfg.join_in is None:
            self._run_laps_native(obj, sections)
        else:
            self._run_laps_python(obj, sections)

    def _run_laps_native(self, obj, sections):
        """The loop of _run_laps_python, in C (csrc/python/laps.c): the
        same order of calls, without cffi's cost per control-block call."""
        num_loops = obj.config.num_loops
        if self.ctl.stop_requested:
            return
        laps = -1
        if num_loops is not None:
            laps = num_loops - self.lap
            if laps <= 0:
                return
        outbox = self.outbox
        pending, flush = (outbox.pending, outbox.flush_between_hooks) if outbox else (None, None)
        hooks = tuple((sec, hook, limit_ns) for sec, hook, limit_ns, _ in sections)
        done, what, index, exc = self.ctl.run_laps(hooks, laps, obj, self, pending, flush,
                                                   self.trace)
        if what == native.LAPS_RAISED:
            sec, limit = sections[index][0], sections[index][3]
            self.ctl.leave()                       # this section's deadline no longer applies
            raise self._failure(sec, exc, limit) from None
        if what == native.LAPS_OVERRAN_ENTER:
            # The section that overran is the one entered before this one.
            if index > 0:
                prev = sections[index - 1]
            elif done > 0:
                prev = sections[-1]
            else:
                prev = (0, None, None, None)
            raise self._overran(prev[0], prev[3])
        if what == native.LAPS_OVERRAN_END:
            prev = sections[-1] if sections else (0, None, None, None)
            raise self._overran(prev[0], prev[3])

    def _run_laps_python(self, obj, sections):
        """Laps with join_in (a clock read per lap), one Python call per section."""
        cfg = obj.config
        num_loops, join_in = cfg.num_loops, cfg.join_in
        enter, end_lap = self.ctl.enter, self.ctl.end_lap
        spans = self.spans
        stopping = self.ctl.stop_requested
        # What a lap told goes to the parent at the lap's end (outbox.py).
        pending = self.outbox.pending if self.outbox is not None else ()
        started = time.monotonic()
        last = (0, None)
        while True:
            if stopping or (num_loops is not None and self.lap >= num_loops):
                break
            if join_in is not None and time.monotonic() - started >= join_in:
                break
            for sec, hook, limit_ns, limit in sections:
                bits = enter(sec, limit_ns)
                if bits & OVERRAN:
                    if spans is not None:
                        spans.fail_newest()
                    raise self._overran(*last)
                last = (sec, limit)
                if spans is not None:
                    spans.begin(sec, 0, self.lap)
                self.armed = True
                try:
                    hook()
                except BaseException as exc:
                    self.armed = False
                    if spans is not None:
                        spans.end_tally(True)
                    self.ctl.leave()               # this section's deadline no longer applies
                    raise self._failure(sec, exc, limit) from None
                self.armed = False
                if spans is not None:
                    spans.end_tally(False)
            if pending:
                self.outbox.flush_between_hooks()
            bits = end_lap()
            if bits & OVERRAN:
                if spans is not None:
                    spans.fail_newest()
                raise self._overran(*last)
            stopping = bits & STOP
            self.lap += 1
            timers = obj.timers
            if timers is not None:
                timers.end_lap()

    def run_single(self, obj, sec, attr, limit):
        """Run one hook (onfinish, result, error) under its timeout; returns its value."""
        if limit and not self.dog.started and not self.dog.arm((limit,)):
            os._exit(EXIT_ORPHANED)       # a limit set by a hook meanwhile, the parent gone
        self.ctl.enter(sec, _timeout_ns(limit))
        spans = self.spans
        if spans is not None:
            spans.begin(sec, 0, self.lap)
        self.armed = True
        try:
            value = getattr(obj, attr)()
        except BaseException as exc:
            self.armed = False
            if spans is not None:
                spans.end_tally(True)
            self.ctl.leave()
            raise self._failure(sec, exc, limit) from None
        self.armed = False
        overran = self.ctl.leave() & OVERRAN
        if spans is not None:
            spans.end_tally(bool(overran))
        if overran:
            raise self._overran(sec, limit)
        return value

    # -- the whole run -------------------------------------------------------------
    def execute(self, obj, lives=None):
        """Run `obj` (the first life's object); returns (kind, payload) for the parent.

        lives: the lives left, when the parent restarts a run whose worker
        the guard ended (a hook stuck past its timeout); else config.lives.
        """
        lives = lives or obj.config.lives
        failure = None
        while True:
            self.ctl.leave()                       # no deadline carried into a new life
            obj._shmproc_bind_worker(self)
            obj.config.lives = lives
            self.ctl.set_lives(lives)
            self.lap = 0
            self.ctl.set_lap(0)
            self.obj = obj
            try:
                self.run_laps(obj)
                failure = None
                break
            except _Failure as f:
                failure = f
            if failure.section in RETRIED and lives > 1:
                lives -= 1
                try:
                    obj = self.rebuild()                         # fresh state for the next life
                except BaseException as exc:
                    err = ProcessError(
                        f"could not rebuild the Process in the worker for its next life "
                        f"(after: {failure.error}): {type(exc).__name__}: {exc}",
                        current_lap=self.lap, original_error=exc, process_name=self.name,
                        traceback_text=_format(exc))
                    return FAILED_RESULT, (err, obj.timers, err, self.lap)
                continue
            break
        self.ctl.advance(native.STATE_FINISHING)
        if failure is None:
            try:
                self.run_single(obj, ONFINISH, "__onfinish__", obj.config.timeouts.onfinish)
                value = self.run_single(obj, RESULT, "__result__", None)
                return OK_RESULT, (value, obj.timers, None, self.lap)
            except _Failure as f:
                failure = f
        obj.error = failure.error
        try:
            value = self.run_single(obj, ERROR, "__error__", None)
        except _Failure:
            value = failure.error         # __error__ itself failed: report the run's error
        return FAILED_RESULT, (value, obj.timers, failure.error, self.lap)


def worker_entry(ctl_array, index: int, arena, parent_pid: int, name: str, direct_child: bool,
                 use_pdeathsig: bool, mailbox=None, trace=None, first=None, rehearse=True,
                 ctl=None):
    """The target of the worker process.  trace: the run's TraceArea, or
    under fork its TraceRing, made by the parent.  first: under fork, the
    Process object as the parent had it at start(), when a copy of it is
    what unpickling would give (wire/fork_copy.py); else None.  rehearse:
    take the arena write's page faults before the hooks
    (transfer.rehearse_write); False when the class's last run reported a
    lone scalar.  ctl: under fork, the parent's Control for the block."""
    if ctl is None:
        ctl = ctl_array.control(index)
    # Ctrl-C belongs to the parent: it stops us (then kills us if we linger).
    signals.set_handler(signals.SIGINT, signals.SIG_IGN)
    if direct_child and use_pdeathsig:
        if not native.parent_death_signal(signals.SIGKILL, parent_pid):
            os._exit(EXIT_ORPHANED)                   # the parent is already gone
    # With the parent's death signal set the guard only enforces timeouts:
    # it starts at the first one (Watchdog.arm), most runs never start it.
    dog = Watchdog(ctl, (), parent_pid, direct_child, lazy=direct_child and use_pdeathsig)
    if not dog.lazy and not dog.start():
        os._exit(EXIT_ORPHANED)
    try:
        _run(ctl, arena, name, dog, mailbox, trace, first, rehearse)
    finally:
        dog.stop()                                    # joined: no thread outlives the run


def _run(ctl, arena, name, dog, mailbox, trace, first=None, rehearse=True):
    lives = ctl.lives                                 # set by the parent: fewer on a restart
    ctl.set_pid(os.getpid())
    runner = Runner(ctl, arena, name)
    runner.mailbox = mailbox
    if trace is not None:
        ring = trace if isinstance(trace, native.TraceRing) else trace.ring(0)
        runner.trace = ring
        runner.spans = ring.writer(os.getpid())
    if mailbox is not None:
        runner.outbox = Outbox(mailbox.to_parent, runner)
    signals.set_handler(signals.SIGALRM, runner.on_alarm)
    ctl.advance(native.STATE_RUNNING)
    present = 0                                       # unknown: _report reserves it all
    try:
        # Read in place: the pickle is parsed where it lies, only buffers
        # are copied out (private), and the record's extent is checked.
        present = transfer.extent(arena)
        if first is None:
            obj = runner.rebuild()
        else:
            # The top level rebuilt as unpickling does (its own __reduce_ex__
            # and __setstate__), the values shared: fork copied them already.
            # (The arena may hold no record, only reserved pages: LocalRun.)
            obj = first._shmproc_fork_copy()
        t = obj.config.timeouts
        limits = (t.preloop, t.loop, t.postloop, t.onfinish)
    except BaseException as exc:                     # unpickling the state failed
        _report(ctl, arena, present, FAILED_RESULT,
                (ProcessError(f"could not rebuild the Process in the worker: "
                              f"{type(exc).__name__}: {exc}",
                              traceback_text=_format(exc),
                              process_name=name), None, None, 0))
        return
    runner.dog = dog
    if not dog.arm(limits):
        os._exit(EXIT_ORPHANED)                       # the parent is already gone
    if rehearse:
        try:
            transfer.rehearse_write()     # see there: the outcome's pages, made private now
        except Exception:                 # noqa: BLE001 - a rehearsal never fails the run
            pass
    try:
        kind, payload = runner.execute(obj, lives)
    except BaseException as exc:                     # a bug of ours: report it, don't just die
        kind = FAILED_RESULT
        err = ProcessError(f"the shmproc runner failed: {type(exc).__name__}: {exc}",
                           current_lap=runner.lap,
                           traceback_text=_format(exc),
                           process_name=name)
        payload = (err, None, err, runner.lap)
    if runner.outbox is not None:
        try:
            runner.outbox.close()                    # every message told, before the outcome
        except Exception:                            # noqa: BLE001 - the outcome still goes
            pass
    _report(ctl, arena, present, kind, payload)


def _report(ctl, arena, present, kind, payload):
    """Write the outcome; if it cannot be serialized, report that instead.
    present: the bytes of the arena the start record filled (their pages exist)."""
    value, timers, error, _ = payload
    # The common outcome, a lone scalar, goes in the control block itself:
    # no pickle, no record, one call that also sets DONE.
    if kind == OK_RESULT and timers is None and error is None and ctl.report_scalar(value):
        sys.stdout.flush()
        return
    try:
        transfer.write(arena, payload, kind, present=present)
    except BaseException as exc:
        value, timers, _, lap = payload
        err = ResultError(f"the result of __result__/__error__ could not be sent to the parent: "
                          f"{type(exc).__name__}: {exc}", current_lap=lap, original_error=exc)
        try:
            transfer.write(arena, (err, timers, err, lap), FAILED_RESULT, present=present)
        except BaseException:
            transfer.write(arena, (err, None, err, lap), FAILED_RESULT, present=present)
        kind = FAILED_RESULT
    ctl.set_exit(0, 0)
    ctl.set_state(native.STATE_DONE if kind == OK_RESULT else native.STATE_FAILED)
    sys.stdout.flush()
