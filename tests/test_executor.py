"""shmproc.Executor is a concurrent.futures.Executor (issue 12, part).

Most tests run the same body on shmproc.Executor and on
concurrent.futures.ProcessPoolExecutor, under fork and spawn: the stdlib is
the contract.  Where shmproc goes further (a dead worker does not break
the executor), the test says so and runs on shmproc only.
"""
import asyncio
import concurrent.futures as cf
import multiprocessing
import time

import pytest

import shmproc

# What the workers run lives in executor_work.py (a spawn worker imports only that).
from executor_work import die, fail, nap, refuse, square


@pytest.fixture(params=["fork", "spawn"])
def context(request):
    return multiprocessing.get_context(request.param)


@pytest.fixture(params=["shmproc", "stdlib"])
def executor_class(request):
    return shmproc.Executor if request.param == "shmproc" else cf.ProcessPoolExecutor


@pytest.fixture
def executor(executor_class, context):
    if executor_class is cf.ProcessPoolExecutor and context.get_start_method() != "fork":
        # The contract's reference run: the stdlib's behaviour here does not
        # depend on the start method, and its spawn executors are slow to stop.
        pytest.skip("the stdlib's reference run is under fork")
    with executor_class(2, mp_context=context) as ex:
        yield ex


def test_submit_returns_futures_that_as_completed_and_wait_take(executor):
    """Executor.submit(fn, /, *args, **kwargs) -> concurrent.futures.Future."""
    futures = [executor.submit(square, i) for i in range(50)]
    assert all(isinstance(f, cf.Future) for f in futures)
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=60)) == \
        sorted(i * i for i in range(50))
    done, not_done = cf.wait([executor.submit(nap, 0.01)], timeout=60)
    assert len(done) == 1 and not not_done
    assert executor.submit(int, "ff", base=16).result(timeout=60) == 255   # keywords reach fn


def test_a_tasks_exception_is_the_futures(executor):
    future = executor.submit(fail, 3)
    with pytest.raises(ValueError, match="bad 3"):
        future.result(timeout=60)
    assert isinstance(future.exception(), ValueError)


def test_map_is_ordered_and_takes_several_iterables_and_a_timeout(executor):
    """Executor.map(fn, *iterables, timeout=None, chunksize=1)."""
    assert list(executor.map(square, range(20))) == [x * x for x in range(20)]
    assert list(executor.map(pow, [2, 3, 4], [3, 2, 1], chunksize=2)) == [8, 9, 4]
    results = executor.map(nap, [1.5], timeout=0.1)
    with pytest.raises(cf.TimeoutError):
        list(results)
    errors = executor.map(fail, [1])
    with pytest.raises(ValueError):
        list(errors)


def test_asyncio_takes_its_futures(executor):
    """asyncio.wrap_future and loop.run_in_executor, as with the stdlib's executor."""
    async def main():
        loop = asyncio.get_running_loop()
        a = await asyncio.wrap_future(executor.submit(square, 5))
        b = await loop.run_in_executor(executor, square, 6)
        return a, b
    assert asyncio.run(main()) == (25, 36)


def test_shutdown_then_submit_is_refused(executor_class, context):
    """shutdown(wait=True): the work is done; submit after it: RuntimeError."""
    ex = executor_class(1, mp_context=context)
    future = ex.submit(nap, 0.1)
    ex.shutdown(wait=True)
    assert future.done() and future.result() == 0.1
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_shutdown_can_cancel_the_futures_no_worker_started(executor_class, context):
    """shutdown(cancel_futures=True): queued futures raise CancelledError;
    the running one finishes."""
    ex = executor_class(1, mp_context=context)
    running = ex.submit(nap, 0.5)
    time.sleep(0.2)
    queued = [ex.submit(square, i) for i in range(200)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=60) == 0.5
    cancelled = 0
    for future in queued:
        try:
            future.result(timeout=60)
        except cf.CancelledError:
            cancelled += 1
    assert cancelled > 0


def test_an_initializer_that_raises_breaks_the_executor(executor_class, context):
    """The stdlib: BrokenProcessPool on the futures.  shmproc's is that too."""
    ex = executor_class(1, mp_context=context, initializer=refuse)
    try:
        with pytest.raises(cf.process.BrokenProcessPool):
            ex.submit(square, 2).result(timeout=60)
    finally:
        ex.shutdown(wait=True)


@pytest.mark.parametrize("kwargs, exc", [({"max_workers": 0}, ValueError),
                                         ({"max_workers": -1}, ValueError),
                                         ({"max_workers": "2"}, TypeError)])
def test_bad_arguments_raise_what_the_stdlib_raises(executor_class, kwargs, exc):
    with pytest.raises(exc):
        executor_class(**kwargs)


def test_a_dead_worker_fails_its_task_and_the_executor_goes_on(context):
    """Better than the stdlib (whose executor is broken for good): the task
    fails with an error that is both ProcessCrashedError and
    BrokenProcessPool; the worker is replaced; later tasks run."""
    with shmproc.Executor(1, mp_context=context) as ex:
        with pytest.raises(cf.process.BrokenProcessPool) as info:
            ex.submit(die, 0).result(timeout=60)
        assert isinstance(info.value, shmproc.ProcessCrashedError)
        assert isinstance(info.value, shmproc.WorkerCrashedError)
        assert ex.submit(square, 9).result(timeout=60) == 81


def test_the_executor_is_a_concurrent_futures_executor():
    assert issubclass(shmproc.Executor, cf.Executor)
    assert shmproc.ProcessPoolExecutor is shmproc.Executor
