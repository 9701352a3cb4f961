"""Helpers shared by the scripts in bench/.

Every benchmark here follows the same rules (see DESIGN.md, "Performance
targets"): measure shmproc and its anchors *in the same run*, take the best of
a few repeats because the machines are shared and noisy, and print a table of
absolute numbers plus ratios against one reference contender.

What lives here:

- ``add_common_args`` / ``Settings``: the ``--quick``, ``--repeat``,
  ``--start-method`` and ``--target-time`` options every script takes.
- ``environment_lines``: the header (Python, platform, CPUs, load, versions).
- ``measure``: calibrate a workload size so one run takes about
  ``target_time`` seconds, then keep the best of ``repeat`` runs.
- ``Watchdog``: turns a hung or crashed measurement into an exception (and,
  as a last resort, a clean exit with tracebacks) instead of a hung benchmark.
- ``si``, ``ratio``, ``percent``, ``verdict``, ``table``: formatting.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import faulthandler
import math
import os
import platform
import signal
import sys
import threading
import time
from importlib import metadata
from typing import Callable, Iterable, Sequence

__all__ = [
    "BenchAbort",
    "Measurement",
    "Settings",
    "Watchdog",
    "add_common_args",
    "die_with_parent",
    "environment_lines",
    "measure",
    "package_version",
    "percent",
    "ratio",
    "settings_from_args",
    "si",
    "table",
    "verdict",
]


# --------------------------------------------------------------------------
# options


@dataclasses.dataclass(frozen=True)
class Settings:
    quick: bool
    repeat: int  # timed runs per measurement; the best one is reported
    start_method: str | None  # None only when the script said so (see add_common_args)
    target_time: float  # seconds one timed run should take
    timeout: float  # seconds before a single measurement is declared hung


def add_common_args(
    parser: argparse.ArgumentParser,
    *,
    start_method_default: str | None = "fork",
    start_method_help: str | None = None,
) -> None:
    """Add the options every script takes.

    A script that compares several start methods by default passes
    ``start_method_default=None`` (then ``Settings.start_method`` is None
    unless the user picked one) and says what None means in
    ``start_method_help``.
    """
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny workloads, one repeat (numbers are rough)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="timed runs per measurement, best one reported (default 3, quick 1)",
    )
    parser.add_argument(
        "--start-method",
        choices=("fork", "spawn", "forkserver"),
        default=start_method_default,
        help=start_method_help
        or f"multiprocessing start method for every contender (default {start_method_default})",
    )
    parser.add_argument(
        "--target-time",
        type=float,
        default=None,
        help="seconds one timed run should take (default 0.4, quick 0.03)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds before one measurement is declared hung (default 60, quick 20)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    repeat = args.repeat if args.repeat is not None else (1 if quick else 3)
    target = args.target_time if args.target_time is not None else (0.03 if quick else 0.4)
    timeout = args.timeout if args.timeout is not None else (20.0 if quick else 60.0)
    if repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    return Settings(quick, repeat, args.start_method, target, timeout)


# --------------------------------------------------------------------------
# environment header


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'n/a'."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "n/a"


def environment_lines(settings: Settings, packages: Iterable[str] = ()) -> list[str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "n/a"
    versions = ", ".join(f"{p} {package_version(p)}" for p in packages)
    lines = [
        f"date          {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"python        {platform.python_implementation()} {platform.python_version()}"
        f" ({sys.executable})",
        f"platform      {platform.platform()}",
        f"cpus          {os.cpu_count()} (usable {usable}), load avg {load}",
        f"start method  {settings.start_method}",
        f"timing        best of {settings.repeat} run(s), each ~{settings.target_time:g} s"
        f" after a calibration/warm-up run{'  [--quick: rough numbers]' if settings.quick else ''}",
    ]
    if versions:
        lines.append(f"packages      {versions}")
    return lines


# --------------------------------------------------------------------------
# timing


@dataclasses.dataclass
class Measurement:
    """Result of ``measure``: ``best`` is in units per second."""

    n: int  # units per timed run
    rates: list[float]  # one per timed run, units per second

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        s = sorted(self.rates)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def measure(
    run: Callable[[int], float],
    *,
    n0: int,
    target_time: float,
    repeat: int,
    n_max: int = 10_000_000,
) -> Measurement:
    """Best-of-``repeat`` throughput of ``run``.

    ``run(n)`` performs ``n`` units of work (messages, arrays, tasks...) and
    returns the elapsed seconds. A first, untimed-for-the-result run with
    ``n0`` units warms everything up and calibrates ``n``: it is grown
    geometrically while it takes less than an eighth of ``target_time`` (a
    tiny run says little about the rate), then ``n`` is scaled so that one run
    takes about ``target_time``.
    """
    n = max(1, min(n0, n_max))
    elapsed = run(n)
    while elapsed < target_time / 8 and n < n_max:
        n = min(n * 8, n_max)
        elapsed = run(n)
    per_unit = max(elapsed, 1e-9) / n
    n = int(min(n_max, max(1, round(target_time / per_unit))))
    rates = []
    for _ in range(repeat):
        dt = run(n)
        rates.append(n / max(dt, 1e-9))
    return Measurement(n, rates)


# --------------------------------------------------------------------------
# hang / crash protection


class BenchAbort(Exception):
    """A measurement was interrupted: it hung, or a child process died."""


class Watchdog:
    """Guard one measurement against hangs and dead children.

    Use as ``with Watchdog(label, timeout) as wd: wd.watch(proc); ...``. A
    background thread checks every 50 ms. When the deadline passes, or a
    watched ``multiprocessing.Process`` exits with a non-zero code while the
    block is still running, it sends SIGUSR1 to the main thread, whose handler
    raises ``BenchAbort``: a signal (unlike ``_thread.interrupt_main``) also
    breaks a blocking ``read``/``futex`` wait, so a consumer stuck in ``get()``
    gets the exception. If the main thread is still inside the block ``grace``
    seconds later (a C call that retries on EINTR without checking signals),
    the watchdog prints every thread's traceback, kills the watched children
    and ends the process with status 3: a benchmark must never hang a test
    suite.

    Only usable from the main thread (signal handlers live there).
    """

    def __init__(self, label: str, timeout: float, grace: float = 5.0):
        self.label = label
        self.timeout = timeout
        self.grace = grace
        self._procs: list = []
        self._active = False
        self._reason: str | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._old_handler = None

    def watch(self, proc) -> None:
        self._procs.append(proc)

    # signal handler, runs in the main thread
    def _on_signal(self, signum, frame):
        if self._active:
            self._active = False
            raise BenchAbort(self._reason or "aborted")

    def __enter__(self) -> "Watchdog":
        # Last resort for a main thread that holds the GIL in a C loop (then
        # our Python thread cannot run at all): faulthandler's own C thread
        # dumps the tracebacks and exits. Children started with
        # die_with_parent() go with us.
        faulthandler.dump_traceback_later(self.timeout + self.grace + 5.0, exit=True)
        self._old_handler = signal.signal(signal.SIGUSR1, self._on_signal)
        self._active = True
        self._main_ident = threading.main_thread().ident
        self._thread = threading.Thread(target=self._loop, name="bench-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._active = False  # from here on a late signal is ignored
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        signal.signal(signal.SIGUSR1, self._old_handler)
        faulthandler.cancel_dump_traceback_later()

    def _loop(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._done.wait(0.05):
            reason = None
            for p in self._procs:
                code = p.exitcode
                if code is not None and code != 0:
                    reason = f"child process {p.pid} exited with code {code}"
                    break
            if reason is None and time.monotonic() > deadline:
                reason = f"no result after {self.timeout:g} s (hang?)"
            if reason is None:
                continue
            self._reason = f"{self.label}: {reason}"
            signal.pthread_kill(self._main_ident, signal.SIGUSR1)
            if self._done.wait(self.grace):
                return
            self._hard_exit()

    def _hard_exit(self) -> None:
        sys.stderr.write(
            f"\nbench: {self._reason}; the main thread did not respond to SIGUSR1 within"
            f" {self.grace:g} s. Tracebacks of all threads:\n"
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        for p in self._procs:
            try:
                p.kill()
            except Exception:
                pass
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(3)


def best_rate(run, n: int, repeat: int) -> float:
    """The best of `repeat` runs of `run()` (n units each), in units/s."""
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        rates.append(n / (time.perf_counter() - t0))
    return max(rates)


def die_with_parent() -> None:
    """Call first thing in a benchmark child: the kernel kills it (SIGKILL)
    when the parent dies, so an aborted run leaves no orphan blocked in a
    put(). Linux only; a no-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


# --------------------------------------------------------------------------
# formatting


def si(x: float | None, digits: int = 3) -> str:
    """82100 -> '82.1k', 1234567 -> '1.23M'; None -> 'n/a'."""
    if x is None:
        return "n/a"
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(x) >= scale:
            v = x / scale
            break
    else:
        return f"{x:.{digits}g}"
    # keep `digits` significant digits, never scientific notation
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
    return f"{v:.{decimals}f}{suffix}"


def ratio(x: float | None, ref: float | None) -> str:
    """x / ref as '5.31x', or 'n/a'."""
    if x is None or not ref:
        return "n/a"
    r = x / ref
    if r >= 100:
        return f"{r:.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x"


def percent(x: float | None, decimals: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{decimals}f}%"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """Plain-text table with aligned columns.

    ``align`` has one letter per column, 'l' or 'r'; by default the first
    column is left-aligned and the others right-aligned (numbers).
    """
    ncol = len(headers)
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    for row in cells:
        if len(row) != ncol:
            raise ValueError(f"row has {len(row)} cells, expected {ncol}: {row}")
    if align is None:
        align = "l" + "r" * (ncol - 1)
    widths = [max(len(row[i]) for row in cells) for i in range(ncol)]

    def fmt(row):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), rule] + [fmt(r) for r in cells[1:]])
