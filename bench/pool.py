"""shmproc.Pool against multiprocessing.Pool, ProcessPoolExecutor, mpire and loky, in one run.

    python bench/pool.py              # full run, ~2-3 minutes
    python bench/pool.py --quick      # smoke run, rough numbers
    python bench/pool.py --check-targets

Every pool is created once, warmed up (each worker has run tasks), and then
timed in the parent with perf_counter from the call to the last result in
hand.  All pools have the same number of workers (--workers, default 2) and
use fork (loky uses its own fork+exec start).  Ratios are against
multiprocessing.Pool (1.00x).

1. Trivial tasks (``noop(x) -> x``), up to 100k per run: each library's
   default batching (mp.Pool, mpire and shmproc pick a chunk size;
   ProcessPoolExecutor and loky default to 1, so they are also shown with
   chunksize=256), and chunksize=1 (one task per dispatch).  tasks/s, best
   of max(--repeat, 5) runs taken in turns by the contenders; batched
   runs map all 100k items (so every pool chunks the same input alike),
   repeated within a run to fill ~0.5 s (one map takes ~15 ms); chunksize-1
   runs are calibrated to ~0.5 s (at least 1,000 tasks).
   Targets: shmproc chunksize 1 >= 100k/s and >= 5x mp.Pool chunksize 1;
   shmproc default >= the best default of the anchors.
2. Up to 10k tasks of ~100 us of pure-Python CPU work each (a loop calibrated in
   the parent), default batching and chunksize 1.  tasks/s.
3. submit -> result on a warm pool, one task at a time: median and p90
   latency over --latency-n calls (mp.Pool.apply, executor.submit().result(),
   mpire apply, shmproc submit().result()).  Target: shmproc median <= 100 us.
4. A 256 MiB float64 array returned by a warm worker (the worker keeps the
   array, so only the transfer is timed); GB/s = 10^9 B/s.  Contenders:
   shmproc.Pool.submit, mp.Pool.apply, and a warm mp.Process answering
   requests on an mp.Queue (the reference for this row); in-process
   arr.copy() for scale.  Target: shmproc >= 25x mp.Queue.
5. 1,000 trivial Process objects (num_loops=1, __result__ returns its
   argument) through ``pool.map(Trivial, range(1000))`` vs the same Process
   objects started one by one (start, result, next).  Target: >= 50x.
6. Idle CPU: after a burst of tasks, the pool's workers are left idle for
   3 s; the busiest worker's share of a core (from /proc).  Target < 1%.
7. Futures: shmproc.Executor vs ProcessPoolExecutor and loky, 2 workers
   each: submit -> Future.result() one at a time (median; shmproc's own
   Pool.submit().result() measured alongside), and 10k submits collected
   with as_completed (tasks/s).  asyncio: 10k results awaited through
   pool.aimap vs asyncio.gather over loop.run_in_executor on the stdlib
   executor.  Targets: the Future path <= 1.5x shmproc's own submit path;
   as_completed >= 5x ProcessPoolExecutor at one task per submit.
8. After idle, many workers, idle cost (issue 14): bench/idle_and_scale.py's
   rows and targets (submit -> result after 1/20 ms idle vs an os.pipe
   ping-pong, back-to-back vs mp.Pool.apply, p.result after a Process's
   last hook vs os.fork + pipe, pool lifecycle and one-task dispatch at
   1-64 workers vs mp.Pool, an idle 64-worker pool's wake-ups and memory).
9. Tracing on vs off (issue 15): bench/tracing.py's one-task dispatch and
   per-lap rows, the timeline's recording cost (targets <= 3%, <= 0.1 us).
"""
from __future__ import annotations

import os
import sys

_CHILD = __name__ == "__mp_main__"
if __package__ in (None, ""):
    # bench/ holds queue.py, which would shadow the stdlib module: keep bench/
    # at the end of sys.path (see process.py).
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    sys.path.append(_HERE)
    import _common as C
    import idle_and_scale
    import tracing
else:
    from . import _common as C
    from . import idle_and_scale
    from . import tracing

import argparse
import json
import multiprocessing as mp
import statistics
import time

import numpy as np

import shmproc
from shmproc.processing import Process

# ---- workloads (module level: every library can pickle them by reference) ---------------


def noop(x):
    return x


def spin(n):
    for _ in range(n):
        pass
    return n


_HELD = {}


def held_array(nbytes):
    """The worker's cached array: building it is not part of the transfer."""
    a = _HELD.get(nbytes)
    if a is None:
        a = _HELD[nbytes] = np.ones(nbytes // 8)
    return a


class Trivial(Process):
    def __init__(self, i):
        self.i = i
        self.config.num_loops = 1

    def __result__(self):
        return self.i


def _queue_server(requests, replies, nbytes):
    a = np.ones(nbytes // 8)
    while requests.get() is not None:
        replies.put(a)


# ---- contenders ------------------------------------------------------------------------


class Contender:
    name = ""

    def map(self, fn, items, chunksize):          # chunksize None: the library's default
        raise NotImplementedError

    def call(self, fn, arg):
        raise NotImplementedError

    def close(self):
        pass


class ShmprocPool(Contender):
    name = "shmproc.Pool"

    def __init__(self, workers):
        self.pool = shmproc.Pool(workers, start_method="fork")

    def map(self, fn, items, chunksize):
        return self.pool.map(fn, items, chunksize=chunksize)

    def call(self, fn, arg):
        return self.pool.submit(fn, arg).result()

    def close(self):
        self.pool.terminate()


class MpPool(Contender):
    name = "multiprocessing.Pool"

    def __init__(self, workers):
        self.pool = mp.get_context("fork").Pool(workers)

    def map(self, fn, items, chunksize):
        return self.pool.map(fn, items, chunksize=chunksize)

    def call(self, fn, arg):
        return self.pool.apply(fn, (arg,))

    def close(self):
        self.pool.terminate()
        self.pool.join()


class Executor(Contender):
    name = "ProcessPoolExecutor"

    def __init__(self, workers):
        from concurrent.futures import ProcessPoolExecutor
        self.ex = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))

    def map(self, fn, items, chunksize):
        return list(self.ex.map(fn, items, chunksize=chunksize or 1))

    def call(self, fn, arg):
        return self.ex.submit(fn, arg).result()

    def close(self):
        self.ex.shutdown(wait=True, cancel_futures=True)


class Loky(Executor):
    name = "loky"

    def __init__(self, workers):
        from loky import get_reusable_executor
        self.ex = get_reusable_executor(max_workers=workers, timeout=600)

    def close(self):
        self.ex.shutdown(wait=True, kill_workers=True)


class Mpire(Contender):
    name = "mpire"

    def __init__(self, workers):
        from mpire import WorkerPool
        self.pool = WorkerPool(n_jobs=workers, start_method="fork", keep_alive=True)
        self.pool.__enter__()

    def map(self, fn, items, chunksize):
        return self.pool.map(fn, items, chunk_size=chunksize, progress_bar=False)

    def call(self, fn, arg):
        return self.pool.apply(fn, (arg,))

    def close(self):
        self.pool.__exit__(None, None, None)


CONTENDERS = [ShmprocPool, MpPool, Executor, Loky, Mpire]


def available(workers):
    out = []
    for cls in CONTENDERS:
        try:
            out.append(cls(workers))
        except ImportError as exc:
            print(f"  ({cls.name} not measured: {exc}; pip install -e '.[bench]')")
    return out


# ---- measurements -------------------------------------------------------------------------


def throughput(contenders, fn, arg, n, sizes, label):
    """rows: (name, setting, tasks/s).  Each run's task count is calibrated to
    take about sizes.run_s (at most n), so slow contenders do not take
    minutes; then the contenders take turns, run by run, so a burst of load
    on this shared machine hits them all alike."""
    items = [arg] * n
    plans = []
    for c in contenders:
        variants = [("default", None), ("chunksize 1", 1)]
        if isinstance(c, Executor):          # their default is 1: show a batched setting too
            variants = [("chunksize 256", 256), ("chunksize 1 (default)", 1)]
        for vname, cs in variants:
            def run(count, reps=1, c=c, cs=cs):
                sub = items[:count]
                t0 = time.perf_counter()
                for _ in range(reps):
                    out = c.map(fn, sub, cs)
                dt = time.perf_counter() - t0
                assert len(out) == count and out[-1] == arg
                return dt
            probe = min(n, 2000)
            rate = probe / run(probe)                             # warm-up and estimate
            if cs != 1 and n / rate <= 4 * sizes.run_s:
                # Batched: every pool maps the same n items (same chunking),
                # as many times as fit in one run (one map of 100k trivial
                # items takes ~15 ms: too short to time alone here).
                count = n
                rate = n / run(n)
                reps = max(1, int(rate * sizes.run_s / n))
            else:
                count, reps = int(max(min(n, 1000), min(n, rate * sizes.run_s))), 1
            plans.append((c.name, vname, run, count, reps))
        print(f"  {label}: {c.name} calibrated", flush=True)
    best = {}
    for _ in range(sizes.repeat):
        for name, vname, run, count, reps in plans:
            rate = count * reps / run(count, reps)
            best[name, vname] = max(best.get((name, vname), 0.0), rate)
    return [(name, vname, best[name, vname]) for name, vname, *_ in plans]


def latency(contenders, n):
    rows = []
    for c in contenders:
        for _ in range(50):
            c.call(noop, 1)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            c.call(noop, 1)
            times.append(time.perf_counter() - t0)
        times.sort()
        rows.append((c.name, statistics.median(times), times[int(len(times) * 0.9)]))
    return rows


def big_result(contenders, nbytes, runs):
    rows = []
    for c in contenders:
        if not isinstance(c, (ShmprocPool, MpPool)):
            continue
        for _ in range(4):                                        # every worker builds and keeps it
            c.call(held_array, nbytes)
        best = 0.0
        for _ in range(runs):
            t0 = time.perf_counter()
            a = c.call(held_array, nbytes)
            ok = a.shape == (nbytes // 8,) and a[::4096].sum() == len(a[::4096])
            dt = time.perf_counter() - t0
            assert ok
            del a
            best = max(best, nbytes / dt / 1e9)
        rows.append((c.name, best))
    ctx = mp.get_context("fork")
    req, rep = ctx.Queue(), ctx.Queue()
    server = ctx.Process(target=_queue_server, args=(req, rep, nbytes))
    server.start()
    best = 0.0
    for i in range(runs + 1):
        t0 = time.perf_counter()
        req.put(1)
        a = rep.get()
        assert a[::4096].sum() == len(a[::4096])
        dt = time.perf_counter() - t0
        del a
        if i:
            best = max(best, nbytes / dt / 1e9)
    req.put(None)
    server.join()
    rows.append(("warm mp.Process + mp.Queue", best))
    src = np.ones(nbytes // 8)
    best = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        b = src.copy()
        best = max(best, nbytes / (time.perf_counter() - t0) / 1e9)
        del b
    rows.append(("in-process arr.copy()", best))
    return rows


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pool, seconds):
    """Share of a core each idle worker uses (after a burst of work)."""
    pool.map(noop, range(10_000), chunksize=1)
    pids = pool.pids
    before = [_cpu_seconds(p) for p in pids]
    time.sleep(seconds)
    return max((_cpu_seconds(p) - b) / seconds for p, b in zip(pids, before))


def process_batch(pool, n_pool, n_single, repeat):
    pool.map(Trivial, range(50))
    best_pool = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = pool.map(Trivial, range(n_pool))
        dt = time.perf_counter() - t0
        assert out == list(range(n_pool))
        best_pool = max(best_pool, n_pool / dt)
    t0 = time.perf_counter()
    for i in range(n_single):
        p = Trivial(i)
        p.start()
        assert p.result == i
    single = n_single / (time.perf_counter() - t0)
    return best_pool, single


# ---- report -------------------------------------------------------------------------------------

def futures_rows(workers, n_latency, n_many):
    """Section 7: [(name, median s, as_completed tasks/s)], Pool.submit's
    median, and [(name, asyncio tasks/s)]."""
    import asyncio
    import concurrent.futures as cf
    execs = [("shmproc.Executor", lambda: shmproc.Executor(workers, mp.get_context("fork"))),
             ("ProcessPoolExecutor",
              lambda: cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")))]
    try:
        from loky import get_reusable_executor
        execs.append(("loky", lambda: get_reusable_executor(max_workers=workers, timeout=600)))
    except ImportError as exc:
        print(f"  (loky not measured: {exc})")

    def median_call(call):
        for _ in range(50):
            call()
        times = []
        for _ in range(n_latency):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    rows, aio = [], []
    for name, make in execs:
        ex = make()
        try:
            med = median_call(lambda: ex.submit(noop, 1).result())
            best = 0.0
            for _ in range(3):
                t0 = time.perf_counter()
                fs = [ex.submit(noop, i) for i in range(n_many)]
                assert sum(f.result() for f in cf.as_completed(fs)) == n_many * (n_many - 1) // 2
                best = max(best, n_many / (time.perf_counter() - t0))
            rows.append((name, med, best))
            if name == "ProcessPoolExecutor":
                async def gathered():
                    loop = asyncio.get_running_loop()
                    t0 = time.perf_counter()
                    out = await asyncio.gather(*[loop.run_in_executor(ex, noop, i)
                                                 for i in range(n_many)])
                    assert len(out) == n_many
                    return n_many / (time.perf_counter() - t0)
                aio.append(("asyncio.gather(run_in_executor) on ProcessPoolExecutor",
                            max(asyncio.run(gathered()) for _ in range(3))))
        finally:
            ex.shutdown(wait=True)
    pool = shmproc.Pool(workers, start_method="fork")
    try:
        own = median_call(lambda: pool.submit(noop, 1).result())

        async def streamed(chunksize):
            t0 = time.perf_counter()
            count = 0
            async for _ in pool.aimap(noop, range(n_many), chunksize):
                count += 1
            assert count == n_many
            return n_many / (time.perf_counter() - t0)
        aio.insert(0, ("shmproc pool.aimap (chunksize 1)",
                       max(asyncio.run(streamed(1)) for _ in range(3))))
        aio.insert(1, ("shmproc pool.aimap (default chunking)",
                       max(asyncio.run(streamed(None)) for _ in range(3))))
    finally:
        pool.terminate()
    return rows, own, aio


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(p)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latency-n", type=int, default=None)
    p.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    p.add_argument("--check-targets", action="store_true",
                   help="exit 2 if a target in DESIGN.md is missed")
    args = p.parse_args(argv)
    s = C.settings_from_args(args)
    quick = s.quick

    class Sizes:
        trivial_n = 20_000 if quick else 100_000
        run_s = 0.1 if quick else 0.5
        work_n = 2_000 if quick else 10_000
        latency_n = args.latency_n or (300 if quick else 2000)
        nbytes = (32 if quick else 256) << 20
        big_runs = 2 if quick else 5
        proc_pool = 1000
        proc_single = 20 if quick else 100
        repeat = max(s.repeat, 1 if quick else 5)
        futures_n = 2_000 if quick else 10_000
    sizes = Sizes

    import dataclasses
    shown = dataclasses.replace(s, repeat=sizes.repeat, target_time=sizes.run_s)
    print("\n".join(C.environment_lines(shown, ["shmproc", "numpy", "mpire", "loky",
                                                 "cloudpickle"])))
    print(f"workers       {args.workers}")
    # ~100 us of pure-Python work per task, calibrated here
    k = 20_000
    t0 = time.perf_counter()
    spin(k)
    per = (time.perf_counter() - t0) / k
    k100 = max(1, int(100e-6 / per))
    print(f"work task     spin({k100}) ~ {k100 * per * 1e6:.0f} us in-process\n", flush=True)

    contenders = available(args.workers)
    results = {}
    try:
        triv = throughput(contenders, noop, 1, sizes.trivial_n, sizes, "trivial")
        work = throughput(contenders, spin, k100, sizes.work_n, sizes, "100 us")
        lat = latency(contenders, sizes.latency_n)
        big = big_result(contenders, sizes.nbytes, sizes.big_runs)
        shm = contenders[0]
        batch_pool, batch_single = process_batch(shm.pool, sizes.proc_pool, sizes.proc_single,
                                                 sizes.repeat)
        idle = idle_cpu(shm.pool, 1.0 if quick else 3.0)
    finally:
        for c in contenders:
            c.close()
    fut, own_submit, aio = futures_rows(args.workers, sizes.latency_n, sizes.futures_n)

    def ref_of(rows, setting):
        for name, v, rate in rows:
            if name == "multiprocessing.Pool" and v == setting:
                return rate
        return None

    for title, rows in ((f"1. trivial tasks (noop), up to {sizes.trivial_n:,} per run, tasks/s",
                         triv),
                        (f"2. tasks of ~100 us CPU, up to {sizes.work_n:,} per run, tasks/s", work)):
        print(title)
        body = []
        for name, v, rate in rows:
            ref = ref_of(rows, "chunksize 1" if v.startswith("chunksize 1") else "default")
            body.append((name, v, C.si(rate), C.ratio(rate, ref)))
        print(C.table(["pool", "chunking", "tasks/s", "vs mp.Pool"], body, "llrr"))
        print()
    results["trivial"] = triv
    results["work"] = work

    print(f"3. submit -> result on a warm pool, one at a time ({sizes.latency_n} calls)")
    ref = next(m for n, m, _ in lat if n == "multiprocessing.Pool")
    print(C.table(["pool", "median", "p90", "median vs mp.Pool"],
                  [(n, f"{m * 1e6:.0f} us", f"{p90 * 1e6:.0f} us", C.ratio(ref, m))
                   for n, m, p90 in lat], "lrrr"))
    print()
    results["latency"] = lat

    print(f"4. {sizes.nbytes >> 20} MiB float64 result from a warm worker, GB/s (best of "
          f"{sizes.big_runs})")
    qref = next(g for n, g in big if n.startswith("warm mp.Process"))
    print(C.table(["path", "GB/s", "vs mp.Queue"],
                  [(n, f"{g:.2f}", C.ratio(g, qref)) for n, g in big], "lrr"))
    print()
    results["big_result"] = big

    print("5. trivial Process objects, objects/s")
    print(C.table(["how", "objects/s", "ratio"],
                  [(f"pool.map(Trivial, range({sizes.proc_pool}))", C.si(batch_pool),
                    C.ratio(batch_pool, batch_single)),
                   (f"start() + result, one by one ({sizes.proc_single})", C.si(batch_single),
                    "1.00x")], "lrr"))
    print()
    results["process_batch"] = (batch_pool, batch_single)
    print(f"6. idle pool: busiest worker uses {idle * 100:.2f}% of a core "
          f"(after a burst of work)\n")
    results["idle_cpu"] = idle

    print(f"7. Futures: submit -> result() one at a time ({sizes.latency_n} calls), and "
          f"{sizes.futures_n:,} submits collected with as_completed")
    ppe = next((m, r) for n, m, r in fut if n == "ProcessPoolExecutor")
    print(C.table(["executor", "median", "vs Pool.submit", "as_completed tasks/s",
                   "vs ProcessPoolExecutor"],
                  [(n, f"{m * 1e6:.0f} us", C.ratio(m, own_submit), C.si(r), C.ratio(r, ppe[1]))
                   for n, m, r in fut]
                  + [("shmproc Pool.submit (reference)", f"{own_submit * 1e6:.0f} us", "1.00x",
                      "", "")], "lrrrr"))
    aref = aio[-1][1]
    print(C.table(["asyncio path", f"tasks/s ({sizes.futures_n:,} results)", "vs stdlib"],
                  [(n, C.si(r), C.ratio(r, aref)) for n, r in aio], "lrr"))
    print()
    results["futures"] = {"executors": fut, "pool_submit_median": own_submit, "asyncio": aio}

    def get(rows, name, setting):
        return next((r for n, v, r in rows if n == name and v == setting), None)

    cs1 = get(triv, "shmproc.Pool", "chunksize 1")
    mp1 = get(triv, "multiprocessing.Pool", "chunksize 1")
    best_default = max(r for n, v, r in triv
                       if n != "shmproc.Pool" and not v.startswith("chunksize 1"))
    shm_default = get(triv, "shmproc.Pool", "default")
    shm_lat = next(m for n, m, _ in lat if n == "shmproc.Pool")
    shm_big = next(g for n, g in big if n == "shmproc.Pool")
    checks = [
        ("one task per dispatch >= 100k tasks/s", cs1 >= 100e3, f"{C.si(cs1)}/s"),
        ("one task per dispatch >= 5x mp.Pool chunksize 1", cs1 >= 5 * mp1,
         C.ratio(cs1, mp1)),
        ("default batching >= best anchor", shm_default >= best_default,
         C.ratio(shm_default, best_default)),
        ("warm submit -> result median <= 100 us", shm_lat <= 100e-6, f"{shm_lat * 1e6:.0f} us"),
        ("256 MiB result >= 25x mp.Queue", shm_big >= 25 * qref, C.ratio(shm_big, qref)),
        ("Process batch >= 50x one by one", batch_pool >= 50 * batch_single,
         C.ratio(batch_pool, batch_single)),
        ("idle worker < 1% of a core", idle < 0.01, f"{idle * 100:.2f}%"),
    ]
    shm_fut = next((m, r) for n, m, r in fut if n == "shmproc.Executor")
    checks += [
        ("Executor submit -> result <= 1.5x Pool.submit", shm_fut[0] <= 1.5 * own_submit,
         C.ratio(shm_fut[0], own_submit)),
        ("Executor as_completed >= 5x ProcessPoolExecutor", shm_fut[1] >= 5 * ppe[1],
         C.ratio(shm_fut[1], ppe[1])),
    ]
    print("targets (DESIGN.md)")
    print(C.table(["target", "verdict", "measured"],
                  [(t, C.verdict(ok), m) for t, ok, m in checks], "llr"))
    print()
    # 8. Performance round 2 (issue 14): after idle, many workers, idle cost.
    print("8. after idle, many workers, idle cost (bench/idle_and_scale.py)")
    after = idle_and_scale.after_idle(quick)
    last_hook = idle_and_scale.result_after_last_hook(quick)
    apart = idle_and_scale.after_idle_apart(quick)
    scale = idle_and_scale.scaling(quick, s.repeat)
    cost = idle_and_scale.idle_cost(64, 1.0 if quick else 2.0)
    round2_ok = idle_and_scale.report(after, last_hook, scale, cost)
    results["round2"] = {"after_idle": after, "last_hook": last_hook, "after_idle_apart": apart,
                         "scaling": {n: v for n, v in scale.items()}, "idle_cost": cost}
    checks.append(("round 2 targets (8.)", round2_ok, ""))
    print()
    # 9. What recording the timeline costs (issue 15): tracing on vs off.
    print("9. tracing on vs off (bench/tracing.py)")
    traced = tracing.dispatch(quick), tracing.per_lap(quick)
    checks.append(("tracing costs (9.)", tracing.report(*traced), ""))
    results["tracing"] = {"dispatch_on_off_cpu": traced[0], "lap_us_on_off": traced[1]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if args.check_targets and not all(ok for _, ok, _ in checks):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
