"""Small timing helpers: wall-clock shortcuts, a thread-aware ``Timer``,
a context manager and a decorator that feed timers, and ``Yawn``, a
counter that sleeps every N calls to throttle busy loops.

Only the standard library is used, so ``import shmproc.sktime`` stays cheap
and works without the native part of shmproc.

Numbers: every function that takes a number accepts ints and floats (and
other ``numbers.Real`` such as NumPy floats) but rejects ``bool``, because
``sleep(True)`` is almost certainly a bug rather than "sleep one second".
"""

from __future__ import annotations

import functools
import math
import numbers
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Tuple, overload

from . import _forkfree

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Literal, ParamSpec, Protocol, TypeVar

    _P = ParamSpec("_P")
    _R = TypeVar("_R")
    _R_co = TypeVar("_R_co", covariant=True)

    class TimedFunction(Protocol[_P, _R_co]):
        """What @timethis gives: the function, with its Timer as ``.timer``."""

        timer: Timer
        __name__: str

        def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R_co: ...

    class _Statistics(Protocol):
        # What this module uses of the statistics module (which _stats returns).
        def fmean(self, data: Sequence[float]) -> float: ...
        def median(self, data: Sequence[float]) -> float: ...
        def stdev(self, data: Sequence[float]) -> float: ...
        def variance(self, data: Sequence[float]) -> float: ...


def _stats() -> _Statistics:
    # statistics pulls in fractions and decimal (~6 ms): every worker
    # imports this module, few ever ask for a median.
    import statistics
    return statistics

__all__ = [
    "now",
    "get_current_time",
    "sleep",
    "elapsed",
    "Timer",
    "TimerStats",
    "TimeThis",
    "timethis",
    "clear_global_timers",
    "Yawn",
]

# Plain aliases: a wrapper function would add call overhead to something
# people call in tight loops, and time.time already has the exact semantics.
now = time.time
get_current_time = time.time
_time = time.time

# perf_counter is monotonic and high resolution: the right clock for
# durations (time.time can jump when the system clock is adjusted).
_clock = time.perf_counter


def _check_number(value: Any, name: str) -> None:
    """Raise TypeError unless ``value`` is a real number (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number (int or float), got {type(value).__name__} {value!r}"
        )


def _check_duration(value: Any, name: str) -> float:
    """Validate a non-negative, finite number of seconds and return it as float."""
    _check_number(value, name)
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {seconds!r}")
    return seconds


def sleep(seconds: float) -> float:
    """Sleep for ``seconds`` and return :func:`now` afterwards.

    Raises TypeError for non-numbers (including bool) and ValueError for
    negative, NaN or infinite durations.
    """
    time.sleep(_check_duration(seconds, "sleep duration"))
    return now()


def elapsed(t1: float, t2: Optional[float] = None) -> float:
    """Return ``abs(t2 - t1)``; ``t2`` defaults to :func:`now`.

    Both arguments must be numbers (bool is rejected with TypeError).
    """
    if t2 is None:
        t2 = _time()
    # The usual call, two now() stamps: no validation on the hot path (it
    # costs ~10x the subtraction; a float is a valid number by definition).
    if type(t1) is float and type(t2) is float:
        return abs(t2 - t1)
    _check_number(t1, "t1")
    _check_number(t2, "t2")
    return abs(t2 - t1)


# ---------------------------------------------------------------------------
# Statistics over a snapshot of recorded times. Kept as plain functions so
# the properties and get_statistics() share one implementation, and so that
# get_statistics() can compute everything from one consistent snapshot.


def _percentile(times: Sequence[float], p: float) -> Optional[float]:
    """Linear interpolation between closest ranks (NumPy's default method)."""
    if not times:
        return None
    ordered = sorted(times)
    rank = (len(ordered) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def _index_of(times: Sequence[float], value: Optional[float]) -> Optional[int]:
    return None if value is None else times.index(value)


@dataclass(frozen=True)
class TimerStats:
    """Immutable snapshot of a :class:`Timer`'s records (see ``Timer.get_statistics``)."""

    times: Tuple[float, ...]
    num_times: int
    most_recent: float
    result: float
    most_recent_index: int
    total_time: float
    total_time_paused: float
    mean: float
    median: float
    min: float
    max: float
    fastest_time: float
    slowest_time: float
    fastest_lap: int
    slowest_lap: int
    stdev: Optional[float]
    variance: Optional[float]


class Timer:
    """Measure durations and keep statistics about them.

    Measuring state (the running start time and pause state) is *per thread*:
    several threads can time their own work with one shared Timer without
    interfering, and ``stop()`` in a thread that never called ``start()``
    raises RuntimeError. The recorded durations are shared by all threads and
    guarded by a lock.

    Typical use::

        t = Timer()
        t.start(); work(); t.stop()
        t.mean, t.percentile(95), t.get_statistics()

    Pickling keeps the records (and the paused total) but not measurements
    that are in flight; the lock and thread-local state are recreated.
    """

    def __init__(self) -> None:
        self._records: list[float] = []
        self._paused_total = 0.0
        self._init_runtime_state()

    def _init_runtime_state(self) -> None:
        # Neither a lock nor a threading.local can be pickled, and in-flight
        # measurements mean nothing in another process anyway.
        self._lock = _forkfree.lock()
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {"records": list(self._records), "paused_total": self._paused_total}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._records = list(state["records"])
        self._paused_total = float(state["paused_total"])
        self._init_runtime_state()

    def __repr__(self) -> str:
        n = self.num_times
        if n == 0:
            return "Timer(num_times=0)"
        return f"Timer(num_times={n}, mean={self.mean:.6g}s, total={self.total_time:.6g}s)"

    # -- per-thread measuring ------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True if the calling thread has a measurement in flight."""
        return getattr(self._local, "start", None) is not None

    @property
    def is_paused(self) -> bool:
        """True if the calling thread's measurement is paused."""
        return getattr(self._local, "paused_at", None) is not None

    def start(self) -> "Timer":
        """Start (or restart) this thread's measurement. Returns the timer."""
        local = self._local
        local.paused_at = None
        local.paused = 0.0
        local.start = _clock()
        return self

    def _finish(self, action: str) -> Tuple[float, float]:
        """End this thread's measurement; return (active time, paused time)."""
        t = _clock()
        local = self._local
        start = getattr(local, "start", None)
        if start is None:
            raise RuntimeError(
                f"Timer.{action}() called but this thread has no running measurement; "
                "call start() first (measurements are per thread)"
            )
        paused = local.paused
        if local.paused_at is not None:  # stopping while paused: exclude that too
            paused += t - local.paused_at
        local.start = None
        local.paused_at = None
        return max(0.0, t - start - paused), paused

    def _record(self, duration: float, paused: float = 0.0) -> None:
        # Internal fast path (used by timethis); callers guarantee validity.
        with self._lock:
            self._records.append(duration)
            self._paused_total += paused

    def stop(self) -> float:
        """Stop this thread's measurement, record it and return the duration.

        Paused time is excluded. RuntimeError if nothing is running.
        """
        duration, paused = self._finish("stop")
        self._record(duration, paused)
        return duration

    def lap(self) -> float:
        """Record the current measurement and immediately start a new one.

        Returns the recorded duration. RuntimeError if nothing is running.
        """
        duration, paused = self._finish("lap")
        self.start()
        self._record(duration, paused)
        return duration

    def pause(self) -> None:
        """Pause this thread's measurement; time until ``resume()`` is excluded.

        RuntimeError if nothing is running; UserWarning if already paused.
        """
        local = self._local
        if getattr(local, "start", None) is None:
            raise RuntimeError(
                "Timer.pause() called but this thread has no running measurement; "
                "call start() first"
            )
        if local.paused_at is not None:
            warnings.warn("Timer.pause() called while already paused; ignored", UserWarning, stacklevel=2)
            return
        local.paused_at = _clock()

    def resume(self) -> None:
        """Resume a paused measurement. UserWarning (no-op) if not paused."""
        local = self._local
        paused_at = getattr(local, "paused_at", None)
        if paused_at is None:
            warnings.warn("Timer.resume() called but the timer is not paused; ignored", UserWarning, stacklevel=2)
            return
        local.paused += _clock() - paused_at
        local.paused_at = None

    def add_time(self, seconds: float) -> None:
        """Record an externally measured duration (a non-negative number)."""
        self._record(_check_duration(seconds, "add_time() duration"))

    def reset(self) -> None:
        """Forget all records and the calling thread's running measurement.

        Measurements running in *other* threads are left alone and will
        still record when they stop.
        """
        with self._lock:
            self._records.clear()
            self._paused_total = 0.0
        self._local.start = None
        self._local.paused_at = None

    def merge(self, other: "Timer") -> "Timer":
        """Append ``other``'s records (and paused total) to this timer. Returns self."""
        if not isinstance(other, Timer):
            raise TypeError(f"Timer.merge() expects a Timer, got {type(other).__name__}")
        # Snapshot first, then append: never hold both locks at once, so
        # a.merge(b) and b.merge(a) in two threads cannot deadlock.
        with other._lock:
            records = list(other._records)
            paused = other._paused_total
        with self._lock:
            self._records.extend(records)
            self._paused_total += paused
        return self

    # -- reading records -------------------------------------------------------

    def _snapshot(self) -> Tuple[float, ...]:
        with self._lock:
            return tuple(self._records)

    @property
    def times(self) -> Tuple[float, ...]:
        """All recorded durations, oldest first (a tuple copy)."""
        return self._snapshot()

    @property
    def num_times(self) -> int:
        return len(self._records)

    def get_time(self, index: int) -> Optional[float]:
        """Return the ``index``-th recorded duration, or None if out of range.

        Negative indexes are out of range (no counting from the end).
        """
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"get_time() index must be an int, got {type(index).__name__}")
        times = self._snapshot()
        return times[index] if 0 <= index < len(times) else None

    @property
    def most_recent(self) -> Optional[float]:
        times = self._snapshot()
        return times[-1] if times else None

    @property
    def result(self) -> Optional[float]:
        """Same as ``most_recent``."""
        return self.most_recent

    @property
    def most_recent_index(self) -> Optional[int]:
        n = self.num_times
        return n - 1 if n else None

    @property
    def total_time(self) -> Optional[float]:
        times = self._snapshot()
        return math.fsum(times) if times else None

    @property
    def total_time_paused(self) -> Optional[float]:
        """Paused time excluded from the recorded measurements."""
        with self._lock:
            return self._paused_total if self._records else None

    @property
    def mean(self) -> Optional[float]:
        times = self._snapshot()
        return _stats().fmean(times) if times else None

    @property
    def median(self) -> Optional[float]:
        times = self._snapshot()
        return _stats().median(times) if times else None

    @property
    def min(self) -> Optional[float]:
        times = self._snapshot()
        return min(times) if times else None

    @property
    def max(self) -> Optional[float]:
        times = self._snapshot()
        return max(times) if times else None

    fastest_time = min
    slowest_time = max

    @property
    def fastest_lap(self) -> Optional[int]:
        """Index of the fastest record (the first one on ties)."""
        times = self._snapshot()
        return _index_of(times, min(times) if times else None)

    @property
    def slowest_lap(self) -> Optional[int]:
        """Index of the slowest record (the first one on ties)."""
        times = self._snapshot()
        return _index_of(times, max(times) if times else None)

    @property
    def stdev(self) -> Optional[float]:
        """Sample standard deviation; None with fewer than 2 records."""
        times = self._snapshot()
        return _stats().stdev(times) if len(times) >= 2 else None

    @property
    def variance(self) -> Optional[float]:
        """Sample variance; None with fewer than 2 records."""
        times = self._snapshot()
        return _stats().variance(times) if len(times) >= 2 else None

    def percentile(self, p: float) -> Optional[float]:
        """The ``p``-th percentile (0..100) of the records, None if empty
        (whatever ``p`` is: there is nothing to check it against yet).

        Uses linear interpolation between the closest ranks, like NumPy's
        default. Once there are records, ValueError if ``p`` is outside
        [0, 100] and TypeError if it is not a number.
        """
        times = self._snapshot()
        if not times:
            return None
        _check_number(p, "percentile")
        if not 0 <= p <= 100:  # also rejects NaN
            raise ValueError(f"percentile must be between 0 and 100, got {p!r}")
        return _percentile(times, p)

    def get_statistics(self) -> Optional[TimerStats]:
        """A frozen :class:`TimerStats` snapshot, or None if nothing is recorded."""
        with self._lock:
            times = tuple(self._records)
            paused = self._paused_total
        if not times:
            return None
        lo, hi = min(times), max(times)
        many = len(times) >= 2
        return TimerStats(
            times=times,
            num_times=len(times),
            most_recent=times[-1],
            result=times[-1],
            most_recent_index=len(times) - 1,
            total_time=math.fsum(times),
            total_time_paused=paused,
            mean=_stats().fmean(times),
            median=_stats().median(times),
            min=lo,
            max=hi,
            fastest_time=lo,
            slowest_time=hi,
            fastest_lap=times.index(lo),
            slowest_lap=times.index(hi),
            stdev=_stats().stdev(times) if many else None,
            variance=_stats().variance(times) if many else None,
        )


def _check_timer(timer: Any) -> Timer:
    if timer is None:
        return Timer()
    if not isinstance(timer, Timer):
        raise TypeError(f"expected a shmproc.sktime.Timer or None, got {type(timer).__name__}")
    return timer


class TimeThis:
    """Context manager that times its block into a :class:`Timer`.

    ``with TimeThis() as t:`` yields the timer (a new one when none is given).
    On exit the timer is stopped and the duration recorded, also when the
    block raises (the exception propagates). The yielded timer can be paused
    and resumed inside the block.
    """

    def __init__(self, timer: Optional[Timer] = None) -> None:
        self.timer = _check_timer(timer)

    def __enter__(self) -> Timer:
        return self.timer.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        # The block may already have stopped the timer itself; don't turn
        # that into an error on exit.
        if self.timer.is_running:
            self.timer.stop()
        return False


# Per-function timers created by @timethis, so clear_global_timers() can
# reset them. Weak references: a decorated function that goes away must
# not be kept alive (with its records) by this registry.
_global_timers: "weakref.WeakSet[Timer]" = weakref.WeakSet()
_global_timers_lock = _forkfree.lock()


def clear_global_timers() -> None:
    """Reset the records of every per-function timer created by ``@timethis``.

    The timers stay attached to their functions (``func.timer``) and keep
    recording afterwards; timers passed in explicitly are not touched.
    """
    with _global_timers_lock:
        timers = list(_global_timers)
    for timer in timers:
        timer.reset()


@overload
def timethis(timer: Callable[_P, _R]) -> TimedFunction[_P, _R]: ...
@overload
def timethis(timer: Optional[Timer] = None
             ) -> Callable[[Callable[_P, _R]], TimedFunction[_P, _R]]: ...
def timethis(timer: Any = None) -> Any:
    """Decorator factory recording the duration of each call.

    ``@timethis()`` gives the function its own Timer, reachable as
    ``func.timer``; ``@timethis(my_timer)`` records into ``my_timer`` (also
    exposed as ``func.timer``). Bare ``@timethis`` works too. Calls that
    raise are recorded as well. Decorated module-level functions remain
    picklable by reference.
    """
    if callable(timer) and not isinstance(timer, Timer):
        # Used bare as @timethis: "timer" is actually the function.
        return timethis()(timer)
    explicit = timer is not None
    timer = _check_timer(timer)
    if not explicit:
        with _global_timers_lock:
            _global_timers.add(timer)

    def decorate(func: Callable[_P, _R]) -> TimedFunction[_P, _R]:
        record = timer._record  # bound once: keeps the per-call overhead low

        # The clock is read here rather than through timer.start()/stop(),
        # so recursive and concurrent calls each get their own measurement.
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = _clock()
            try:
                return func(*args, **kwargs)
            finally:
                record(_clock() - t0)

        wrapper.timer = timer               # type: ignore[attr-defined]
        return wrapper                      # type: ignore[return-value]  # with .timer

    return decorate


class Yawn:
    """Sleep ``sleep_duration`` seconds every ``yawn_threshold`` calls of :meth:`yawn`.

    Useful to throttle a polling loop without sleeping on every iteration.
    The counter is thread-safe; the sleep happens outside the lock, so only
    the thread whose yawn reached the threshold sleeps.
    """

    def __init__(self, sleep_duration: float, yawn_threshold: int, log_sleep: bool = False) -> None:
        self.sleep_duration = _check_duration(sleep_duration, "Yawn sleep_duration")
        if isinstance(yawn_threshold, bool) or not isinstance(yawn_threshold, int):
            raise TypeError(
                f"Yawn yawn_threshold must be an int, got {type(yawn_threshold).__name__} {yawn_threshold!r}"
            )
        if yawn_threshold < 1:
            raise ValueError(f"Yawn yawn_threshold must be >= 1, got {yawn_threshold}")
        self.yawn_threshold = yawn_threshold
        self.log_sleep = bool(log_sleep)
        self.current_yawns = 0
        self.total_sleeps = 0
        self._lock = _forkfree.lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # locks can't be pickled; recreated below
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = _forkfree.lock()

    def __repr__(self) -> str:
        return (
            f"Yawn(sleep_duration={self.sleep_duration}, yawn_threshold={self.yawn_threshold}, "
            f"current_yawns={self.current_yawns}, total_sleeps={self.total_sleeps})"
        )

    def yawn(self) -> bool:
        """Count one call; at the threshold sleep, reset the count and return True."""
        with self._lock:
            self.current_yawns += 1
            if self.current_yawns < self.yawn_threshold:
                return False
            self.current_yawns = 0
            self.total_sleeps += 1
        if self.log_sleep:
            print(f"Sleeping for {self.sleep_duration} seconds...")
        time.sleep(self.sleep_duration)
        return True

    def reset(self) -> None:
        """Set the yawn count and the number of sleeps back to zero."""
        with self._lock:
            self.current_yawns = 0
            self.total_sleeps = 0

    def get_stats(self) -> dict[str, Any]:
        """Current counters as a dict."""
        with self._lock:
            return {
                "current_yawns": self.current_yawns,
                "yawn_threshold": self.yawn_threshold,
                "total_sleeps": self.total_sleeps,
                "sleep_duration": self.sleep_duration,
                "yawns_until_sleep": self.yawn_threshold - self.current_yawns,
            }
