"""A run whose outcome is a lone scalar reports it in its control block
(no pickle, no arena record); anything else goes through the arena.  Either
way `result` gives the same value, of the same type."""
from __future__ import annotations

import enum
import math

import pytest

from shmproc.processing import Process, timesection


class Level(enum.IntEnum):
    HIGH = 3


class Returns(Process):
    def __init__(self, value, method="fork"):
        self.config.num_loops = 1
        self.config.start_method = method
        self.value = value

    def __result__(self):
        return self.value


VALUES = [None, True, False, 0, -5, (1 << 63) - 1, -(1 << 63), 2.5, -0.0, float("inf"),
          # not scalars (the arena): too big, a subclass, other types
          1 << 64, -(1 << 63) - 1, Level.HIGH, 1j, "text", b"bytes", (1, 2), [None]]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_result_keeps_value_and_type(value):
    p = Returns(value)
    p.start()
    got = p.result
    assert type(got) is type(value) and got == value
    if isinstance(value, float):
        assert math.copysign(1, got) == math.copysign(1, value)


def test_nan():
    p = Returns(float("nan"))
    p.start()
    assert math.isnan(p.result)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_every_start_method(method):
    p = Returns(-(1 << 62), method)
    p.start()
    assert p.result == -(1 << 62)


class TimedScalar(Process):
    """A scalar result with timers: the timers need the arena."""

    def __init__(self):
        self.config.num_loops = 2

    @timesection()
    def __loop__(self):
        pass

    def __result__(self):
        return 42


def test_a_scalar_with_timers_keeps_its_timers():
    p = TimedScalar()
    p.start()
    assert p.result == 42
    assert p.timers is not None and p.timers.loop.num_times == 2


class Fails(Process):
    def __init__(self):
        self.config.num_loops = 1

    def __loop__(self):
        raise ValueError("boom")

    def __error__(self):
        return 7                  # a scalar from __error__ is a failed outcome: the arena


def test_a_failed_run_is_not_a_scalar_outcome():
    p = Fails()
    p.start()
    assert p.result == 7
    assert isinstance(p.error, Exception)


def test_a_damaged_scalar_is_a_result_error_not_a_value():
    from shmproc import _native as native
    from shmproc._shmp_cffi import ffi
    from shmproc.common.errors import ResultError

    p = Returns(5)
    p.start()
    ctl = p._rt().run.ctl
    assert ctl.wait_state(native.STATE_DONE, 30 * 10**9) == native.OK
    # scalar_tag: 48 bytes into the block's second line (test_native.py says why)
    ffi.cast("uint32_t *", ctl.block)[(64 + 48) // 4] = 77
    with pytest.raises(ResultError, match="CorruptSharedMemoryError"):
        p.result


class ScalarAgain(Process):
    def __init__(self):
        self.config.num_loops = 1
        self.config.start_method = "fork"

    def __result__(self):
        return 1


class ListAgain(ScalarAgain):
    def __result__(self):
        return [1]


def test_a_class_whose_last_run_was_a_scalar_skips_the_rehearsal(monkeypatch, tmp_path):
    """The worker rehearses the arena write (its page faults, before the
    hooks) unless the class's last run reported a lone scalar."""
    from shmproc.wire import transfer

    marks = tmp_path / "rehearsed"
    marks.write_text("")

    def mark():                                   # what the fork worker runs instead
        with open(marks, "a") as f:
            f.write("r")

    monkeypatch.setattr(transfer, "rehearse_write", mark)

    def rehearsals(cls, runs):
        before = len(marks.read_text())
        for _ in range(runs):
            p = cls()
            p.start()
            p.result
            p.wait()
        return len(marks.read_text()) - before

    assert rehearsals(ScalarAgain, 1) == 1        # nothing known of the class yet
    assert rehearsals(ScalarAgain, 2) == 0        # its runs report scalars
    assert rehearsals(ListAgain, 2) == 2          # its results need the arena
