"""Timeline: every span one pool (or one Process) recorded, sorted, summarised, drawn.

``pool.timeline()`` and ``process.timeline()`` build one from the trace
areas the workers fill in shared memory; it holds plain Python objects
only, so it outlives the pool, pickles, and can be built by hand::

    Timeline([Span(0, 0.0, 0.5, "work", True)], workers=1, origin=time.monotonic())

What its summary's figures mean (busy, idle, dispatch overhead) is drawn
at the top of summary.py.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from operator import attrgetter
from pathlib import Path

from .chrome_trace import write_trace
from .files import destination, write_whole
from .span import Span, Total
from .summary import TimelineSummary, counted, format_seconds, summarize

__all__ = ["Span", "Timeline", "KINDS"]

#: What a timeline can describe: a pool's workers, or one Process's sections.
KINDS = ("pool", "process")

_ORDER = attrgetter("start", "worker")


class Timeline:
    """The spans of one pool or Process, sorted by (start, worker).

    ``workers``: how many worker rows (slots 0..workers-1; 1 for a Process).
    ``origin``: the ``time.monotonic()`` reading, in seconds, that span
    times count from. ``window``: the (start, end) seconds over which the
    summary measures busy and idle time and the plot's x axis; by default
    from 0 (or the earliest start, if earlier) to the latest end, except
    when spans were dropped: then from the latest of the workers' first
    recorded starts, so lost history does not read as idle time.
    ``dropped``: how many of the oldest spans the bounded trace areas
    overwrote, so are missing here.
    ``kind``: "pool", or "process" for a Process's hook sections.
    ``totals``: per label, its count and time over the whole run, dropped
    spans included (a Process's hooks over every lap); empty if unknown.

    ``len()`` and iteration go over the spans.
    """

    __slots__ = ("_spans", "_workers", "_origin", "_window", "_dropped", "_kind", "_totals",
                 "_summary")

    def __init__(self, spans: Iterable[Span], *, workers: int, origin: float,
                 window: tuple[float, float] | None = None, dropped: int = 0, kind: str = "pool",
                 totals: Mapping[str, Total] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        _check_count("workers", workers)
        _check_count("dropped", dropped)
        if not math.isfinite(origin):
            raise ValueError(f"origin must be a finite time.monotonic() reading, got {origin!r}")
        items = list(spans)
        for span in items:
            if not isinstance(span, Span):
                raise TypeError(f"a Timeline holds Span objects, got {type(span).__name__}: {span!r}")
            if span.worker >= workers:
                raise ValueError(f"{span!r} is on worker {span.worker}, but the timeline has "
                                 f"{workers} worker slot(s) (0..{workers - 1})")
        items.sort(key=_ORDER)
        self._spans: tuple[Span, ...] = tuple(items)
        self._workers = workers
        self._origin = float(origin)
        self._window = _checked_window(window) if window is not None else _default_window(self._spans, dropped)
        self._dropped = dropped
        self._kind = kind
        self._totals = dict(totals or {})
        for label, total in self._totals.items():
            if not isinstance(total, Total):
                raise TypeError(f"totals map labels to Total objects, got {type(total).__name__} "
                                f"for {label!r}")
        self._summary: TimelineSummary | None = None

    @property
    def spans(self) -> tuple[Span, ...]:
        """Every recorded span, sorted by (start, worker)."""
        return self._spans

    @property
    def workers(self) -> int:
        """How many worker rows the timeline has (slots 0..workers-1)."""
        return self._workers

    @property
    def origin(self) -> float:
        """The ``time.monotonic()`` reading (seconds) that span times count from."""
        return self._origin

    @property
    def window(self) -> tuple[float, float]:
        """(start, end), seconds since origin, over which the summary measures time."""
        return self._window

    @property
    def dropped(self) -> int:
        """How many spans the bounded trace areas overwrote (oldest first): missing here."""
        return self._dropped

    @property
    def kind(self) -> str:
        """"pool", or "process" for the hook sections of one Process."""
        return self._kind

    @property
    def totals(self) -> dict[str, Total]:
        """Per label: count, seconds and failures over the whole run, dropped
        spans included (a Process's hooks over every lap); {} if not known."""
        return dict(self._totals)

    def __len__(self) -> int:
        return len(self._spans)

    def __iter__(self) -> Iterator[Span]:
        return iter(self._spans)

    def __repr__(self) -> str:
        length = format_seconds(self._window[1] - self._window[0])
        count = len(self._spans)
        if self._kind == "process":
            return (f"<Timeline of a process: {counted(count, 'section')} over {length}, "
                    f"{self._dropped} dropped>")
        return (f"<Timeline: {counted(count, 'span')} on {counted(self._workers, 'worker')} over {length}, "
                f"{self._dropped} dropped>")

    def summary(self) -> TimelineSummary:
        """Per-worker and pool-level figures: tasks, failures, busy, idle, dispatch overhead.

        ``str()`` of the result is a plain-text table. The definitions are
        drawn at the top of shmproc/observe/summary.py and explained in
        docs/observability.md.
        """
        if self._summary is None:
            self._summary = summarize(self._spans, workers=self._workers, window=self._window,
                                      dropped=self._dropped, kind=self._kind,
                                      totals=tuple(self._totals.items()))
        return self._summary

    def to_chrome_trace(self, path: str | os.PathLike[str]) -> Path:
        """Write the timeline as Trace Event Format JSON; return the path written.

        Open it in Perfetto (https://ui.perfetto.dev, "Open trace file") or
        chrome://tracing ("Load"): one track per worker, one slice per
        span, failed ones in red. The file appears whole or not at all; an
        unwritable path raises an OSError that names it.
        """
        what = "the Chrome trace"
        target = destination(path, what)
        return write_whole(target, what, lambda file: write_trace(
            file, self._spans, workers=self._workers, kind=self._kind, origin=self._origin,
            window=self._window, dropped=self._dropped))

    def plot(self, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
        """Write a PNG Gantt chart of the workers; return the path written.

        One row per worker, one bar per span coloured by label, failed
        spans in red; the title carries the summary's headline (above it,
        ``title`` if given). Needs matplotlib (``pip install "shmproc[plot]"``):
        ImportError without it. Draws with the Agg canvas directly, so the
        user's matplotlib backend and pyplot state are left alone.
        """
        from . import plot as gantt

        gantt.require_matplotlib()
        what = "the timeline plot"
        target = destination(path, what)
        figure = gantt.draw(self._spans, workers=self._workers, kind=self._kind, window=self._window,
                            headline=self.summary().headline, title=title)
        return write_whole(target, what, lambda file: gantt.save_png(figure, file))


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def _checked_window(window: tuple[float, float]) -> tuple[float, float]:
    try:
        start, end = (float(x) for x in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be (start, end) in seconds, got {window!r}") from None
    if not -math.inf < start <= end < math.inf:
        raise ValueError(f"window must be finite with start <= end, got {window!r}")
    return (start, end)


def _default_window(spans: tuple[Span, ...], dropped: int) -> tuple[float, float]:
    if not spans:
        return (0.0, 0.0)
    end = max(span.end for span in spans)
    if dropped:
        # The trace areas lost their oldest spans, so the early part of the
        # run would look idle: start where every worker that recorded
        # anything still has its record, the latest of their first starts.
        first: dict[int, float] = {}
        for span in spans:                  # sorted by start: the first seen is the earliest
            first.setdefault(span.worker, span.start)
        return (max(first.values()), end)
    # spans are sorted by start: the first starts earliest.
    return (min(0.0, spans[0].start), end)
