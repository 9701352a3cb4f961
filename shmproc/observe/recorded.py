"""Timelines from what the workers recorded in shared memory.

The engines hand over raw spans (csrc/trace.c: nanoseconds on the
monotonic clock, integer labels); this turns them into a `Timeline`:
seconds since the pool's (or run's) start, names for labels.
"""
from __future__ import annotations

from typing import Iterable

from ..common.outcome import HOOKS, SECTION_NAMES
from .span import Span
from .timeline import Timeline

__all__ = ["pool_timeline", "process_timeline"]

_NS = 1e-9


def pool_timeline(*, spans: Iterable[tuple[int, int, int, str, bool, int]], workers: int,
                  lost: int, origin_ns: int, end_ns: int) -> Timeline:
    """spans: (worker slot, start_ns, end_ns, label, ok, pid), complete ones."""
    return Timeline(
        [Span(worker, (start - origin_ns) * _NS, (end - origin_ns) * _NS, label, ok, pid)
         for worker, start, end, label, ok, pid in spans],
        workers=workers, origin=origin_ns * _NS, window=_window(lost, origin_ns, end_ns),
        dropped=lost, kind="pool")


def process_timeline(spans: Iterable[tuple[int, int, int, int, int, int]], *, lost: int,
                     origin_ns: int, end_ns: int) -> Timeline:
    """spans: (start_ns, end_ns, section, flags, pid, lap) of one run; open
    ones (end_ns 0: the section running now) are left out."""
    out = []
    for start, end, section, flags, pid, lap in spans:
        if end == 0:
            continue
        name = SECTION_NAMES.get(section)
        label = HOOKS.get(name, f"section {section}") if name else f"section {section}"
        out.append(Span(0, (start - origin_ns) * _NS, (end - origin_ns) * _NS, label,
                        not flags, pid, lap))
    return Timeline(out, workers=1, origin=origin_ns * _NS,
                    window=_window(lost, origin_ns, end_ns), dropped=lost, kind="process")


def _window(lost: int, origin_ns: int, end_ns: int) -> tuple[float, float] | None:
    """From the start to the end (or now); with spans lost to the bounded
    rings, Timeline's own default (the part every worker's record covers),
    so that lost history does not count as idle time."""
    return None if lost else (0.0, max(0, end_ns - origin_ns) * _NS)
