"""The fork start path (backends/local/forking.py) and the C lap loop
(csrc/python/laps.c): what multiprocessing's bootstrap gave a worker still
holds, and the lap loop keeps the Python loop's order and errors."""
from __future__ import annotations

import multiprocessing as mp
import multiprocessing.util as mp_util
import os
import sys

import pytest

from shmproc import _native as native
from shmproc.backends.local import forking
from shmproc.common.errors import ProcessError
from shmproc.common.errors import TimeoutError as SectionTimeoutError
from shmproc.processing import Process


class WorkerFacts(Process):
    """What the worker sees of its process."""

    def __init__(self, method):
        self.config.num_loops = 1
        self.config.start_method = method

    def __result__(self):
        import signal
        return {
            "stdin_target": os.readlink("/proc/self/fd/0"),
            "stdin_read": sys.stdin.read(),
            "stdin_file": os.readlink(f"/proc/self/fd/{sys.stdin.fileno()}"),
            "name": mp.current_process().name,
            "sigint": signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
            "children": len(mp.active_children()),
        }


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_stdin_is_devnull_and_it_is_a_multiprocessing_child(method):
    facts = WorkerFacts(method).start().result
    assert facts["stdin_target"] == os.devnull
    assert facts["stdin_read"] == "" and facts["stdin_file"] == os.devnull
    assert facts["name"].startswith("shmproc:WorkerFacts")
    assert facts["sigint"] is True
    assert facts["children"] == 0        # the parent's children are not the worker's


class Sleeps(Process):
    def __init__(self):
        self.config.start_method = "fork"

    def __loop__(self):
        import time
        time.sleep(0.01)


def test_fork_worker_is_listed_joined_and_reaped_like_a_multiprocessing_child():
    p = Sleeps().start()
    try:
        assert any(c.pid == p.pid for c in mp.active_children())
        run = p._rt().run
        assert isinstance(run.proc, forking.DirectForkProcess)
        assert run.proc.sentinel is not None and run.proc.exitcode is None
    finally:
        p.stop()
    assert p.wait(30)
    run.proc.join(30)
    assert run.proc.exitcode == 0
    assert not any(c.pid == p.pid for c in mp.active_children())


class ExitsWith(Process):
    def __init__(self, how):
        self.config.start_method = "fork"
        self.how = how

    def __loop__(self):
        if self.how == "exit":
            os._exit(7)
        raise SystemExit(5)


def test_fork_worker_exit_codes_are_multiprocessing_s():
    p = ExitsWith("exit").start()
    with pytest.raises(ProcessError) as info:
        p.result
    assert p.exitcode == 7 and info.value.exitcode == 7
    q = ExitsWith("systemexit").start()
    with pytest.raises(ProcessError):   # a SystemExit in a hook fails the run; it still reports
        q.result
    q._rt().run.proc.join(30)
    assert q._rt().run.proc.exitcode == 0


def _mark_file(path):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")


class Quick(Process):
    def __init__(self):
        self.config.num_loops = 1
        self.config.start_method = "fork"

    def __result__(self):
        return os.getpid()


def test_the_parents_finalizers_do_not_run_in_a_fork_worker(tmp_path):
    path = tmp_path / "finalized"
    fin = mp_util.Finalize(None, _mark_file, (str(path),), exitpriority=5)
    try:
        p = Quick().start()
        pid = p.result
        p._rt().run.proc.join(30)
        assert pid != os.getpid()
        assert not path.exists() or str(pid) not in path.read_text().split()
    finally:
        fin.cancel()


def test_stdout_written_before_start_is_not_written_twice(tmp_path):
    import subprocess
    code = ("import sys\n"
            "from shmproc.processing import Process\n"
            "class Q(Process):\n"
            "    def __init__(self):\n"
            "        self.config.num_loops = 1\n"
            "        self.config.start_method = 'fork'\n"
            "print('before', end='')\n"
            "Q().start().result\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONUNBUFFERED": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "before"


# -- the C lap loop --------------------------------------------------------------------


class Counts(Process):
    def __init__(self, n):
        self.config.num_loops = n
        self.config.start_method = "fork"
        self.log = []

    def __preloop__(self):
        self.log.append(("pre", self.current_lap))

    def __loop__(self):
        self.log.append(("loop", self.current_lap))

    def __postloop__(self):
        self.log.append(("post", self.current_lap))

    def __result__(self):
        return self.log, self.current_lap


def test_native_loop_keeps_hook_order_and_the_lap_count():
    log, lap = Counts(3).start().result
    assert lap == 3
    assert log == [(h, i) for i in range(3) for h in ("pre", "loop", "post")]


class RaisesIn(Process):
    def __init__(self, at):
        self.config.num_loops = 10
        self.config.start_method = "fork"
        self.at = at

    def __loop__(self):
        if self.current_lap == self.at:
            raise KeyError("boom at lap")


def test_native_loop_reports_a_hook_error_with_its_lap_and_traceback():
    p = RaisesIn(4).start()
    with pytest.raises(ProcessError) as info:
        p.result
    e = info.value
    assert e.section == "__loop__" and e.current_lap == 4
    assert "boom at lap" in str(e)
    assert 'raise KeyError("boom at lap")' in (e.traceback_text or "")


class SwallowsTimeout(Process):
    """A hook that outlives its timeout and swallows the alarm: the overrun
    is reported when the next section is entered."""

    def __init__(self):
        self.config.num_loops = 3
        self.config.start_method = "fork"
        self.config.timeouts.preloop = 0.2

    def __preloop__(self):
        import time
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                time.sleep(0.01)
            except BaseException:   # noqa: BLE001 - swallows the timeout on purpose
                pass

    def __loop__(self):
        pass


def test_native_loop_reports_an_overrun_of_the_section_before():
    p = SwallowsTimeout().start()
    with pytest.raises(SectionTimeoutError) as info:
        p.result
    assert info.value.section == "__preloop__" and info.value.current_lap == 0


class StopsItself(Process):
    def __init__(self):
        self.config.start_method = "fork"

    def __loop__(self):
        if self.current_lap == 2:
            self.stop()

    def __result__(self):
        return self.current_lap


def test_native_loop_ends_after_the_lap_that_asked_to_stop():
    assert StopsItself().start().result == 3


def test_laps_armed_is_false_outside_hooks():
    assert native.laps_armed() is False


def test_advance_refuses_end_states_and_stores_the_others():
    arr = native.ControlArray.create(1)
    try:
        ctl = arr.control(0)
        ctl.advance(native.STATE_RUNNING)
        assert ctl.state == native.STATE_RUNNING
        with pytest.raises(Exception):
            ctl.advance(native.STATE_DONE)
        assert ctl.state == native.STATE_RUNNING
    finally:
        arr.close()


_OVERLAPPING_FORKS = r"""
import faulthandler, os, sys, threading, time
from shmproc.processing import Process
faulthandler.dump_traceback_later(100, exit=True)     # a hang reports where

# What filelock >= 4.3 does on Python >= 3.12: refuse os.fork while another
# thread is inside one.  The before-hook's pause makes overlaps likely.
inside = []
def before():
    inside.append(1)
    time.sleep(0.005)
def after():
    inside.pop()
def refuse(event, args):
    if event == "os.fork" and inside:
        raise RuntimeError("os.fork while another thread is inside one")
sys.addaudithook(refuse)
os.register_at_fork(before=before, after_in_parent=after, after_in_child=after)

class Seven(Process):
    def __init__(self):
        self.config.num_loops = 1
        self.config.start_method = "fork"
    def __result__(self):
        return 7

class Outer(Process):
    # Starts a Process from its own hook: in this fork child the turn to
    # fork, held at the fork that made it, must be free again.
    def __init__(self):
        self.config.num_loops = 1
        self.config.start_method = "fork"
    def __result__(self):
        inner = Seven()
        inner.start()
        return inner.result * 2

errors = []
def work():
    try:
        for _ in range(4):
            p = Seven()
            p.start()
            assert p.result == 7
        outer = Outer()
        outer.start()
        assert outer.result == 14
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("errors:", errors)
sys.exit(1 if errors or any(t.is_alive() for t in threads) else 0)
"""


def test_starts_from_many_threads_never_fork_at_once():
    """Threads starting fork Processes together: shmproc forks one at a
    time, so a library that refuses a fork while another thread is inside
    one (filelock >= 4.3 on Python >= 3.12 raises RuntimeError) never sees
    two; and a fork child, which the fork that made it left holding the
    turn, is free to start its own Processes."""
    import subprocess
    done = subprocess.run([sys.executable, "-c", _OVERLAPPING_FORKS], capture_output=True,
                          text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
