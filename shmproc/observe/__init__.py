"""See what the workers did: timelines of a pool's tasks or a Process's sections.

    span.py          Span: one task (or one Process section) on one worker, start to end;
                     Total: one label's count and time over a whole run
    timeline.py      Timeline: the spans of one pool or Process, sorted, with a summary
    summary.py       busy, idle and dispatch time per worker and for the pool
    chrome_trace.py  the Trace Event Format JSON that Perfetto and chrome://tracing open
    plot.py          a PNG Gantt chart, one row per worker (needs matplotlib)
    files.py         writing a file whole or not at all, with errors that say what to do

``pool.timeline()`` and ``process.timeline()`` build a :class:`Timeline`
from what the workers recorded in shared memory; nothing here touches
processes or shared memory, so a Timeline can also be built by hand from
Span objects. docs/observability.md shows how to read one.
"""
from .span import Span, Total
from .summary import TimelineSummary, WorkerSummary
from .timeline import Timeline

__all__ = ["Span", "Timeline", "TimelineSummary", "Total", "WorkerSummary"]
