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

import functools
import pickle
import signal

import pytest
from conftest import FULL_METHODS, START_METHODS

from shmproc import Pool
from shmproc.processing import (
    MainLoopError, ProcessCrashedError, ProcessError, ResultError,
)
from shmproc.wire import SerializationError

# What the workers run (the failing objects, Target, the mapped functions)
# lives in crash_work.py: a spawn worker imports only that.
from crash_work import (
    K, N, FailsWhenPickled, FailsWhenUnpickledElsewhere, Fault, Item, Recorded, Target,
    always_fails, flaky, runs, work,
)

pytestmark = pytest.mark.timeout(90)


CRASHES = {
    # how: (exitcode, signal_name)
    "abort": (-signal.SIGABRT, "SIGABRT"),
    "segv": (-signal.SIGSEGV, "SIGSEGV"),
    "kill_segv": (-signal.SIGSEGV, "SIGSEGV"),
    "exit": (3, None),
}
HOWS = [*CRASHES, "raise"]

WAIT_S = 30


# ---- starting the Process under test (Target, in crash_work.py) ---------------------

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
@pytest.mark.parametrize("method", FULL_METHODS)       # forkserver: the cases below
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


# =====================================================================================
# The pool: how many times each item runs when a worker dies or an item fails
# =====================================================================================
#
# One chunk of N items (one record) goes to a one-worker pool; item K fails
# at one point of its path:
#
#     parent                          worker
#     pickle the argument   ──►       unpickle the argument (the chunk's record)
#                                     fn(item)
#     unpickle the result   ◄──       pickle the result
#
# Every run of fn appends the item's number to a file (O_APPEND): the test
# reads afterwards how many times each item ran.  The items sleep 2 ms, so
# each finished item's result goes out (R_PART) before the next one starts:
# which outcome each item gets is then deterministic.  What must hold:
# finished items never run again, the failing item runs once (retries=0),
# items that never started run on the replacement worker, the pool stays
# usable, nothing leaks.

POOL_CRASHES = {
    # how: (exitcode, signal_name)
    "sigkill": (-signal.SIGKILL, "SIGKILL"),
    "kill_segv": (-signal.SIGSEGV, "SIGSEGV"),
    "exit": (3, None),
}
POOL_HOWS = [*POOL_CRASHES, "raise"]
PARENT_POINTS = ["pickle_arg", "unpickle_result"]        # raise only: a crash would be ours
WORKER_POOL_POINTS = ["unpickle_arg", "fn", "pickle_result"]


def items_for(point, how):
    items = [Item(i) for i in range(N)]
    if point == "pickle_arg":
        items[K].payload = FailsWhenPickled(how)
    elif point == "unpickle_arg":
        items[K].payload = FailsWhenUnpickledElsewhere(how)
    return items


def imap_outcome(pool, fn, items, star=False, **kw):
    """(values yielded, then the exception raised, without traceback)."""
    got, err = [], None
    run = pool.istarmap if star else pool.imap
    try:
        for v in run(fn, items, chunksize=len(items), **kw):
            got.append(v)
    except BaseException as exc:                           # noqa: BLE001 - checked by the caller
        exc.__traceback__ = None
        err = exc
    return got, err


def settle(pool):
    """Wait until the one worker has finished what it was given: a task sent
    after it runs after it."""
    assert pool.submit(abs, -7).result() == 7


def expected_pool_outcome(point, how):
    """(values yielded before the error, exception class, text in it, run counts:
    {item: exact count}, items that may run once or not at all)."""
    crash = how in POOL_CRASHES
    all_once = {i: 1 for i in range(N)}
    if point == "fn":
        if crash:
            return [0, 1], ProcessCrashedError, "", {0: 1, 1: 1, 2: 1}, {3, 4}
        return [0, 1], Fault, "injected failure in fn", all_once, set()
    if point == "unpickle_arg":
        if crash:           # no fn run for K; the chunk was re-sent one record per item
            return [0, 1], ProcessCrashedError, "", {0: 1, 1: 1, 2: 0}, {3, 4}
        return [], RuntimeError, "could not be rebuilt", {i: 0 for i in range(N)}, set()
    if point == "pickle_result":
        if crash:           # K had finished; it died sending K's result
            return [0, 1], ProcessCrashedError, "had finished", {0: 1, 1: 1, 2: 1}, {3, 4}
        return [0, 1], SerializationError, "FailsWhenPickled refuses", all_once, set()
    if point == "pickle_arg":
        return [], SerializationError, "cannot be sent to a worker", {i: 0 for i in range(N)}, set()
    if point == "unpickle_result":
        return [0, 1], RuntimeError, "could not be read in the parent", all_once, set()
    raise AssertionError(point)


POOL_CASES = [(point, how) for how in POOL_HOWS for point in WORKER_POOL_POINTS] + \
             [(point, "raise") for point in PARENT_POINTS]


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_item_fails_at_each_point(method, tmp_path):
    # One pool for all the cases of a start method (a crash costs a worker
    # start, not a pool start); each case reports on its own below.
    problems = []
    with Pool(1, start_method=method) as pool:
        for point, how in POOL_CASES:
            path = str(tmp_path / f"{point}-{how}.runs")
            fn = functools.partial(work, path, point, how, True)
            pids = pool.pids
            got, err = imap_outcome(pool, fn, items_for(point, how))
            settle(pool)
            values, exc_type, text, exact, at_most_once = expected_pool_outcome(point, how)
            counted = runs(path)
            case = f"{point}/{how}/{method}"
            if got != values:
                problems.append(f"{case}: yielded {got}, expected {values}")
            if not isinstance(err, exc_type) or text not in str(err):
                problems.append(f"{case}: raised {err!r}, expected {exc_type.__name__} "
                                f"with {text!r}")
            elif isinstance(err, ProcessCrashedError):
                exitcode, signal_name = POOL_CRASHES[how]
                if (err.exitcode, err.signal_name) != (exitcode, signal_name):
                    problems.append(f"{case}: {err!r} has exit {err.exitcode}/{err.signal_name}")
                if f"task {K} " not in err.shmproc_task or pool.pids == pids:
                    problems.append(f"{case}: {err.shmproc_task}; pids {pids} -> {pool.pids}")
            for i, n in exact.items():
                if counted.get(i, 0) != n:
                    problems.append(f"{case}: item {i} ran {counted.get(i, 0)} times, not {n}")
            for i in at_most_once:
                if counted.get(i, 0) > 1:
                    problems.append(f"{case}: item {i} ran {counted[i]} times")
            # Usable afterwards, with every item run exactly once (slow items
            # too: fast ones would grow the worker's blocks, see the top).
            ok_path = str(tmp_path / f"{point}-{how}.after")
            ok = functools.partial(work, ok_path, "none", how, True)
            if pool.map(ok, range(2 * N), chunksize=3) != list(range(2 * N)):
                problems.append(f"{case}: the pool is not usable afterwards")
            if runs(ok_path) != {i: 1 for i in range(2 * N)}:
                problems.append(f"{case}: afterwards, runs {runs(ok_path)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_retries_rerun_only_the_crashing_item(method, tmp_path):
    path = str(tmp_path / "runs")
    with Pool(1, start_method=method, retries=1) as pool:
        out = pool.map(functools.partial(flaky, path, "sigkill"), range(N), chunksize=N)
        # Finished items were never run again (K's neighbours included), K ran
        # twice, and the items after it ran once, on the replacement worker.
        assert out == list(range(N))
        assert runs(path) == {i: 2 if i == K else 1 for i in range(N)}
        assert pool.progress.failed == 0


def test_pool_retries_exhausted(tmp_path):
    path = str(tmp_path / "runs")
    with Pool(1) as pool:                                  # retries=0; the call asks for 2
        fn = functools.partial(always_fails, path, "exit")
        with pytest.raises(ProcessCrashedError, match=r"ran 3 times \(retries=2\)") as info:
            pool.map(fn, [K], retries=2)
        assert info.value.exitcode == 3 and f"task 0 " in info.value.shmproc_task
        assert runs(path) == {K: 3}
        with pytest.raises(ProcessCrashedError) as info:  # the pool's own: 0
            pool.map(fn, [K])
        assert "ran" not in str(info.value)
        assert runs(path) == {K: 4}


def test_pool_submit_uses_the_pools_retries(tmp_path):
    path = str(tmp_path / "runs")
    with Pool(1, retries=1) as pool:
        assert pool.submit(flaky, path, "kill_segv", K).result() == K
        assert runs(path) == {K: 2}


def test_pool_finished_items_are_never_run_again_even_with_retries(tmp_path):
    # Fast items: those before K finish in the same block as K, so their
    # results die with the worker.  They fail; retries apply only to K.
    path = str(tmp_path / "runs")
    with Pool(1, retries=3) as pool:
        got, err = imap_outcome(pool, functools.partial(always_fails, path, "sigkill"),
                                range(N))
        settle(pool)
        assert isinstance(err, ProcessCrashedError), repr(err)
        assert got == list(range(len(got))) and len(got) <= K
        if len(got) < K:                                   # the usual case: lost with it
            assert "had finished" in str(err) and f"task {len(got)} " in err.shmproc_task
        counted = runs(path)
        assert all(counted[i] == 1 for i in range(K)), counted
        assert 1 <= counted[K] <= 4 and all(counted.get(i, 0) <= 1 for i in range(K + 1, N))


def test_pool_tasks_never_started_run_once_on_the_replacement(tmp_path):
    path = str(tmp_path / "runs")
    with Pool(1) as pool:
        fn = functools.partial(always_fails, path, "sigkill")
        tasks = [pool.submit(fn, i) for i in range(2 * N)]
        outcomes = []
        for t in tasks:
            try:
                outcomes.append(t.result())
            except ProcessCrashedError as exc:
                outcomes.append("lost" if "had finished" in str(exc) else "crashed")
        assert outcomes[K] == "crashed"
        assert all(o in (i, "lost") for i, o in enumerate(outcomes[:K])), outcomes
        assert outcomes[K + 1:] == list(range(K + 1, 2 * N))
        assert runs(path) == {i: 1 for i in range(2 * N)}


@pytest.mark.parametrize("bad, error", [
    (-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError),
])
def test_pool_retries_is_validated(bad, error):
    with pytest.raises(error, match="retries"):
        Pool(1, retries=bad)
    with Pool(1) as pool:
        with pytest.raises(error, match="retries"):
            pool.map(abs, [1], retries=bad)
        with pytest.raises(error, match="retries"):
            pool.imap(abs, [1], retries=bad)             # at once, before any next()
        with pytest.raises(error, match="retries"):
            pool.starmap(pow, [(2, 3)], retries=bad)
    if bad is not True:
        with Pool(1) as pool:
            assert pool.map(abs, [-1], retries=None) == [1]


@pytest.mark.parametrize("retries", [0, 1])
def test_pool_process_class_chunk_crash(retries, tmp_path):
    path = str(tmp_path / "runs")
    with Pool(1, retries=retries) as pool:
        got, err = imap_outcome(pool, Recorded, [(path, i) for i in range(N)], star=True)
        settle(pool)
        counted = runs(path)
        if retries:
            assert (got, err) == (list(range(N)), None)
            assert counted == {i: 2 if i == K else 1 for i in range(N)}
        else:
            assert got == [0, 1] and isinstance(err, ProcessCrashedError), (got, err)
            assert err.signal_name == "SIGKILL" and f"task {K} " in err.shmproc_task
            assert all(counted[i] == 1 for i in range(K + 1))
            assert all(counted.get(i, 0) <= 1 for i in range(K + 1, N))


@pytest.mark.parametrize("retries", [0, 1])
def test_pool_single_call_that_dies_encoding_its_result(retries, tmp_path):
    # A single call's result is encoded as part of running it: dying there
    # is that call's crash (re-run with retries), not a lost finished result.
    path = str(tmp_path / "runs")
    with Pool(1, retries=retries) as pool:
        task = pool.submit(work, path, "pickle_result", "sigkill", False, K)
        with pytest.raises(ProcessCrashedError) as info:
            task.result()
        assert "had finished" not in str(info.value)
        assert (f"ran {retries + 1} times" in str(info.value)) == bool(retries)
        assert runs(path) == {K: retries + 1}
        assert pool.submit(work, path, "none", "sigkill", False, 1).result() == 1
