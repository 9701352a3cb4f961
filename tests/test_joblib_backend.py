"""The "shmproc" joblib backend (shmproc.joblib, issue 12), through joblib's
public API: Parallel/delayed under parallel_backend("shmproc").

Mirrors what joblib's own process backends (loky, multiprocessing) do:
results in order, n_jobs=-1 meaning every CPU, automatic batching of small
tasks, a task's exception raised in the caller with its own type,
return_as="generator", nested Parallel calls falling back to threads.
Skipped when joblib is not installed.
"""
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
from conftest import START_METHODS

joblib = pytest.importorskip("joblib")
from joblib import Parallel, delayed, parallel_backend  # noqa: E402

import shmproc.joblib as shj  # noqa: E402
from shmproc.common.errors import ProcessCrashedError  # noqa: E402


@pytest.fixture(autouse=True)
def no_warm_pool():
    """The backend keeps a pool between calls; stop it so that the leak
    check around each test finds no worker left."""
    yield
    shj.shutdown()


def square(x):
    return x * x


class Unlucky(Exception):
    pass


def fails_at(x, bad):
    if x == bad:
        raise Unlucky(f"item {x}")
    return x


def dies_at(x, bad):
    if x == bad:
        os._exit(3)
    return x


def nested_sum(n):
    inner = Parallel(n_jobs=2)(delayed(square)(j) for j in range(n))
    backend = type(joblib.parallel.get_active_backend()[0]).__name__
    return sum(inner), backend


def shmproc_inside_a_worker(n):
    import shmproc.joblib  # noqa: F401 - registers the backend in this worker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with parallel_backend("shmproc"):
            out = Parallel(n_jobs=2)(delayed(square)(j) for j in range(n))
    return sum(out), [str(w.message) for w in caught]


def worker_pid(_):
    return os.getpid()


def test_importing_registers_the_backend():
    """joblib.register_parallel_backend: the name joblib.Parallel looks up."""
    assert joblib.parallel.BACKENDS["shmproc"] is shj.ShmprocBackend
    shj.register("shmproc-again")
    assert joblib.parallel.BACKENDS["shmproc-again"] is shj.ShmprocBackend
    del joblib.parallel.BACKENDS["shmproc-again"]


@pytest.mark.parametrize("method", START_METHODS)
def test_parallel_runs_on_shmproc_workers_in_order(method):
    """Parallel(n_jobs=2)(...) returns results in submission order, as with loky."""
    with parallel_backend("shmproc", start_method=method):
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(100)) == \
            [i * i for i in range(100)]
        pids = set(Parallel(n_jobs=2, batch_size=1)(delayed(worker_pid)(i) for i in range(40)))
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_n_jobs_minus_one_means_every_cpu():
    """joblib's convention: -1 is cpu_count(), -2 all but one."""
    backend = shj.ShmprocBackend()
    assert backend.effective_n_jobs(-1) == joblib.cpu_count()
    assert backend.effective_n_jobs(-2) == max(joblib.cpu_count() - 1, 1)
    with pytest.raises(ValueError):
        backend.effective_n_jobs(0)
    with parallel_backend("shmproc"):
        assert Parallel(n_jobs=-1)(delayed(square)(i) for i in range(10)) == \
            [i * i for i in range(10)]
        assert Parallel(n_jobs=1)(delayed(square)(i) for i in range(3)) == [0, 1, 4]   # in-process


class CountingBackend(shj.ShmprocBackend):
    submitted = 0

    def submit(self, func, callback=None):
        CountingBackend.submitted += 1
        return super().submit(func, callback)

    def apply_async(self, func, callback=None):         # joblib < 1.5 calls this instead
        CountingBackend.submitted += 1
        return super().apply_async(func, callback)


def test_small_tasks_are_batched():
    """AutoBatchingMixin, as loky and multiprocessing use: many tiny calls share a task."""
    joblib.register_parallel_backend("shmproc-counting", CountingBackend)
    try:
        with parallel_backend("shmproc-counting"):
            out = Parallel(n_jobs=2)(delayed(square)(i) for i in range(20_000))
    finally:
        del joblib.parallel.BACKENDS["shmproc-counting"]
    assert out == [i * i for i in range(20_000)]
    assert 0 < CountingBackend.submitted < 2_000


def test_a_tasks_exception_is_raised_with_its_type_and_the_pool_goes_on():
    """As with loky: the worker's exception, not a wrapper, reaches the caller."""
    with parallel_backend("shmproc"):
        with pytest.raises(Unlucky, match="item 7"):
            Parallel(n_jobs=2)(delayed(fails_at)(i, 7) for i in range(50))
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_a_worker_that_dies_is_a_process_crashed_error():
    """loky raises TerminatedWorkerError; shmproc names the exit code."""
    with parallel_backend("shmproc"):
        with pytest.raises(ProcessCrashedError) as info:
            Parallel(n_jobs=2, batch_size=1)(delayed(dies_at)(i, 3) for i in range(10))
        assert info.value.exitcode == 3
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_return_as_generator(return_as):
    """Parallel(return_as="generator") (joblib >= 1.3; unordered >= 1.4)."""
    try:
        parallel = Parallel(n_jobs=2, return_as=return_as)
    except ValueError:
        pytest.skip(f"this joblib has no return_as={return_as!r}")
    with parallel_backend("shmproc"):
        parallel = Parallel(n_jobs=2, return_as=return_as)
        out = parallel(delayed(square)(i) for i in range(200))
        assert not isinstance(out, list)
        got = list(out)
    expected = [i * i for i in range(200)]
    assert got == expected if return_as == "generator" else sorted(got) == expected


def test_nested_parallel_falls_back_to_threads():
    """joblib's default for process backends: the first nested level uses threads."""
    with parallel_backend("shmproc"):
        out = Parallel(n_jobs=2)(delayed(nested_sum)(n) for n in (3, 4))
    assert out == [(5, "ThreadingBackend"), (14, "ThreadingBackend")]


def test_shmproc_backend_inside_a_worker_runs_sequentially():
    """Like the multiprocessing backend in a daemon process: n_jobs=1, with a warning."""
    with parallel_backend("shmproc"):
        (total, caught), = Parallel(n_jobs=2)(delayed(shmproc_inside_a_worker)(4) for _ in range(1))
    assert total == 14
    assert any("sequentially" in m for m in caught)


def test_the_pool_is_kept_between_calls_and_options_reach_it():
    with parallel_backend("shmproc", start_method="fork"):
        first = set(Parallel(n_jobs=2, batch_size=1)(delayed(worker_pid)(i) for i in range(20)))
        again = set(Parallel(n_jobs=2, batch_size=1)(delayed(worker_pid)(i) for i in range(20)))
    assert first & again                        # the same warm workers
    with pytest.raises(TypeError):
        with parallel_backend("shmproc", no_such_option=1):
            Parallel(n_jobs=2)(delayed(square)(i) for i in range(3))


def test_without_joblib_shmproc_imports_and_shmproc_joblib_names_the_extra():
    code = textwrap.dedent("""
        import sys
        sys.modules["joblib"] = None            # as if joblib were not installed
        import shmproc
        try:
            import shmproc.joblib
        except ImportError as exc:
            print("ImportError:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    assert "ImportError:" in out.stdout and "shmproc[joblib]" in out.stdout


def omp_threads(_):
    return os.environ.get("OMP_NUM_THREADS")


FLAG = None


def set_flag(value):
    global FLAG
    FLAG = value


def read_flag(_):
    return FLAG


@pytest.mark.parametrize("method", START_METHODS)
def test_worker_threads_are_limited_and_the_users_initializer_runs(method):
    """As loky: OMP_NUM_THREADS & co. set to cpu_count() // n_jobs in each worker,
    or to parallel_config(inner_max_num_threads=)."""
    expected = os.environ.get("OMP_NUM_THREADS", str(max(joblib.cpu_count() // 2, 1)))
    with parallel_backend("shmproc", start_method=method):
        assert set(Parallel(n_jobs=2)(delayed(omp_threads)(i) for i in range(4))) == {expected}
    with joblib.parallel_config(backend="shmproc", inner_max_num_threads=1, start_method=method):
        assert set(Parallel(n_jobs=2)(delayed(omp_threads)(i) for i in range(4))) == {"1"}
    with parallel_backend("shmproc", start_method=method, initializer=set_flag, initargs=(5,)):
        assert Parallel(n_jobs=2)(delayed(read_flag)(i) for i in range(4)) == [5] * 4


def slow(x):
    import time
    time.sleep(0.01)
    return x


def test_an_abandoned_generator_cancels_its_batches_and_the_backend_goes_on():
    """joblib cancels what a dropped return_as="generator" call still runs (and warns)."""
    import gc
    with parallel_backend("shmproc"):
        lazy = Parallel(n_jobs=2, return_as="generator")(delayed(slow)(i) for i in range(200))
        assert [next(lazy), next(lazy)] == [0, 1]
        with pytest.warns(UserWarning, match="cancelled"):
            del lazy
            gc.collect()
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
