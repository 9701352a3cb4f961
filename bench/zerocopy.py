"""Large numpy results: writable zero-copy views against copies, one run.

    python bench/zerocopy.py                   # 64 MB arrays, 5 repeats
    python bench/zerocopy.py --mb 16 --repeat 3
    python bench/zerocopy.py --before /tmp/old   # also a checkout built there, same run:
        # git archive <commit> | tar -x -C /tmp/old; (cd /tmp/old && python setup.py build_ext --inplace)

A 64 MB float64 array reaches the parent
  - through shmproc.Queue.get()             (a writable copy-on-write view)
  - through shmproc.Queue.get(copy=True)    (a private copy: the "copy" anchor)
  - through multiprocessing.Queue.get()     (the stdlib: pickled through a pipe)
  - as shmproc.Pool.apply's result          (a writable copy-on-write view)
  - as multiprocessing.Pool.apply's result
For each: the best time per item (the producer's put and the reader's get,
without process start-up), for the queues the reader's get() alone (the
item already queued: what the reader pays), and how much the reader's private memory
(RssAnon in /proc/self/status) grew while it held the item, then after it
wrote one element, then after it wrote every element.  A zero-copy item
adds no private memory until it is written, and then only the pages written.
"""
from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    # bench/ holds queue.py, which would shadow the stdlib module: keep bench/
    # at the end of sys.path (as pool.py does).
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    sys.path.append(_HERE)
    import _common as C
else:
    from . import _common as C

import argparse  # noqa: E402
import gc  # noqa: E402
import subprocess  # noqa: E402
import multiprocessing as mp  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import shmproc  # noqa: E402


def rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _producer(q, acks, n_items, nbytes):
    source = np.arange(nbytes // 8, dtype=np.float64)
    for _ in range(n_items):
        acks.get()
        q.put(source)


def _make_array(nbytes):
    return np.arange(nbytes // 8, dtype=np.float64)


def _measure_item(fetch, repeat):
    """fetch() -> array; best seconds per item, and RssAnon growth (MB)
    after the item arrived, after one write, after writing all of it."""
    best, mem = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        base = rss_anon_mb()
        t0 = time.perf_counter()
        a = fetch()
        dt = time.perf_counter() - t0
        held = rss_anon_mb() - base
        one = full = None
        if a.flags.writeable:               # (a shmproc before issue 12: read-only views)
            a[0] = 1.0
            one = rss_anon_mb() - base
            a[:] = 2.0
            full = rss_anon_mb() - base
        del a
        best = min(best, dt)
        mem = (held, one, full)
    return best, mem


def queue_rows(ctx, nbytes, repeat):
    rows = []
    for label, make, kw in (
        ("shmproc.Queue.get()", shmproc.Queue, {}),
        ("shmproc.Queue.get(copy=True)", shmproc.Queue, {"copy": True}),
        ("multiprocessing.Queue.get()", ctx.Queue, {}),
    ):
        q, acks = make(), ctx.Queue()
        child = ctx.Process(target=_producer, args=(q, acks, 2 * repeat + 1, nbytes))
        child.start()

        def fetch():
            acks.put(True)
            return q.get(**kw)

        def get_alone():
            acks.put(True)
            while q.empty():                      # the item is in the queue before the clock
                time.sleep(0.001)
            t0 = time.perf_counter()
            a = q.get(**kw)
            return time.perf_counter() - t0, a

        fetch()                                   # warm-up: the producer's segment exists now
        best, mem = _measure_item(fetch, repeat)
        alone = min(get_alone()[0] for _ in range(repeat))
        child.join()
        rows.append((label, best, mem, alone))
    return rows


def pool_rows(method, nbytes, repeat):
    rows = []
    with shmproc.Pool(1, start_method=method) as pool:
        pool.apply(_make_array, (nbytes,))
        best, mem = _measure_item(lambda: pool.apply(_make_array, (nbytes,)), repeat)
        rows.append(("shmproc.Pool.apply", best, mem, None))
    with mp.get_context(method).Pool(1) as pool:
        pool.apply(_make_array, (nbytes,))
        best, mem = _measure_item(lambda: pool.apply(_make_array, (nbytes,)), repeat)
        rows.append(("multiprocessing.Pool.apply", best, mem, None))
    return rows


def _mb(x):
    return "read-only" if x is None else f"{x:+.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64, help="array size in MiB (default 64)")
    parser.add_argument("--before", metavar="DIR",
                        help="a built shmproc tree to measure first, in a subprocess")
    C.add_common_args(parser)
    args = parser.parse_args(argv)
    s = C.settings_from_args(args)
    nbytes = args.mb << 20
    repeat = max(s.repeat, 2)
    if args.before:
        print(f"==== before: shmproc from {args.before}", flush=True)
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        i = rest.index("--before")
        del rest[i:i + 2]
        env = dict(os.environ, PYTHONPATH=args.before)
        subprocess.run([sys.executable, os.path.abspath(__file__)] + rest, env=env, check=True)
        print(f"\n==== now: shmproc from {os.path.dirname(shmproc.__file__)}")
    print("\n".join(C.environment_lines(s, ["numpy"])))
    print(f"\n{args.mb} MiB float64 array per item, best of {repeat}\n")
    ctx = mp.get_context(s.start_method)
    rows = queue_rows(ctx, nbytes, repeat) + pool_rows(s.start_method, nbytes, repeat)
    ref = {label: best for label, best, _, _ in rows}
    out = []
    for label, best, (held, one, full), alone in rows:
        anchor = ("multiprocessing.Queue.get()" if "Queue" in label
                  else "multiprocessing.Pool.apply")
        out.append((label, f"{best * 1e3:.1f} ms", f"{args.mb / 1.048576 / best:,.0f} MB/s",
                    C.ratio(ref[anchor], best),
                    "" if alone is None else f"{alone * 1e3:.1f} ms",
                    _mb(held), _mb(one), _mb(full)))
    print(C.table(["path", "per item", "rate", "vs stdlib", "get() alone", "MB held",
                   "after 1 write", "after full write"], out))


if __name__ == "__main__":
    main()
