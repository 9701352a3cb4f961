"""shmproc — class-based multiprocessing on lock-free shared-memory rings.

    user code      Process (start/wait/stop/result)     Queue.put/get
                         │
    wire           pickle protocol 5 (cloudpickle where needed); large
                   buffers out-of-band in their own shared segments
                         │
    native         shmproc.native: the only module that calls the C core
                         │
    csrc/ (C11)    segment · ring · control block · wait/wake · clock

Importing shmproc is cheap: the native library, numpy and cloudpickle load
only when something that needs them is first used.
"""
from .errors import (CorruptSharedMemoryError, ForeignSharedMemoryError, SharedMemoryError,
                     SharedMemoryVersionError, ShmprocError)

__version__ = "0.1.0"

_PROCESSING = (
    "Process", "ProcessConfig", "TimeoutConfig", "ProcessTimers", "timesection",
    "ProcessError", "PreloopError", "MainLoopError", "PostLoopError", "OnFinishError",
    "ResultError", "TimeoutError", "ProcessCrashedError",
)

__all__ = [
    "Queue", "Pool", "Task", "Progress", "Backend", "LocalBackend", "RayBackend", "ShmprocError", "SharedMemoryError", "CorruptSharedMemoryError",
    "SharedMemoryVersionError", "ForeignSharedMemoryError",
    "sktime", "circuit", "docs", "processing", *_PROCESSING,
]

_LAZY = {"Queue": ("shmproc.queue", "Queue"), "Pool": ("shmproc.pool", "Pool"),
         "Task": ("shmproc.pool", "Task"), "Progress": ("shmproc.pool", "Progress"),
         "Backend": ("shmproc.backends", "Backend"),
         "LocalBackend": ("shmproc.local_backend", "LocalBackend"),
         # Importing the Ray backend does not import Ray: that waits for first use.
         "RayBackend": ("shmproc.ray_backend", "RayBackend")}
_LAZY.update({name: ("shmproc.processing", name) for name in _PROCESSING})


def __getattr__(name):
    # PEP 562: load heavy pieces on first use, keep `import shmproc` light.
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in ("sktime", "circuit", "docs", "native", "wire", "queue", "errors", "processing", "pool",
                "backends"):
        return importlib.import_module(f"shmproc.{name}")
    raise AttributeError(f"module 'shmproc' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
