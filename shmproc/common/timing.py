"""Per-section timing of a Process: ``ProcessTimers`` and ``@timesection()``.

``@timesection()`` on a lifecycle hook times every call of that hook into
``self.timers`` (a :class:`ProcessTimers`, created by the first timed call).
The engine calls ``self.timers.end_lap()`` after each lap so that
``timers.full_loop`` gets one measurement per lap: the sum of that lap's
timed preloop, loop and postloop.

The timers are ``shmproc.sktime.Timer`` objects, so every statistic of
Timer (mean, percentile, stdev, ...) is available on each section.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

if TYPE_CHECKING:
    from typing import TypeVar

    _F = TypeVar("_F", bound=Callable[..., Any])

from ..sktime import Timer, _check_duration

__all__ = ["SECTIONS", "ProcessTimers", "timesection"]

SECTIONS = ("preloop", "loop", "postloop", "onfinish")

# Sections whose time makes up a lap (onfinish runs once, after the laps).
_LAP_SECTIONS = frozenset(("preloop", "loop", "postloop"))

# Hook method name -> section name, for @timesection().
_HOOK_SECTIONS: Dict[str, str] = {f"__{s}__": s for s in SECTIONS}

# Marker attribute set on wrapped hooks; the engine looks for it.
MARKER = "__shmproc_timesection__"

_clock = time.perf_counter


class ProcessTimers:
    """The timers of one Process run.

    ``preloop``, ``loop``, ``postloop`` and ``onfinish`` are None until that
    section is first timed, then a :class:`~shmproc.sktime.Timer` with one
    record per call. ``full_loop`` is always a Timer, with one record per
    lap that had at least one timed section.

    Recording is meant for the single thread that runs the hooks: the lap
    sum is not locked (the Timers themselves are).
    """

    __slots__ = ("preloop", "loop", "postloop", "onfinish", "full_loop", "_lap_total")

    def __init__(self) -> None:
        self.preloop: Optional[Timer] = None
        self.loop: Optional[Timer] = None
        self.postloop: Optional[Timer] = None
        self.onfinish: Optional[Timer] = None
        self.full_loop: Timer = Timer()
        # Sum of the lap sections recorded since the last end_lap();
        # None (rather than 0.0) when nothing was timed in this lap, so an
        # untimed lap adds nothing to full_loop.
        self._lap_total: Optional[float] = None

    def record(self, section: str, seconds: float) -> None:
        """Add one measurement of ``seconds`` to ``section``'s timer.

        ``section`` is one of :data:`SECTIONS`; the timer is created on
        first use. ValueError for an unknown section or a negative duration.
        """
        if not isinstance(section, str) or section not in SECTIONS:
            raise ValueError(
                f"unknown section {section!r}; expected one of {', '.join(map(repr, SECTIONS))}"
            )
        self._add(section, _check_duration(seconds, f"time recorded for {section!r}"))

    def _add(self, section: str, seconds: float) -> None:
        # Unchecked fast path for @timesection(): the section comes from a
        # validated hook name and the duration from perf_counter.
        timer = getattr(self, section)
        if timer is None:
            timer = Timer()
            setattr(self, section, timer)
        timer._record(seconds)
        if section in _LAP_SECTIONS:
            total = self._lap_total
            self._lap_total = seconds if total is None else total + seconds

    def end_lap(self) -> None:
        """Close the current lap: add its timed sections' sum to ``full_loop``.

        Adds nothing if no preloop/loop/postloop was timed since the
        previous call. The engine calls this after every lap.
        """
        total = self._lap_total
        if total is not None:
            self._lap_total = None
            self.full_loop._record(total)

    def __getstate__(self) -> dict[str, Any]:
        # A dict (not the slots tuple) keeps older pickles loadable if
        # fields are added later. Timers pickle themselves (locks recreated).
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in self.__slots__:
            setattr(self, name, state.get(name))
        if self.full_loop is None:
            self.full_loop = Timer()

    def __repr__(self) -> str:
        counts = [
            f"{name}={timer.num_times}"
            for name in (*SECTIONS, "full_loop")
            if (timer := getattr(self, name)) is not None
        ]
        return f"ProcessTimers({', '.join(counts)})"


def timesection(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    """Decorator factory: time each call of a lifecycle hook into ``self.timers``.

    Use it with parentheses, on ``__preloop__``, ``__loop__``,
    ``__postloop__`` or ``__onfinish__``::

        class Worker(Process):
            @timesection()
            def __loop__(self):
                ...

    The first timed call sets ``self.timers = ProcessTimers()`` if it is
    None. A call that raises is recorded too, and the exception propagates.
    Applying it to any other function raises ValueError when the class is
    defined; applying it twice to one hook has no further effect.
    """
    if args or kwargs:
        if len(args) == 1 and not kwargs and callable(args[0]):
            name = getattr(args[0], "__name__", "the method")
            raise TypeError(
                f"timesection is a decorator factory: write @timesection() with "
                f"parentheses above {name}, not @timesection"
            )
        raise TypeError("timesection() takes no arguments; write @timesection()")
    return _decorate


def _decorate(func: _F) -> _F:
    name = getattr(func, "__name__", None)
    section = _HOOK_SECTIONS.get(name) if isinstance(name, str) else None
    if section is None or not callable(func):
        raise ValueError(
            "@timesection() only works on __preloop__, __loop__, __postloop__, __onfinish__; "
            f"for other functions use shmproc.sktime.timethis() (got {name or func!r})"
        )
    if getattr(func, MARKER, None) is not None:
        return func  # already timed: a second wrapper would record every call twice

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        timers = getattr(self, "timers", None)
        if timers is None:
            # Created before the first timed call, with this section's timer,
            # so the hook itself may already read self.timers.<section>.
            timers = self.timers = ProcessTimers()
        elif not isinstance(timers, ProcessTimers):
            raise TypeError(
                f"self.timers must be a shmproc ProcessTimers (managed by @timesection()), "
                f"got {type(timers).__name__}; do not assign to self.timers"
            )
        if getattr(timers, section) is None:
            setattr(timers, section, Timer())
        t0 = _clock()
        try:
            return func(self, *args, **kwargs)
        finally:
            timers._add(section, _clock() - t0)

    setattr(wrapper, MARKER, section)
    return wrapper                      # type: ignore[return-value]  # same signature
