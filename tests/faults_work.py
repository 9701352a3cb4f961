"""What test_faults.py's workers run (its functions and Process classes).

A spawn or forkserver worker imports the module of each function or class
it runs; importing the test file there would import pytest and conftest
into every such worker (about half a second each on a busy two-core
machine).  This module imports only what the workers need; test_faults.py
imports every name from here.
"""
import os
import queue
import signal
import time

import numpy as np
from shmproc.common import faults
from shmproc.processing import Process


LARGE = 40_000              # float64 elements: 320 kB, out-of-band


def _item(i):
    """Even ids are small (in the ring), odd ids large (out-of-band)."""
    if i % 2:
        a = np.empty(LARGE)
        a.fill(i)
        return (i, a)
    return (i, "s" * (i % 50))


def _check_item(item):
    i, payload = item
    if i % 2:
        assert payload.shape == (LARGE,) and payload[0] == i and payload[-1] == i
    else:
        assert payload == "s" * (i % 50)
    return i


def _log(path, i, lost=0):
    with open(path, "a") as f:
        f.write(f"{i} {lost}\n")


def _read_log(path):
    """The ids logged, in order."""
    return [i for i, _ in _log_lines(path) if i >= 0]


def _read_lost(path):
    """How many lost items the logging consumer had skipped by its last line."""
    return max((lost for _, lost in _log_lines(path)), default=0)


def _log_lines(path):
    try:
        with open(path) as f:
            return [tuple(map(int, line.split())) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _producer(q, n, log, spec):
    if spec:
        faults.arm(spec)
    for i in range(n):
        q.put(_item(i))
        _log(log, i)
    q.put(None)


def _consumer(q, log, spec):
    if spec:
        faults.arm(spec)
    while True:
        item = q.get(timeout=30)
        if item is None:
            _log(log, -1, q.lost_items)     # the end, with the final count of lost items
            return
        _log(log, _check_item(item), q.lost_items)


def _drain(q, timeout=1.0, producer=None):
    """Items until the end marker, or until nothing comes for `timeout` s
    (with a `producer` process: until it has exited and nothing is left)."""
    got = []
    while True:
        try:
            item = q.get(timeout=timeout if producer is None else 0.05)
        except queue.Empty:
            if producer is not None and (producer.is_alive() or not q.empty()):
                continue
            return got
        if item is None:
            return got
        got.append(_check_item(item))


def _check_delivery(put_log, received, lost, consumer_died):
    """received: ids in the order consumers got them (one stream)."""
    assert len(received) == len(set(received)), "an item was delivered twice"
    assert received == sorted(received), "items were reordered"
    put = set(put_log)
    missing = put - set(received)
    allowed = lost + (1 if consumer_died else 0)
    # Items beyond the producer's log (put, then killed before logging) may arrive too.
    assert len(missing) <= allowed, (sorted(missing), lost, consumer_died)


class _Counter(Process):
    def __init__(self):
        self.config.num_loops = 2000
        self.n = 0

    def __loop__(self):
        self.n += 1
        if self.n % 200 == 0:
            time.sleep(0.001)

    def __result__(self):
        return np.full(LARGE, self.n)


def _kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _square_and_log(args):
    i, log = args
    _log(log, i)
    time.sleep(0.0005)
    return i * i
