"""Where services live: latency after idle, pools of many workers, the cost of idling.

    python bench/idle_and_scale.py            # ~1 minute
    python bench/idle_and_scale.py --quick    # rough numbers, ~15 s

Every row is a ratio against an anchor measured in the same run:

1. submit -> result on a warm 2-worker pool, one task at a time, after the
   caller sat idle 0 (back-to-back: no sleep at all), 1 and 20 ms before
   each call (median).  Anchors: two processes ping-ponging one byte over
   os.pipe after the same idle (the OS's floor for a wake-up each way),
   and multiprocessing.Pool.apply.
   Targets: <= 2x the pipe after 1 and 20 ms; back-to-back <= 0.1x
   mp.Pool.apply.  Beside them, no target: the same call's two C steps
   alone on a pool of their own (lone_c_steps: the record put, the result
   taken), the floor under the pool's path.
1b. p.result of a started Process returning after its worker's last hook
   (__result__ stamps the clock; the parent is blocked in p.result), the
   child having idled 1 or 20 ms first.  Anchor: os.fork + a pipe, the
   child idling the same, then writing its stamp.  Target: <= 2x.
1c. Row 1 after idle again, with the caller on one CPU and the workers
   (and the pipe's child) kept on another (sched_setaffinity).  No
   target: it shows what the pipe anchor measures.  A pipe write wakes its
   reader on the writer's CPU (a synchronous wake-up), and the writer then
   sleeps in its read: the two hand one core back and forth, with no
   wake-up of an idle CPU.  A pool's worker runs while its caller goes on;
   kept on different CPUs, each side pays for waking an idle CPU, the
   pipe included.
2. Pool lifecycle at 1, 2, 8, 32 and 64 workers: create, one one-item task
   per worker, close, join (best of --repeat) vs multiprocessing.Pool.
   Target at 64 workers: <= 1.0x.
3. One task per dispatch (map, chunksize=1) at the same sizes: tasks/s vs
   multiprocessing.Pool.  Target (2 workers): >= 10x.
4. An idle pool of 64 workers: context switches and CPU ticks of all its
   workers over 2 s (target: none), and memory per idle worker (PSS, the
   worker's fair share of pages it shares with its siblings).

Note: after-idle latency is mostly the cost of running code on a cold
core (a 20 ms sleep lets the host evict the caches), so it moves with the
machine; the ratio to the pipe anchor, taken in the same run, is what to
read.  Other load on the machine distorts every row.
"""
from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    sys.path.append(_HERE)
    import _common as C
else:
    from . import _common as C

import argparse
import multiprocessing as mp
import statistics
import struct
import time

import shmproc
from shmproc.processing import Process

IDLES_S = (0.0, 0.001, 0.02)
SIZES = (1, 2, 8, 32, 64)


def noop(x):
    return x


# ---- 1. after idle --------------------------------------------------------------------------

def _pipe_child(r, w):
    while True:
        b = os.read(r, 1)
        if not b or b == b"q":
            os._exit(0)
        os.write(w, b)


def pipe_pingpong(idle_s, n, child_cpus=None):
    """Median round trip of one byte between two processes, after idle_s
    (child_cpus: the CPUs the child is kept on)."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if child_cpus:
                os.sched_setaffinity(0, child_cpus)
            _pipe_child(a_r, b_w)
        finally:
            os._exit(1)
    times = []
    try:
        for _ in range(n):
            sit_idle(idle_s)
            t = time.perf_counter()
            os.write(a_w, b"x")
            os.read(b_r, 1)
            times.append(time.perf_counter() - t)
    finally:
        os.write(a_w, b"q")
        os.waitpid(pid, 0)
        for fd in (a_r, a_w, b_r, b_w):
            os.close(fd)
    return statistics.median(times)


def sit_idle(seconds):
    """Idle this long; 0 is back-to-back.  Not time.sleep(0): that sleeps
    ~55 us here (the kernel's timer slack), long enough for a worker's
    linger to end and for an idle core to be handed back to the host."""
    if seconds:
        time.sleep(seconds)


def one_at_a_time(call, idle_s, n):
    times = []
    for _ in range(n):
        sit_idle(idle_s)
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def lone_c_steps(pool):
    """A call of the C steps of a lone submit's path alone, on a worker of
    `pool` that knows noop, with none of the pool's bookkeeping (no Task, no unit):
    the call's record written by hand and put on the worker's ring, then
    its result taken and decoded (csrc/python/callloop.c encode_call and
    take_value).  The floor under submit().result(); None without the C
    loop.  Reaches into the pool: use a pool made for it alone."""
    from shmproc import _native as native
    from shmproc.channels.records import TAG_BYTES
    from shmproc.runtime import call_loop
    engine = pool._engine
    pool.submit(noop, 1).result()                  # the worker knows noop now
    if engine._res.lone is None or native.take_value is None:
        return None
    ctx, token = engine._res.lone, engine._res.token
    fn_id = engine._functions[id(noop)][0]
    put = next(s for s in engine._res.slots if fn_id in s.fns).task_q._ring.put   # knows noop
    ids = iter(range(2 ** 62, 2 ** 63))            # never one of the pool's own unit ids

    def call():
        ident = next(ids)
        rec = call_loop.encode_call(ident, fn_id, (1,), token)
        if put(rec, len(rec), TAG_BYTES, 0) != 0:
            raise RuntimeError("lone_c_steps: the worker's ring refused the record")
        got = native.take_value(ctx, ident, 200_000, 1_000_000_000)
        if type(got) is int or got[0] != 0:
            raise RuntimeError(f"lone_c_steps: not this call's value: {got!r}")
    return call


def after_idle(quick):
    rows, out = [], {}
    with shmproc.Pool(2) as pool, shmproc.Pool(2) as bare, \
            mp.get_context("fork").Pool(2) as mpool:
        ours = lambda: pool.submit(noop, 1).result()          # noqa: E731
        theirs = lambda: mpool.apply(noop, (1,))              # noqa: E731
        floor = lone_c_steps(bare)
        for _ in range(200):
            ours()
            theirs()
            if floor is not None:
                floor()
        for idle in IDLES_S:
            n = (100 if quick else 400) if idle < 0.01 else (25 if quick else 80)
            # In turns, a slice each, so drifting load hits every contender alike.
            pipe, shm, std, c = [], [], [], []
            for _ in range(4):
                pipe.append(pipe_pingpong(idle, n // 4))
                shm.append(one_at_a_time(ours, idle, n // 4))
                std.append(one_at_a_time(theirs, idle, n // 4))
                if floor is not None:
                    c.append(one_at_a_time(floor, idle, n // 4))
            pipe, shm, std = (statistics.median(x) for x in (pipe, shm, std))
            c = statistics.median(c) if c else None
            out[idle] = (shm, pipe, std, c)
            rows.append([f"{idle * 1e3:g} ms", C.si(shm * 1e6) + " us", C.si(pipe * 1e6) + " us",
                         C.ratio(shm, pipe),
                         "n/a" if c is None else C.si(c * 1e6) + " us",
                         "n/a" if c is None else C.ratio(c, pipe),
                         C.si(std * 1e6) + " us", C.ratio(shm, std)])
    print("1. submit -> result, one at a time, after the caller idled (median; 'C steps': "
          "the path's two C calls alone, no Task)")
    print(C.table(["idle", "shmproc", "os.pipe ping-pong", "vs pipe", "C steps", "vs pipe",
                   "mp.Pool.apply", "vs mp"], rows))
    return out


def after_idle_apart(quick):
    """1c: row 1 after idle with the caller and the other side kept on
    different CPUs; None where that cannot be arranged."""
    if not hasattr(os, "sched_setaffinity"):
        print("1c. skipped: no sched_setaffinity here\n")
        return None
    saved = os.sched_getaffinity(0)
    cpus = sorted(saved)
    if len(cpus) < 2:
        print("1c. skipped: fewer than 2 usable CPUs\n")
        return None
    mine, theirs = {cpus[0]}, {cpus[1]}
    rows, out = [], {}
    os.sched_setaffinity(0, mine)
    try:
        with shmproc.Pool(2) as pool:
            for pid in pool.pids:
                os.sched_setaffinity(pid, theirs)
            ours = lambda: pool.submit(noop, 1).result()      # noqa: E731
            for _ in range(200):
                ours()
            for idle in IDLES_S[1:]:
                n = (100 if quick else 400) if idle < 0.01 else (25 if quick else 80)
                pipe, shm = [], []
                for _ in range(4):
                    pipe.append(pipe_pingpong(idle, n // 4, theirs))
                    shm.append(one_at_a_time(ours, idle, n // 4))
                pipe, shm = statistics.median(pipe), statistics.median(shm)
                out[idle] = (shm, pipe)
                rows.append([f"{idle * 1e3:g} ms", C.si(shm * 1e6) + " us",
                             C.si(pipe * 1e6) + " us", C.ratio(shm, pipe)])
    finally:
        os.sched_setaffinity(0, saved)
    print(f"1c. the same, the caller kept on CPU {cpus[0]}, the workers and the pipe's child "
          f"on CPU {cpus[1]} (no target: what the pipe anchor measures)")
    print(C.table(["idle", "shmproc", "os.pipe ping-pong", "vs pipe"], rows))
    return out


# ---- 1b. a Process's result after its last hook ----------------------------------------------

class LastHook(Process):
    """Idles in its one lap, then stamps the end of its last hook."""

    def __init__(self, idle_s):
        self.idle_s = idle_s
        self.config.num_loops = 1

    def __loop__(self):
        time.sleep(self.idle_s)

    def __result__(self):
        return time.perf_counter()      # CLOCK_MONOTONIC: one clock for every process


def fork_pipe_stamp(idle_s):
    """The anchor: a forked child idles, then writes a clock stamp into a pipe
    the parent is blocked on; seconds from the stamp to the parent's read."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(idle_s)
            os.write(w, struct.pack("d", time.perf_counter()))
        finally:
            os._exit(0)
    try:
        stamp = struct.unpack("d", os.read(r, 8))[0]
        seen = time.perf_counter()
    finally:
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    return seen - stamp


def process_stamp(idle_s):
    p = LastHook(idle_s)
    p.start()
    stamp = p.result
    return time.perf_counter() - stamp


def result_after_last_hook(quick):
    rows, out = [], {}
    n = 10 if quick else 30
    for idle in (0.001, 0.02):
        ours, anchor = [], []
        for _ in range(n):                       # in turns
            ours.append(process_stamp(idle))
            anchor.append(fork_pipe_stamp(idle))
        ours, anchor = statistics.median(ours), statistics.median(anchor)
        out[idle] = (ours, anchor)
        rows.append([f"{idle * 1e3:g} ms", C.si(ours * 1e6) + " us", C.si(anchor * 1e6) + " us",
                     C.ratio(ours, anchor)])
    print("1b. p.result returning after the worker's last hook (median; the parent "
          "blocked meanwhile, the child idled first)")
    print(C.table(["child idled", "shmproc", "os.fork + pipe", "ratio"], rows))
    return out


# ---- 2./3. many workers ------------------------------------------------------------------

def lifecycle(make, workers):
    t = time.perf_counter()
    pool = make(workers)
    try:
        pool.map(noop, range(workers), chunksize=1)
    finally:
        pool.close()
        pool.join()
    return time.perf_counter() - t


def dispatch_rate(pool, n):
    t = time.perf_counter()
    pool.map(noop, range(n), chunksize=1)
    return n / (time.perf_counter() - t)


def scaling(quick, repeat):
    ctx = mp.get_context("fork")
    makers = {"shmproc": lambda n: shmproc.Pool(n), "mp": lambda n: ctx.Pool(n)}
    sizes = SIZES if not quick else (1, 2, 8, 64)
    rows, out = [], {}
    for n in sizes:
        life = {name: min(lifecycle(make, n) for _ in range(repeat))
                for name, make in makers.items()}
        rate = {}
        tasks = 5_000 if quick else 20_000
        for name, make in makers.items():
            pool = make(n)
            try:
                dispatch_rate(pool, min(tasks, 1000))               # warm every worker
                rate[name] = max(dispatch_rate(pool, tasks) for _ in range(repeat))
            finally:
                pool.terminate()
                pool.join()
        out[n] = (life, rate)
        rows.append([n, C.si(life["shmproc"] * 1e3) + " ms", C.si(life["mp"] * 1e3) + " ms",
                     C.ratio(life["shmproc"], life["mp"]), C.si(rate["shmproc"]) + "/s",
                     C.si(rate["mp"]) + "/s", C.ratio(rate["shmproc"], rate["mp"])])
    print("2./3. pool lifecycle (create, one task per worker, close, join; best of "
          f"{repeat}) and one task per dispatch (map chunksize=1)")
    print(C.table(["workers", "shmproc life", "mp life", "ratio", "shmproc c=1", "mp c=1",
                   "ratio"], rows))
    return out


# ---- 4. idle cost ---------------------------------------------------------------------------

def _switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if "ctxt_switches" in line:          # voluntary and not
                    total += int(line.split()[1])
    return total


def _ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def idle_cost(workers, seconds):
    out = {}
    ctx = mp.get_context("fork")
    for name, make in (("shmproc", lambda: shmproc.Pool(workers)), ("mp", lambda: ctx.Pool(workers))):
        pool = make()
        try:
            pool.map(noop, range(4 * workers), chunksize=1)
            time.sleep(0.3)
            pids = pool.pids if name == "shmproc" else [p.pid for p in pool._pool]
            before = {p: (_switches(p), _ticks(p)) for p in pids}
            time.sleep(seconds)
            after = {p: (_switches(p), _ticks(p)) for p in pids}
            pss = [_pss_kib(p) for p in pids]
            out[name] = (sum(after[p][0] - before[p][0] for p in pids),
                         sum(after[p][1] - before[p][1] for p in pids),
                         statistics.median(pss) if None not in pss else None)
        finally:
            pool.terminate()
            pool.join()
    rows = [[name, sw, ticks, "n/a" if pss is None else f"{pss / 1024:.1f} MiB"]
            for name, (sw, ticks, pss) in out.items()]
    print(f"4. an idle pool of {workers} workers over {seconds:g} s (all workers together)")
    print(C.table(["pool", "wake-ups", "CPU ticks", "PSS per worker"], rows))
    return out


def report(idle, last_hook, scale, cost):
    """The issue's targets with a verdict each."""
    rows = []

    def row(what, value, target, ok):
        rows.append([what, value, target, C.verdict(ok)])

    for ms in (0.001, 0.02):
        shm, pipe, _, _ = idle[ms]
        row(f"submit->result after {ms * 1e3:g} ms idle vs os.pipe", C.ratio(shm, pipe),
            "<= 2x", shm <= 2 * pipe)
    for ms in sorted(last_hook):
        ours, anchor = last_hook[ms]
        row(f"p.result after the last hook ({ms * 1e3:g} ms idle) vs fork+pipe",
            C.ratio(ours, anchor), "<= 2x", ours <= 2 * anchor)
    shm, _, std, _ = idle[0.0]
    row("submit->result back-to-back vs mp.Pool.apply", C.ratio(shm, std), "<= 0.1x",
        shm <= 0.1 * std)
    big = max(scale)
    life, _ = scale[big]
    row(f"{big}-worker pool lifecycle vs mp.Pool({big})", C.ratio(life["shmproc"], life["mp"]),
        "<= 1.0x", life["shmproc"] <= life["mp"])
    if 2 in scale:
        _, rate = scale[2]
        row("one task per dispatch (2 workers) vs mp.Pool", C.ratio(rate["shmproc"], rate["mp"]),
            ">= 10x", rate["shmproc"] >= 10 * rate["mp"])
    sw, ticks, _ = cost["shmproc"]
    row("idle 64-worker pool: wake-ups, CPU ticks", f"{sw}, {ticks}", "0, 0", sw == 0 and ticks == 0)
    print("targets")
    print(C.table(["figure", "measured", "target", "verdict"], rows))
    return all(r[3] == C.verdict(True) for r in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(p)
    p.add_argument("--check-targets", action="store_true", help="exit 2 if a target is missed")
    args = p.parse_args(argv)
    s = C.settings_from_args(args)
    print("\n".join(C.environment_lines(s, ["shmproc"])))
    idle = after_idle(s.quick)
    last_hook = result_after_last_hook(s.quick)
    after_idle_apart(s.quick)
    scale = scaling(s.quick, s.repeat)
    cost = idle_cost(64, 1.0 if s.quick else 2.0)
    ok = report(idle, last_hook, scale, cost)
    return 2 if args.check_targets and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
