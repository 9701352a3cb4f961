"""The exceptions of the native layer and the queue.

The engine's errors (ProcessError and the section errors) derive from
ShmprocError too, so one ``except shmproc.ShmprocError`` catches anything
the library raises on its own behalf.
"""


class ShmprocError(Exception):
    """Base class of every error shmproc raises for its own reasons."""


class SharedMemoryError(ShmprocError, OSError):
    """Shared memory could not be created, reserved or mapped."""


class CorruptSharedMemoryError(SharedMemoryError):
    """A shared header or record failed its checks.

    The segment was written by something other than this version of
    shmproc, or was damaged; nothing was mapped or consumed from it.
    """
