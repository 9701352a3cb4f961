"""shmproc — class-based multiprocessing on lock-free shared-memory rings.

    user code      Queue.put/get            (Process, Pool: coming in the engine)
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
from .errors import CorruptSharedMemoryError, SharedMemoryError, ShmprocError

__version__ = "0.1.0"

__all__ = [
    "Queue", "ShmprocError", "SharedMemoryError", "CorruptSharedMemoryError",
    "sktime", "circuit", "docs",
]

_LAZY = {
    "Queue": ("shmproc.queue", "Queue"),
}


def __getattr__(name):
    # PEP 562: load heavy pieces on first use, keep `import shmproc` light.
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in ("sktime", "circuit", "docs", "native", "wire", "queue", "errors"):
        return importlib.import_module(f"shmproc.{name}")
    raise AttributeError(f"module 'shmproc' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
