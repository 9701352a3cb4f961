"""Tests for shmproc.circuit.Circuit."""

import pickle
import threading
import time

import pytest

from shmproc import circuit
from shmproc.circuit import Circuit

try:
    import cloudpickle
except ImportError:  # pragma: no cover - cloudpickle is a test dependency
    cloudpickle = None


def test_new_circuit_is_flowing():
    c = Circuit(3)
    assert c.flowing and not c.broken
    assert c.times_shorted == 0
    assert c.total_trips == 0
    assert c.break_sleep == 0.1  # documented default


def test_breaks_after_shorts_and_sleeps():
    c = Circuit(shorts=3, break_sleep=0.02)
    assert c.short() is False
    assert c.short() is False
    assert c.times_shorted == 2 and c.flowing
    t0 = time.perf_counter()
    assert c.short() is True
    assert time.perf_counter() - t0 >= 0.019
    assert c.broken and not c.flowing
    assert c.times_shorted == 0  # count restarts after a trip
    assert c.total_trips == 1


def test_shorts_below_threshold_do_not_sleep():
    c = Circuit(shorts=2, break_sleep=0.5)
    t0 = time.perf_counter()
    c.short()
    assert time.perf_counter() - t0 < 0.1


def test_custom_sleep_overrides_break_sleep():
    c = Circuit(shorts=1, break_sleep=5)  # would make the test hang if used
    t0 = time.perf_counter()
    assert c.short(custom_sleep=0.01) is True
    assert 0.009 <= time.perf_counter() - t0 < 1
    assert c.broken


def test_trip_breaks_at_once_and_sleeps():
    c = Circuit(shorts=10, break_sleep=0.01)
    c.short()
    t0 = time.perf_counter()
    c.trip()
    assert time.perf_counter() - t0 >= 0.009
    assert c.broken and not c.flowing
    assert c.times_shorted == 0
    assert c.total_trips == 1
    t0 = time.perf_counter()
    c.trip(custom_sleep=0)
    assert time.perf_counter() - t0 < 0.1
    assert c.total_trips == 2


def test_reset_restores_but_keeps_total_trips():
    c = Circuit(shorts=2, break_sleep=0)
    c.short()
    c.short()
    c.short()
    assert c.broken and c.times_shorted == 1
    c.reset()
    assert not c.broken and c.flowing
    assert c.times_shorted == 0
    assert c.total_trips == 1


def test_shorting_a_broken_circuit_trips_again():
    c = Circuit(shorts=2, break_sleep=0)
    for _ in range(4):
        c.short()
    assert c.broken and c.total_trips == 2


def test_typical_worker_loop():
    class Worker:
        def __init__(self):
            self.circuit = Circuit(shorts=5, break_sleep=0)
            self.running = True
            self.attempts = 0

        def stop(self):
            self.running = False

        def step(self):
            self.attempts += 1
            try:
                raise ConnectionError("backend down")
            except Exception:
                self.circuit.short()
            if self.circuit.broken:
                self.stop()

    w = Worker()
    while w.running:
        w.step()
    assert w.attempts == 5


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"shorts": 0}, ValueError),
        ({"shorts": -1}, ValueError),
        ({"shorts": 2.0}, TypeError),
        ({"shorts": True}, TypeError),
        ({"shorts": "3"}, TypeError),
        ({"shorts": 3, "break_sleep": -0.1}, ValueError),
        ({"shorts": 3, "break_sleep": float("inf")}, ValueError),
        ({"shorts": 3, "break_sleep": "0.1"}, TypeError),
        ({"shorts": 3, "break_sleep": None}, TypeError),
    ],
)
def test_constructor_validation(kwargs, exc):
    with pytest.raises(exc, match="Circuit"):
        Circuit(**kwargs)


def test_bad_custom_sleep_leaves_state_untouched():
    c = Circuit(shorts=1, break_sleep=0)
    with pytest.raises(ValueError, match="custom_sleep"):
        c.short(custom_sleep=-1)
    with pytest.raises(TypeError, match="custom_sleep"):
        c.trip(custom_sleep="1")
    assert c.flowing and c.times_shorted == 0 and c.total_trips == 0


def test_pickle_roundtrip():
    c = Circuit(shorts=3, break_sleep=0.01)
    c.short()
    c2 = pickle.loads(pickle.dumps(c))
    assert (c2.shorts, c2.break_sleep, c2.times_shorted, c2.broken, c2.total_trips) == (3, 0.01, 1, False, 0)
    c2.short()
    assert c2.short() is True  # the recreated lock works
    assert c2.broken and c2.total_trips == 1
    assert c.times_shorted == 1 and c.flowing  # original untouched

    c3 = pickle.loads(pickle.dumps(c2))
    assert c3.broken and not c3.flowing


@pytest.mark.skipif(cloudpickle is None, reason="cloudpickle not installed")
def test_cloudpickle_roundtrip():
    c = Circuit(shorts=2, break_sleep=0)
    c.short()
    c2 = cloudpickle.loads(cloudpickle.dumps(c))
    assert c2.times_shorted == 1
    assert c2.short() is True


def test_thread_safe_counting():
    c = Circuit(shorts=1000, break_sleep=0)

    def worker():
        for _ in range(250):
            c.short()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # Exactly 1000 shorts: one trip, no lost or double-counted increments.
    assert c.total_trips == 1 and c.times_shorted == 0 and c.broken


def test_module_docstring_and_exports():
    assert circuit.__doc__ and "Circuit" in circuit.__all__
