"""What recording the timeline costs (issue 15): tracing on vs off, same run.

1. One task per dispatch: Pool(2).map(noop, range(N), chunksize=1), items
   per second with the workers recording a span per task (the default)
   and with SHMPROC_TRACE=0: two pools side by side, their calls
   alternating, medians of R rounds; and the workers' CPU time per task
   in the same runs (/proc), which the parent's own pace does not blur.
   Target: tracing costs <= 3% of the throughput.
2. Per lap, __preloop__ + __loop__ + __postloop__ (empty), timeouts armed:
   (time(N laps) - time(0 laps)) / N for a Process, start -> result, with
   a span per section and without; best of R alternating rounds each.
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
    from process import LapsThreeHooks          # bench/process.py part 2's Process
else:
    from . import _common as C
    from .process import LapsThreeHooks

import argparse
import statistics
import time
from contextlib import contextmanager

from shmproc import Pool

DISPATCH_TARGET = 0.03        # at most 3% of one-task dispatch throughput
LAP_TARGET_US = 0.1           # at most 0.1 us per lap


def noop(x):
    return x


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


def _cpu_ns(pids) -> int:
    """CPU time (user + system) the processes `pids` used so far, in ns."""
    tick = 1e9 / os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])          # utime, stime
    return int(total * tick)


def dispatch(quick: bool, rounds: int = 9):
    """(items/s on, items/s off, worker CPU ns a task on, off): one traced
    and one untraced pool made side by side, their map calls alternating
    (neither always first); medians over the rounds."""
    n = 50_000 if quick else 200_000
    with tracing(True):
        traced = Pool(2)
    with tracing(False):
        plain = Pool(2)
    rates = {True: [], False: []}
    cpu = {True: [], False: []}
    try:
        for pool in (traced, plain):
            pool.map(noop, range(2000), chunksize=1)          # warm
        for r in range(rounds):
            for flag in ((True, False) if r % 2 else (False, True)):
                pool = traced if flag else plain
                pids = pool.pids
                c0 = _cpu_ns(pids)
                t0 = time.perf_counter()
                pool.map(noop, range(n), chunksize=1)
                rates[flag].append(n / (time.perf_counter() - t0))
                cpu[flag].append((_cpu_ns(pids) - c0) / n)
    finally:
        traced.terminate()
        plain.terminate()
    med = statistics.median
    return med(rates[True]), med(rates[False]), med(cpu[True]), med(cpu[False])


def _run_laps(on: bool, laps: int) -> float:
    with tracing(on):
        p = LapsThreeHooks(laps, "fork")    # its default timeouts are armed
        t0 = time.perf_counter()
        p.start()
        p.result
        assert p.current_lap == laps
        return time.perf_counter() - t0


def per_lap(quick: bool, rounds: int = 9):
    """(us per lap on, us per lap off): (best N-lap run - best 0-lap run) / N,
    the runs of both kinds alternating (noise on a shared VM only adds time,
    so the best of each is the steadiest estimate)."""
    n = 300_000 if quick else 2_000_000
    zero = {True: [], False: []}
    full = {True: [], False: []}
    for r in range(rounds):
        for flag in ((True, False) if r % 2 else (False, True)):
            zero[flag].append(_run_laps(flag, 0))
            full[flag].append(_run_laps(flag, n))
    return tuple((min(full[f]) - min(zero[f])) / n * 1e6 for f in (True, False))


def report(d, lap) -> bool:
    on, off, cpu_on, cpu_off = d
    cost = 1 - on / off
    lap_on, lap_off = lap
    extra = lap_on - lap_off
    ok_d, ok_l = cost <= DISPATCH_TARGET, extra <= LAP_TARGET_US
    rows = [
        ("one task per dispatch (chunksize=1), 2 workers", f"{on / 1e3:.0f}k/s",
         f"{off / 1e3:.0f}k/s", f"{cost * 100:+.1f}%", "<= 3%", C.verdict(ok_d)),
        ("  the workers' CPU per task (same runs)", f"{cpu_on / 1e3:.2f} us",
         f"{cpu_off / 1e3:.2f} us", f"{(cpu_on - cpu_off):+.0f} ns", "", ""),
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
