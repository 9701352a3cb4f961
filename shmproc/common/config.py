"""Configuration of a Process: ``ProcessConfig``, ``TimeoutConfig`` and ``validate``.

Both classes are mutable dataclasses, because users set them field by field
in ``__init__`` (``self.config.num_loops = 10``). They are not validated on
assignment: ``validate()`` runs once, at ``start()``, so that a value can be
built up in several steps and a bad one is reported before anything runs.

They use ``__slots__``: assigning a misspelled field (``config.num_loop = 5``)
raises AttributeError at once instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Optional

from .validate import default_start_method, start_methods

__all__ = ["TimeoutConfig", "ProcessConfig", "validate", "default_start_method"]


class _NoTyposMixin:
    """Turn the bare slots AttributeError for an unknown field into a helpful one."""

    __slots__ = ()

    # Hidden from type checkers: a class with __setattr__ accepts any
    # attribute name to them, and a misspelled field is what they should catch.
    if not TYPE_CHECKING:
        def __setattr__(self, name: str, value: Any) -> None:
            try:
                object.__setattr__(self, name, value)
            except AttributeError:
                known = [f.name for f in fields(self)]
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise AttributeError(
                    f"{type(self).__name__} has no field {name!r}; {hint}"
                    f"the fields are: {', '.join(known)}"
                ) from None


@dataclass(slots=True)
class TimeoutConfig(_NoTyposMixin):
    """Per-section time limits in seconds; None means no limit.

    When a section runs longer than its limit, the engine raises
    ``shmproc.errors.TimeoutError`` inside it.
    """

    preloop: Optional[float] = 30.0
    loop: Optional[float] = 300.0
    postloop: Optional[float] = 60.0
    onfinish: Optional[float] = 60.0


@dataclass(slots=True)
class ProcessConfig(_NoTyposMixin):
    """How a Process runs.

    - ``num_loops``: laps to run before finishing; None = until stopped.
    - ``join_in``: seconds after the first lap begins at which the loop
      ends (checked between laps); None = no time limit.
    - ``lives``: attempts in total; 1 = no retries.
    - ``timeouts``: per-section limits (:class:`TimeoutConfig`).
    - ``start_method``: "fork", "spawn" or "forkserver"; None = the
      platform default, :func:`default_start_method`.
    """

    num_loops: Optional[int] = None
    join_in: Optional[float] = None
    lives: int = 1
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    start_method: Optional[str] = None


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but num_loops=True is a bug, not "one loop".
    # numbers.Integral also admits NumPy integers; the engine converts with int().
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value)


def _describe(value: Any) -> str:
    """The value as shown in error messages: its repr, plus the type when that helps."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    return f"{value!r} ({type(value).__name__})"


_TIMEOUT_FIELDS = tuple(f.name for f in fields(TimeoutConfig))   # once: fields() builds a tuple


def validate(config: Any) -> None:
    """Check every field of ``config``; raise ValueError on the first bad one.

    Called by the engine at ``start()``, before anything is serialized or
    launched. Wrong types are reported as ValueError too (the message says
    which type was expected), so one ``except ValueError`` covers any bad
    configuration. Infinity is refused where None already means "no limit".
    """
    if not isinstance(config, ProcessConfig):
        raise ValueError(
            f"config must be a shmproc ProcessConfig, got {_describe(config)}; "
            "set fields on self.config instead of replacing it"
        )

    num_loops = config.num_loops
    if num_loops is not None and not (_is_int(num_loops) and num_loops >= 0):
        raise ValueError(
            f"config.num_loops must be a non-negative int or None, got {_describe(num_loops)}"
        )

    join_in = config.join_in
    if join_in is not None and not (_is_finite_number(join_in) and join_in >= 0):
        raise ValueError(
            "config.join_in must be a non-negative, finite number of seconds or None "
            f"(None = no time limit), got {_describe(join_in)}"
        )

    lives = config.lives
    if not (_is_int(lives) and lives >= 1):
        raise ValueError(
            f"config.lives must be an int >= 1 (1 = no retries), got {_describe(lives)}"
        )

    timeouts = config.timeouts
    if not isinstance(timeouts, TimeoutConfig):
        raise ValueError(
            f"config.timeouts must be a shmproc TimeoutConfig, got {_describe(timeouts)}; "
            "set its fields (config.timeouts.loop = 5.0) instead of replacing it"
        )
    for name in _TIMEOUT_FIELDS:
        limit = getattr(timeouts, name)
        if limit is not None and not (_is_finite_number(limit) and limit > 0):
            raise ValueError(
                f"config.timeouts.{name} must be a positive, finite number of seconds "
                f"or None (None = no limit), got {_describe(limit)}"
            )

    method = config.start_method
    if method is not None:
        valid = start_methods()
        if method not in valid:
            raise ValueError(
                f"config.start_method must be None (platform default) or one of "
                f"{', '.join(map(repr, valid))} on this platform, got {_describe(method)}"
            )
