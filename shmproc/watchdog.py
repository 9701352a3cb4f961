"""Section timeouts without a syscall per lap, and orphan detection.

Things that don't work
----------------------
* ``setitimer``/``signal.alarm`` per section: a syscall at every section
  boundary, which is most of the per-lap budget.
* Checking the clock between sections only: cannot interrupt a hook that
  blocks in ``time.sleep`` or a socket read.

Solution
--------
The worker's hot path only *stores* each section's start stamp and
deadline in its control block (shmp_ctl_enter: a vDSO clock read and a
few stores).  This thread sleeps until the current deadline, or at most
until the earliest deadline any new section could have (now + the
smallest configured timeout), so it is never late and wakes rarely (once
per 30 s with the default timeouts).  On an overrun it sends SIGALRM to
the worker's main thread; the handler raises only if that same section is
still running (same start stamp) and a hook is executing, so a late signal
can never hit the wrong section or the runner's own code.  A hook that
swallows the exception is caught anyway when it returns: enter/end_lap
report the overrun (SHMP_CTL_OVERRAN).  One that swallows it and never
returns is signalled again, and after UNRESPONSIVE_SIGNALS attempts the
worker exits hard; the parent then reports a crash.

The same thread checks every second that the process that started the
worker is alive (ParentWatch), beside PR_SET_PDEATHSIG, which only covers
the parent *thread* and does not apply to forkserver children.
"""
from __future__ import annotations

import _thread
import os
import select
import signal
import threading

from . import native

#: Signals sent to a hook that keeps running past its deadline before the
#: worker gives up on it and exits.
UNRESPONSIVE_SIGNALS = 5
#: Longest sleep, so a dead parent is noticed within this many seconds.
PARENT_CHECK_S = 1.0
#: Exit status of a worker whose hook ignored its timeout, and of an orphan.
EXIT_UNRESPONSIVE = 86
EXIT_ORPHANED = 87


class ParentWatch:
    """Is the process that started us alive?  (It need not be our parent:
    forkserver children are the fork server's.)  A pidfd where the system
    has one; else getppid() for direct children, kill(pid, 0) otherwise."""

    def __init__(self, pid: int, direct_child: bool):
        self.pid = pid
        self.direct = direct_child
        self.pidfd = None
        if pid and hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(pid)
            except OSError:
                self.pidfd = None

    def alive(self) -> bool:
        if not self.pid:
            return True
        if self.pidfd is not None:
            readable, _, _ = select.select([self.pidfd], [], [], 0)
            return not readable                     # a pidfd turns readable when the process exits
        if self.direct:
            return os.getppid() == self.pid
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


class Watchdog:
    """A daemon thread; start() does not wait for it to be scheduled (which
    threading.Thread.start does, ~0.5 ms of every worker's start-up here)."""

    def __init__(self, ctl, timeouts_s, parent: ParentWatch, fire):
        self.ctl = ctl
        self.horizon_s = _horizon(timeouts_s)
        self.parent = parent
        self.fire = fire                    # fire(start_ns): ask the main thread to raise
        self.done = False
        self.wake = threading.Event()

    def rearm(self, timeouts_s):
        """New limits (a pool worker's next Process): wake the thread only if
        the horizon shrinks, so a stream of Processes alike costs nothing."""
        horizon = _horizon(timeouts_s)
        if horizon < self.horizon_s:
            self.horizon_s = horizon
            self.wake.set()
        else:
            self.horizon_s = horizon

    def start(self):
        _thread.start_new_thread(self.run, ())

    def stop(self):
        self.done = True
        self.wake.set()

    def run(self):
        ctl, fired, attempts = self.ctl, 0, 0
        sleep_s = self.horizon_s
        while True:
            if self.wake.wait(sleep_s):
                self.wake.clear()
            if self.done:
                return
            if not self.parent.alive():
                os._exit(EXIT_ORPHANED)
            start, deadline = ctl.section_start_ns, ctl.deadline_ns
            now = native.now_ns()
            sleep_s = self.horizon_s
            if not deadline:
                continue
            if now < deadline:
                sleep_s = min(sleep_s, (deadline - now) / 1e9)
                continue
            if start != fired:
                fired, attempts = start, 0
            attempts += 1
            if attempts > UNRESPONSIVE_SIGNALS:
                ctl.set_exit(EXIT_UNRESPONSIVE, 0)
                os._exit(EXIT_UNRESPONSIVE)
            self.fire(start)
            sleep_s = min(sleep_s, 0.05 * attempts)     # re-check soon, backing off


def _horizon(timeouts_s) -> float:
    limits = [t for t in timeouts_s if t]
    return min(min(limits), PARENT_CHECK_S) if limits else PARENT_CHECK_S


def send_alarm(main_thread_id: int):
    signal.pthread_kill(main_thread_id, signal.SIGALRM)
