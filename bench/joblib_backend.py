"""joblib's default backend (loky) against the "shmproc" backend, one run.

    python bench/joblib_backend.py                  # best of 3
    python bench/joblib_backend.py --quick          # smaller workloads
    python bench/joblib_backend.py --n-jobs 4

Each row is one Parallel(n_jobs)(delayed(f)(i) for i in range(n)) call,
timed after a warm-up call on the same backend (loky and shmproc both keep
their workers between calls, so start-up is not measured), best of
--repeat runs; --start-method is shmproc's (loky always uses its own):

    tiny tasks      n calls of x * x: joblib's own per-call cost dominates
    1 ms tasks      n calls that each spin for about a millisecond
    1 MB results    n calls that each return a 1 MB numpy array

The ratio is loky's time over shmproc's (above 1: shmproc is faster).
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
import time  # noqa: E402

import joblib  # noqa: E402
import numpy as np  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402

import shmproc.joblib  # noqa: E402,F401 - registers "shmproc"


def tiny(x):
    return x * x


def spin_1ms(x):
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return x


def array_1mb(x):
    return np.full(1 << 17, x, dtype=np.float64)


def run(backend: str, fn, n: int, n_jobs: int, repeat: int, options: dict) -> float:
    best = float("inf")
    with joblib.parallel_backend(backend, **options):
        Parallel(n_jobs=n_jobs)(delayed(fn)(i) for i in range(min(n, 200)))      # warm-up
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = Parallel(n_jobs=n_jobs)(delayed(fn)(i) for i in range(n))
            best = min(best, time.perf_counter() - t0)
            assert len(out) == n
            del out
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2)
    C.add_common_args(parser)
    args = parser.parse_args(argv)
    s = C.settings_from_args(args)
    scale = 0.2 if s.quick else 1.0
    rows = [("tiny tasks", tiny, int(100_000 * scale)),
            ("1 ms tasks", spin_1ms, int(2_000 * scale)),
            ("1 MB results", array_1mb, int(500 * scale))]
    print("\n".join(C.environment_lines(s, ["joblib", "numpy"])))
    print(f"\nParallel(n_jobs={args.n_jobs}), best of {s.repeat}\n")
    out = []
    for label, fn, n in rows:
        loky = run("loky", fn, n, args.n_jobs, s.repeat, {})      # loky: its own start method
        ours = run("shmproc", fn, n, args.n_jobs, s.repeat, {"start_method": s.start_method})
        out.append((f"{label} (n={n:,})", f"{loky * 1e3:,.0f} ms", f"{ours * 1e3:,.0f} ms",
                    C.ratio(loky, ours)))
    shmproc.joblib.shutdown()
    print(C.table(["workload", "loky", "shmproc", "loky / shmproc"], out))


if __name__ == "__main__":
    main()
