"""The crash matrix: every way a run can die, at every point where it can.

After CPython's test_concurrent_futures deadlock tests.  For each start
method, a failure is injected at each point of a run's path:

    parent                          worker
    ------                          ------
    pickle the Process state  ──►   unpickle the state (reconstructor / __setstate__)
                                    __loop__
                                    pickle the result (__reduce__ of what __result__ returns)
    unpickle the result       ◄──

and each failure is one of: a crash (os.abort, SIGSEGV by a NULL read through
ctypes, SIGSEGV sent to itself), an exit (os._exit(3)), or a raise.  In the
parent only `raise` is tested: a crash there would take the test runner down.

What must hold (behavior.md §4, §5):
  * a state that cannot be pickled makes start() raise a TypeError naming the
    attribute path (``self.bad``), and nothing is started;
  * a worker that dies makes `result` raise ProcessCrashedError with the exit
    code or the signal name; wait() returns True and is_alive is False;
  * a raise in the worker gives the section's ProcessError subclass, or a
    ProcessError whose message says what failed;
  * nothing hangs: every wait has a timeout, and the leak check of conftest
    runs after each test.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import resource
import signal

import pytest

from shmproc.processing import (
    MainLoopError, Process, ProcessCrashedError, ProcessError, ResultError,
)

pytestmark = pytest.mark.timeout(90)

START_METHODS = ["fork", "forkserver", "spawn"]

CRASHES = {
    # how: (exitcode, signal_name)
    "abort": (-signal.SIGABRT, "SIGABRT"),
    "segv": (-signal.SIGSEGV, "SIGSEGV"),
    "kill_segv": (-signal.SIGSEGV, "SIGSEGV"),
    "exit": (3, None),
}
HOWS = [*CRASHES, "raise"]

WAIT_S = 30


class Fault(Exception):
    """What the `raise` failures raise (deliberately not a TypeError)."""


def fail(how, where):
    """Die or raise, as `how` says; `where` goes into the message."""
    if how in ("abort", "segv", "kill_segv"):
        try:                                  # no core files from the deliberate crashes
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ValueError, OSError):
            pass
    if how == "abort":
        os.abort()
    elif how == "segv":
        ctypes.string_at(0)                   # read through a NULL pointer
    elif how == "kill_segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "exit":
        os._exit(3)
    elif how == "raise":
        raise Fault(f"injected failure in {where}")
    raise AssertionError(f"{how} did not end the process")


# ---- objects that fail while being pickled or unpickled ------------------------------

class FailsWhenPickled:
    """Its __reduce__ fails: raises `exc_type`, or does `how`."""

    def __init__(self, how, exc_type=Fault):
        self.how = how
        self.exc_type = exc_type

    def __reduce__(self):
        if self.how == "raise":
            raise self.exc_type(f"{type(self).__name__} refuses to be pickled")
        fail(self.how, "__reduce__")


def _rebuild(how, creator_pid):
    """Reconstructor of FailsWhenUnpickledElsewhere."""
    if os.getpid() != creator_pid:
        fail(how, "the reconstructor")
    return FailsWhenUnpickledElsewhere(how, creator_pid)


class FailsWhenUnpickledElsewhere:
    """Pickles fine; its reconstructor fails when run in any process but
    the one that created the object."""

    def __init__(self, how, creator_pid=None):
        self.how = how
        self.creator_pid = os.getpid() if creator_pid is None else creator_pid

    def __reduce__(self):
        return (_rebuild, (self.how, self.creator_pid))


class FailsInSetstate:
    """Pickles fine; its __setstate__ fails outside the creating process."""

    def __init__(self, how):
        self.how = how
        self.creator_pid = os.getpid()

    def __getstate__(self):
        return {"how": self.how, "creator_pid": self.creator_pid}

    def __setstate__(self, state):
        if os.getpid() != state["creator_pid"]:
            fail(state["how"], "__setstate__")
        self.__dict__.update(state)


def _rebuild_unless_marked(how, marker):
    """Reconstructor of FailsOnRebuild."""
    if os.path.exists(marker):
        fail(how, "the reconstructor (rebuilding for the next life)")
    return FailsOnRebuild(how, marker)


class FailsOnRebuild:
    """Unpickles fine until the file `marker` exists: then its reconstructor
    fails.  The first life creates the marker, so rebuilding the state for
    the second life fails."""

    def __init__(self, how, marker):
        self.how = how
        self.marker = marker

    def __reduce__(self):
        return (_rebuild_unless_marked, (self.how, self.marker))


class Holder:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


# ---- the Process under test ---------------------------------------------------------

class Target(Process):
    """Runs 3 laps; fails at `point` as `how` says."""

    def __init__(self, point, how, exc_type=Fault, marker=None):
        self.point = point
        self.how = how
        self.marker = marker
        self.config.num_loops = 3
        if point == "pickle_state":
            self.bad = FailsWhenPickled(how, exc_type)
        elif point == "pickle_state_nested":
            self.holder = Holder(ok=[1, 2], inner=Holder(bad=FailsWhenPickled(how, exc_type)))
        elif point == "unpickle_state":
            self.bad = FailsWhenUnpickledElsewhere(how)
        elif point == "unpickle_state_setstate":
            self.bad = FailsInSetstate(how)
        elif point == "unpickle_state_retry":
            self.bad = FailsOnRebuild(how, marker)
            self.config.lives = 2

    def __loop__(self):
        if self.point == "loop" and self.how and self.current_lap == 1:
            fail(self.how, "__loop__")
        if self.point == "unpickle_state_retry" and self.current_lap == 1 and self.config.lives == 2:
            open(self.marker, "w").close()
            raise Fault("the first life fails")

    def __result__(self):
        if self.point == "pickle_result":
            return FailsWhenPickled(self.how)
        if self.point == "unpickle_result":
            return FailsWhenUnpickledElsewhere(self.how)
        return ("ok", self.current_lap)


def started(point, how, method, tmp_path=None, **kw):
    if tmp_path is not None:
        kw["marker"] = str(tmp_path / "rebuild-fails")
    p = Target(point, how, **kw)
    p.config.start_method = method
    p.start()
    return p


def wait_ended(p):
    assert p.wait(timeout=WAIT_S) is True, "the run did not end"
    assert p.is_alive is False
    assert p.wait(timeout=0) is True                      # and stays ended


def outcome(p):
    """p.result as ("ok", value) or ("raised", exception without traceback).

    Keeps no frame alive: a failing test's traceback survives until
    the next test, and a Process in it would hold shared memory past the
    leak check.
    """
    try:
        return "ok", p.result
    except BaseException as exc:                          # noqa: BLE001 - reported below
        exc.__traceback__ = None
        return "raised", exc


# =====================================================================================
# Parent side: pickling the state (raise only)
# =====================================================================================

def _start_with_unpicklable_state(method, exc_type):
    """Facts (plain data only) about start() on a state whose pickling raises."""
    p = Target("pickle_state", "raise", exc_type=exc_type)
    p.config.start_method = method
    facts = {}
    try:
        p.start()
    except Exception as exc:                              # noqa: BLE001 - described below
        facts["raised"] = (type(exc).__name__, isinstance(exc, TypeError), str(exc))
    else:                                                 # a bug: clean up, report it
        p.stop()
        p.wait(timeout=WAIT_S)
        facts["raised"] = None
    facts["after"] = (p.pid, p.is_alive, p.result)
    del p.bad                                             # fixed: it can run now
    p.start()
    facts["rerun"] = (p.wait(timeout=WAIT_S), p.is_alive, p.result)
    return facts


@pytest.mark.parametrize("exc_type", [
    TypeError,
    pickle.PicklingError,
    Fault,
    ValueError,
])
@pytest.mark.parametrize("method", START_METHODS)
def test_pickling_the_state_fails_in_the_parent(method, exc_type):
    facts = _start_with_unpicklable_state(method, exc_type)
    assert facts["raised"] is not None, "start() did not raise"
    name, is_type_error, text = facts["raised"]
    assert is_type_error, f"{name}: {text}"
    assert "self.bad" in text and "FailsWhenPickled" in text, text
    assert "refuses to be pickled" in text, text
    # Nothing was started, and the object runs once the attribute is gone.
    assert facts["after"] == (None, False, None)
    assert facts["rerun"] == (True, False, ("ok", 3))


@pytest.mark.parametrize("method", START_METHODS)
def test_pickling_fails_deep_in_the_state_names_the_path(method):
    p = Target("pickle_state_nested", "raise", exc_type=TypeError)
    p.config.start_method = method
    with pytest.raises(TypeError, match=r"self\.holder\.inner\.bad holds a [\w.]*FailsWhenPickled"):
        p.start()
    assert p.pid is None and p.is_alive is False


# =====================================================================================
# Worker side: unpickling the state, __loop__, pickling the result
# =====================================================================================

WORKER_POINTS = {
    # point: lap reported by a crash there
    "unpickle_state": 0,
    "unpickle_state_setstate": 0,
    "unpickle_state_retry": 1,        # rebuilding for life 2; lap 1 was the last one seen
    "loop": 1,
    "pickle_result": 3,
}


@pytest.mark.parametrize("how", list(CRASHES))
@pytest.mark.parametrize("point", list(WORKER_POINTS))
@pytest.mark.parametrize("method", START_METHODS)
def test_worker_dies(method, point, how, tmp_path):
    p = started(point, how, method, tmp_path)
    wait_ended(p)
    exitcode, signal_name = CRASHES[how]
    for _ in range(2):                                    # every read raises it again
        with pytest.raises(ProcessCrashedError) as info:
            p.result
        e = info.value
        assert isinstance(e, ProcessError)
        assert e.exitcode == exitcode and e.signal_name == signal_name
        assert e.pid == p.pid and e.last_lap == WORKER_POINTS[point]
        assert (signal_name or f"code {exitcode}") in str(e), str(e)
    assert p.exitcode == exitcode
    assert p.is_alive is False


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("point", ["unpickle_state", "unpickle_state_setstate"])
def test_unpickling_the_state_raises_in_the_worker(method, point):
    p = started(point, "raise", method)
    wait_ended(p)
    with pytest.raises(ProcessError) as info:
        p.result
    e = info.value
    text = str(e)
    assert "could not rebuild the Process in the worker" in text, text
    assert "Fault: injected failure in" in text, text
    assert "injected failure" in (e.traceback_text or "")
    assert p.exitcode == 0


@pytest.mark.parametrize("method", START_METHODS)
def test_unpickling_the_state_for_the_next_life_raises(method, tmp_path):
    p = started("unpickle_state_retry", "raise", method, tmp_path)
    wait_ended(p)
    kind, err = outcome(p)
    del p                             # keep no Process in this frame (see outcome())
    assert kind == "raised" and isinstance(err, ProcessError), f"{kind}: {err!r}"
    text = str(err)
    assert "injected failure in the reconstructor" in text, text
    assert "could not rebuild the Process" in text, text


@pytest.mark.parametrize("method", START_METHODS)
def test_loop_raises_in_the_worker(method):
    p = started("loop", "raise", method)
    wait_ended(p)
    with pytest.raises(MainLoopError) as info:
        p.result
    e = info.value
    assert e.current_lap == 1 and e.section == "__loop__"
    assert isinstance(e.original_error, Fault)
    assert e.original_error.args == ("injected failure in __loop__",)
    assert str(e) == "Error in __loop__ on lap 1: Fault: injected failure in __loop__"
    assert isinstance(p.error, MainLoopError)


@pytest.mark.parametrize("method", START_METHODS)
def test_pickling_the_result_raises_in_the_worker(method):
    p = started("pickle_result", "raise", method)
    wait_ended(p)
    with pytest.raises(ResultError) as info:
        p.result
    text = str(info.value)
    assert "could not be sent to the parent" in text, text
    assert "FailsWhenPickled refuses to be pickled" in text, text
    assert info.value.current_lap == 3


# =====================================================================================
# Parent side: unpickling the result (raise only)
# =====================================================================================

def _run_with_unpicklable_result(method):
    """Facts (plain data only) about a run whose result cannot be unpickled here."""
    p = started("unpickle_result", "raise", method)
    facts = {}
    try:
        facts["wait"] = p.wait(timeout=WAIT_S)
    except BaseException as exc:                          # noqa: BLE001 - described below
        facts["wait"] = f"wait() raised {type(exc).__name__}: {exc}"
    facts["is_alive"] = p.is_alive
    kind, err = outcome(p)
    facts["result"] = (kind, type(err).__name__, isinstance(err, ProcessError), str(err),
                       type(getattr(err, "original_error", None)).__name__)
    return facts


@pytest.mark.parametrize("method", START_METHODS)
def test_unpickling_the_result_raises_in_the_parent(method):
    facts = _run_with_unpicklable_result(method)
    assert facts["wait"] is True, facts["wait"]
    assert facts["is_alive"] is False
    kind, name, is_process_error, text, original = facts["result"]
    assert kind == "raised" and is_process_error, f"{kind}: {name}: {text}"
    assert "result" in text and "Fault: injected failure in the reconstructor" in text, text
    assert original == "Fault"


@pytest.mark.parametrize("method", START_METHODS)
def test_result_without_wait_after_a_crash(method):
    p = started("loop", "kill_segv", method)
    with pytest.raises(ProcessCrashedError, match="SIGSEGV"):
        p.result                                          # waits for the dead worker itself
    assert p.is_alive is False and p.wait(timeout=0) is True


# =====================================================================================
# After a crash the object is reusable
# =====================================================================================

@pytest.mark.parametrize("method", START_METHODS)
def test_restart_after_a_crash(method):
    p = started("loop", "segv", method)
    wait_ended(p)
    kind, err = outcome(p)
    assert kind == "raised" and isinstance(err, ProcessCrashedError)
    first_pid = p.pid
    p.how = None                                          # the next run does not fail
    p.start()
    wait_ended(p)
    assert p.result == ("ok", 3) and p.pid != first_pid and p.exitcode == 0
