"""Section timeouts without a syscall per lap, and orphan detection.

Things that don't work
----------------------
* ``setitimer``/``signal.alarm`` per section: a syscall at every section
  boundary, which is most of the per-lap budget.
* Checking the clock between sections only: cannot interrupt a hook that
  blocks in ``time.sleep`` or a socket read.
* A Python watchdog thread (what shmproc had first).  It needs the GIL to
  wake up, and a hook stuck in C code that holds the GIL (``sum(range(
  10**10))``, a long regex, many extensions) holds it for as long as it
  runs: a 0.2 s timeout was enforced after 6.5 s, and the thread's hard
  exit and its dead-parent check never ran meanwhile.
* Interrupting the C code in place: nothing can safely unwind a C call
  from outside (no longjmp out of arbitrary extensions).  The only bound
  on a hook stuck in C is ending its process.

Solution
--------
The worker's hot path only *stores* each section's start stamp and
deadline in its control block (shmp_ctl_enter: a vDSO clock read and a
few stores).  A native thread, the guard (csrc/guard.c), started by the
worker's main thread, needs no interpreter: it sleeps in poll() until the
current deadline, or at most until the earliest deadline any new section
could have (now + the smallest configured timeout), so it is never late
and wakes rarely (never, with no timeouts and a pidfd on the parent).
On an overrun it sends SIGALRM to the worker's main thread; the handler
(Runner.on_alarm) raises only if that same section is still running (its
start stamp is the one the guard wrote to ``alarm_start_ns``) and a hook
is executing, so a late signal can never hit the wrong section or the
runner's own code.  That stays the normal way a timeout ends a hook: it
unwinds in Python, and lives, ``__error__`` and the result work as for
any failure.  A hook that swallows the exception is caught anyway when it
returns: enter/end_lap report the overrun (SHMP_CTL_OVERRAN).

One that does not return -- it swallows the exception and carries on, or
it sits in C holding the GIL so the handler never runs -- is signalled
again, backing off, and once it is GRACE_S past its deadline the guard
writes the section, its timeout and the lap into the control block and
ends the process (exit status EXIT_EXPIRED).  The parent reads that
record and reports the section's TimeoutError, not a crash.  The
worker's state died with it, so *the parent* applies lives: with lives
left it starts a new worker on the state serialized at start() (still in
the run's arena) with one life fewer; on the last life it reports the
TimeoutError itself, and ``__error__`` does not run (the object it would
run on is gone).  A Pool does the same for a Process task: the task fails
with the TimeoutError, or runs again on the replacement worker with one
life fewer.  So a hook stuck in C ends within its timeout + GRACE_S (+ the
parent's 20 ms liveness poll), whatever it holds.

Starting that thread costs ~40 page faults (~0.2 ms) in a fresh fork
child, as much as the rest of a short run's set-up.  A fork worker (the
kernel ends it with its parent, so the guard has only timeouts to
enforce) therefore starts it deferred: the same look at the control
block is taken by a POSIX timer's handler in C, on the main thread, at
the same moments the thread would wake; the first section entered
PROMOTE_AFTER_S after the start makes the thread and ends the ticks.
The tick is a real-time signal (native.guard_tick_signal(), SIGRTMIN+7
on Linux) whose handler is ours: a hook that blocks that signal, or
installs a handler of its own for it, is not bounded by its timeout
until the thread takes over (the first section entered after the
promotion).

The guard also ends the worker when the process that started it exits
(it need not be our parent: forkserver children are the fork server's):
it sleeps on that process's pidfd where the system has one, so an orphan
goes at once, else it checks at least every second (getppid() for direct
children, kill(pid, 0) otherwise).  This backs up PR_SET_PDEATHSIG, which
only covers the parent *thread* and does not apply to forkserver
children.

fork() in user code: the guard does not survive into the child (no
thread does), and the child does not restart it: the control block is
the worker's, and a stale deadline there must never end a child that only
forked off.  A child that becomes a worker of its own (a nested Process)
starts its own guard on its own control block.
"""
from __future__ import annotations

from .. import _native as native
from ..common import signals

#: How long past its deadline a hook gets to honour SIGALRM before the
#: guard ends the worker.  A hook running Python code unwinds within
#: microseconds; this only has to cover a slow ``finally``/``__exit__``.
#: Short, so that a stuck hook ends within its timeout + 1 s.
GRACE_S = 0.5
#: A deferred guard (lazy) becomes a thread at the first section entered
#: this long after it started.  A thread costs ~40 page faults (~0.2 ms)
#: in a fresh fork child; a run shorter than this never makes one.
PROMOTE_AFTER_S = 0.05
#: Exit status of a worker whose hook outlived its deadline + GRACE_S, and
#: of an orphan.
EXIT_EXPIRED = native.EXIT_EXPIRED
EXIT_ORPHANED = native.EXIT_ORPHANED


class Watchdog:
    """The worker's guard (one per process), with its limits in seconds.

    start() returns False if the process that started us is already gone.
    lazy: the kernel ends this worker with its parent (PR_SET_PDEATHSIG),
    so the guard has only timeouts to enforce; arm() starts it at the
    first limit, and a worker that never has one runs no guard at all.
    It starts deferred: a timer tick first, a thread once the run lasts.
    """

    def __init__(self, ctl, timeouts_s, parent_pid: int, direct_child: bool, lazy: bool = False):
        self.ctl = ctl
        self.horizon_ns = horizon_ns(timeouts_s)
        self.parent_pid = parent_pid
        self.direct = direct_child
        self.lazy = lazy
        self.started = False

    def start(self) -> bool:
        # lazy: the parent's end is the kernel's to enforce, so the guard
        # may begin as a timer tick and become a thread only if the run
        # lasts (PROMOTE_AFTER_S): most short runs never make the thread.
        promote = int(PROMOTE_AFTER_S * 1e9) if self.lazy else None
        self.started = native.guard_start(self.ctl, self.parent_pid, self.direct, self.horizon_ns,
                                          int(GRACE_S * 1e9), signals.SIGALRM, promote)
        return self.started

    def arm(self, timeouts_s) -> bool:
        """The limits of what runs next, starting the guard if it now has
        one to enforce; False if the parent is already gone."""
        if not self.started:
            if not any(timeouts_s):
                return True                 # nothing to enforce: no thread yet
            self.horizon_ns = horizon_ns(timeouts_s)
            return self.start()
        self.rearm(timeouts_s)
        return True

    def rearm(self, timeouts_s):
        """New limits (the first life's, or a pool worker's next Process):
        the guard is woken only if the horizon shrinks, so a stream of
        Processes alike costs nothing."""
        horizon = horizon_ns(timeouts_s)
        if horizon != self.horizon_ns:
            self.horizon_ns = horizon
            native.guard_rearm(horizon)

    def stop(self):
        if self.started:
            self.started = False
            native.guard_stop()


def horizon_ns(timeouts_s) -> int:
    """The smallest limit (0: none), as the guard's longest sleep."""
    limits = [t for t in timeouts_s if t]
    return timeout_ns(min(limits)) if limits else 0


def timeout_ns(seconds) -> int:
    """Seconds to the control block's nanoseconds (0: no limit).  Rounded,
    so the parent recovers the configured float exactly (0.57 s)."""
    return 0 if seconds is None else max(1, round(seconds * 1e9))
