"""shmproc.Pool speaks multiprocessing.Pool: apply, apply_async, map_async,
starmap_async and their AsyncResult (issue 12, first part).

Each test runs the same body on shmproc.Pool and on multiprocessing.Pool,
under fork and spawn: the stdlib's behaviour is the contract.
"""
import multiprocessing
import threading

import pytest

import shmproc

# What the workers run lives in stdlib_work.py (a spawn worker imports only that).
from stdlib_work import fail, fail_on_three, nap, recall, refuse, remember, square


@pytest.fixture(params=["fork", "spawn"])
def method(request):
    return request.param


@pytest.fixture(params=["shmproc", "multiprocessing"])
def pool(request, method):
    if request.param != "shmproc" and method != "fork":
        # The contract's reference run: the stdlib's behaviour here does not
        # depend on the start method, and its spawn pools are slow to stop.
        pytest.skip("the stdlib's reference run is under fork")
    if request.param == "shmproc":
        p = shmproc.Pool(2, start_method=method)
    else:
        p = multiprocessing.get_context(method).Pool(2)
    with p:
        yield p
    p.join()


def test_apply_returns_the_value_and_raises_the_tasks_error(pool):
    """multiprocessing.Pool.apply: func(*args, **kwds), waited for."""
    assert pool.apply(square, (7,)) == 49
    assert pool.apply(divmod, (17, 5)) == (3, 2)
    assert pool.apply(int, ("ff",), {"base": 16}) == 255
    with pytest.raises(ValueError, match="bad 1"):
        pool.apply(fail, (1,))


def test_apply_async_result_interface(pool):
    """AsyncResult: get(timeout), wait(timeout), ready(), successful()."""
    slow = pool.apply_async(nap, (0.5,))
    with pytest.raises(ValueError):
        slow.successful()                   # not ready yet: ValueError, as the stdlib
    assert slow.ready() is False
    with pytest.raises(multiprocessing.TimeoutError):
        slow.get(timeout=0.05)
    slow.wait(timeout=0.01)                 # returns, not ready
    assert slow.get(timeout=30) == 0.5
    assert slow.ready() and slow.successful()
    bad = pool.apply_async(fail, (2,))
    bad.wait(30)
    assert bad.ready() and not bad.successful()
    with pytest.raises(ValueError, match="bad 2"):
        bad.get()


def test_apply_async_callbacks_run_once_before_get_returns(pool):
    """callback(value) / error_callback(exception), in the parent, before get()."""
    got, errors = [], []
    ok = pool.apply_async(square, (6,), callback=got.append, error_callback=errors.append)
    assert ok.get(30) == 36
    assert got == [36] and errors == []
    bad = pool.apply_async(fail, (4,), callback=got.append, error_callback=errors.append)
    with pytest.raises(ValueError):
        bad.get(30)
    assert got == [36]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)
    ok.get()
    assert got == [36]                      # never twice


def test_callbacks_fire_with_nobody_waiting(pool):
    """The stdlib's result handler thread calls callbacks though nobody calls get()."""
    done = threading.Event()
    pool.apply_async(square, (5,), callback=lambda v: done.set())
    assert done.wait(30)
    finished = threading.Event()
    pool.map_async(square, range(50), callback=lambda v: finished.set())
    assert finished.wait(30)


def test_map_async_and_starmap_async(pool):
    """map_async / starmap_async: get() is the ordered list; callback gets it."""
    got = []
    result = pool.map_async(square, range(100), callback=got.append)
    assert result.get(30) == [x * x for x in range(100)]
    assert got == [[x * x for x in range(100)]]
    assert pool.map_async(square, [], chunksize=3).get(30) == []
    assert pool.starmap_async(pow, [(2, 3), (3, 2), (5, 0)]).get(30) == [8, 9, 1]


def test_map_async_error_raises_the_items_error(pool):
    """A failed item: get() raises its exception; error_callback gets it."""
    errors = []
    result = pool.map_async(fail_on_three, range(8), chunksize=1, error_callback=errors.append)
    with pytest.raises(KeyError):
        result.get(30)
    assert not result.successful()
    assert len(errors) == 1 and isinstance(errors[0], KeyError)
    assert pool.map(square, [1, 2]) == [1, 4]          # the pool goes on


def test_imap_next_with_a_timeout(pool):
    """IMapIterator.next(timeout): multiprocessing.TimeoutError when no result
    comes in time; the next call goes on; StopIteration at the end."""
    it = pool.imap(nap, [0.6, 0.0], chunksize=1)
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    assert it.next(timeout=30) == 0.6
    assert it.next(timeout=30) == 0.0
    with pytest.raises(StopIteration):
        it.next(timeout=30)
    unordered = pool.imap_unordered(nap, [0.6], chunksize=1)
    with pytest.raises(multiprocessing.TimeoutError):
        unordered.next(timeout=0.05)
    assert list(unordered) == [0.6]


def test_callback_that_raises_does_not_break_the_pool(method, capfd):
    """Better than the stdlib, whose result handler thread dies (and the pool
    hangs): the error is reported on stderr and the pool goes on."""
    def bad_callback(value):
        raise RuntimeError("callback bug")
    with shmproc.Pool(1, start_method=method) as pool:
        result = pool.apply_async(square, (2,), callback=bad_callback)
        assert result.get(30) == 4
        assert pool.apply(square, (3,)) == 9
    assert "callback bug" in capfd.readouterr().err


def test_non_callable_callbacks_are_refused_at_once(method):
    """shmproc checks at the call (the stdlib fails later, in its handler thread)."""
    with shmproc.Pool(1, start_method=method) as pool:
        with pytest.raises(TypeError, match="callback"):
            pool.apply_async(square, (1,), callback=42)
        with pytest.raises(TypeError, match="error_callback"):
            pool.map_async(square, [1], error_callback="no")
        with pytest.raises(TypeError, match="callable"):
            pool.apply_async(42)


def test_async_results_after_close_and_join(method):
    """close(); join(): every async call finished, callbacks ran (as the stdlib)."""
    got = []
    pool = shmproc.Pool(2, start_method=method)
    results = [pool.apply_async(square, (i,), callback=got.append) for i in range(20)]
    mapped = pool.map_async(square, range(30))
    pool.close()
    pool.join()
    assert [r.get(0) for r in results] == [i * i for i in range(20)]
    assert mapped.get(0) == [x * x for x in range(30)]
    assert sorted(got) == sorted(i * i for i in range(20))


def test_star_import_does_not_shadow_builtins():
    """`from shmproc import *` leaves the builtin TimeoutError alone."""
    import builtins
    namespace = {}
    exec("from shmproc import *", namespace)
    assert "TimeoutError" not in namespace
    assert "Pool" in namespace and "AsyncResult" in namespace
    assert issubclass(shmproc.TimeoutError, builtins.TimeoutError)
    assert shmproc.TimeoutError is not builtins.TimeoutError


# ---- the constructor: multiprocessing.Pool's signature, initializer ------------------------


def test_positional_arguments_are_multiprocessings(method):
    """Pool(processes, initializer, initargs, maxtasksperchild, context)."""
    ctx = multiprocessing.get_context(method)
    with shmproc.Pool(2, remember, (41,), None, ctx) as pool:
        assert pool.workers == 2
        seen = pool.map(recall, range(8), chunksize=1)
    assert {value for value, _, _ in seen} == {41}
    assert {runs for _, runs, _ in seen} == {1}             # once per worker


def test_initializer_runs_again_in_replacement_workers(method):
    """maxtasksperchild: every new worker runs the initializer first."""
    with shmproc.Pool(processes=1, initializer=remember, initargs=("x",), maxtasksperchild=2,
                      context=multiprocessing.get_context(method)) as pool:
        seen = [pool.apply(recall) for _ in range(6)]
    assert {value for value, _, _ in seen} == {"x"}
    assert len({pid for _, _, pid in seen}) >= 3            # replaced every 2 tasks


def test_shmproc_spellings_remain_as_aliases(method):
    with shmproc.Pool(workers=1, start_method=method, max_tasks_per_worker=5) as pool:
        assert pool.apply(recall)[0] is None
    with pytest.raises(TypeError, match="both processes= and workers="):
        shmproc.Pool(2, workers=2)
    with pytest.raises(ValueError, match="context uses"):
        shmproc.Pool(1, context=multiprocessing.get_context("spawn"), start_method="fork")


def test_an_initializer_that_raises_breaks_the_pool_with_a_clear_error(method):
    """The stdlib respawns such workers for ever (its tasks never run); here
    every task and later call raises InitializerError naming the cause."""
    pool = shmproc.Pool(2, refuse, context=multiprocessing.get_context(method))
    try:
        with pytest.raises(shmproc.InitializerError, match="no database") as info:
            pool.apply(recall)
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(shmproc.InitializerError):
            pool.map(recall, range(3))
        with pytest.raises(shmproc.InitializerError):
            pool.apply_async(recall).get(30)
        pool.close()
        pool.join(timeout=60)               # a broken pool still closes cleanly
    finally:
        pool.terminate()


@pytest.mark.parametrize("kwargs, exc", [
    ({"processes": 0}, ValueError),                 # the stdlib: ValueError
    ({"processes": -1}, ValueError),
    ({"processes": "2"}, TypeError),                # the stdlib: TypeError ('<' on a str)
    ({"initializer": 3}, TypeError),                # 'initializer must be a callable'
    ({"maxtasksperchild": 0}, ValueError),          # 'maxtasksperchild must be a positive int or None'
    ({"maxtasksperchild": "3"}, ValueError),
    ({"context": "fork"}, TypeError),
])
def test_bad_constructor_arguments_raise_what_the_stdlib_raises(kwargs, exc):
    with pytest.raises(exc):
        shmproc.Pool(**kwargs)
    if "context" not in kwargs:                     # the stdlib agrees
        with pytest.raises(exc):
            multiprocessing.get_context("fork").Pool(**kwargs)
