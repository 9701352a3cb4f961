"""Timeline, Span and their summary, Chrome trace and plot, on hand-built spans.

No processes: what the pool and Process record is tested where they record
it; here the figures are checked against numbers worked out by hand.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shmproc
from shmproc.observe import Span, Timeline, TimelineSummary, WorkerSummary
from shmproc.observe import chrome_trace, files

REPO = Path(__file__).resolve().parent.parent


def three_workers() -> Timeline:
    """Worker 0: three tasks with gaps, one failed; worker 1: one long task; worker 2: nothing.

        0   0.5  1   1.5  2        3   3.5  4
    0   [ a  ]       [b!]          [ a  ]
    1       [          c             ]
    2
    """
    spans = [Span(0, 0.0, 1.0, "a", True, pid=10), Span(0, 1.5, 2.0, "b", False, pid=10),
             Span(0, 3.0, 4.0, "a", True, pid=11), Span(1, 0.5, 3.5, "c", True, pid=20)]
    random.Random(1).shuffle(spans)
    return Timeline(spans, workers=3, origin=1000.0)


# ---------------------------------------------------------------------------
# Span and Timeline


def test_span_duration_and_validation():
    assert Span(0, 1.25, 2.0, "work", True).duration == 0.75
    assert Span(0, 1.0, 1.0, "work", True).duration == 0.0
    for start, end in [(2.0, 1.0), (float("nan"), 1.0), (0.0, float("nan")), (0.0, float("inf")),
                       (float("-inf"), 0.0)]:
        with pytest.raises(ValueError, match="start <= end"):
            Span(0, start, end, "work", True)
    with pytest.raises(ValueError, match="worker"):
        Span(-1, 0.0, 1.0, "work", True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Span(0, 0.0, 1.0, "work", True).end = 2.0  # type: ignore[misc]


def test_spans_are_sorted_by_start_then_worker():
    spans = [Span(w, float(t), t + 0.5, "x", True) for t in range(5) for w in (2, 0, 1)]
    shuffled = spans[:]
    random.Random(7).shuffle(shuffled)
    timeline = Timeline(shuffled, workers=3, origin=0.0)
    assert [(s.start, s.worker) for s in timeline.spans] == sorted((s.start, s.worker) for s in spans)
    assert isinstance(timeline.spans, tuple)
    assert len(timeline) == 15
    assert list(timeline) == list(timeline.spans)


def test_timeline_attributes_and_default_window():
    timeline = three_workers()
    assert (timeline.workers, timeline.origin, timeline.dropped, timeline.kind) == (3, 1000.0, 0, "pool")
    assert timeline.window == (0.0, 4.0)
    assert Timeline([], workers=2, origin=0.0).window == (0.0, 0.0)
    # A span before the origin widens the window instead of being cut off.
    assert Timeline([Span(0, -0.5, 1.0, "x", True)], workers=1, origin=0.0).window == (-0.5, 1.0)
    assert Timeline([], workers=1, origin=0.0, window=(1, 2)).window == (1.0, 2.0)


def test_default_window_after_dropped_spans_starts_where_every_record_does():
    # Worker 0's area kept spans from 5 s on, worker 1's from 7 s on: before
    # 7 s, part of the record is gone, and would read as idle time.
    spans = [Span(0, 5.0, 6.0, "x", True), Span(0, 8.0, 9.0, "x", True), Span(1, 7.0, 10.0, "x", True)]
    timeline = Timeline(spans, workers=3, origin=0.0, dropped=40)
    assert timeline.window == (7.0, 10.0)
    assert timeline.summary().per_worker[1].busy_fraction == 1.0
    assert Timeline(spans, workers=3, origin=0.0).window == (0.0, 10.0)        # nothing dropped
    assert Timeline(spans, workers=3, origin=0.0, dropped=40, window=(0, 10)).window == (0.0, 10.0)


def test_timeline_rejects_bad_input():
    span = Span(2, 0.0, 1.0, "x", True)
    with pytest.raises(ValueError, match="worker 2.*2 worker slot"):
        Timeline([span], workers=2, origin=0.0)
    with pytest.raises(TypeError, match="Span objects, got tuple"):
        Timeline([(0, 0.0, 1.0, "x", True)], workers=1, origin=0.0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="kind"):
        Timeline([], workers=1, origin=0.0, kind="thread")
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="workers"):
            Timeline([], workers=bad, origin=0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropped"):
        Timeline([], workers=1, origin=0.0, dropped=-3)
    for window in [(2.0, 1.0), (0.0, float("nan")), (0.0,), "ab"]:
        with pytest.raises(ValueError, match="window"):
            Timeline([], workers=1, origin=0.0, window=window)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="origin"):
        Timeline([], workers=1, origin=float("nan"))


def test_repr():
    assert repr(three_workers()) == "<Timeline: 4 spans on 3 workers over 4.00 s, 0 dropped>"
    one = Timeline([Span(0, 0.0, 0.52, "x", True)], workers=1, origin=0.0, dropped=7)
    assert repr(one) == "<Timeline: 1 span on 1 worker over 0.52 s, 7 dropped>"
    process = Timeline([Span(0, 0.0, 0.01, "__loop__", True, lap=0),
                        Span(0, 0.01, 0.02, "__loop__", True, lap=1)], workers=1, origin=0.0, kind="process")
    assert repr(process) == "<Timeline of a process: 2 sections over 20.0 ms, 0 dropped>"
    assert repr(Timeline([], workers=4, origin=0.0)) == "<Timeline: 0 spans on 4 workers over 0 s, 0 dropped>"


def test_timeline_pickles():
    timeline = three_workers()
    timeline.summary()
    copy = pickle.loads(pickle.dumps(timeline))
    assert copy.spans == timeline.spans and copy.window == timeline.window
    assert copy.summary() == timeline.summary()


def test_exported_lazily_from_shmproc():
    assert shmproc.Timeline is Timeline and shmproc.Span is Span
    assert {"Timeline", "Span"} <= set(shmproc.__all__)
    # Building and summarising a timeline needs neither numpy nor matplotlib.
    code = ("import sys, shmproc; t = shmproc.Timeline([shmproc.Span(0, 0.0, 1.0, 'x', True)], workers=1, "
            "origin=0.0); t.summary(); print(sorted(m for m in ('numpy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# The summary, against figures worked out by hand (see three_workers)


def test_summary_per_worker():
    summary = three_workers().summary()
    assert isinstance(summary, TimelineSummary)
    w0, w1, w2 = summary.per_worker
    assert isinstance(w0, WorkerSummary)
    assert [w.worker for w in summary.per_worker] == [0, 1, 2]
    assert (w0.tasks, w0.failed) == (3, 1)
    assert w0.busy == pytest.approx(2.5)
    assert w0.busy_fraction == pytest.approx(0.625)
    assert w0.idle == pytest.approx(1.5)
    assert w0.dispatch_overhead == pytest.approx(1.5)      # 1.0 -> 1.5 and 2.0 -> 3.0
    assert w0.longest == Span(0, 0.0, 1.0, "a", True, pid=10)  # the earlier of two equals
    assert (w1.tasks, w1.failed, w1.busy, w1.busy_fraction) == (1, 0, 3.0, 0.75)
    assert w1.idle == pytest.approx(1.0)
    assert w1.dispatch_overhead == 0.0                       # idle only before and after its task
    assert w1.longest is not None and w1.longest.label == "c"
    assert (w2.tasks, w2.failed, w2.busy, w2.busy_fraction, w2.idle, w2.dispatch_overhead, w2.longest) == \
        (0, 0, 0.0, 0.0, 4.0, 0.0, None)


def test_summary_pool_figures():
    summary = three_workers().summary()
    assert (summary.tasks, summary.failed, summary.kind, summary.dropped) == (4, 1, "pool", 0)
    assert summary.window == (0.0, 4.0)
    assert summary.busy == pytest.approx(5.5)
    assert summary.busy_fraction == pytest.approx((0.625 + 0.75 + 0.0) / 3)   # idle workers count
    assert summary.idle == pytest.approx(6.5)
    assert summary.busy + summary.idle == pytest.approx(3 * 4.0)
    assert summary.dispatch_overhead == pytest.approx(1.5)
    assert summary.longest is not None and summary.longest.label == "c"


def test_overlapping_spans_are_counted_once():
    spans = [Span(0, 0.0, 2.0, "x", True), Span(0, 1.0, 3.0, "x", True), Span(0, 1.5, 1.8, "x", True),
             Span(0, 5.0, 6.0, "x", True)]
    worker = Timeline(spans, workers=1, origin=0.0).summary().per_worker[0]
    assert worker.tasks == 4
    assert worker.busy == pytest.approx(4.0)             # [0, 3] and [5, 6]
    assert worker.dispatch_overhead == pytest.approx(2.0)
    assert worker.idle == pytest.approx(2.0)
    # However many spans pile up, busy never exceeds the window.
    full = Timeline([Span(0, 0.0, 10.0, "x", True)] * 5, workers=1, origin=0.0).summary()
    assert full.busy_fraction == 1.0 and full.idle == 0.0 and full.busy == 10.0


def test_window_cuts_spans():
    spans = [Span(0, 0.0, 2.0, "x", True), Span(0, 2.5, 5.0, "y", False), Span(0, 3.0, 4.0, "z", True),
             Span(0, 4.0, 5.0, "w", True)]
    worker = Timeline(spans, workers=1, origin=0.0, window=(1.0, 3.0)).summary().per_worker[0]
    assert (worker.tasks, worker.failed) == (2, 1)        # "z" only touches the window's end; "w" is past it
    assert worker.busy == pytest.approx(1.5)              # [1, 2] and [2.5, 3]
    assert worker.dispatch_overhead == pytest.approx(0.5)
    assert worker.idle == pytest.approx(0.5)
    assert worker.busy_fraction == pytest.approx(0.75)
    assert worker.longest is not None and worker.longest.label == "y"   # its whole length counts


def test_empty_timeline_summary():
    for workers in (0, 1, 3):
        summary = Timeline([], workers=workers, origin=0.0).summary()
        assert (summary.tasks, summary.failed, summary.busy, summary.busy_fraction, summary.idle,
                summary.dispatch_overhead, summary.longest) == (0, 0, 0.0, 0.0, 0.0, 0.0, None)
        assert len(summary.per_worker) == workers
        assert "0 tasks" in str(summary)
    # Zero-length spans in a zero-length window: counted, no division by zero.
    points = Timeline([Span(0, 0.0, 0.0, "x", True)], workers=1, origin=0.0).summary()
    assert (points.tasks, points.busy_fraction) == (1, 0.0)


def test_summary_is_computed_once():
    timeline = three_workers()
    assert timeline.summary() is timeline.summary()


def test_summary_table():
    text = str(three_workers().summary())
    lines = text.splitlines()
    assert lines[0] == "pool timeline: 4 tasks, 1 failed, on 3 workers over 4.00 s: busy 45.8%"
    assert lines[1] == "idle 6.50 s, of which dispatch overhead 1.50 s; longest: c 3.00 s on worker 1"
    header = lines[3].split()
    assert header == ["worker", "tasks", "failed", "busy", "busy", "%", "idle", "dispatch", "longest"]
    rows = [line.split() for line in lines[4:]]
    assert rows[0] == ["0", "3", "1", "2.50", "s", "62.5%", "1.50", "s", "1.50", "s", "a", "1.00", "s"]
    assert rows[1][:6] == ["1", "1", "0", "3.00", "s", "75.0%"]
    assert rows[2] == ["2", "0", "0", "0", "s", "0.0%", "4.00", "s", "0", "s", "-"]
    # Columns are right-aligned: every "%" ends under the header's "busy %".
    assert {line.index("%") for line in lines[4:]} == {lines[3].index("busy %") + len("busy %") - 1}
    assert len(rows) == 3


def test_summary_table_of_a_process_and_dropped_spans():
    spans = [Span(0, 0.001 * i, 0.001 * (i + 1), "__loop__", True, lap=i) for i in range(5)]
    summary = Timeline(spans, workers=1, origin=0.0, kind="process", dropped=12).summary()
    text = str(summary)
    assert text.startswith("process timeline: 5 sections, 0 failed, on 1 worker over 5.0 ms: busy 100.0%")
    assert "(12 oldest spans dropped)" in text.splitlines()[0]
    assert text.splitlines()[3].split()[:2] == ["worker", "sections"]
    assert summary.headline in text


# ---------------------------------------------------------------------------
# Chrome trace


def load_trace(path: Path) -> tuple[list[dict], list[dict], dict]:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["displayTimeUnit"] == "ms"
    events = document["traceEvents"]
    return [e for e in events if e["ph"] == "X"], [e for e in events if e["ph"] == "M"], document


def test_chrome_trace_has_one_complete_event_per_span(tmp_path):
    timeline = three_workers()
    written = timeline.to_chrome_trace(str(tmp_path / "trace.json"))
    assert written == tmp_path / "trace.json" and isinstance(written, Path)
    complete, metadata, document = load_trace(written)
    assert len(complete) == len(timeline)
    for event, span in zip(sorted(complete, key=lambda e: (e["ts"], e["tid"])), timeline.spans):
        assert event["name"] == span.label
        assert event["tid"] == span.worker
        assert event["pid"] == complete[0]["pid"]                  # one process, a track per worker
        assert event["ts"] == pytest.approx(span.start * 1e6)
        assert event["dur"] == pytest.approx(span.duration * 1e6)
        assert event["args"] == {"ok": span.ok, "pid": span.pid}
        assert ("cname" in event) == (not span.ok)
    assert [e["cname"] for e in complete if "cname" in e] == ["terrible"]
    names = {(e["name"], e["tid"]): e["args"] for e in metadata}
    assert names[("process_name", 0)] == {"name": "shmproc pool"}
    for worker in range(3):                                        # the idle worker 2 gets its track too
        assert names[("thread_name", worker)] == {"name": f"worker {worker}"}
        assert names[("thread_sort_index", worker)] == {"sort_index": worker}
    assert document["otherData"]["dropped_spans"] == 0
    assert document["otherData"]["origin_monotonic_seconds"] == 1000.0
    assert sorted(os.listdir(tmp_path)) == ["trace.json"]         # no temporary file left


def test_chrome_trace_of_a_process(tmp_path):
    spans = [Span(0, 0.0, 0.001, "__preloop__", True, pid=5, lap=0), Span(0, 0.001, 0.003, "__loop__", True,
             pid=5, lap=0), Span(0, 0.003, 0.004, "__loop__", False, pid=5, lap=1)]
    timeline = Timeline(spans, workers=1, origin=0.0, kind="process", dropped=3)
    complete, metadata, document = load_trace(timeline.to_chrome_trace(tmp_path / "p.json"))
    assert [e["args"] for e in complete] == [{"ok": True, "pid": 5, "lap": 0}, {"ok": True, "pid": 5, "lap": 0},
                                             {"ok": False, "pid": 5, "lap": 1}]
    assert {e["cat"] for e in complete} == {"section"}
    assert {"name": "shmproc process"} in [e["args"] for e in metadata]
    assert document["otherData"]["dropped_spans"] == 3


def test_chrome_trace_written_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(chrome_trace, "_CHUNK", 3)
    spans = [Span(i % 2, i * 0.01, i * 0.01 + 0.005, "tâche \"é\"", i != 4) for i in range(10)]
    complete, _, _ = load_trace(Timeline(spans, workers=2, origin=0.0).to_chrome_trace(tmp_path / "t.json"))
    assert len(complete) == 10 and {e["name"] for e in complete} == {"tâche \"é\""}


def test_chrome_trace_of_an_empty_timeline(tmp_path):
    complete, metadata, _ = load_trace(Timeline([], workers=2, origin=0.0).to_chrome_trace(tmp_path / "e.json"))
    assert complete == [] and len([e for e in metadata if e["name"] == "thread_name"]) == 2


def test_chrome_trace_replaces_an_existing_file(tmp_path):
    target = tmp_path / "trace.json"
    target.write_text("old")
    three_workers().to_chrome_trace(target)
    assert len(load_trace(target)[0]) == 4


# ---------------------------------------------------------------------------
# Paths that cannot be written: a clear error, nothing left behind


def write_trace(timeline: Timeline, path: Path) -> Path:
    return timeline.to_chrome_trace(path)


def write_plot(timeline: Timeline, path: Path) -> Path:
    pytest.importorskip("matplotlib")
    return timeline.plot(path)


WRITERS = [pytest.param(write_trace, id="chrome_trace"), pytest.param(write_plot, id="plot")]


@pytest.mark.parametrize("write", WRITERS)
def test_a_missing_folder_is_a_clear_error(tmp_path, write):
    target = tmp_path / "no" / "such" / "folder" / "out.file"
    with pytest.raises(FileNotFoundError) as caught:
        write(three_workers(), target)
    message = str(caught.value)
    assert str(target) in message and "does not exist" in message and "create it" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("write", WRITERS)
def test_a_folder_where_a_file_belongs_is_a_clear_error(tmp_path, write):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write(three_workers(), folder)
    assert str(folder) in str(caught.value) and "is a folder" in str(caught.value)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(folder) == []


@pytest.mark.parametrize("write", WRITERS)
def test_a_failure_while_writing_leaves_the_old_file(tmp_path, write, monkeypatch):
    # The disk fills up halfway: the previous file stays whole, no temporary remains.
    target = tmp_path / "out.file"
    target.write_bytes(b"previous")

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd: int, mode: str) -> None:
            self.file = real_fdopen(fd, mode)

        def write(self, data: bytes) -> int:
            self.file.write(data[:10])
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

    monkeypatch.setattr(files.os, "fdopen", FullDisk)
    with pytest.raises(OSError) as caught:
        write(three_workers(), target)
    assert caught.value.errno == 28
    assert str(target) in str(caught.value) and "full" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.file"]


def test_a_file_in_the_path_is_a_clear_error(tmp_path):
    (tmp_path / "plain").write_text("")
    with pytest.raises(OSError) as caught:
        three_workers().to_chrome_trace(tmp_path / "plain" / "trace.json")
    assert str(tmp_path / "plain" / "trace.json") in str(caught.value)
    assert os.listdir(tmp_path) == ["plain"]


def test_written_files_are_readable_by_others(tmp_path):
    # Not tempfile's owner-only 0o600: the umask decides, as for open(path, "w").
    old = os.umask(0o022)
    try:
        path = three_workers().to_chrome_trace(tmp_path / "trace.json")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------
# The plot

FAILED_RGB = (0xd6 / 255, 0x27 / 255, 0x28 / 255)


def read_png(path: Path):
    image = pytest.importorskip("matplotlib.image").imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image[:, :, :3]


def pixels_near(image, rgb, tolerance=0.02) -> int:
    import numpy as np
    return int(np.all(np.abs(image - np.array(rgb)) < tolerance, axis=2).sum())


def in_chart(image):
    """The image left of the legend (which sits right of the axes)."""
    return image[:, : int(image.shape[1] * 0.8)]


def distinct_colours(image) -> int:
    import numpy as np
    return len(np.unique((image * 255).round().astype(np.uint8).reshape(-1, 3), axis=0))


def test_plot_writes_a_png_with_failures_marked(tmp_path):
    pytest.importorskip("matplotlib")
    path = three_workers().plot(str(tmp_path / "timeline.png"), title="three workers")
    assert path == tmp_path / "timeline.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    image = read_png(path)
    assert pixels_near(in_chart(image), FAILED_RGB) > 200   # the failed bar (and a legend patch beside)
    assert distinct_colours(image) > 20
    # "b" only failed: no colour (nor legend entry) of its own; "c" and "a" have theirs.
    assert pixels_near(image, (0x94 / 255, 0x67 / 255, 0xbd / 255)) == 0
    assert pixels_near(in_chart(image), (0x1f / 255, 0x77 / 255, 0xb4 / 255)) > 1000
    assert pixels_near(in_chart(image), (0x2c / 255, 0xa0 / 255, 0x2c / 255)) > 1000
    assert sorted(os.listdir(tmp_path)) == ["timeline.png"]


def test_a_failure_shorter_than_a_pixel_still_shows(tmp_path):
    pytest.importorskip("matplotlib")
    spans = [Span(0, 0.0, 0.4, "work", True), Span(0, 0.5, 0.500001, "work", False),
             Span(0, 0.6, 1.0, "work", True)]
    image = read_png(Timeline(spans, workers=1, origin=0.0).plot(tmp_path / "t.png"))
    assert pixels_near(in_chart(image), FAILED_RGB) > 20     # a one-pixel red line across the bar


def test_plot_without_failures_has_no_failure_colour(tmp_path):
    pytest.importorskip("matplotlib")
    spans = [s for s in three_workers().spans if s.ok]
    image = read_png(Timeline(spans, workers=3, origin=0.0).plot(tmp_path / "ok.png"))
    assert pixels_near(image, FAILED_RGB) == 0
    assert pixels_near(image, (0x1f / 255, 0x77 / 255, 0xb4 / 255)) > 200   # the first label's blue


def test_plot_leaves_pyplot_and_the_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    had_pyplot = "matplotlib.pyplot" in sys.modules
    # Read the setting raw: rcParams["backend"] would resolve it (importing pyplot).
    backend = dict.__getitem__(matplotlib.rcParams, "backend")
    three_workers().plot(tmp_path / "t.png")
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
    assert dict.__getitem__(matplotlib.rcParams, "backend") == backend


def test_plot_of_an_empty_timeline_and_of_a_process(tmp_path):
    pytest.importorskip("matplotlib")
    assert Timeline([], workers=2, origin=0.0).plot(tmp_path / "empty.png").stat().st_size > 5_000
    spans = [Span(0, 0.01 * i, 0.01 * i + 0.008, hook, i != 7, lap=i // 3)
             for i, hook in enumerate(["__preloop__", "__loop__", "__postloop__"] * 4)]
    image = read_png(Timeline(spans, workers=1, origin=0.0, kind="process").plot(tmp_path / "p.png"))
    assert pixels_near(in_chart(image), FAILED_RGB) > 50


def test_plot_of_many_workers_stays_a_sane_size(tmp_path):
    pytest.importorskip("matplotlib")
    spans = [Span(w, 0.0, 1.0, "x", w != 200) for w in range(256)]
    image = read_png(Timeline(spans, workers=256, origin=0.0).plot(tmp_path / "many.png"))
    assert image.shape[0] <= 1500 and image.shape[1] <= 1200
    assert pixels_near(in_chart(image), FAILED_RGB) > 20


def test_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)    # `import matplotlib` now fails
    with pytest.raises(ImportError, match=re.escape('Timeline.plot needs matplotlib: pip install "shmproc[plot]"')):
        three_workers().plot(tmp_path / "t.png")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# Size


def test_a_million_spans_summarise_and_plot_in_reasonable_time(tmp_path):
    pytest.importorskip("matplotlib")
    workers, n = 4, 1_000_000
    labels = ("work", "Fit", "Predict")
    spans = [Span(i % workers, (i // workers) * 1e-5, (i // workers) * 1e-5 + 9e-6, labels[i % 3],
                  i % 100_000 != 1) for i in range(n)]
    began = time.perf_counter()
    timeline = Timeline(spans, workers=workers, origin=0.0)
    summary = timeline.summary()
    summarised = time.perf_counter() - began
    assert (summary.tasks, summary.failed) == (n, 10)
    assert summary.busy_fraction == pytest.approx(0.9, abs=1e-3)
    assert summary.dispatch_overhead == pytest.approx(workers * (n // workers - 1) * 1e-6, rel=1e-3)
    began = time.perf_counter()
    image = read_png(timeline.plot(tmp_path / "big.png"))
    plotted = time.perf_counter() - began
    # ~0.7 s and ~1 s on one free core: the bounds leave room for a busy machine.
    assert summarised < 15 and plotted < 30, (summarised, plotted)
    assert pixels_near(in_chart(image), FAILED_RGB) > 100     # 10 failures of 9 µs in 2.5 s still show


# ---------------------------------------------------------------------------
# Types


def test_the_package_is_clean_under_mypy_strict(tmp_path):
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), str(REPO / "shmproc" / "observe")],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
