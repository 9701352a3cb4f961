"""A tiny circuit breaker for worker loops.

Count failures with :meth:`Circuit.short`; after ``shorts`` of them the
circuit *breaks* (``broken`` becomes True, ``flowing`` False) and the caller
sleeps ``break_sleep`` seconds, giving whatever failed a moment to recover.
The loop then decides what to do, typically::

    self.circuit = Circuit(shorts=5)
    ...
    except Exception:
        self.circuit.short()
    if self.circuit.broken:
        self.stop()

Only the standard library is used.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Any, Optional

from . import _forkfree

__all__ = ["Circuit"]


def _check_sleep(value: Any, name: str) -> float:
    """Validate a non-negative, finite number of seconds (bool rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {seconds!r}")
    return seconds


class Circuit:
    """Break after ``shorts`` calls to :meth:`short`, sleeping ``break_sleep`` seconds.

    Thread-safe: counting and state changes happen under a lock; the sleep
    happens outside it so other threads can still read the state. Picklable
    (the lock is recreated).
    """

    def __init__(self, shorts: int, break_sleep: float = 0.1) -> None:
        if isinstance(shorts, bool) or not isinstance(shorts, int):
            raise TypeError(f"Circuit shorts must be an int, got {type(shorts).__name__} {shorts!r}")
        if shorts < 1:
            raise ValueError(f"Circuit shorts must be >= 1 (failures allowed before breaking), got {shorts}")
        self.shorts = shorts
        self.break_sleep = _check_sleep(break_sleep, "Circuit break_sleep")
        self._broken = False
        self._times_shorted = 0
        self._total_trips = 0
        self._lock = _forkfree.lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # locks can't be pickled; recreated in __setstate__
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = _forkfree.lock()

    def __repr__(self) -> str:
        return (
            f"Circuit(shorts={self.shorts}, break_sleep={self.break_sleep}, broken={self._broken}, "
            f"times_shorted={self._times_shorted}, total_trips={self._total_trips})"
        )

    @property
    def broken(self) -> bool:
        """True once the circuit has tripped, until :meth:`reset`."""
        return self._broken

    @property
    def flowing(self) -> bool:
        """The opposite of ``broken``."""
        return not self._broken

    @property
    def times_shorted(self) -> int:
        """Shorts counted since the last trip or reset."""
        return self._times_shorted

    @property
    def total_trips(self) -> int:
        """How many times the circuit has broken (not cleared by :meth:`reset`)."""
        return self._total_trips

    def _sleep_for(self, custom_sleep: Optional[float]) -> float:
        if custom_sleep is None:
            return self.break_sleep
        return _check_sleep(custom_sleep, "custom_sleep")

    def _break(self) -> None:
        # Caller holds the lock.
        self._broken = True
        self._times_shorted = 0
        self._total_trips += 1

    def short(self, custom_sleep: Optional[float] = None) -> bool:
        """Count one failure. On reaching ``shorts``, break and sleep.

        Sleeps ``custom_sleep`` seconds instead of ``break_sleep`` if given.
        Returns True if this call broke the circuit.
        """
        # Validate before counting so a bad argument leaves the state untouched.
        duration = self._sleep_for(custom_sleep)
        with self._lock:
            self._times_shorted += 1
            if self._times_shorted < self.shorts:
                return False
            self._break()
        time.sleep(duration)
        return True

    def trip(self, custom_sleep: Optional[float] = None) -> None:
        """Break the circuit at once and sleep (``custom_sleep`` or ``break_sleep``)."""
        duration = self._sleep_for(custom_sleep)
        with self._lock:
            self._break()
        time.sleep(duration)

    def reset(self) -> None:
        """Close the circuit again: not broken, flowing, count back to 0."""
        with self._lock:
            self._broken = False
            self._times_shorted = 0
