"""Span: what one worker did from one moment to another."""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Span", "Total"]


@dataclass(frozen=True, slots=True)
class Span:
    """One task of a pool (or one hook section of a Process) on one worker.

    Times are seconds since the timeline's ``origin`` (the pool's or the
    Process's start, on the ``time.monotonic()`` clock).
    """

    worker: int               # pool worker slot 0..workers-1 (a replacement keeps its slot); 0 for a Process
    start: float              # seconds since Timeline.origin
    end: float                # seconds since Timeline.origin, >= start
    label: str                # the task function's __qualname__; a Process's hook name ("__loop__")
    ok: bool                  # False: the task raised, timed out, or its worker crashed under it
    pid: int = 0              # OS pid of the worker process that ran it (0: unknown)
    lap: int | None = None    # a Process section's lap number; None for pool tasks

    def __post_init__(self) -> None:
        # Written so that NaN fails too (every comparison with NaN is false).
        if not -math.inf < self.start <= self.end < math.inf:
            raise ValueError(f"a span needs finite times with start <= end, got start={self.start!r}, "
                             f"end={self.end!r} ({self.label!r} on worker {self.worker})")
        if self.worker < 0:
            raise ValueError(f"worker must be a slot number >= 0, got {self.worker!r} ({self.label!r})")

    @property
    def duration(self) -> float:
        """``end - start``, in seconds."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Total:
    """One label's spans over a whole run, dropped ones included: a
    Process's hook counts and time over every lap (Timeline.totals)."""

    count: int                # spans ended with this label
    seconds: float            # their summed duration
    failed: int = 0           # of which failed

    @property
    def mean(self) -> float:
        """Seconds per span (0.0 when there were none)."""
        return self.seconds / self.count if self.count else 0.0
