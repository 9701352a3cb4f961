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
from typing import TYPE_CHECKING

from .common.errors import (CorruptSharedMemoryError, ForeignSharedMemoryError, SharedMemoryError,
                     SharedMemoryVersionError, ShmprocError)

if TYPE_CHECKING:
    # What __getattr__ below loads on first use, spelled out for type
    # checkers (shmproc ships py.typed); never imported at run time.
    from . import circuit as circuit, docs as docs, processing as processing, sktime as sktime
    from .backends.base import Backend as Backend
    from .backends.local.run import LocalBackend as LocalBackend
    from .channels.joinable import JoinableQueue as JoinableQueue
    from .channels.queue import Queue as Queue
    from .channels.simple import SimpleQueue as SimpleQueue
    from .common.errors import (
        ClusterUnreachable as ClusterUnreachable, InitializerError as InitializerError,
        LostRecord as LostRecord, MessageBacklogError as MessageBacklogError,
        NotRunningError as NotRunningError, RayNotInstalled as RayNotInstalled,
        ResourcesUnavailable as ResourcesUnavailable, SerializationError as SerializationError,
    )
    from .executor import (Executor as Executor, ProcessPoolExecutor as ProcessPoolExecutor,
                           WorkerCrashedError as WorkerCrashedError)
    from .pool import (AsyncResult as AsyncResult, MapResult as MapResult, Pool as Pool,
                       Progress as Progress, Task as Task)
    from .processing import (
        MainLoopError as MainLoopError, OnFinishError as OnFinishError,
        PostLoopError as PostLoopError, PreloopError as PreloopError, Process as Process,
        ProcessConfig as ProcessConfig, ProcessCrashedError as ProcessCrashedError,
        ProcessError as ProcessError, ProcessTimers as ProcessTimers, ResultError as ResultError,
        TimeoutConfig as TimeoutConfig, TimeoutError as TimeoutError, timesection as timesection,
    )
    from .observe import Span as Span, Timeline as Timeline
    from .ray_backend import RayBackend as RayBackend
    from .wire.shared import SharedArray as SharedArray, empty_shared as empty_shared, share as share

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


if not TYPE_CHECKING:     # a module __getattr__ would make every name valid to a type checker
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


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
