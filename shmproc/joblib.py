"""joblib on shmproc: a "shmproc" parallel backend.

    import joblib
    import shmproc.joblib                   # registers the backend (once; see register())

    with joblib.parallel_backend("shmproc", n_jobs=4):
        out = joblib.Parallel()(joblib.delayed(f)(i) for i in range(1000))

How joblib's calls map onto shmproc:

    Parallel(n_jobs)(...) ─ configure ─► a shmproc.Pool(n_jobs), kept warm between calls,
      │                                  its workers' BLAS/OpenMP threads limited as loky does
      ├─ joblib batches the calls (AutoBatchingMixin: ~0.2-2 s of work a batch)
      ├─ submit(batch, callback) ─► Pool.apply_async(batch, callback=, error_callback=)
      │                              the callback dispatches the next batch
      ├─ an error in a call ─► the worker returns it with its traceback
      │                       (joblib's wrapper); joblib raises it here with its own type
      └─ a worker that dies ─► error_callback(ProcessCrashedError) ─► raised as that

Nested Parallel calls inside a task run on joblib's threading backend at the
first level and sequentially below (what joblib's multiprocessing backend
does); a Parallel on the "shmproc" backend opened inside a shmproc worker
runs sequentially (with a warning) rather than starting processes from a
worker.

The pool a Parallel call used is kept for the next call with the same
n_jobs and options (one pool at most), so a loop of short Parallel calls
does not start workers each time; `shmproc.joblib.shutdown()` stops it
(so does exit).

Registration happens on `import shmproc.joblib` (importing shmproc alone
does not import joblib: it costs ~0.1 s).  `register(name)` registers again,
under another name or after joblib was reloaded; `register(make_default=True)`
makes it joblib's default backend.
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Callable

try:
    import joblib
    from joblib._parallel_backends import (AutoBatchingMixin, FallbackToBackend,
                                           ParallelBackendBase, PoolManagerMixin,
                                           SequentialBackend)
except ImportError as exc:                # joblib is an extra, not a dependency
    raise ImportError(
        "shmproc.joblib needs joblib: pip install 'shmproc[joblib]' (or pip install joblib)"
    ) from exc

from .common import lifecycle
from .pool import Pool

__all__ = ["ShmprocBackend", "register", "shutdown", "BACKEND_NAME"]

BACKEND_NAME = "shmproc"


# joblib ships no type information: its classes are Any to a type checker.
class ShmprocBackend(PoolManagerMixin, AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's parallel backend interface on a shmproc.Pool.

    Options given to joblib.parallel_backend("shmproc", **options) go to
    shmproc.Pool: start_method=, initializer=, initargs=,
    max_tasks_per_worker=, retries=.
    """

    supports_retrieve_callback = True       # results come through apply_async callbacks
    supports_return_generator = True        # return_as="generator" (joblib >= 1.3)
    supports_timeout = True
    uses_threads = False
    supports_sharedmem = False              # require="sharedmem" makes joblib pick threads
    supports_inner_max_num_threads = True   # parallel_config(inner_max_num_threads=)
    default_n_jobs = 1
    _pool: Pool | None              # the pool of the Parallel call in progress

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """n_jobs as joblib means it (-1: every CPU, -2: all but one...); 1
        inside a shmproc worker, which must not start a pool of its own."""
        if n_jobs is not None and n_jobs != 1 and _in_shmproc_worker():
            warnings.warn("a shmproc-backed Parallel inside a shmproc worker runs "
                          "sequentially (n_jobs=1)", stacklevel=3)
            return 1
        n: int = super().effective_n_jobs(n_jobs)
        return n

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **pool_kwargs: Any) -> int:
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        options = {k: v for k, v in {**self.backend_kwargs, **pool_kwargs}.items()
                   if k not in _JOBLIB_OPTIONS}
        # As loky does: each worker's BLAS / OpenMP threads are limited to its
        # share of the CPUs (or inner_max_num_threads), so n_jobs workers
        # do not each start cpu_count() threads.
        env = self._prepare_worker_env(n_jobs=n_jobs)
        options["initargs"] = (env, options.get("initializer"), tuple(options.get("initargs", ())))
        options["initializer"] = _init_worker
        self._pool = _warm.take(n_jobs, options)
        return n_jobs

    def terminate(self) -> None:
        """End of a Parallel call: the pool stays warm for the next one."""
        if self._pool is not None:
            _warm.give_back(self._pool)
            self._pool = None
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: kill the running batches (their results are not
        wanted), and start afresh if joblib will submit again."""
        if self._pool is not None:
            self._pool.terminate()
            _warm.forget(self._pool)
            self._pool = None
        self.reset_batch_stats()
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel,
                           **self.parallel._backend_kwargs)


#: What Parallel passes every backend whatever the user asked: options of
#: its memmapping of large arrays (shmproc sends large arrays through shared
#: memory itself), its verbosity, and multiprocessing's default context (the
#: start method is the Pool's start_method= option here).
_JOBLIB_OPTIONS = frozenset(("max_nbytes", "mmap_mode", "temp_folder", "verbose", "context"))


class _WarmPool:
    """The one pool kept between Parallel calls.

    joblib configures a backend for every Parallel call and terminates it
    after; starting workers each time would cost more than many calls
    take.  So a finished call's pool is kept (one at most), and the next
    call with the same size and options takes it back.  It is closed at
    exit, or when a call needs another size.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: tuple[Any, Pool] | None = None   # (key, Pool) of the last call, or None
        self.busy: dict[int, Any] = {}      # id(pool) -> key, of pools lent to a call
        # Stopped at exit before multiprocessing joins its children; a fork
        # child forgets the parent's pool (the parent's to stop, not its).
        lifecycle.at_exit(self.close, lifecycle.STOP_WORKERS + 1)
        lifecycle.at_fork(after_in_child=self._forget_all)

    def take(self, n_jobs: int, options: dict[str, Any]) -> Pool:
        key = (n_jobs, tuple(sorted(options.items())))
        stale = None
        with self.lock:
            if self.idle is not None:
                if self.idle[0] == key:
                    pool = self.idle[1]
                    self.idle = None
                    self.busy[id(pool)] = key
                    return pool
                stale, self.idle = self.idle[1], None
        if stale is not None:
            stale.terminate()
        pool = Pool(workers=n_jobs, **options)
        with self.lock:
            self.busy[id(pool)] = key
        return pool

    def give_back(self, pool: Pool) -> None:
        with self.lock:
            key = self.busy.pop(id(pool), None)
            if key is not None and self.idle is None:
                self.idle, pool = (key, pool), None     # type: ignore[assignment]
        if pool is not None:                # another call's pool is already kept
            pool.terminate()

    def forget(self, pool: Pool) -> None:
        with self.lock:
            self.busy.pop(id(pool), None)

    def _forget_all(self) -> None:
        self.lock = threading.Lock()
        self.idle, self.busy = None, {}

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, None
        if idle is not None:
            idle[1].terminate()


_warm = _WarmPool()


def _init_worker(env: dict[str, str], initializer: Callable[..., object] | None,
                 initargs: tuple[Any, ...]) -> None:
    """A worker's start: thread limits, then the user's initializer."""
    os.environ.update(env)          # for libraries this worker has not loaded yet
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass                        # a fork worker's already-loaded BLAS keeps its threads
    else:
        global _thread_limits       # kept: the limits hold while the object lives
        _thread_limits = threadpool_limits(limits=int(env["OMP_NUM_THREADS"]))
    if initializer is not None:
        initializer(*initargs)


_thread_limits: Any = None


def _in_shmproc_worker() -> bool:
    # A pool worker's multiprocessing process is named by the pool.
    import multiprocessing as mp
    return mp.current_process().name.startswith(_WORKER_NAME_PREFIX)


_WORKER_NAME_PREFIX = "shmproc:pool-worker-"


def shutdown() -> None:
    """Stop the workers kept warm between Parallel calls (also done at exit);
    the next call starts new ones."""
    _warm.close()


def register(name: str = BACKEND_NAME, make_default: bool = False) -> None:
    """Register the backend with joblib as `name` (done once on import)."""
    joblib.register_parallel_backend(name, ShmprocBackend, make_default=make_default)


register()
