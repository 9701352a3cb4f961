"""An ended run's segments are released off the result path.

A run that reported gives its outcome at once; its control block, trace
segment and pidfd are closed while the parent next waits for a run, or
when eight ended runs are held, and before a pool forks
(backends/local/release.py).
These tests pin that bound, and that nothing is lost on the way: the
timeline of a released run, a run whose Process was dropped first.
"""
import gc
import os
import time
import weakref

import pytest

from shmproc.backends.local import release
from shmproc.backends.local import run as local_run
from shmproc.processing import Process


class Seven(Process):
    def __init__(self):
        self.config.num_loops = 1

    def __result__(self):
        return 7


class SevenLater(Seven):
    """Reports after p.result has begun to wait: a run that ends before the
    first wait is released by that wait, at once (LocalRun.wait)."""

    def __loop__(self):
        time.sleep(0.3)


def _run_of(p):
    return p._rt().run


def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_an_ended_runs_descriptors_close_when_the_parent_next_waits():
    first = Seven()
    first.start()
    assert first.result == 7
    run = _run_of(first)
    second = Seven()
    second.start()
    assert second.result == 7                 # waited: released what `first` held
    assert run.ctl_array.fd == -1
    assert run.trace is None and run._pidfd is None
    assert first.result == 7                  # the outcome stays


def test_ended_runs_never_wait_in_numbers():
    procs = [Seven() for _ in range(20)]
    for p in procs:
        p.start()
    for p in procs:
        p.wait()
    assert [p.result for p in procs] == [7] * 20
    assert release.held_count() < release.BATCH
    released = sum(_run_of(p).ctl_array.fd == -1 for p in procs)
    assert released >= 20 - release.BATCH


def test_a_released_runs_timeline_is_kept():
    p = Seven()
    p.start()
    assert p.result == 7
    release.release_ended()
    assert _run_of(p).trace is None
    names = {s.label for s in p.timeline().spans}
    assert "__result__" in names


def test_a_run_whose_process_was_dropped_is_closed_from_what_it_held():
    p = SevenLater()
    p.start()
    assert p.result == 7
    run = _run_of(p)
    fds = [run.ctl_array.fd, run.trace.fd if run.trace is not None else -1,
           run._pidfd if run._pidfd is not None else -1]
    fds = [fd for fd in fds if fd >= 0]
    assert fds and all(_is_open(fd) for fd in fds)
    gone = weakref.ref(run)
    del p, run
    gc.collect()
    assert gone() is None
    release.release_ended()
    assert not any(_is_open(fd) for fd in fds)


@pytest.mark.parametrize("how", ["kill", "crash"])
def test_a_run_that_did_not_report_is_released_at_once(how):
    class Stuck(Process):
        def __init__(self):
            self.config.num_loops = None

        def __loop__(self):
            if how == "crash":
                os._exit(3)

    p = Stuck()
    p.start()
    if how == "kill":
        p.kill()
    else:
        p.wait()
    run = _run_of(p)
    assert run.ctl_array.fd == -1 and run._pidfd is None
    assert all(h.run() is not run for h in release._unreleased)


def _in_threads(work, n=4):
    """Run work() in n threads at once; fail with what any of them raised."""
    import threading

    errors = []

    def guarded():
        try:
            work()
        except BaseException as exc:          # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_threads_ending_and_reading_runs_at_once_lose_nothing():
    """Several threads start runs, read results and timelines while others'
    waits release ended runs: every result arrives, every timeline reads."""
    def work():
        for _ in range(8):
            p = Seven()
            p.start()
            assert p.result == 7
            assert any(s.label == "__result__" for s in p.timeline().spans)

    _in_threads(work)
    assert release.held_count() < release.BATCH


def test_a_start_takes_the_control_block_and_trace_made_after_the_last_one():
    """The next run's control block and trace segment are made while this
    run's worker starts; the next start takes them (and makes the next)."""
    first = Seven()
    first.start()
    spare_ctl, spare_trace = local_run._spares.get("control"), local_run._spares.get("trace")
    assert spare_ctl is not None and spare_trace is not None
    second = Seven()
    second.start()
    assert _run_of(second).ctl_array is spare_ctl
    assert _run_of(second).trace is spare_trace
    assert local_run._spares.get("control") not in (None, spare_ctl)
    assert first.result == second.result == 7


def test_concurrent_starts_never_share_a_control_block():
    runs = []

    def work():
        for _ in range(5):
            p = Seven()
            p.start()
            runs.append(_run_of(p).ctl_array)
            assert p.result == 7

    _in_threads(work)
    assert len(set(map(id, runs))) == len(runs) == 20


def test_a_pool_releases_ended_runs_before_it_forks_its_workers():
    """Workers live long: none inherits an ended run's segments."""
    import shmproc

    p = Seven()
    p.start()
    assert p.result == 7
    with shmproc.Pool(1) as pool:
        assert _run_of(p).ctl_array.fd == -1 and _run_of(p).trace is None
        assert pool.map(abs, [-1]) == [1]


def test_one_run_that_fails_to_release_leaves_none_of_the_others_open(monkeypatch):
    procs = [Seven() for _ in range(3)]
    for p in procs:
        p.start()
    runs = [_run_of(p) for p in procs]
    deadline = time.monotonic() + 60
    for run in runs:                       # ended() files each run, releasing none
        while not run.ended():
            assert time.monotonic() < deadline, "a trivial run did not end within 60 s"
            time.sleep(0.001)
    assert release.held_count() >= 3

    def refuse():
        raise OSError("closing failed")
    monkeypatch.setattr(runs[0], "_release", refuse)
    with pytest.raises(OSError, match="closing failed"):
        release.release_ended()
    assert all(run.ctl_array.fd == -1 for run in runs[1:])
    assert release.held_count() == 0
    monkeypatch.undo()
    runs[0]._release()
    assert [p.result for p in procs] == [7, 7, 7]
