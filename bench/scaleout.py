"""shmproc's local backend against its Ray backend on one node, in one run.

    python bench/scaleout.py              # full run, ~1-2 minutes (Ray start included)
    python bench/scaleout.py --quick      # smoke run, rough numbers, ~40 s
    python bench/scaleout.py --json out.json

The script starts its own, hermetic Ray cluster first (2 CPUs, no dashboard,
a 100 MiB object store, a fresh temp dir under /tmp that is removed at the
end) and measures both backends -- and plain Ray as an anchor -- while that
cluster runs, so the local numbers pay the same background cost.  RayBackend()
reuses the already-initialized Ray.  Times are taken in the driver with
perf_counter, from the call to the value in hand.  Ratios are ray / local.
Without Ray installed the script says so (pip install 'shmproc[ray]') and
exits with status 2, having measured nothing.

1. Process start -> result: a trivial Process (num_loops=1, __result__
   returns its argument), started and waited for one at a time; median and
   p90 over 30 runs (--quick 8), local vs ray.  The very first Ray start
   creates the launcher actor and is reported on its own row; later starts
   reuse that launcher (a fork on the node).  Anchors: a plain Ray task round
   trip, ``ray.get(f.remote())``, and a fresh Ray actor created and called
   once (what a start would cost without launcher reuse).
2. Pools of 2 workers, ``shmproc.Pool(workers=2, backend=None | RayBackend())``:
   map of a trivial function over 100k items (default chunking) and over
   2,000 items with chunksize=1 (one dispatch per item), map of 1,000 tasks
   of ~1 ms of pure-Python CPU (a loop calibrated in the driver, default
   chunking); tasks/s, best of --repeat (default 3, quick 1) after a warm-up,
   the two pools taking turns run by run.  And submit -> result one task at
   a time (median and p90 over 300 calls, quick 50, in rounds of 25 calls
   per pool).  Anchors: plain Ray tasks, ``ray.get([f.remote(x) for x in
   range(N)])``, for the trivial function (N=2,000, one task per item, the
   same N as the chunksize=1 row; quick: 500 for both) and the ~1 ms
   tasks (N=1,000), and one plain task round trip at a time.
   shmproc's idle launcher actors keep their CPU for reuse (for 10 s), so
   before plain Ray runs the script hands them back (ray_backend.release_idle()).
3. A 64 MiB float64 array returned by a Process (built in __result__): the
   "result path" runs from __result__ returning (a wall-clock stamp in the
   array's first element) to the array in the driver's hands; GB/s = 10^9 B/s,
   best of 3 after a full-size warm-up.  The end-to-end start -> result time
   (fork and np.ones included) is shown too.  Ray's result arrays are
   read-only views of the object store (zero-copy); the local backend's are
   read-only views of its shared segment.  Anchors: a plain Ray task
   returning the same array, and an in-process arr.copy().
"""
from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    # bench/ holds queue.py, which would shadow the stdlib module: keep bench/
    # at the end of sys.path (see process.py).
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    sys.path.append(_HERE)
    import _common as C
else:
    from . import _common as C

import argparse
import importlib.util
import json
import shutil
import statistics
import tempfile
import time

import numpy as np

import shmproc
from shmproc.processing import Process

RAY_HINT = "pip install 'shmproc[ray]'"
NBYTES = 64 << 20

# ---- workloads (module level: Ray workers and launchers can load them) ----------------------


def noop(x=None):
    return x


def spin(n):
    for _ in range(n):
        pass
    return n


def stamped_array(nbytes):
    """A fresh float64 array whose first element is the wall-clock time it was handed back."""
    a = np.ones(nbytes // 8)
    a[0] = time.time()
    return a


class Trivial(Process):
    def __init__(self, i, start_method=None):
        self.i = i
        self.config.num_loops = 1
        self.config.start_method = start_method

    def __result__(self):
        return self.i


class BigResult(Process):
    def __init__(self, nbytes, start_method=None):
        self.nbytes = nbytes
        self.config.num_loops = 1
        self.config.start_method = start_method

    def __result__(self):
        return stamped_array(self.nbytes)


class Echo:
    """The plain Ray actor of the 'fresh actor' anchor."""

    def ping(self, x=None):
        return x


# ---- helpers -------------------------------------------------------------------------------------


def stats(times):
    """(median, p90) of a list of seconds."""
    s = sorted(times)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.9))]


def ratio(x, ref):
    """C.ratio, with small ratios kept readable (0.00018x rather than 0.00x)."""
    if x is not None and ref and x / ref < 0.01:
        return f"{x / ref:.2g}x"
    return C.ratio(x, ref)


def us(seconds):
    if seconds is None:
        return "n/a"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def call_latency(call, n, warmup=20):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return stats(times)


def release_launchers(ray, cpus, timeout=30.0):
    """Give shmproc's idle launcher actors back and wait until `cpus` CPUs are free.

    Idle launchers keep the CPU they hold for reuse (IDLE_LAUNCHER_S); plain
    Ray tasks queued meanwhile would wait for them.  release_idle() frees
    them now."""
    from shmproc import ray_backend
    ray_backend.release_idle()
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0.0) + 1e-9 < cpus:
        if time.monotonic() > deadline:
            raise C.BenchAbort(f"the Ray cluster did not free {cpus} CPUs within {timeout:g} s "
                               f"(free: {ray.available_resources().get('CPU', 0.0):g})")
        time.sleep(0.02)


# ---- 1. Process start -> result --------------------------------------------------------------


def process_start(ray, backend, sizes, method):
    rows = {}
    t0 = time.perf_counter()
    p = Trivial(-1, method).start(on=backend)
    assert p.result == -1
    rows["first_ray_start_s"] = time.perf_counter() - t0

    ray_noop = ray.remote(noop)
    contenders = {
        "local": lambda i: Trivial(i, method).start().result,
        "ray": lambda i: Trivial(i, method).start(on=backend).result,
        "plain_task": lambda i: ray.get(ray_noop.remote(i)),
    }
    for fn in contenders.values():                 # warm-up
        for i in range(3):
            assert fn(i) == i
    times = {k: [] for k in contenders}
    for i in range(sizes.starts):                  # in turns: load bursts hit all alike
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            out = fn(i)
            times[name].append(time.perf_counter() - t0)
            assert out == i
    for name, ts in times.items():
        rows[name] = stats(ts)

    echo = ray.remote(Echo)
    ts = []
    for i in range(sizes.actors):
        t0 = time.perf_counter()
        a = echo.remote()
        assert ray.get(a.ping.remote(i)) == i
        ts.append(time.perf_counter() - t0)
        ray.kill(a)
        del a
    rows["fresh_actor"] = stats(ts)
    return rows


# ---- 2. pools -----------------------------------------------------------------------------------


def plain_ray_tasks(ray, k1ms, sizes):
    ray_noop = ray.remote(noop)
    ray_spin = ray.remote(spin)

    def trivial(n=sizes.single_n):
        out = ray.get([ray_noop.remote(x) for x in range(n)])
        assert out[-1] == n - 1

    def work():
        out = ray.get([ray_spin.remote(k1ms) for _ in range(sizes.work_n)])
        assert len(out) == sizes.work_n

    trivial(200)                                   # warm-up: both workers, both functions
    ray.get([ray_spin.remote(1) for _ in range(200)])
    return {
        "single_tasks_s": C.best_rate(trivial, sizes.single_n, sizes.repeat),
        "work_tasks_s": C.best_rate(work, sizes.work_n, sizes.repeat),
        "one_at_a_time": call_latency(lambda: ray.get(ray_noop.remote(1)), sizes.latency_n),
    }


def pool_numbers(backend, k1ms, sizes, method):
    """Both pools side by side; the measurements take turns, run by run (and
    call by call for latency), so a burst of load on this shared machine
    hits both alike."""
    pools, out = {}, {}
    try:
        for name, on in (("local", None), ("ray", backend)):
            t0 = time.perf_counter()
            pools[name] = shmproc.Pool(workers=2, backend=on, start_method=method)
            assert pools[name].submit(noop, 1).result() == 1
            out[name] = {"create_s": time.perf_counter() - t0}
        items = list(range(sizes.trivial_n))
        single_items = list(range(sizes.single_n))
        work_items = [k1ms] * sizes.work_n
        workloads = {
            "trivial_tasks_s": lambda pool: pool.map(noop, items),
            "single_tasks_s": lambda pool: pool.map(noop, single_items, chunksize=1),
            "work_tasks_s": lambda pool: pool.map(spin, work_items),
        }
        sizes_of = {"trivial_tasks_s": items, "single_tasks_s": single_items,
                    "work_tasks_s": work_items}
        for pool in pools.values():                        # warm-up: workers, functions
            assert pool.map(spin, [1] * 200)[-1] == 1
            assert pool.map(noop, range(200), chunksize=1)[-1] == 199
        for key, run in workloads.items():
            expected = sizes_of[key]
            for name in pools:
                out[name][key] = 0.0
            for _ in range(sizes.repeat):
                for name, pool in pools.items():
                    t0 = time.perf_counter()
                    got = run(pool)
                    rate = len(expected) / (time.perf_counter() - t0)
                    assert len(got) == len(expected) and got[-1] == expected[-1]
                    out[name][key] = max(out[name][key], rate)

        # Latency in rounds of 25 calls per pool, each after 5 unrecorded ones:
        # back-to-back calls as in bench/pool.py, yet both pools see the same
        # stretches of machine load.
        times = {name: [] for name in pools}
        while len(times["local"]) < sizes.latency_n:
            block = min(25, sizes.latency_n - len(times["local"]))
            for name, pool in pools.items():
                for _ in range(5):
                    pool.submit(noop, 1).result()
                for _ in range(block):
                    t0 = time.perf_counter()
                    assert pool.submit(noop, 1).result() == 1
                    times[name].append(time.perf_counter() - t0)
        for name in pools:
            out[name]["submit_result"] = stats(times[name])
        return out["local"], out["ray"]
    finally:
        for pool in pools.values():
            pool.close()
            pool.join()


# ---- 3. a 64 MiB result ------------------------------------------------------------------------


def big_result(ray, backend, runs, method):
    rows = {}
    for name, on in (("local", None), ("ray", backend)):
        BigResult(NBYTES, method).start(on=on).result           # warm-up, full size
        e2e, path, ro = [], [], None
        for _ in range(runs):
            t0 = time.perf_counter()
            p = BigResult(NBYTES, method).start(on=on)
            a = p.result
            t1 = time.perf_counter()
            path.append(time.time() - a[0])
            e2e.append(t1 - t0)
            assert a.shape == (NBYTES // 8,) and a[1::4096].sum() == len(a[1::4096])
            ro = not a.flags.writeable
            del a, p
        rows[name] = (NBYTES / min(path) / 1e9, NBYTES / min(e2e) / 1e9, min(e2e), ro)

    ray_big = ray.remote(stamped_array)
    ray.get(ray_big.remote(NBYTES))
    e2e, path = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        a = ray.get(ray_big.remote(NBYTES))
        t1 = time.perf_counter()
        path.append(time.time() - a[0])
        e2e.append(t1 - t0)
        ro = not a.flags.writeable
        del a
    rows["plain_task"] = (NBYTES / min(path) / 1e9, NBYTES / min(e2e) / 1e9, min(e2e), ro)

    src = np.ones(NBYTES // 8)
    best = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        b = src.copy()
        best = max(best, NBYTES / (time.perf_counter() - t0) / 1e9)
        del b
    rows["copy"] = (best, None, None, False)
    return rows


# ---- report --------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: fewer runs, one repeat (numbers are rough)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed runs per throughput, best one reported (default 3, quick 1)")
    ap.add_argument("--start-method", choices=("fork", "spawn", "forkserver"), default="fork",
                    help="start method of the local workers, and of the launchers' children "
                         "on the node (default fork)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds before one section is declared hung (default 180, quick 60)")
    ap.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    args = ap.parse_args(argv)
    quick = bool(args.quick)
    method = args.start_method

    if importlib.util.find_spec("ray") is None:
        print(f"bench/scaleout.py compares the local backend with the Ray backend, and Ray is "
              f"not installed here: {RAY_HINT}", file=sys.stderr)
        return 2

    class Sizes:
        starts = 8 if quick else 30
        actors = 3 if quick else 8
        trivial_n = 100_000
        single_n = 500 if quick else 2_000
        work_n = 1_000
        latency_n = 50 if quick else 300
        repeat = args.repeat if args.repeat is not None else (1 if quick else 3)
        big_runs = 3
        timeout = args.timeout if args.timeout is not None else (60.0 if quick else 180.0)
    sizes = Sizes
    if sizes.repeat < 1:
        raise SystemExit("--repeat must be >= 1")

    settings = C.Settings(quick, sizes.repeat, method, 0.0, sizes.timeout)
    env = [line for line in C.environment_lines(settings, ["shmproc", "ray", "numpy",
                                                           "cloudpickle"])
           if not line.startswith("timing")]
    print("\n".join(env))
    print(f"timing        median/p90 of {sizes.starts} starts; throughputs best of "
          f"{sizes.repeat} after a warm-up{'  [--quick: rough numbers]' if quick else ''}")

    k, per = 500_000, float("inf")
    for _ in range(5):                                 # ~15 ms each; the fastest counts
        t0 = time.perf_counter()
        spin(k)
        per = min(per, (time.perf_counter() - t0) / k)
    k1ms = max(1, int(1e-3 / per))
    print(f"work task     spin({k1ms}) ~ {k1ms * per * 1e3:.2f} ms in-process")

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    temp_dir = tempfile.mkdtemp(prefix="shmproc-ray-")
    results = {"quick": quick, "start_method": method, "spin_1ms": k1ms}
    try:
        t0 = time.perf_counter()
        # address="local": always a new cluster of our own, never one found via
        # RAY_ADDRESS or /tmp/ray (other Ray clusters may run on this machine).
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=100 * 2**20, _temp_dir=temp_dir,
                 configure_logging=False, log_to_driver=False)
        results["ray_init_s"] = time.perf_counter() - t0
        print(f"ray cluster   ray.init(num_cpus=2, object store 100 MiB) took "
              f"{results['ray_init_s']:.1f} s; temp dir {temp_dir}\n", flush=True)
        backend = shmproc.RayBackend()

        with C.Watchdog("1. process start", sizes.timeout):
            starts = process_start(ray, backend, sizes, method)
        with C.Watchdog("2. plain Ray tasks", sizes.timeout):
            release_launchers(ray, 2)
            plain = plain_ray_tasks(ray, k1ms, sizes)
        with C.Watchdog("2. pools", sizes.timeout):
            local_pool, ray_pool = pool_numbers(backend, k1ms, sizes, method)
        with C.Watchdog("3. 64 MiB result", sizes.timeout):
            release_launchers(ray, 2)
            big = big_result(ray, backend, sizes.big_runs, method)
    finally:
        try:
            from shmproc import ray_backend
            ray_backend.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)

    # -- 1 --
    loc = starts["local"][0]
    print(f"1. Process start -> result, one at a time (median and p90 of {sizes.starts}; "
          f"actors: of {sizes.actors})")
    body = [("local backend (fork)", us(starts["local"][0]), us(starts["local"][1]), "1.00x"),
            ("ray backend (launcher reused)", us(starts["ray"][0]), us(starts["ray"][1]),
             C.ratio(starts["ray"][0], loc)),
            ("ray backend, first start (new launcher actor)", us(starts["first_ray_start_s"]),
             "-", C.ratio(starts["first_ray_start_s"], loc)),
            ("anchor: plain ray.get(f.remote())", us(starts["plain_task"][0]),
             us(starts["plain_task"][1]), C.ratio(starts["plain_task"][0], loc)),
            ("anchor: fresh Ray actor + one call", us(starts["fresh_actor"][0]),
             us(starts["fresh_actor"][1]), C.ratio(starts["fresh_actor"][0], loc))]
    print(C.table(["how", "median", "p90", "median vs local"], body, "lrrr"))
    print(f"   launcher reuse vs a fresh actor: "
          f"{C.ratio(starts['fresh_actor'][0], starts['ray'][0])} faster\n")
    results["process_start"] = starts

    # -- 2 --
    print("2. pools of 2 workers, tasks/s (best of %d)" % sizes.repeat)
    lp, rp = local_pool, ray_pool
    body = [(f"map(noop, {sizes.trivial_n:,} items), default chunks",
             C.si(lp["trivial_tasks_s"]), C.si(rp["trivial_tasks_s"]),
             ratio(rp["trivial_tasks_s"], lp["trivial_tasks_s"]), "-", "-"),
            (f"map(noop, {sizes.single_n:,} items), chunksize=1",
             C.si(lp["single_tasks_s"]), C.si(rp["single_tasks_s"]),
             ratio(rp["single_tasks_s"], lp["single_tasks_s"]),
             C.si(plain["single_tasks_s"]), ratio(plain["single_tasks_s"], lp["single_tasks_s"])),
            (f"map(spin ~1 ms, {sizes.work_n:,} items), default chunks",
             C.si(lp["work_tasks_s"]), C.si(rp["work_tasks_s"]),
             ratio(rp["work_tasks_s"], lp["work_tasks_s"]),
             C.si(plain["work_tasks_s"]), ratio(plain["work_tasks_s"], lp["work_tasks_s"]))]
    print(C.table(["workload", "local Pool", "ray Pool", "ray / local", "plain Ray tasks",
                   "plain / local"], body, "lrrrrr"))
    print("   plain Ray tasks: ray.get([f.remote(x) for x in items]), one task per item.")
    print(f"   ideal for ~1 ms tasks on 2 workers: ~{C.si(2 / (k1ms * per))} tasks/s; "
          f"pool creation + first result: local {us(local_pool['create_s'])}, "
          f"ray {us(ray_pool['create_s'])}\n")

    print(f"   submit -> result on a warm pool, one at a time ({sizes.latency_n} calls)")
    lref = local_pool["submit_result"][0]
    body = [("local Pool", us(lref), us(local_pool["submit_result"][1]), "1.00x"),
            ("ray Pool", us(ray_pool["submit_result"][0]), us(ray_pool["submit_result"][1]),
             C.ratio(ray_pool["submit_result"][0], lref)),
            ("anchor: plain ray.get(f.remote())", us(plain["one_at_a_time"][0]),
             us(plain["one_at_a_time"][1]), C.ratio(plain["one_at_a_time"][0], lref))]
    print(C.table(["pool", "median", "p90", "median vs local"], body, "lrrr"))
    print()
    results["pool"] = {"local": local_pool, "ray": ray_pool, "plain_ray": plain}

    # -- 3 --
    print(f"3. {NBYTES >> 20} MiB float64 result from a Process, best of {sizes.big_runs}")
    lpath = big["local"][0]

    def row(name, key):
        path, e2e_gbs, e2e_s, ro = big[key]
        return (name, f"{path:.2f}", C.ratio(path, lpath),
                "-" if e2e_s is None else f"{us(e2e_s)} ({e2e_gbs:.2f} GB/s)",
                "-" if key == "copy" else ("read-only" if ro else "writable"))
    body = [row("local backend", "local"), row("ray backend", "ray"),
            row("anchor: plain Ray task returning it", "plain_task"),
            row("anchor: in-process arr.copy()", "copy")]
    print(C.table(["path", "result GB/s", "vs local", "start -> result", "array"], body,
                  "lrrrl"))
    print("   result GB/s: from __result__ returning to the array in hand (wall-clock stamp in "
          "a[0]).\n   Ray hands back read-only views of its object store, the local backend "
          "read-only\n   views of its shared segment: arr.copy() (or copy=True in a Pool) for a "
          "writable one.")
    results["big_result"] = {k: dict(zip(("result_gbs", "e2e_gbs", "e2e_s", "read_only"), v))
                             for k, v in big.items()}

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
