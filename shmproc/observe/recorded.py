"""Timelines from what the workers recorded in shared memory.

The engines hand over raw spans (csrc/trace.c: nanoseconds on the
monotonic clock, integer labels); this turns them into a `Timeline`:
seconds since the pool's (or run's) start, names for labels.
"""
from __future__ import annotations

from typing import Iterable

from ..common.outcome import HOOKS, SECTION_NAMES
from .span import Span, Total
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
                     origin_ns: int, end_ns: int,
                     tallies: Iterable[tuple[int, int, int]]) -> Timeline:
    """spans: (start_ns, end_ns, section, flags, pid, lap) of one run; open
    ones (end_ns 0: the section running now) are left out.  tallies:
    (count, total_ns, failed) per section id over the whole run."""
    out = []
    for start, end, section, flags, pid, lap in spans:
        if end == 0:
            continue
        out.append(Span(0, (start - origin_ns) * _NS, (end - origin_ns) * _NS, _hook(section),
                        not flags, pid, lap))
    totals = {_hook(section): Total(count, total_ns * _NS, failed)
              for section, (count, total_ns, failed) in enumerate(tallies) if count}
    return Timeline(out, workers=1, origin=origin_ns * _NS,
                    window=_window(lost, origin_ns, end_ns), dropped=lost, kind="process",
                    totals=totals)


def _hook(section: int) -> str:
    name = SECTION_NAMES.get(section)
    return HOOKS.get(name, f"section {section}") if name else f"section {section}"


def _window(lost: int, origin_ns: int, end_ns: int) -> tuple[float, float] | None:
    """From the start to the end (or now); with spans lost to the bounded
    rings, Timeline's own default (the part every worker's record covers),
    so that lost history does not count as idle time."""
    return None if lost else (0.0, max(0, end_ns - origin_ns) * _NS)
