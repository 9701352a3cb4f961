"""What the workers record: a span per pool task and per Process section,
in shared memory (csrc/trace.c), read back as a Timeline (issue 15).

The Timeline object itself (summary, Chrome trace, plot) on hand-made
spans: tests/test_timeline.py.  Here: the spans real workers record,
crashes, ends, and the rings under a racing reader and damage.
"""
from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import given, settings, strategies as st

from shmproc import Pool
from shmproc import _native as native
from shmproc.processing import Process

from timeline_work import (Flaky, Laps, die_on, fail_on, nap, noop, sections_writer,
                           slow_lap_process)


def test_100_tasks_give_100_spans_that_tile_each_worker():
    with Pool(2) as pool:
        assert pool.map(nap, [0.01] * 100, chunksize=1) == [0.01] * 100
        tl = pool.timeline()
    assert len(tl.spans) == 100
    assert {s.label for s in tl.spans} == {"nap"}
    assert all(s.ok for s in tl.spans)
    assert {s.worker for s in tl.spans} == {0, 1}
    assert tl.dropped == 0
    for w in (0, 1):
        mine = sorted((s for s in tl.spans if s.worker == w), key=lambda s: s.start)
        assert len({s.pid for s in mine}) == 1
        for a, b in zip(mine, mine[1:]):
            assert a.end <= b.start, "two tasks of one worker overlap"
    for s in tl.spans:
        # Each slept 10 ms: the span holds the sleep, plus scheduling noise.
        assert 0.0095 <= s.end - s.start < 0.5
        assert 0 <= s.start <= s.end <= tl.window[1]
    summary = tl.summary()
    for row in summary.per_worker:
        assert row.tasks > 20
        assert row.busy_fraction > 0.5


@pytest.mark.asan
@pytest.mark.parametrize("chunksize", [1, 10])
def test_failed_tasks_are_marked(chunksize):
    with Pool(2) as pool:
        with pytest.raises(ValueError):
            pool.map(fail_on, range(20), chunksize=chunksize)
    tl = pool.timeline()                       # after join(): what started has finished
    # map raises at the first failure; how many of the other items had
    # started by then depends on timing (those never sent never run).
    assert 4 <= len(tl.spans) <= 20 and {s.label for s in tl.spans} == {"fail_on"}
    failed = [s for s in tl.spans if not s.ok]
    assert len(failed) == 1 and failed[0].label == "fail_on"


@pytest.mark.asan
def test_a_crashed_task_is_marked_and_the_rest_survive():
    with Pool(1) as pool:
        assert pool.map(noop, range(5), chunksize=1) == list(range(5))
        first_pid = pool.pids[0]
        with pytest.raises(Exception) as info:
            pool.submit(die_on, 1).result(timeout=60)
        assert "crash" in type(info.value).__name__.lower() or "died" in str(info.value)
        assert pool.submit(noop, 7).result(timeout=60) == 7
        tl = pool.timeline()
    spans = sorted(tl.spans, key=lambda s: s.start)
    labels = [(s.label, s.ok) for s in spans]
    assert labels == [("noop", True)] * 5 + [("die_on", False), ("noop", True)]
    # The dead worker's spans are still there (its slot's ring outlived it),
    # the crashed one ends when the pool noticed; the replacement wrote on.
    assert {s.pid for s in spans[:6]} == {first_pid}
    assert spans[6].pid != first_pid
    assert spans[5].end >= spans[5].start


def test_process_objects_and_classes_in_a_pool_are_labelled():
    with Pool(2) as pool:
        assert pool.submit(Laps(2)).result(timeout=60) == 2
        assert pool.map(Laps, [1, 3]) == [1, 3]
        assert pool.submit(Flaky).exception(timeout=60) is not None
        tl = pool.timeline()
    labels = sorted((s.label, s.ok) for s in tl.spans)
    assert labels == [("Flaky", False), ("Laps", True), ("Laps", True), ("Laps", True)]


def test_a_never_used_pool_has_an_empty_timeline():
    with Pool(2) as pool:
        tl = pool.timeline()
    assert len(tl.spans) == 0 and tl.dropped == 0 and tl.workers == 2
    assert tl.summary().per_worker[0].tasks == 0


def test_a_terminated_pool_keeps_what_was_recorded():
    pool = Pool(2)
    pool.map(noop, range(10), chunksize=1)
    task = pool.submit(nap, 30)
    time.sleep(0.5)                        # the nap is running
    pool.terminate()
    assert task.cancelled() or task.done()
    tl = pool.timeline()
    done = [s for s in tl.spans if s.label == "noop"]
    assert len(done) == 10 and all(s.ok for s in done)
    cut = [s for s in tl.spans if s.label == "nap"]
    assert len(cut) == 1 and not cut[0].ok           # cut short by terminate()
    assert pool.timeline().spans == tl.spans          # stable once ended


def test_timeline_during_the_run_holds_finished_tasks_only():
    with Pool(1) as pool:
        pool.map(noop, range(3), chunksize=1)
        task = pool.submit(nap, 0.5)
        time.sleep(0.2)
        live = pool.timeline()
        assert task.result(timeout=60) == 0.5
        after = pool.timeline()
    assert [s.label for s in live.spans] == ["noop"] * 3
    assert [s.label for s in after.spans] == ["noop"] * 3 + ["nap"]


def test_the_chrome_trace_has_one_event_per_task(tmp_path):
    with Pool(2) as pool:
        pool.map(noop, range(40), chunksize=3)
        tl = pool.timeline()
    path = tl.to_chrome_trace(tmp_path / "trace.json")
    events = json.loads(path.read_text())["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert len(complete) == 40
    assert {e["tid"] for e in complete} <= {0, 1}


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    with Pool(2) as pool:
        pool.map(nap, [0.002] * 30, chunksize=1)
        with pytest.raises(ValueError):
            pool.map(fail_on, range(5))
        tl = pool.timeline()
    path = tl.plot(tmp_path / "gantt.png")
    assert path.stat().st_size > 5000


def test_ten_million_tasks_keep_memory_bounded():
    n = 10_000_000
    with Pool(2) as pool:
        total = sum(pool.imap_unordered(noop, range(n), chunksize=50_000))
        tl = pool.timeline()
    assert total == n * (n - 1) // 2
    cap = native.trace.DEFAULT_CAPACITY
    assert len(tl.spans) <= 2 * cap
    assert len(tl.spans) + tl.dropped == n
    assert len(tl.spans) >= 2 * (cap - 1) - 2


# ---- Process runs -------------------------------------------------------------------------------

@pytest.mark.asan
def test_a_process_records_every_section_with_its_lap():
    p = Laps(3)
    p.start()
    assert p.result == 3
    tl = p.timeline()
    got = [(s.label, s.lap, s.ok) for s in sorted(tl.spans, key=lambda s: s.start)]
    assert got == [("__preloop__", 0, True), ("__loop__", 0, True), ("__postloop__", 0, True),
                   ("__preloop__", 1, True), ("__loop__", 1, True), ("__postloop__", 1, True),
                   ("__preloop__", 2, True), ("__loop__", 2, True), ("__postloop__", 2, True),
                   ("__onfinish__", 3, True), ("__result__", 3, True)]
    assert tl.kind == "process" and tl.workers == 1
    ordered = sorted(tl.spans, key=lambda s: s.start)
    for a, b in zip(ordered, ordered[1:]):
        assert a.end <= b.start
    assert {s.pid for s in tl.spans} == {p.pid}


def test_a_failing_hook_is_marked():
    p = Flaky()
    p.start()
    p.wait()
    with pytest.raises(Exception):
        p.result
    tl = p.timeline()
    failed = [s.label for s in tl.spans if not s.ok]
    assert failed == ["__loop__"]
    assert tl.spans[-1].label == "__error__"


@pytest.mark.asan
def test_a_killed_process_has_its_last_section_closed():
    p = slow_lap_process()
    p.start()
    deadline = time.monotonic() + 30
    while p.current_lap < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    p.kill()
    tl = p.timeline()
    assert len(tl.spans) >= 2
    last = max(tl.spans, key=lambda s: s.start)
    assert last.label == "__loop__" and not last.ok
    assert all(s.ok for s in tl.spans if s is not last)


def test_a_long_run_keeps_the_newest_sections_and_totals_over_every_lap():
    p = Laps(5000)
    p.start()
    assert p.result == 5000
    tl = p.timeline()
    cap = native.trace.DEFAULT_CAPACITY
    assert len(tl.spans) <= cap and tl.dropped == 3 * 5000 + 2 - len(tl.spans)
    assert max(s.lap for s in tl.spans if s.lap is not None) == 5000
    totals = tl.totals
    assert {k: v.count for k, v in totals.items()} == {
        "__preloop__": 5000, "__loop__": 5000, "__postloop__": 5000, "__onfinish__": 1,
        "__result__": 1}
    assert all(t.failed == 0 and t.seconds >= 0 for t in totals.values())
    recorded = sum(s.duration for s in tl.spans if s.label == "__loop__")
    assert totals["__loop__"].seconds >= recorded
    assert "over the whole run" in str(tl.summary())


def test_failed_hooks_are_counted_in_the_totals():
    p = Flaky()
    p.start()
    p.wait()
    totals = p.timeline().totals
    assert totals["__loop__"].count == 2 and totals["__loop__"].failed == 1


def test_timeline_of_a_process_never_started_is_empty():
    assert len(Laps(1).timeline().spans) == 0


@pytest.mark.parametrize("method", ["spawn"])
def test_a_spawned_process_records_too(method):
    p = Laps(2)
    p.config.start_method = method
    p.start()
    assert p.result == 2
    assert len(p.timeline().spans) == 8


# ---- the rings themselves ----------------------------------------------------------------------

@pytest.mark.asan
def test_a_ring_keeps_the_newest_spans_and_counts_the_rest():
    area = native.TraceArea.create(1, 16)
    ring = area.ring(0)
    for i in range(40):
        ring.begin(i, 1000 + i, pid=7, lap=i)
        ring.end(2000 + i, native.SPAN_FAILED if i % 2 else 0)
    spans, written = ring.read()
    assert written == 40
    labels = [s[2] for s in spans]
    assert labels == list(range(40 - len(spans), 40)) and len(spans) >= 15
    assert all(s[3] == (1 if s[2] % 2 else 0) and s[4] == 7 for s in spans)
    area.close()


@pytest.mark.asan
def test_bad_trace_areas_are_refused():
    with pytest.raises(ValueError):
        native.TraceArea.create(0)
    with pytest.raises(ValueError):
        native.TraceArea.create(2, 100)                # not a power of two
    with pytest.raises(ValueError):
        native.TraceArea.create(2, 8)                  # too small
    area = native.TraceArea.create(2, 16)
    with pytest.raises(IndexError):
        area.ring(2)
    area.close()


@pytest.mark.asan
def test_a_ring_read_while_its_writer_races_sees_only_whole_spans():
    """A writer process records spans as fast as it can while this
    process reads the ring again and again: every span read is one the
    writer wrote (its fields agree with each other), in order, none torn."""
    area = native.TraceArea.create(1, 64)
    ring = area.ring(0)
    pid = os.fork()
    if pid == 0:                                   # the writer
        try:
            sections_writer(area.ring(0), 200_000)
        finally:
            os._exit(0)
    reads = 0
    try:
        while True:
            done = os.waitpid(pid, os.WNOHANG)[0] == pid
            spans, written = ring.read()
            reads += 1
            last = -1
            for start, end, label, flags, wpid, lap in spans:
                assert start == 1_000 + 3 * label and lap == label % 1000
                assert end in (0, start + 1 + (label % 5))
                assert flags == (native.SPAN_FAILED if label % 7 == 0 else 0) or end == 0
                assert label > last
                last = label
            assert len(spans) <= 64
            if done:
                break
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    spans, written = ring.read()
    assert written == 200_000 and spans[-1][2] == 199_999
    assert reads > 10
    area.close()


@pytest.mark.asan
def test_damaged_entries_are_dropped_not_returned():
    area = native.TraceArea.create(1, 16)
    ring = area.ring(0)
    for i in range(10):
        ring.begin(i, 100 + i)
        ring.end(200 + i)
    # Damage: entry 3's end before its start, entry 5's unknown flag bits,
    # entry 7's start of 0.  (Entries follow the ring's head line and its
    # three lines of tallies: 256 bytes.)
    raw = native.trace.ffi.cast("uint64_t *", ring.address + 256)
    raw[3 * 4 + 1] = 5
    raw32 = native.trace.ffi.cast("uint32_t *", ring.address + 256)
    raw32[5 * 8 + 5] = 0xF0
    raw[7 * 4] = 0
    spans, written = ring.read()
    assert written == 10
    assert [s[2] for s in spans] == [0, 1, 2, 4, 6, 8, 9]
    area.close()


def test_with_tracing_off_work_runs_and_timeline_says_why_there_is_none(monkeypatch):
    monkeypatch.setenv("SHMPROC_TRACE", "0")
    with Pool(2) as pool:
        assert pool.map(fail_on, [1, 2], chunksize=1) == [1, 2]
        assert pool.map(noop, range(100), chunksize=10) == list(range(100))
        with pytest.raises(RuntimeError, match="SHMPROC_TRACE=0"):
            pool.timeline()
    p = Laps(2)
    p.start()
    assert p.result == 2
    with pytest.raises(RuntimeError, match="SHMPROC_TRACE=0"):
        p.timeline()


@pytest.mark.asan
def test_a_writer_refuses_a_bad_ring():
    from shmproc._spans import writer
    with pytest.raises(ValueError):
        writer(object(), 0, 16, 1)            # an owner with no ring
    with pytest.raises(ValueError):
        writer(None, 64, 16, 1)               # a ring with no owner
    area = native.TraceArea.create(1, 16)
    ring = area.ring(0)
    with pytest.raises(ValueError):
        writer(ring, ring.address + 8, 16, 1)     # misaligned
    with pytest.raises(ValueError):
        writer(ring, ring.address, 24, 1)         # not a power of two
    w = ring.writer(5)
    with pytest.raises(OverflowError):
        w.begin(1 << 40)
    with pytest.raises(TypeError):
        w.begin()
    area.close()


@pytest.mark.asan
@settings(max_examples=200, deadline=None)
@given(head=st.integers(0, 2**64 - 1), junk=st.binary(min_size=16 * 32, max_size=16 * 32))
def test_a_ring_of_random_bytes_reads_only_checked_spans(head, junk):
    """Whatever a crashing or hostile peer left in a ring, reading it stays
    inside the ring and returns only spans whose fields are possible."""
    area = native.TraceArea.create(1, 16)
    ring = area.ring(0)
    ffi = native.trace.ffi
    ffi.cast("uint64_t *", ring.address)[0] = head
    ffi.memmove(ffi.cast("char *", ring.address + 256), junk, len(junk))
    spans, written = ring.read()
    assert written == head
    assert len(spans) <= min(head, 16)
    for start, end, label, flags, pid, lap in spans:
        assert start != 0 and (end == 0 or end >= start) and flags & ~3 == 0
    ring.close_open(12345, native.SPAN_CRASHED)     # never outside the ring either
    assert len(ring.tallies()) == 8                  # only numbers, whatever they hold
    area.close()
