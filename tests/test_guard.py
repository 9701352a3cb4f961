"""Timeouts are bounds even when a hook holds the GIL in C (issue 10, defect 6).

The worker's native guard (csrc/guard.c; the essay is in shmproc/watchdog.py)
signals at the deadline and ends a worker whose hook is still running
GRACE_S later; the parent reports that section's TimeoutError and applies
lives by starting the next life in a new worker.  Also here: the guard's
orphan check, fork() in user code, and LocalRun.kill after the worker
was reaped (defect 9c).

`sum(range(FOREVER_IN_C))` is one C call that holds the GIL for minutes.
Time bounds are generous (BOUND_S on top of the timeout, where the
mechanism needs GRACE_S plus the parent's 20 ms poll): the tests check
behaviour, not speed, on a shared 2-core machine.
"""
from __future__ import annotations

import builtins
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import START_METHODS

import shmproc
from proc_helpers import alive, in_fork_child as _in_child, wait_gone
from shmproc import _native as native
from shmproc.backends.local import run as local_backend
from shmproc._shmp_cffi import lib
from shmproc.processing import TimeoutError
from shmproc.runtime.runner import LOOP
from shmproc.runtime.watchdog import EXIT_EXPIRED, EXIT_ORPHANED

# What the workers run lives in guard_work.py (a spawn worker imports only that).
from guard_work import (
    FOREVER_IN_C, ExitsAtOnce, ForksQuickly, ForksThenSticks, IgnoresEverySignal, NoLimits,
    PoolStuck, PoolStuckOnce, ReportsGuardMode, StuckFirstLife, StuckInC,
)

pytestmark = pytest.mark.timeout(120)

BOUND_S = 3.0
# The deferred guard starts as a tick where the system has thread-directed
# timers (the Linux layer), else as the thread (the portable build).
TICKS = bool(lib.shmp_platform_features() & lib.SHMP_FEAT_FUTEX)
FIRST_MODE = native.GUARD_TICK if TICKS else native.GUARD_THREAD
NEVER_NS = 3600 * 10**9
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(shmproc.__file__)))


def _timed_result(p):
    t = time.monotonic()
    try:
        return p.result, time.monotonic() - t
    except BaseException as exc:          # noqa: BLE001 - returned for the test to check
        return exc, time.monotonic() - t


# ---- Process: a hook stuck in C ends, as that section's TimeoutError -------------------

@pytest.mark.asan
@pytest.mark.parametrize("method", START_METHODS)
def test_loop_stuck_in_c_times_out(method):
    p = StuckInC("loop", 0.2, method=method)
    p.start()
    out, took = _timed_result(p)
    assert isinstance(out, TimeoutError) and isinstance(out, builtins.TimeoutError), out
    assert (out.section, out.timeout, out.current_lap) == ("__loop__", 0.2, 0)
    assert took < 0.2 + BOUND_S, f"the stuck hook ran {took:.1f} s past a 0.2 s timeout"
    assert p.is_alive is False and p.exitcode == EXIT_EXPIRED
    with pytest.raises(TimeoutError):                     # every read raises it again
        p.result


def test_preloop_stuck_in_c_on_a_later_lap_times_out():
    p = StuckInC("preloop", 0.3, stuck_lap=1)
    p.start()
    out, took = _timed_result(p)
    assert isinstance(out, TimeoutError), out
    assert (out.section, out.timeout, out.current_lap) == ("__preloop__", 0.3, 1)
    assert took < 0.3 + BOUND_S


def test_onfinish_stuck_in_c_times_out_and_is_not_retried():
    p = StuckInC("onfinish", 0.2, lives=2, stuck_lives=(1, 2), stuck_lap=2)
    p.start()
    first_pid = p.pid
    out, took = _timed_result(p)
    assert isinstance(out, TimeoutError), out
    assert (out.section, out.current_lap) == ("__onfinish__", 2)
    assert p.pid == first_pid and took < 0.2 + BOUND_S


@pytest.mark.parametrize("method", START_METHODS)
def test_lives_apply_after_a_life_stuck_in_c(method):
    """First life stuck in C on lap 1; the second, in a new worker from the
    state serialized at start(), succeeds: the result is the second life's."""
    p = StuckInC("loop", 0.2, lives=2, stuck_lives=(2,), stuck_lap=1, method=method)
    p.start()
    first_pid = p.pid
    out, took = _timed_result(p)
    assert out == [(1, 0), (1, 1)], out                    # fresh state, lives=1 seen by hooks
    assert p.pid != first_pid                              # the next life ran in a new worker
    assert p.current_lap == 2 and p.exitcode == 0
    assert took < 0.2 + BOUND_S + 2


def test_a_stop_asked_while_a_life_is_stuck_carries_into_the_next(tmp_path):
    marker = tmp_path / "in-c"
    p = StuckFirstLife(str(marker))
    p.start()
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    p.stop()                                               # the stuck life cannot see it
    out, took = _timed_result(p)
    assert out == (1, 0), out                              # the next life stopped before a lap
    assert took < 0.2 + BOUND_S


def test_the_last_life_stuck_in_c_reports_the_timeout():
    p = StuckInC("loop", 0.2, lives=2, stuck_lives=(1, 2))
    p.start()
    out, took = _timed_result(p)
    assert isinstance(out, TimeoutError), out
    assert (out.section, out.current_lap) == ("__loop__", 0) and p.error is out
    assert took < 2 * (0.2 + BOUND_S)


def test_a_hook_that_ignores_every_signal_is_ended_as_a_timeout():
    p = IgnoresEverySignal()
    p.start()
    out, took = _timed_result(p)
    assert isinstance(out, TimeoutError), out              # not ProcessCrashedError
    assert out.section == "__loop__" and took < 0.2 + BOUND_S


# ---- Pool: a Process task stuck in C fails with its TimeoutError, or uses a life --------


def test_pool_map_of_a_process_stuck_in_c():
    with shmproc.Pool(2) as pool:
        before = set(pool.pids)
        t = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            pool.map(PoolStuck, range(4))
        assert time.monotonic() - t < 0.2 + BOUND_S
        e = info.value
        assert (e.section, e.timeout, e.current_lap) == ("__loop__", 0.2, 0)
        assert pool.map(PoolStuck, [0, 2, 3]) == [(0, 1), (2, 1), (3, 1)]    # replaced, works
        assert set(pool.pids) != before


def test_pool_map_applies_lives_after_a_life_stuck_in_c():
    with shmproc.Pool(2) as pool:
        t = time.monotonic()
        assert pool.map(PoolStuckOnce, range(4)) == [(0, 2), (1, 1), (2, 2), (3, 2)]
        assert time.monotonic() - t < 0.2 + BOUND_S + 2


def test_pool_submit_of_a_process_stuck_in_c():
    with shmproc.Pool(1) as pool:
        task = pool.submit(PoolStuck(1))
        with pytest.raises(TimeoutError) as info:
            task.result()
        assert info.value.section == "__loop__"
        t = time.monotonic()
        assert pool.submit(PoolStuck(1, lives=2, stuck_lives=(2,))).result() == (1, 1)
        assert time.monotonic() - t < 0.2 + BOUND_S + 2


# ---- the orphan check does not need the GIL --------------------------------------------

_ORPHAN = textwrap.dedent("""
    import os, sys, threading, time
    from shmproc.processing import Process

    class Stuck(Process):
        def __init__(self, marker):
            self.marker = marker
            self.config.start_method = sys.argv[1]
            self.config.timeouts.loop = None               # only the orphan check can end it

        def __loop__(self):
            open(self.marker, "w").close()
            sum(range(10**12))

    def main():
        p = Stuck(sys.argv[2])
        p.start()
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.01)
        print(p.pid, flush=True)
        time.sleep(120)

    if __name__ == "__main__":
        if sys.argv[3] == "thread":                        # no PR_SET_PDEATHSIG from a thread
            # Joined: CPython 3.12.0-3.12.2 refuse to fork once the main
            # thread has returned (gh-113964), even with threads still running.
            t = threading.Thread(target=main)
            t.start()
            t.join()
        else:
            main()
""")


@pytest.mark.parametrize("method,where", [("forkserver", "main"), ("fork", "thread"),
                                          ("fork", "main")])
def test_a_worker_stuck_in_c_exits_when_its_parent_is_killed(tmp_path, method, where):
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    marker = tmp_path / "in-c"
    with subprocess.Popen([sys.executable, str(script), method, str(marker), where],
                          stdout=subprocess.PIPE, env=env, text=True) as parent:
        worker = int(parent.stdout.readline())
        try:
            parent.kill()
            parent.wait(timeout=30)
            assert wait_gone(worker, 0.5 + BOUND_S), "the worker outlived its parent"
        finally:
            if alive(worker):
                os.kill(worker, signal.SIGKILL)


# ---- a guard only where there is something to guard -------------------------------------

def test_a_fork_run_without_timeouts_runs_no_guard_thread():
    """Under fork the kernel ends the worker with its parent (PR_SET_PDEATHSIG),
    so with every timeout off nothing needs the guard (the orphan case is
    test_a_worker_stuck_in_c_exits_when_its_parent_is_killed[fork-main])."""
    p = NoLimits()
    p.config.start_method = "fork"
    p.start()
    assert p.result == [False, False]


def test_a_timeout_set_by_a_hook_starts_the_guard_and_holds():
    """No limit at start, then __loop__ gives __onfinish__ one and it sticks
    in C: the guard starts for that section and its TimeoutError ends the run."""
    p = NoLimits(onfinish_later=0.3)
    p.config.start_method = "fork"
    t = time.monotonic()
    p.start()
    try:
        assert p.wait(timeout=0.3 + 0.5 + BOUND_S), "nothing ended the hook stuck in C"
    finally:
        p.kill()                          # (does nothing if it ended)
    assert time.monotonic() - t < 0.3 + 0.5 + BOUND_S + 1
    with pytest.raises(TimeoutError) as err:
        p.result
    assert err.value.section == "__onfinish__"


# ---- fork() in user code ---------------------------------------------------------------


def test_fork_in_a_hook_keeps_the_guard_and_spares_the_child(tmp_path):
    mark = tmp_path / "child"
    p = ForksThenSticks(str(mark))
    p.start()
    out, took = _timed_result(p)
    assert isinstance(out, TimeoutError) and out.current_lap == 1, out    # guard survived fork
    deadline = time.monotonic() + 10
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mark.exists() and mark.read_text() == "0", "the forked child was killed or had a guard"


@pytest.mark.asan
def test_fork_in_a_hook_breaks_nothing():
    p = ForksQuickly()
    p.start()
    assert p.result == ([7, 7, 7], True)


# ---- the guard itself, from C ------------------------------------------------------------


@pytest.mark.asan
def test_guard_ends_a_process_whose_section_outlives_deadline_plus_grace():
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)

    def child():
        signal.signal(signal.SIGALRM, signal.SIG_IGN)      # the hook never gives way
        native.guard_start(c, os.getppid(), True, 50_000_000, 100_000_000, signal.SIGALRM)
        c.set_lap(3)
        c.enter(LOOP, 50_000_000)
        time.sleep(10)
        return 1

    t = time.monotonic()
    assert _in_child(child) == EXIT_EXPIRED
    assert time.monotonic() - t < 0.15 + BOUND_S
    assert c.expired() == (LOOP, 50_000_000, 3)
    c.reset()                                               # a block reused starts clean
    assert c.expired() is None and c.alarm_start_ns == 0
    ctl.close()


@pytest.mark.asan
@pytest.mark.parametrize("deferred", [False, True], ids=["thread", "tick"])
def test_guard_signals_the_main_thread_for_the_running_section(deferred):
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)

    class Alarm(Exception):
        pass

    def child():
        start = []

        def handler(signum, frame):
            if c.alarm_start_ns == start[0]:
                raise Alarm()

        signal.signal(signal.SIGALRM, handler)
        native.guard_start(c, os.getppid(), True, 50_000_000, 10 * 10**9, signal.SIGALRM,
                           NEVER_NS if deferred else None)
        if native.guard_mode() != (FIRST_MODE if deferred else native.GUARD_THREAD):
            return 4
        c.enter(LOOP, 50_000_000)
        start.append(c.section_start_ns)
        try:
            time.sleep(5)
            return 3
        except Alarm:
            c.leave()
            native.guard_stop()
            return 0

    assert _in_child(child) == 0
    ctl.close()


@pytest.mark.asan
def test_guard_start_stop_and_a_dead_parent():
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def child():
        if native.guard_start(c, dead.pid, False, 0, 10**8, signal.SIGALRM):
            return 2                                        # a dead parent must be refused
        assert native.guard_start(c, os.getppid(), True, 0, 10**8, signal.SIGALRM)
        with pytest.raises(RuntimeError):
            native.guard_start(c, os.getppid(), True, 0, 10**8, signal.SIGALRM)
        native.guard_rearm(10**7)
        native.guard_rearm(0)
        native.guard_stop()
        native.guard_stop()                                 # idempotent
        assert not native.guard_running()
        assert native.guard_start(c, os.getppid(), True, 10**7, 10**8, signal.SIGALRM)
        native.guard_stop()
        return 0

    assert _in_child(child) == 0
    ctl.close()


@pytest.mark.asan
def test_guard_ends_an_orphan():
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)
    starter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                native.guard_start(c, starter.pid, False, 0, 10**8, signal.SIGALRM)
                c.set_state(lib.SHMP_STATE_RUNNING)
                time.sleep(30)
            finally:
                os._exit(code)
        while c.state != lib.SHMP_STATE_RUNNING:
            time.sleep(0.01)
        starter.kill()
        starter.wait()
        t = time.monotonic()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == EXIT_ORPHANED
        assert time.monotonic() - t < BOUND_S
    finally:
        starter.kill()
        starter.wait()
        ctl.close()


@pytest.mark.asan
@pytest.mark.parametrize("deferred", [False, True], ids=["thread", "tick"])
def test_a_fork_child_has_no_guard_and_may_start_its_own(deferred):
    ctl = native.ControlArray.create(2)
    c, other = ctl.control(0), ctl.control(1)
    r, w = os.pipe()

    def child():
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        native.guard_start(c, os.getppid(), True, 50_000_000, 100_000_000, signal.SIGALRM,
                           NEVER_NS if deferred else None)
        c.enter(LOOP, 50_000_000)                           # the grandchild inherits this deadline
        pid = os.fork()
        if pid == 0:                                        # outlives deadline + grace, unharmed
            try:
                time.sleep(0.6)
                ok = not native.guard_running()
                ok = ok and native.guard_start(other, os.getppid() or 1, False, 0, 10**8,
                                               signal.SIGALRM)
                native.guard_stop()
                os.write(w, b"1" if ok else b"0")
            finally:
                os._exit(0)
        time.sleep(10)                                      # ended by its guard meanwhile
        return 1

    assert _in_child(child) == EXIT_EXPIRED                 # the guard survived the fork
    os.close(w)
    try:
        assert os.read(r, 1) == b"1"                        # EOF (b"") if the grandchild died
    finally:
        os.close(r)
        ctl.close()


# ---- defect 9c: kill after the worker was reaped -------------------------------------------


@pytest.mark.parametrize("pidfd", [True, False])
def test_kill_after_the_worker_was_reaped_signals_nothing(monkeypatch, pidfd):
    if pidfd and not (hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")):
        pytest.skip("no pidfd on this system")
    if not pidfd:
        monkeypatch.setattr(local_backend, "_open_pidfd", lambda pid: None)
    p = ExitsAtOnce()
    p.start()
    pid = p.pid
    deadline = time.monotonic() + 30
    while any(c.pid == pid for c in mp.active_children()):   # this reaps it when it has exited
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sent = []
    real_kill = os.kill

    def spy(target, signo):
        sent.append((target, signo))
        if target != pid:                                   # never signal a pid that may be reused
            real_kill(target, signo)

    monkeypatch.setattr(os, "kill", spy)
    p.kill()
    assert (pid, signal.SIGKILL) not in sent
    assert p.is_alive is False and p.result is None


# ---- the deferred guard: a timer tick first, the thread once the run lasts ---------------
# (a fork worker's guard starts deferred: watchdog.Watchdog.start).  Where the
# system has no thread-directed timer (the portable build) it is the thread
# from the start, and these tests check that instead.


def _deferred(c, horizon_ns, grace_ns=100_000_000, promote_after_ns=NEVER_NS):
    return native.guard_start(c, os.getppid(), True, horizon_ns, grace_ns, signal.SIGALRM,
                              promote_after_ns)


def test_a_short_fork_run_never_makes_the_guard_thread():
    p = ReportsGuardMode()
    p.config.start_method = "fork"
    p.start()
    assert p.result == FIRST_MODE


def test_a_fork_run_that_lasts_gets_the_guard_thread():
    p = ReportsGuardMode(for_s=0.2)               # > watchdog.PROMOTE_AFTER_S
    p.config.start_method = "fork"
    p.start()
    assert p.result == native.GUARD_THREAD


def _expires(body, within_s=None):
    """body(c) in a fork child that ignores SIGALRM, which its guard must
    end (EXIT_EXPIRED), within `within_s` if given; the expiry record.
    body returns an exit code if it finds something wrong first."""
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)

    def child():
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        return body(c)

    t = time.monotonic()
    try:
        assert _in_child(child) == EXIT_EXPIRED
        if within_s is not None:
            assert time.monotonic() - t < within_s
        return c.expired()
    finally:
        ctl.close()


@pytest.mark.asan
def test_deferred_guard_ends_a_section_stuck_in_c():
    """The tick's handler is C: it runs while the hook holds the GIL."""
    def body(c):
        assert _deferred(c, 50_000_000)
        if native.guard_mode() != FIRST_MODE:
            return 5
        c.set_lap(4)
        c.enter(LOOP, 50_000_000)
        sum(range(FOREVER_IN_C))
        return 1

    assert _expires(body, 0.15 + BOUND_S) == (LOOP, 50_000_000, 4)


@pytest.mark.asan
def test_deferred_guard_becomes_the_thread_at_the_first_section_after_its_stamp():
    def body(c):
        assert _deferred(c, 50_000_000, promote_after_ns=30_000_000)
        c.enter(LOOP, 10**9)
        c.leave()
        if native.guard_mode() != FIRST_MODE:
            return 5
        time.sleep(0.05)
        if native.guard_mode() != FIRST_MODE:         # no section entered yet
            return 6
        c.enter(LOOP, 50_000_000)                    # promotes; the thread ends it
        if native.guard_mode() != native.GUARD_THREAD:
            return 7
        sum(range(FOREVER_IN_C))
        return 1

    assert _expires(body)[0] == LOOP


@pytest.mark.asan
def test_deferred_guard_looks_again_when_the_horizon_shrinks():
    def body(c):
        assert _deferred(c, 60 * 10**9)              # its first look: a minute away
        native.guard_rearm(50_000_000)               # a Process with a 50 ms limit next
        c.enter(LOOP, 50_000_000)
        time.sleep(10)
        return 1

    assert _expires(body, 0.15 + BOUND_S)[0] == LOOP


@pytest.mark.asan
def test_ticks_leave_a_busy_worker_alone():
    """A tick every millisecond while sections come and go within their
    limits: no SIGALRM, no expiry, and the worker's sleeps and blocking
    reads still do what they say (a tick interrupts them: SA_RESTART or
    Python's own retry resumes them)."""
    import threading

    ctl = native.ControlArray.create(1)
    c = ctl.control(0)

    def child():
        alarms = []
        signal.signal(signal.SIGALRM, lambda *a: alarms.append(1))
        assert _deferred(c, 1_000_000)
        r, w = os.pipe()
        for i in range(200):
            c.enter(LOOP, 10**9)
            t = time.monotonic()
            time.sleep(0.002)
            if time.monotonic() - t < 0.002:
                return 3                              # a sleep cut short
            if i % 20 == 0:
                threading.Timer(0.01, os.write, (w, b"x")).start()
                if os.read(r, 1) != b"x":             # blocks ~10 ms, ticked ~10 times
                    return 4
            c.leave()
        mode = native.guard_mode()
        native.guard_stop()
        if alarms or c.expired() is not None:
            return 2
        return 0 if mode == FIRST_MODE else 5

    assert _in_child(child) == 0
    ctl.close()


@pytest.mark.asan
def test_deferred_guard_stop_start_and_a_late_tick():
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)
    tick = native.guard_tick_signal()

    def child():
        assert _deferred(c, 1_000_000)
        with pytest.raises(RuntimeError):
            _deferred(c, 1_000_000)                  # one guard per process
        native.guard_stop()
        native.guard_stop()                          # idempotent
        if native.guard_mode() != native.GUARD_NONE:
            return 2
        if TICKS:                                    # (the handler exists where ticks do)
            os.kill(os.getpid(), tick)               # a tick that arrives after the stop
            time.sleep(0.02)                         # ... does nothing (the default would kill)
        assert native.guard_start(c, os.getppid(), True, 10**7, 10**8, signal.SIGALRM)
        if native.guard_mode() != native.GUARD_THREAD:
            return 3
        native.guard_stop()
        assert _deferred(c, 10**7)
        mode = native.guard_mode()
        native.guard_stop()
        return 0 if mode == FIRST_MODE else 4

    try:
        assert _in_child(child) == 0
    finally:
        ctl.close()
