"""What recording the timeline costs (issue 15): tracing on vs off, same run.

1. One task per dispatch: Pool(2).map(noop, range(N), chunksize=1), items
   per second with the workers recording a span per task (the default)
   and with SHMPROC_TRACE=0; the rounds alternate, best of R each.
   Target: tracing costs <= 3% of the throughput.
2. Per lap, __preloop__ + __loop__ + __postloop__ (empty), timeouts armed:
   (time(N laps) - time(0 laps)) / N for a Process, start -> result, with
   a span per section and without; medians of R alternating rounds.
   Target: <= 0.1 us per lap more.

    python bench/tracing.py [--quick]

Section 9 of bench/pool.py runs the same.
"""
from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    # Run as a script: bench/ holds queue.py, which must not shadow the stdlib's.
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    sys.path.append(_HERE)
    import _common as C
else:
    from . import _common as C

import argparse
import statistics
import time
from contextlib import contextmanager

from shmproc import Pool
from shmproc.processing import Process

DISPATCH_TARGET = 0.03        # at most 3% of one-task dispatch throughput
LAP_TARGET_US = 0.1           # at most 0.1 us per lap


def noop(x):
    return x


class ThreeHooks(Process):
    def __init__(self, laps):
        self.config.num_loops = laps
        self.config.timeouts.preloop = 30.0
        self.config.timeouts.loop = 30.0
        self.config.timeouts.postloop = 30.0

    def __preloop__(self):
        pass

    def __loop__(self):
        pass

    def __postloop__(self):
        pass

    def __result__(self):
        return self.config.num_loops


@contextmanager
def tracing(on: bool):
    old = os.environ.get("SHMPROC_TRACE")
    os.environ["SHMPROC_TRACE"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SHMPROC_TRACE"]
        else:
            os.environ["SHMPROC_TRACE"] = old


def _dispatch_rate(on: bool, n: int) -> float:
    with tracing(on):
        with Pool(2) as pool:
            pool.map(noop, range(2000), chunksize=1)          # warm
            t0 = time.perf_counter()
            pool.map(noop, range(n), chunksize=1)
            return n / (time.perf_counter() - t0)


def dispatch(quick: bool, rounds: int = 5):
    """(best items/s on, best items/s off)."""
    n = 50_000 if quick else 200_000
    on, off = [], []
    for _ in range(rounds):
        on.append(_dispatch_rate(True, n))
        off.append(_dispatch_rate(False, n))
    return max(on), max(off)


def _run_laps(on: bool, laps: int) -> float:
    with tracing(on):
        p = ThreeHooks(laps)
        t0 = time.perf_counter()
        p.start()
        assert p.result == laps
        return time.perf_counter() - t0


def per_lap(quick: bool, rounds: int = 7):
    """(us per lap on, us per lap off): median of paired (N - 0) differences."""
    n = 300_000 if quick else 2_000_000
    on, off = [], []
    for _ in range(rounds):
        for flag, out in ((True, on), (False, off)):
            zero = _run_laps(flag, 0)
            full = _run_laps(flag, n)
            out.append((full - zero) / n * 1e6)
    return statistics.median(on), statistics.median(off)


def report(d, lap) -> bool:
    on, off = d
    cost = 1 - on / off
    lap_on, lap_off = lap
    extra = lap_on - lap_off
    ok_d, ok_l = cost <= DISPATCH_TARGET, extra <= LAP_TARGET_US
    rows = [
        ("one task per dispatch (chunksize=1), 2 workers", f"{on / 1e3:.0f}k/s",
         f"{off / 1e3:.0f}k/s", f"{cost * 100:+.1f}%", "<= 3%", C.verdict(ok_d)),
        ("per lap, 3 hooks, timeouts armed", f"{lap_on:.3f} us", f"{lap_off:.3f} us",
         f"{extra * 1e3:+.0f} ns", "<= 100 ns", C.verdict(ok_l)),
    ]
    print(C.table(["figure", "tracing on", "tracing off", "cost", "target", "verdict"], rows,
                  "lrrrrl"))
    return ok_d and ok_l


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    args = ap.parse_args(argv)
    print("tracing on vs off (issue 15), same run")
    ok = report(dispatch(args.quick), per_lap(args.quick))
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
