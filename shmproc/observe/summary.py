"""What a timeline adds up to: busy, idle and dispatch time per worker and for the pool.

Every time figure is measured inside the timeline's *window* (start, end),
in seconds, per worker row:

    window   |<------------------------------------------------------------------------>|
    worker 0 |   lead   [ task ]  gap  [ task ][ task ]  gap  [ task ]       tail       |
                        ^^^^^^^^       ^^^^^^^^^^^^^^^^       ^^^^^^^^
                        busy: the union of the worker's spans (overlaps count once)
    idle              = window - busy           = lead + dispatch overhead + tail
    dispatch overhead = the gaps between one task's end and the next one's start

A gap is time the worker spent between two of its tasks: handing back a
result, taking the next task, and waiting when no task was queued yet.
Lead and tail (before the first task, after the last) are idle but are not
dispatch overhead: there the worker had nothing to do at all.

Spans that lie wholly outside the window are left out of every figure,
counts included; spans that cross its edge count, cut to the window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .span import Span, Total

__all__ = ["WorkerSummary", "TimelineSummary", "summarize", "format_seconds", "counted"]


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """One worker's row of a :class:`TimelineSummary` (times in seconds, inside the window)."""

    worker: int                 # the worker slot
    tasks: int                  # spans of this worker in the window (a Process: sections)
    failed: int                 # of which ok=False
    busy: float                 # seconds covered by at least one span
    busy_fraction: float        # busy / window length (0.0 for an empty window)
    idle: float                 # window length - busy: lead + dispatch_overhead + tail
    dispatch_overhead: float    # seconds between consecutive tasks of this worker
    longest: Span | None        # the longest span (the earliest of equals); None without tasks


@dataclass(frozen=True, slots=True)
class TimelineSummary:
    """The figures of a whole timeline; ``str()`` renders them as a table.

    Pool-level figures: ``busy_fraction`` is the mean of the workers'
    busy fractions (a worker that ran nothing counts, as 0); ``busy``,
    ``idle`` and ``dispatch_overhead`` are sums over the workers, in
    worker-seconds, so ``busy + idle == workers * window length``.
    """

    kind: str                               # "pool" or "process"
    window: tuple[float, float]             # (start, end), seconds since the timeline's origin
    per_worker: tuple[WorkerSummary, ...]   # one row per worker slot, in slot order
    tasks: int
    failed: int
    busy: float
    busy_fraction: float
    idle: float
    dispatch_overhead: float
    longest: Span | None
    dropped: int                            # spans lost to the bounded trace areas (oldest first)
    totals: tuple[tuple[str, Total], ...] = ()   # per label over the whole run (Timeline.totals)

    @property
    def headline(self) -> str:
        """One line: tasks, failures, workers, window and busy percentage."""
        noun = "section" if self.kind == "process" else "task"
        workers = len(self.per_worker)
        text = (f"{counted(self.tasks, noun)}, {self.failed:,} failed, on {counted(workers, 'worker')} "
                f"over {format_seconds(self.window[1] - self.window[0])}: busy {self.busy_fraction:.1%}")
        if self.dropped:
            text += f" ({self.dropped:,} oldest spans dropped)"
        return text

    def __str__(self) -> str:
        noun = "sections" if self.kind == "process" else "tasks"
        lines = [f"{self.kind} timeline: {self.headline}"]
        if self.longest is not None:
            longest = (f"; longest: {_shorten(self.longest.label)} {format_seconds(self.longest.duration)} "
                       f"on worker {self.longest.worker}")
        else:
            longest = ""
        lines.append(f"idle {format_seconds(self.idle)}, of which dispatch overhead "
                     f"{format_seconds(self.dispatch_overhead)}{longest}")
        header = ("worker", noun, "failed", "busy", "busy %", "idle", "dispatch", "longest")
        rows = [header] + [_row(w) for w in self.per_worker]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines.append("")
        for row in rows:
            cells = [cell.rjust(width) for cell, width in zip(row, widths)]
            lines.append("  ".join(cells + [row[-1]]).rstrip())
        if self.totals:
            lines.append("")
            lines.append("over the whole run (dropped spans included):")
            width = max(len(label) for label, _ in self.totals)
            for label, total in self.totals:
                failed = f", {total.failed:,} failed" if total.failed else ""
                lines.append(f"  {label.ljust(width)}  {total.count:,} x {format_seconds(total.mean)}"
                             f" = {format_seconds(total.seconds)}{failed}")
        return "\n".join(lines)


def summarize(spans: Sequence[Span], *, workers: int, window: tuple[float, float], dropped: int,
              kind: str, totals: tuple[tuple[str, Total], ...] = ()) -> TimelineSummary:
    """The summary of ``spans``, which must be sorted by start time."""
    by_worker: list[list[Span]] = [[] for _ in range(workers)]
    for span in spans:
        by_worker[span.worker].append(span)
    rows = tuple(_worker_summary(worker, mine, window) for worker, mine in enumerate(by_worker))
    longest: Span | None = None
    for row in rows:
        if row.longest is not None and (longest is None or row.longest.duration > longest.duration):
            longest = row.longest
    return TimelineSummary(
        kind=kind, window=window, per_worker=rows,
        tasks=sum(r.tasks for r in rows), failed=sum(r.failed for r in rows),
        busy=sum(r.busy for r in rows),
        busy_fraction=sum(r.busy_fraction for r in rows) / len(rows) if rows else 0.0,
        idle=sum(r.idle for r in rows), dispatch_overhead=sum(r.dispatch_overhead for r in rows),
        longest=longest, dropped=dropped, totals=totals)


def _worker_summary(worker: int, spans: Sequence[Span], window: tuple[float, float]) -> WorkerSummary:
    # One pass over the worker's spans in start order, merging them into
    # runs of busy time: a span that starts after the current run ends
    # closes it (its length is busy, the distance to the new span a gap).
    low, high = window
    tasks = failed = 0
    busy = gaps = 0.0
    longest: Span | None = None
    run_start = run_end = 0.0
    in_run = False
    for span in spans:
        start = span.start if span.start > low else low
        end = span.end if span.end < high else high
        # Outside the window, or only touching its edge.
        if not (start < end or (start == end and span.start == span.end)):
            continue
        tasks += 1
        failed += not span.ok
        if longest is None or span.duration > longest.duration:
            longest = span
        if not in_run:
            run_start, run_end, in_run = start, end, True
        elif start > run_end:
            busy += run_end - run_start
            gaps += start - run_end
            run_start, run_end = start, end
        elif end > run_end:
            run_end = end
    if in_run:
        busy += run_end - run_start
    length = high - low
    return WorkerSummary(worker=worker, tasks=tasks, failed=failed, busy=busy,
                         busy_fraction=min(busy / length, 1.0) if length > 0 else 0.0,
                         idle=max(length - busy, 0.0), dispatch_overhead=gaps, longest=longest)


def _row(w: WorkerSummary) -> tuple[str, ...]:
    longest = "-" if w.longest is None else f"{_shorten(w.longest.label)} {format_seconds(w.longest.duration)}"
    return (str(w.worker), str(w.tasks), str(w.failed), format_seconds(w.busy), f"{w.busy_fraction:.1%}",
            format_seconds(w.idle), format_seconds(w.dispatch_overhead), longest)


def format_seconds(seconds: float) -> str:
    """A duration in the unit that reads best: ``0.52 s``, ``12.3 ms``, ``4.0 µs``."""
    size = abs(seconds)
    if size == 0:
        return "0 s"
    if size >= 0.1:
        return f"{seconds:.2f} s"
    if size >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    if size >= 1e-6:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e9:.0f} ns"


def counted(n: int, noun: str) -> str:
    """``1 task``, ``2 tasks``, ``1,000,000 tasks``."""
    return f"{n} {noun}" if n == 1 else f"{n:,} {noun}s"


def _shorten(label: str, width: int = 24) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"
