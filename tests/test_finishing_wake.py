"""A run's FINISHING wakes its parent ahead of the report (shmp_ctl_advance,
LocalRun.wait): the parent then watches for the report awhile and sleeps
again if it does not come.  What must hold whatever the last hooks do."""
from __future__ import annotations

import os
import time

import pytest

import shmproc
from shmproc import _native as native
from shmproc.common.errors import ProcessCrashedError
from shmproc.processing import Process


def test_advance_to_finishing_wakes_a_sleeper_and_running_does_not():
    """The sleeper must return at the wake-up, not at its next look: a
    waiter re-checks every 200 ms (wait.c) even unwoken, so the bound on
    how late it returns, 100 ms, is what shows the wake-up happened."""
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)
    try:
        c.advance(native.STATE_RUNNING)
        assert c.wait_state(native.STATE_FINISHING, 5_000_000) == native.ETIMEDOUT
        r, w = os.pipe()
        stamp_r, stamp_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                os.close(stamp_w)
                os.write(w, b"s")
                ok = c.wait_state(native.STATE_FINISHING, 20_000_000_000) == native.OK
                woke = native.now_ns()
                advanced = int(os.read(stamp_r, 32))
                code = 0 if ok and woke - advanced < 100_000_000 else 2
            finally:
                os._exit(code)
        os.close(w)
        os.close(stamp_r)
        assert os.read(r, 1) == b"s"
        os.close(r)
        time.sleep(0.01)                 # asleep by now, most likely (its spin is 20 us)
        advanced = native.now_ns()
        c.advance(native.STATE_FINISHING)
        os.write(stamp_w, str(advanced).encode())
        os.close(stamp_w)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert c.state == native.STATE_FINISHING
    finally:
        ctl.close()


class SlowEnd(Process):
    """Its last hooks outlast the parent's watch for the report."""

    def __init__(self, onfinish_s, result_s):
        self.onfinish_s, self.result_s = onfinish_s, result_s
        self.config.num_loops = 1

    def __loop__(self):
        pass

    def __onfinish__(self):
        time.sleep(self.onfinish_s)

    def __result__(self):
        time.sleep(self.result_s)
        return ("done", os.getpid())


@pytest.mark.parametrize("onfinish_s, result_s", [(0, 0), (0.01, 0), (0, 0.3), (0.2, 0.2)])
def test_a_run_whose_last_hooks_take_long_still_reports(onfinish_s, result_s):
    p = SlowEnd(onfinish_s, result_s)
    p.start()
    assert p.result == ("done", p.pid)


def test_a_wait_with_a_timeout_in_the_last_hooks_is_still_a_bound():
    p = SlowEnd(0, 1.0)
    p.start()
    time.sleep(0.2)                      # in __result__ by now, most likely
    t = time.monotonic()
    assert p.wait(timeout=0.1) is False
    assert time.monotonic() - t < 0.9    # the watch (2 ms) and the sleep both end at the timeout
    assert p.result == ("done", p.pid)


class DiesInResult(Process):
    def __init__(self):
        self.config.num_loops = 1

    def __loop__(self):
        pass

    def __result__(self):
        time.sleep(0.05)                 # past the parent's watch: it sleeps again
        os._exit(7)


def test_a_worker_that_dies_after_finishing_is_reported():
    p = DiesInResult()
    p.start()
    with pytest.raises(ProcessCrashedError) as info:
        p.result
    assert info.value.exitcode == 7


def test_many_short_runs_in_a_row():
    for i in range(20):
        p = SlowEnd(0, 0)
        p.start()
        assert p.result[0] == "done"
    with shmproc.Pool(1) as pool:            # a Process task's FINISHING wakes no one
        assert pool.submit(SlowEnd, 0, 0).result()[0] == "done"
