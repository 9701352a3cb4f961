"""Instructions per item, counted by valgrind (callgrind), for three rows.

Wall clock on the shared 2-core machine moves by +-20%, which hides changes
of a few percent; instruction counts do not depend on the machine's load
(except through spin-waits, below), so this script counts them:

  laps    a Process with empty __preloop__ + __loop__ + __postloop__
          (bench/process.py's LapsThreeHooks), N laps, start -> result;
          per lap.
  map1    pool.map(noop, range(N), chunksize=1) on a warm 2-worker fork
          Pool (bench/pool.py's "chunksize 1" row); per item.
  submit  pool.submit(noop, i) -> its result, one at a time, N times, on a
          warm 2-worker fork Pool (bench/pool.py's warm submit -> result);
          per call.

Each (row, N) runs in its own interpreter under

    valgrind --tool=callgrind --trace-children=yes --zero-before=PyOS_AfterFork_Child

(workers are forked: the zero drops the counts a child inherits from its
parent), once with the full N and once with a small base N0; the parent's
and the workers' totals (all forked children summed) are then

    per item = (Ir(N) - Ir(N0)) / (N - N0)

so interpreter start, imports, the pool's creation and warm-up, the first
items' one-time costs and teardown cancel.  PYTHONHASHSEED is fixed.

Spin-waits.  The library spins before it sleeps on a futex: wait.c spins
~20 us (SHMP_SPIN_NS, a compile-time constant), the pool's caller polls
its result ring for up to 200 us (backends/local/pool.py SPIN_NS) and a
pool worker watches its task ring for 100 us after a task (LINGER_NS,
runtime/pool_worker.py); each yields the core every turn and stops early
when a yield took over 50 us.  None of these has an environment variable
or public setting, so the counts here include the spinning, and the
instructions a spin burns depend on timing (under valgrind a guest
instruction costs ~50x its native time, so a wall-clock-bounded spin burns
far fewer instructions than it would natively, and waits more often end
in a futex sleep than natively).  That is why every configuration is run
--repeat times (default 3; interleaved: rep 1 of every tree and row, then
rep 2...) and the table gives the median and the min..max of the per-item
figures.  Beside the instructions it gives per item the calls of
shmp_ring_count (a Queue's qsize(): the Python spins poll it each turn, so
beyond the few calls an item makes anyway it counts spin turns),
sched_yield (spin turns that yield: wait.c's second half, and the Python
spins since 2dc5235), shmp_os_futex_wait (sleeps) and shmp_os_futex_wake
(wake-up syscalls), read from callgrind's call graph, which say which path
the waits took.

Running it.  It measures whichever shmproc `import shmproc` finds, or each
tree given with --tree (a directory holding a built shmproc/ package: its
path is put first on PYTHONPATH of every child, and the child checks that
shmproc.__file__ is inside it).  For an A/B of two commits, build each in
its own clone and pass both; they are measured interleaved:

    git clone -q . /tmp/ab/before && git -C /tmp/ab/before checkout -q d3a4505^1
    git clone -q . /tmp/ab/after  && git -C /tmp/ab/after  checkout -q d3a4505
    (cd /tmp/ab/before && python setup.py -q build_ext --inplace)
    (cd /tmp/ab/after  && python setup.py -q build_ext --inplace)
    python bench/instructions.py --tree before=/tmp/ab/before --tree after=/tmp/ab/after
    python bench/instructions.py --quick            # this tree only, ~3 minutes

Sizes: 20,000 laps, 20,000 map items, 5,000 submits (bases: a tenth);
--quick: 4,000 / 4,000 / 1,000, one repeat.  --rows picks rows.  A full
run with three trees takes ~40 minutes.

--wall runs the same workloads without valgrind and reports the wall time
per item of the timed phase (perf_counter around it in the child; for laps
start -> result of N laps minus that of 1,000 laps, over the difference;
sizes 500k laps, 50k map items, 5k submits, --quick a fifth), median and
min..max over --repeat runs (default 10), trees alternating run by run in
ABBA order, rows in turn:

    python bench/instructions.py --wall --tree before=/tmp/ab/before --tree after=/tmp/ab/after
This is the noisy measurement the instruction counts are meant to replace;
it is there for context.

Only the public API is used (shmproc.Pool, shmproc.processing.Process), so
the script runs against old commits too (a Task's result was a property
before it became Future.result(); both are handled).
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":
    # bench/queue.py would shadow the standard library's queue module.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time

ROWS = ("laps", "map1", "submit")
FULL = {"laps": 20_000, "map1": 20_000, "submit": 5_000}
QUICK = {"laps": 4_000, "map1": 4_000, "submit": 1_000}
#: --wall: native sizes (a lap is ~1 us natively); laps subtract a base run of
#: WALL_LAPS_BASE laps (the process start); the pool rows time only their phase.
WALL = {"laps": 500_000, "map1": 50_000, "submit": 5_000}
WALL_QUICK = {"laps": 100_000, "map1": 10_000, "submit": 1_000}
WALL_LAPS_BASE = 1_000
WARM = 200                      # pool rows: items run before the measured phase
COUNTED = ("shmp_ring_count", "sched_yield", "shmp_os_futex_wait", "shmp_os_futex_wake")


# ---- the workloads (run in a child interpreter) -------------------------------------------


def noop(x):
    return x


def _laps_class():
    """bench/process.py part 2's Process (three empty hooks), started by fork."""
    if _HERE not in sys.path:
        sys.path.append(_HERE)          # (after the standard library: see the top)
    from process import LapsThreeHooks
    return lambda n: LapsThreeHooks(n, "fork")


def _result(task):
    r = task.result                  # a property in old trees, Future.result() now
    return r() if callable(r) else r


def workload(row: str, n: int) -> float:
    """Run one row with n items; return the seconds of the measured phase."""
    import shmproc

    if row == "laps":
        Laps = _laps_class()
        t0 = time.perf_counter()
        p = Laps(n)
        p.start()
        p.wait()
        p.result
        return time.perf_counter() - t0
    pool = shmproc.Pool(2, start_method="fork")
    try:
        if row == "map1":
            assert pool.map(noop, range(WARM), chunksize=1) == list(range(WARM))
            items = range(n)
            t0 = time.perf_counter()
            out = pool.map(noop, items, chunksize=1)
            dt = time.perf_counter() - t0
            assert out == list(items)
            return dt
        if row == "submit":
            for i in range(WARM):
                assert _result(pool.submit(noop, i)) == i
            t0 = time.perf_counter()
            for i in range(n):
                if _result(pool.submit(noop, i)) != i:
                    raise AssertionError("wrong result")
            return time.perf_counter() - t0
        raise ValueError(row)
    finally:
        # close + join, not terminate: a killed worker writes no callgrind output.
        pool.close()
        pool.join()


def child_main(args) -> None:
    import shmproc

    if args.tree and not os.path.abspath(shmproc.__file__).startswith(
            os.path.abspath(args.tree) + os.sep):
        raise SystemExit(f"shmproc from {shmproc.__file__}, not from {args.tree}")
    dt = workload(args.workload, args.n)
    with open(args.out, "w") as f:
        json.dump({"pid": os.getpid(), "file": shmproc.__file__, "seconds": dt}, f)


# ---- the driver ------------------------------------------------------------------------------


def _child_env(tree: str | None) -> dict:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    if tree:
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.abspath(tree)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _child_cmd(row, n, tree, out):
    cmd = [sys.executable, os.path.abspath(__file__), "--workload", row, "--n", str(n),
           "--out", out]
    return cmd + (["--tree", tree] if tree else [])


_NAME = re.compile(r"^(c?fn)=(?:\((\d+)\))?\s*(.*)$")


def parse_callgrind(path: str) -> dict:
    """pid, cmd, total Ir and call counts of COUNTED functions in one output file."""
    pid, cmd, total = None, "", 0
    calls = dict.fromkeys(COUNTED, 0)
    names: dict[str, str] = {}
    callee = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("pid:"):
                pid = int(line.split()[1])
            elif line.startswith("cmd:"):
                cmd = line[4:].strip()
            elif line.startswith("totals:") or line.startswith("summary:"):
                total = max(total, int(line.split()[1]))
            elif line.startswith("fn=") or line.startswith("cfn="):
                m = _NAME.match(line.rstrip("\n"))
                kind, ident, name = m.group(1), m.group(2), m.group(3)
                if ident is not None:
                    if name:
                        names[ident] = name
                    name = names.get(ident, "")
                callee = name if kind == "cfn" else None
            elif line.startswith("calls=") and callee in calls:
                calls[callee] += int(line[6:].split()[0])
    return {"pid": pid, "cmd": cmd, "ir": total, "calls": calls}


def run_counted(row, n, tree, keep=None) -> dict:
    """One row under callgrind: parent and workers' Ir and counted calls."""
    d = tempfile.mkdtemp(prefix="shmproc-cg-")
    try:
        out = os.path.join(d, "result.json")
        cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
               "--zero-before=PyOS_AfterFork_Child", "--dump-instr=no",
               f"--callgrind-out-file={d}/cg.%p"] + _child_cmd(row, n, tree, out)
        r = subprocess.run(cmd, env=_child_env(tree), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"{row} n={n} failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
        with open(out) as f:
            info = json.load(f)
        side = {k: {"ir": 0, "procs": 0, "calls": dict.fromkeys(COUNTED, 0)}
                for k in ("parent", "workers", "other")}
        for name in os.listdir(d):
            if not name.startswith("cg."):
                continue
            p = parse_callgrind(os.path.join(d, name))
            if p["pid"] == info["pid"]:
                k = "parent"
            elif os.path.abspath(__file__) in p["cmd"] and "--workload" in p["cmd"]:
                k = "workers"                # forked children keep the parent's cmd
            else:
                k = "other"
            side[k]["ir"] += p["ir"]
            side[k]["procs"] += 1
            for c in COUNTED:
                side[k]["calls"][c] += p["calls"][c]
        if keep:
            shutil.copytree(d, keep, dirs_exist_ok=True)
        side["file"] = info["file"]
        side["seconds"] = info["seconds"]
        return side
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_wall(row, n, tree) -> float:
    d = tempfile.mkdtemp(prefix="shmproc-wall-")
    try:
        out = os.path.join(d, "result.json")
        r = subprocess.run(_child_cmd(row, n, tree, out), env=_child_env(tree),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{row} n={n} failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)["seconds"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _spread(xs, fmt):
    xs = sorted(xs)
    med = statistics.median(xs)
    if len(xs) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(xs[0])}..{fmt(xs[-1])})"


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--repeat", type=int, default=None, help="runs per configuration (3)")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ",".join(ROWS))
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="a tree with a built shmproc/ (repeatable); default: the imported one")
    ap.add_argument("--wall", action="store_true", help="wall clock without valgrind instead")
    ap.add_argument("--n", type=int, default=None, help="override N for every row")
    ap.add_argument("--base", type=int, default=None, help="override the base N0 for every row")
    ap.add_argument("--json", default=None, help="write the raw measurements here")
    ap.add_argument("--workload", choices=ROWS, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.workload:
        args.tree = args.tree[0] if args.tree else None
        child_main(args)
        return 0

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in rows:
        if r not in ROWS:
            ap.error(f"unknown row {r!r}")
    repeat = args.repeat or (1 if args.quick else (10 if args.wall else 3))
    sizes = QUICK if args.quick else FULL
    trees = []
    for t in args.tree:
        name, _, path = t.partition("=")
        if not path:
            name, path = os.path.basename(os.path.normpath(t)), t
        trees.append((name, os.path.abspath(path)))
    if not trees:
        import shmproc
        trees = [("this tree", None)]
        print(f"shmproc: {shmproc.__file__}")
    if not args.wall and not shutil.which("valgrind"):
        raise SystemExit("valgrind not found")

    if args.wall:
        sizes = WALL_QUICK if args.quick else WALL
        plan = {r: (args.n or sizes[r], (args.base or WALL_LAPS_BASE) if r == "laps" else 0)
                for r in rows}
    else:
        plan = {r: (args.n or sizes[r], args.base or max(1, (args.n or sizes[r]) // 10))
                for r in rows}
    raw: dict = {}
    t_start = time.time()
    for rep in range(repeat):
        for row in rows:
            n, n0 = plan[row]
            # every other repetition takes the trees in reverse order (ABBA...)
            for name, path in (trees if rep % 2 == 0 else trees[::-1]):
                if args.wall:
                    dt = run_wall(row, n, path)
                    if row == "laps":         # minus the start -> result of a short run
                        dt -= run_wall(row, n0, path)
                    raw.setdefault((name, row), []).append(dt / (n - n0))
                    print(f"  [{time.time() - t_start:6.0f}s] rep {rep + 1} {name:>10} {row:6}"
                          f" {dt / (n - n0) * 1e6:8.2f} us/item", flush=True)
                    continue
                big = run_counted(row, n, path)
                small = run_counted(row, n0, path)
                per = {}
                for k in ("parent", "workers"):
                    per[k] = (big[k]["ir"] - small[k]["ir"]) / (n - n0)
                    for c in COUNTED:
                        per[k + ":" + c] = (big[k]["calls"][c] - small[k]["calls"][c]) / (n - n0)
                per["other"] = (big["other"]["ir"] - small["other"]["ir"]) / (n - n0)
                per["procs"] = (big["workers"]["procs"], small["workers"]["procs"])
                raw.setdefault((name, row), []).append(per)
                print(f"  [{time.time() - t_start:6.0f}s] rep {rep + 1} {name:>10} {row:6}"
                      f" parent {per['parent']:10.0f}  workers {per['workers']:10.0f} Ir/item"
                      f"  ({big['file']})", flush=True)

    print()
    if args.wall:
        print(f"Wall clock per item of the measured phase, median (min..max) of {repeat} runs"
              f" (laps: (t(N) - t(N0)) / (N - N0), start -> result); sizes: "
              + ", ".join(f"{r} N={plan[r][0]}" for r in rows))
        hdr = ["row"] + [name for name, _ in trees]
        tab = [[row] + [_spread(raw[(name, row)], lambda x: f"{x * 1e6:.2f} us")
                        for name, _ in trees] for row in rows]
        print(_table(hdr, tab))
    else:
        print(f"Instructions per item (callgrind Ir), median (min..max) of {repeat} runs; "
              f"(Ir(N) - Ir(N0)) / (N - N0)")
        tab = []
        for row in rows:
            n, n0 = plan[row]
            for name, _ in trees:
                ps = raw[(name, row)]
                cell = lambda k, f=lambda x: f"{x:,.0f}": _spread([p[k] for p in ps], f)
                calls = lambda side: "/".join(
                    f"{statistics.median(p[side + ':' + c] for p in ps):.2f}" for c in COUNTED)
                tab.append([f"{row} N={n} N0={n0}", name, cell("parent"), cell("workers"),
                            calls("parent"), calls("workers")])
        print(_table(["row", "tree", "parent Ir/item", "workers Ir/item (all summed)",
                      "parent count/yield/fwait/fwake", "workers count/yield/fwait/fwake"], tab))
        print("\ncount/yield/fwait/fwake: calls per item of shmp_ring_count (qsize), "
              "sched_yield, shmp_os_futex_wait, shmp_os_futex_wake (medians)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}|{k[1]}": v for k, v in raw.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
