"""The wire layer: how values travel between processes.

    pickling   pickle protocol 5 (cloudpickle where needed), unpicklable-part finder
    blobs      large buffers out-of-band, each in its own shared segment
    arenas     reusable sparse segments for Process state and results
    transfer   the record a Process's state or result is written as in an arena
    taskwire   the pool's task and result records
    detach     detach(value): copy a result's shared-memory buffers out
"""
from ..common.errors import SerializationError  # documented as shmproc.wire.SerializationError
from .detach import detach

__all__ = ["SerializationError", "detach"]
