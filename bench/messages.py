"""tell / listen against multiprocessing's Pipe and Queue, in one run (issue 13).

    python bench/messages.py            # ~20 s
    python bench/messages.py --quick

One worker process per contender, started and warmed up before any clock
runs; fork.  Two figures:

1. Round trip, parent -> worker -> parent, one message in flight (the
   parent sends a small int, the worker sends it back): median of N.
     shmproc            p.tell(i) ... self.listen() / self.tell(i) ... p.listen()
     mp.Pipe            conn.send(i) / conn.recv() both ways
     mp.Queue           one Queue each way, put / get
   Target: shmproc <= 0.5x mp.Pipe.
2. A stream of 64-byte messages from the worker to the parent, read as they
   come: messages/s from the first send to the last message in hand.
     shmproc            self.tell(payload) x n, p.listen() x n
     mp.Queue           q.put(payload) x n, q.get() x n      (the reference)
   Target: shmproc >= 10x mp.Queue.
3. Pool.map over 100 tasks, each given one large array (8 MB and 512 MB;
   --quick: 8 and 64 MB) and returning one element of it: the array shared
   once with shmproc.share (each task gets a reference) vs the array itself
   (pickled into every task).  ms per task.  Target: with share(), the
   per-task cost does not grow with the array's size.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import time

if __package__ in (None, ""):
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    sys.path.append(_HERE)
    import _common as C
else:
    from . import _common as C

from shmproc.processing import Process

PAYLOAD = b"x" * 64


class EchoWorker(Process):
    """Sends back every message until told None."""

    def __init__(self):
        self.config.num_loops = None

    def __loop__(self):
        while True:
            msg = self.listen()
            if msg is None:
                self.stop()
                return
            self.tell(msg)


class StreamWorker(Process):
    """Waits for a count, then tells that many 64-byte messages; repeats."""

    def __init__(self):
        self.config.num_loops = None

    def __loop__(self):
        n = self.listen()
        if n is None:
            self.stop()
            return
        tell = self.tell
        for _ in range(n):
            tell(PAYLOAD)


def _pipe_echo(conn):
    while True:
        msg = conn.recv()
        if msg is None:
            return
        conn.send(msg)


def _queue_echo(inq, outq):
    while True:
        msg = inq.get()
        if msg is None:
            return
        outq.put(msg)


def _queue_stream(ctl, q):
    while True:
        n = ctl.get()
        if n is None:
            return
        for _ in range(n):
            q.put(PAYLOAD)


def _median_round_trip(send, recv, n):
    for i in range(200):                     # warm up
        send(i)
        recv()
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        send(i)
        got = recv()
        times.append(time.perf_counter() - t0)
        assert got == i
    return statistics.median(times)


def round_trips(n):
    ctx = mp.get_context("fork")
    rows = []
    p = EchoWorker()
    p.config.start_method = "fork"
    p.start()
    try:
        rows.append(("shmproc tell / listen",
                     _median_round_trip(p.tell, lambda: p.listen(timeout=30), n)))
    finally:
        p.tell(None)
        p.wait(30)
    a, b = ctx.Pipe()
    child = ctx.Process(target=_pipe_echo, args=(b,))
    child.start()
    rows.append(("mp.Pipe send / recv", _median_round_trip(a.send, a.recv, n)))
    a.send(None)
    child.join()
    inq, outq = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_queue_echo, args=(inq, outq))
    child.start()
    rows.append(("mp.Queue put / get", _median_round_trip(inq.put, outq.get, n)))
    inq.put(None)
    child.join()
    return rows


def streams(n, repeat):
    ctx = mp.get_context("fork")
    rows = []
    p = StreamWorker()
    p.config.start_method = "fork"
    p.start()
    try:
        best = 0.0
        for _ in range(repeat):
            t0 = time.perf_counter()
            p.tell(n)
            for _ in range(n):
                msg = p.listen(timeout=30)
            best = max(best, n / (time.perf_counter() - t0))
            assert msg == PAYLOAD
        rows.append(("shmproc self.tell -> p.listen", best))
    finally:
        p.tell(None)
        p.wait(30)
    ctl, q = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_queue_stream, args=(ctl, q))
    child.start()
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        ctl.put(n)
        for _ in range(n):
            msg = q.get()
        best = max(best, n / (time.perf_counter() - t0))
        assert msg == PAYLOAD
    ctl.put(None)
    child.join()
    rows.append(("mp.Queue put -> get", best))
    return rows


def _first(arr):
    return float(arr[0])


def shared_inputs(sizes_mb, tasks=100):
    import numpy as np
    import shmproc
    rows = []
    with shmproc.Pool(2, start_method="fork") as pool:
        pool.map(_first, [np.zeros(1)] * 4)                   # warm
        for mb in sizes_mb:
            arr = np.ones(mb * (1 << 20) // 8)
            shared = shmproc.share(arr)
            for how, item in (("shmproc.share(array)", shared), ("the array itself", arr)):
                t0 = time.perf_counter()
                out = pool.map(_first, [item] * tasks, chunksize=1)
                dt = (time.perf_counter() - t0) / tasks
                assert out == [1.0] * tasks
                rows.append((how, mb, dt))
            del shared
    return rows


def main(argv=None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    n_rt = 500 if quick else 3000
    n_stream, repeat = (20_000, 2) if quick else (100_000, 3)
    rt = round_trips(n_rt)
    st = streams(n_stream, repeat)
    big = shared_inputs((8, 64) if quick else (8, 512))
    pipe = next(t for name, t in rt if name.startswith("mp.Pipe"))
    print(f"1. round trip parent -> worker -> parent, median of {n_rt:,}")
    print(C.table(["path", "round trip", "vs mp.Pipe"],
                  [(name, f"{t * 1e6:.1f} us", C.ratio(t, pipe)) for name, t in rt], "lrr"))
    mpq = next(r for name, r in st if name.startswith("mp.Queue"))
    print(f"\n2. stream of {n_stream:,} 64-byte messages, worker -> parent, best of {repeat}")
    print(C.table(["path", "messages/s", "vs mp.Queue"],
                  [(name, C.si(r), C.ratio(r, mpq)) for name, r in st], "lrr"))
    print("\n3. Pool.map over 100 tasks, each given one large array, ms per task")
    print(C.table(["input", "array", "ms per task"],
                  [(how, f"{mb} MB", f"{dt * 1e3:.2f}") for how, mb, dt in big], "lrr"))
    shared_cost = [dt for how, mb, dt in big if how.startswith("shmproc")]
    ours_rt = rt[0][1]
    ours_st = st[0][1]
    print("\ntargets (issue 13)")
    print(C.table(["target", "verdict", "measured"], [
        ("round trip <= 0.5x mp.Pipe", C.verdict(ours_rt <= 0.5 * pipe), C.ratio(ours_rt, pipe)),
        ("stream >= 10x mp.Queue", C.verdict(ours_st >= 10 * mpq), C.ratio(ours_st, mpq)),
        ("shared input: per-task cost independent of size (large <= 2x small)",
         C.verdict(shared_cost[-1] <= 2 * shared_cost[0]), C.ratio(shared_cost[-1], shared_cost[0])),
    ], "llr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
