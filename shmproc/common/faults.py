"""Named kill points, for the fault-injection tests.

The library marks the steps between which a crash matters (a blob
published but its descriptor not yet put; a record taken but its blob not
yet opened; ...) with ``point("name")``.  Normally that is a no-op.  With
the environment variable ``SHMPROC_KILL_AT=name:n[,name:n...]`` set when
shmproc is imported, the process SIGKILLs itself the n-th time it reaches
that step, so tests can kill a producer, consumer or worker exactly there
(tests/test_faults.py).  Points sit only on paths that already cost
microseconds (out-of-band items, crash recovery), never on a per-item hot
path.
"""
from __future__ import annotations

import os
import signal

__all__ = ["point", "arm", "POINTS"]

#: Every point the library marks, for tests to iterate over.
POINTS = (
    "queue.blob_written",       # Queue producer: blob published, descriptor not yet on the ring
    "queue.blob_put",           # Queue producer: descriptor on the ring, put() not yet returned
    "queue.record_taken",       # Queue consumer: descriptor off the ring, blob not yet opened
    "blob.claimed",             # any consumer: blob claimed, item not yet rebuilt
    "chain.registered",         # growing Queue: new ring registered, the full one not yet sealed
    "chain.sealed",             # growing Queue: full ring sealed, the new one not yet marked linked
)


def _parse(spec: str) -> dict[str, int]:
    counts = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, n = part.partition(":")
        if name not in POINTS:
            raise ValueError(f"SHMPROC_KILL_AT names an unknown point {name!r}; known: {POINTS}")
        counts[name] = int(n or 1)
    return counts


_armed: dict[str, int] = {}


def point(name: str) -> None:
    """A step between which a crash matters (no-op until armed)."""


def arm(spec: str) -> None:
    """Arm kill points in this process now (a fork child inherits the
    module already imported, so the environment variable comes too late)."""
    global point
    _armed.clear()
    _armed.update(_parse(spec))

    def point(name: str) -> None:       # noqa: F811 - replaces the no-op
        left = _armed.get(name)
        if left is None:
            return
        if left <= 1:
            os.kill(os.getpid(), signal.SIGKILL)
        _armed[name] = left - 1


if os.environ.get("SHMPROC_KILL_AT"):
    arm(os.environ["SHMPROC_KILL_AT"])
