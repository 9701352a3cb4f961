"""Interleaved wall-clock A/B of built trees, for the paths a fork or an idle spell makes costly.

    python bench/ab_fork_paths.py --tree before=/tmp/ab/before --tree after=/tmp/ab/after
    python bench/ab_fork_paths.py                      # this tree only

Rows (each a ratio against an anchor measured in the same child, so that
the machine's swings, which reach 2-3x between runs on a shared VM, hit
both alike):

  last_hook  p.result returning after the worker's last hook, the child
             having idled 1 and 20 ms first, against os.fork + a pipe
             (bench/idle_and_scale.py 1b, its own functions), median of 15.
  start      start -> result of a trivial fork Process against mp's fork
             Process + Queue (bench/process.py part 1's contenders, taken
             in turns), median of 40.
  after_idle submit -> result on a warm 2-worker pool after 0, 1 and 20 ms
             idle, against two processes ping-ponging a byte over os.pipe
             after the same idle (bench/idle_and_scale.py 1, its own
             functions), medians of 300 / 100 / 40.

Each round runs every tree once, in turn, in its own interpreter with the
tree first on PYTHONPATH (the child checks that shmproc.__file__ is inside
it); --rounds rounds (default 4).  The table gives, per tree and row, the
range over rounds of shmproc's median, the anchor's and their ratio, and
the median of the ratios.
Build each tree first, e.g.

    git clone -q . /tmp/ab/before && git -C /tmp/ab/before checkout -q b21e81b
    (cd /tmp/ab/before && python setup.py -q build_ext --inplace)

Why by hand in turns and not calibrated like the other scripts: these
paths cost what they cost because a fork just happened (every page the
parent shares with its child traps on its first write), so each sample is
one fork, and the tree is what changes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":
    # bench/queue.py would shadow the standard library's queue module.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
ROWS = ("last_hook", "start", "after_idle")


def child(row: str) -> dict:
    tree = os.environ.get("AB_TREE")
    import shmproc
    if tree and not os.path.abspath(shmproc.__file__).startswith(os.path.abspath(tree)):
        raise SystemExit(f"shmproc came from {shmproc.__file__}, not from {tree}")
    sys.path.append(_HERE)
    if row == "last_hook":
        import idle_and_scale as B
        out = {}
        for idle in (0.001, 0.02):
            ours, anchor = [], []
            for _ in range(15):
                ours.append(B.process_stamp(idle))
                anchor.append(B.fork_pipe_stamp(idle))
            out[f"{idle * 1e3:g} ms idle"] = (statistics.median(ours), statistics.median(anchor))
        return out
    if row == "after_idle":
        import idle_and_scale as B
        out = {}
        with shmproc.Pool(2) as pool:
            def ours():
                pool.submit(B.noop, 1).result()
            for _ in range(300):
                ours()
            for idle, n in ((0.0, 300), (0.001, 100), (0.02, 40)):
                anchor = B.pipe_pingpong(idle, n)
                out[f"{idle * 1e3:g} ms idle"] = (B.one_at_a_time(ours, idle, n), anchor)
        return out
    import multiprocessing as mp
    from process import Trivial, TRIVIAL_VALUE, _child_put_int
    ctx = mp.get_context("fork")
    ours, anchor = [], []
    for _ in range(40):
        t = time.perf_counter()
        p = Trivial("fork")
        p.start()
        assert p.result == TRIVIAL_VALUE
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        q = ctx.Queue()
        proc = ctx.Process(target=_child_put_int, args=(q,))
        proc.start()
        assert q.get() == TRIVIAL_VALUE
        proc.join()
        anchor.append(time.perf_counter() - t)
    return {"fork": (statistics.median(ours), statistics.median(anchor))}


def run_child(row: str, tree: str | None) -> dict:
    env = dict(os.environ)
    if tree:
        env["AB_TREE"] = tree
        env["PYTHONPATH"] = os.pathsep.join(p for p in (tree, env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", row],
                         env=env, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise SystemExit(f"{row} on {tree or 'this tree'} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    trees = [t.split("=", 1) for t in args.tree] or [["this tree", ""]]
    rows = [r for r in args.rows.split(",") if r]
    seen: dict = {}
    for k in range(args.rounds):
        order = trees if k % 2 == 0 else trees[::-1]
        for row in rows:
            for name, tree in order:
                got = run_child(row, tree or None)
                for what, (ours, anchor) in got.items():
                    seen.setdefault((row, what, name), []).append((ours, anchor))
                    print(f"  round {k + 1} {row:10s} {what:11s} {name:10s} "
                          f"{ours * 1e6:8.0f} us / {anchor * 1e6:8.0f} us = {ours / anchor:.2f}x",
                          flush=True)
    print()
    print(f"{'row':10s} {'case':11s} {'tree':10s} {'shmproc':>16s} {'anchor':>16s} {'ratio':>12s} "
          f"{'median':>7s}")
    for (row, what, name), xs in seen.items():
        o = [x[0] * 1e6 for x in xs]
        a = [x[1] * 1e6 for x in xs]
        r = [x[0] / x[1] for x in xs]
        print(f"{row:10s} {what:11s} {name:10s} {f'{min(o):.0f}-{max(o):.0f} us':>16s} "
              f"{f'{min(a):.0f}-{max(a):.0f} us':>16s} {f'{min(r):.2f}-{max(r):.2f}x':>12s} "
              f"{statistics.median(r):6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
