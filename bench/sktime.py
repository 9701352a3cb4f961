"""sktime's clock calls against the bare time.time() they stand for, in one run.

    python bench/sktime.py            # ~5 s
    python bench/sktime.py --quick

A user times code with ``t = sktime.now(); ...; sktime.elapsed(t)`` instead
of ``t = time.time(); ...; time.time() - t``: the pair must not cost more
than 2x the bare pair (issue 13).  Each figure is the best of several
timeit runs, in nanoseconds per pair.
"""
from __future__ import annotations

import os
import sys
import time
import timeit

if __package__ in (None, ""):
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    sys.path.append(_HERE)
    import _common as C
else:
    from . import _common as C

from shmproc import sktime


def per_call_ns(stmt, env, number, repeat):
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=repeat)) / number * 1e9


def main(argv=None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    number, repeat = (200_000, 3) if quick else (1_000_000, 7)
    env = {"time": time.time, "now": sktime.now, "elapsed": sktime.elapsed}
    rows = [
        ("time.time() pair: t1 = time(); t2 = time(); t2 - t1",
         per_call_ns("t1 = time(); t2 = time(); t2 - t1", env, number, repeat)),
        ("sktime pair: t1 = now(); t2 = now(); elapsed(t1, t2)",
         per_call_ns("t1 = now(); t2 = now(); elapsed(t1, t2)", env, number, repeat)),
        ("sktime: t1 = now(); elapsed(t1)",
         per_call_ns("t1 = now(); elapsed(t1)", env, number, repeat)),
    ]
    bare = rows[0][1]
    print(f"python {sys.version.split()[0]}, best of {repeat} x {number:,}")
    print(C.table(["pattern", "ns", "vs time.time() pair"],
                  [(name, f"{ns:.0f}", C.ratio(ns, bare)) for name, ns in rows], "lrr"))
    worst = max(ns for _, ns in rows[1:])
    ok = worst <= 2 * bare
    print(f"\ntarget: sktime's pair <= 2x the bare pair: {C.verdict(ok)} ({C.ratio(worst, bare)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
