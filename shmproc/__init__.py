"""shmproc — class-based multiprocessing on lock-free shared-memory rings.

    faces        process, pool, processing, ray_backend (what users import)
    backends/    where work runs: local/ (this machine), ray/ (a cluster)
    jobs/        the one job engine both pools use: tasks, jobs, ordering
    runtime/     the worker side: lifecycle, sections, watchdog, pool worker
    channels/    Queue, JoinableQueue, SimpleQueue: multiprocessing's, on shared-memory rings
    wire/        pickling, out-of-band buffers, arenas, task records
    _native/     the only caller of the compiled C core (csrc/)
    common/      errors, outcome words, validators, config, exit/fork hooks

Each layer imports only the ones below it (tests/test_architecture.py).

Importing shmproc is cheap: the native library, numpy and cloudpickle load
only when something that needs them is first used.
"""
from .common.errors import (CorruptSharedMemoryError, ForeignSharedMemoryError, SharedMemoryError,
                     SharedMemoryVersionError, ShmprocError)

__version__ = "0.1.0"

_PROCESSING = (
    "Process", "ProcessConfig", "TimeoutConfig", "ProcessTimers", "timesection",
    "ProcessError", "PreloopError", "MainLoopError", "PostLoopError", "OnFinishError",
    "ResultError", "TimeoutError", "ProcessCrashedError",
)

#: Errors raised for shmproc's own reasons beyond the Process ones, all ShmprocErrors.
_ERRORS = ("SerializationError", "LostRecord", "InitializerError", "RayNotInstalled", "ClusterUnreachable",
           "ResourcesUnavailable", "NotRunningError", "MessageBacklogError")

__all__ = [
    "Queue", "JoinableQueue", "SimpleQueue", "Pool", "Task", "Progress", "AsyncResult", "MapResult", "Executor",
    "ProcessPoolExecutor", "WorkerCrashedError", "share", "SharedArray", "empty_shared", "Backend", "LocalBackend", "RayBackend", "ShmprocError", "SharedMemoryError", "CorruptSharedMemoryError",
    "SharedMemoryVersionError", "ForeignSharedMemoryError", "Timeline", "Span",
    "sktime", "circuit", "docs", "processing", *_PROCESSING, *_ERRORS,
]
# `from shmproc import *` must not shadow the builtin TimeoutError: shmproc's
# (a subclass of it) stays reachable as shmproc.TimeoutError.
__all__.remove("TimeoutError")

_LAZY = {"Queue": ("shmproc.channels.queue", "Queue"),
         "JoinableQueue": ("shmproc.channels.joinable", "JoinableQueue"),
         "SimpleQueue": ("shmproc.channels.simple", "SimpleQueue"), "Pool": ("shmproc.pool", "Pool"),
         "Task": ("shmproc.pool", "Task"), "Progress": ("shmproc.pool", "Progress"),
         "AsyncResult": ("shmproc.pool", "AsyncResult"), "MapResult": ("shmproc.pool", "MapResult"),
         "Executor": ("shmproc.executor", "Executor"),
         "ProcessPoolExecutor": ("shmproc.executor", "ProcessPoolExecutor"),
         "WorkerCrashedError": ("shmproc.executor", "WorkerCrashedError"),
         "share": ("shmproc.wire.shared", "share"),
         "SharedArray": ("shmproc.wire.shared", "SharedArray"),
         "empty_shared": ("shmproc.wire.shared", "empty_shared"),
         "Backend": ("shmproc.backends.base", "Backend"),
         "LocalBackend": ("shmproc.backends.local.run", "LocalBackend"),
         # Importing the Ray backend does not import Ray: that waits for first use.
         "RayBackend": ("shmproc.ray_backend", "RayBackend"),
         "Timeline": ("shmproc.observe.timeline", "Timeline"),
         "Span": ("shmproc.observe.span", "Span")}
_LAZY.update({name: ("shmproc.common.errors", name) for name in _ERRORS})
_LAZY.update({name: ("shmproc.processing", name) for name in _PROCESSING})


def __getattr__(name):
    # PEP 562: load heavy pieces on first use, keep `import shmproc` light.
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in ("sktime", "circuit", "docs", "processing", "pool", "process", "ray_backend",
                "wire", "common", "jobs", "runtime", "channels", "backends"):
        return importlib.import_module(f"shmproc.{name}")
    raise AttributeError(f"module 'shmproc' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
