"""A timeline as Trace Event Format JSON, the format Perfetto and chrome://tracing open.

    {"traceEvents": [ metadata events..., one "X" event per span... ],
     "displayTimeUnit": "ms", "otherData": {...}}

- One track per worker: every span is a complete event (``"ph": "X"``) on
  thread ``tid = worker`` of one process (``pid`` 1), with ``ts`` and
  ``dur`` in microseconds since the timeline's origin, ``name`` = the
  span's label and ``args`` = ``{"ok", "pid"}`` (and ``"lap"`` for a
  Process section). Failed spans get the colour name ``"terrible"``.
- Metadata events (``"ph": "M"``) name the process ("shmproc pool" or
  "shmproc process") and each worker's track ("worker N"), and keep the
  tracks in slot order. A worker that ran nothing still gets its track.
- ``otherData`` carries the timeline's kind, workers, window, origin and
  how many spans were dropped.

The events are written in chunks, each encoded by json's C encoder: a
million spans make a ~150 MB file in a few seconds without first building
one string of that size.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from .span import Span

__all__ = ["metadata_events", "span_events", "write_trace"]

TRACE_PID = 1              # the one (synthetic) process that holds the worker tracks
FAILED_COLOUR = "terrible"  # a reserved colour name of the trace viewers: red
_CHUNK = 50_000            # events per json.dumps call


def metadata_events(*, workers: int, kind: str) -> list[dict[str, Any]]:
    """Name the process and one track per worker, in slot order."""
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": TRACE_PID, "tid": 0, "args": {"name": f"shmproc {kind}"}}]
    for worker in range(workers):
        events.append({"name": "thread_name", "ph": "M", "pid": TRACE_PID, "tid": worker,
                       "args": {"name": f"worker {worker}"}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": TRACE_PID, "tid": worker,
                       "args": {"sort_index": worker}})
    return events


def span_events(spans: Sequence[Span], *, kind: str) -> Iterator[dict[str, Any]]:
    """One complete ("X") event per span, times in microseconds."""
    category = "section" if kind == "process" else "task"
    for span in spans:
        args: dict[str, Any] = {"ok": span.ok, "pid": span.pid}
        if span.lap is not None:
            args["lap"] = span.lap
        event: dict[str, Any] = {"name": span.label, "cat": category, "ph": "X",
                                 "ts": round(span.start * 1e6, 3),
                                 "dur": round((span.end - span.start) * 1e6, 3),
                                 "pid": TRACE_PID, "tid": span.worker, "args": args}
        if not span.ok:
            event["cname"] = FAILED_COLOUR
        yield event


def write_trace(file: BinaryIO, spans: Sequence[Span], *, workers: int, kind: str, origin: float,
                window: tuple[float, float], dropped: int) -> None:
    """Write the whole trace document to ``file``."""
    file.write(b'{"traceEvents":[')
    file.write(_encode(metadata_events(workers=workers, kind=kind)))
    chunk: list[dict[str, Any]] = []
    for event in span_events(spans, kind=kind):
        chunk.append(event)
        if len(chunk) == _CHUNK:
            file.write(b"," + _encode(chunk))
            chunk = []
    if chunk:
        file.write(b"," + _encode(chunk))
    other = {"kind": kind, "workers": workers, "window_seconds": list(window),
             "origin_monotonic_seconds": origin, "dropped_spans": dropped}
    file.write(b'],"displayTimeUnit":"ms","otherData":' + json.dumps(other).encode() + b"}")


def _encode(events: list[dict[str, Any]]) -> bytes:
    # A list's JSON without its brackets: the elements, comma-separated.
    return json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode("utf-8")[1:-1]
