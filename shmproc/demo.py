"""The shmproc demo: real data between real processes, next to multiprocessing.

    python -m shmproc            (about 15 s)
    python -m shmproc --quick    (a few seconds)

Two workloads, each run with shmproc.Queue and with multiprocessing.Queue
on the same machine in the same run:

1. Events: two producer processes emit small records (id, sequence,
   reading, a short tag) in batches; the parent consumes them all and
   checks every sequence number arrived exactly once, in order.
2. Frames: a producer process renders float64 frames (8 MB each); the
   parent checks every frame against a checksum the producer computed.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time

import numpy as np

from .queue import Queue

BATCH = 256


def _events(q, producer_id: int, n: int, batched: bool):
    rng = np.random.default_rng(producer_id)
    readings = rng.random(n).tolist()
    if batched:
        for start in range(0, n, BATCH):
            q.put_many([(producer_id, i, readings[i], "ok") for i in range(start, min(n, start + BATCH))])
    else:
        for i in range(n):
            q.put((producer_id, i, readings[i], "ok"))


def _frames(q, n: int, side: int):
    y, x = np.mgrid[0:side, 0:side] / side
    base = np.sin(3 * x) * np.cos(5 * y)
    for k in range(n):
        frame = base * (k + 1) + k                          # a new frame each time
        q.put((k, float(frame[::64, ::64].sum()), frame))


def _consume_events(q, producers: int, n: int, batched: bool):
    next_seq = [0] * producers
    got = 0
    while got < producers * n:
        items = q.get_many(max_items=4096) if batched else [q.get()]
        for pid, seq, _reading, _tag in items:
            if seq != next_seq[pid]:
                raise AssertionError(f"producer {pid}: got #{seq}, expected #{next_seq[pid]}")
            next_seq[pid] += 1
        got += len(items)


def run_events(make_queue, n: int, batched: bool, ctx) -> float:
    q = make_queue()
    procs = [ctx.Process(target=_events, args=(q, i, n, batched)) for i in range(2)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    _consume_events(q, 2, n, batched)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return 2 * n / elapsed


def run_frames(make_queue, n: int, side: int, ctx) -> float:
    q = make_queue()
    p = ctx.Process(target=_frames, args=(q, n, side))
    t0 = time.perf_counter()
    p.start()
    for k in range(n):
        idx, total, frame = q.get()
        if idx != k or not np.isclose(frame[::64, ::64].sum(), total):
            raise AssertionError(f"frame {k} arrived damaged")
    elapsed = time.perf_counter() - t0
    p.join()
    return n * side * side * 8 / elapsed / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shmproc", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a few seconds)")
    args = ap.parse_args(argv)
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    n_events = 20_000 if args.quick else 150_000
    n_frames, side = (8, 512) if args.quick else (40, 1024)

    print(f"shmproc demo: {mp.cpu_count()} CPUs, start method {ctx.get_start_method()}\n")
    rows = []
    for label, batched in (("events, one put/get each", False), ("events, put_many/get_many", True)):
        fast = run_events(Queue, n_events, batched, ctx)
        # multiprocessing.Queue has no batch API: its best is one at a time.
        slow = run_events(ctx.Queue, n_events if not args.quick else n_events // 2, False, ctx)
        rows.append((label, f"{fast / 1e3:,.0f}k/s", f"{slow / 1e3:,.0f}k/s", fast / slow))
    fast = run_frames(Queue, n_frames, side, ctx)
    slow = run_frames(ctx.Queue, n_frames, side, ctx)
    mb = side * side * 8 / 1e6
    rows.append((f"{mb:.0f} MB numpy frames", f"{fast:.2f} GB/s", f"{slow:.2f} GB/s", fast / slow))

    w = max(len(r[0]) for r in rows)
    print(f"{'workload':<{w}}  {'shmproc.Queue':>14}  {'mp.Queue':>10}  {'speed-up':>8}")
    print(f"{'-' * w}  {'-' * 14}  {'-' * 10}  {'-' * 8}")
    for label, a, b, ratio in rows:
        print(f"{label:<{w}}  {a:>14}  {b:>10}  {ratio:>7.1f}x")
    print("\nevery event arrived once and in order; every frame matched its checksum")
    return 0


if __name__ == "__main__":
    sys.exit(main())
