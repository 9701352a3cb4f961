"""The checks every public option goes through, one of each.

Each returns the value to use (a default filled in) or raises TypeError /
ValueError naming the option, what it got, and what it takes.  Process
configuration (config.py) and every pool (local or Ray) use these.
"""
from __future__ import annotations

import functools
import multiprocessing as mp
import os
import sys
from typing import Any, Callable

__all__ = ["start_methods", "default_start_method", "start_method", "positive_int",
           "worker_count", "chunksize", "retries", "initializer", "callable_name"]


def start_methods() -> list[str]:
    """The start methods this platform has ("fork", "forkserver", "spawn")."""
    return mp.get_all_start_methods()


def default_start_method() -> str:
    """The start method used when none is given.

    "fork" on Linux (the fastest way to start a worker), "spawn" elsewhere:
    macOS and Windows either lack fork or make it unsafe.
    """
    return "fork" if sys.platform.startswith("linux") else "spawn"


def start_method(method: str | None) -> str:
    """A pool's `start_method`: one of start_methods(), or None (the default)."""
    if method is None:
        return default_start_method()
    allowed = start_methods()
    if method not in allowed:
        raise ValueError(f"start_method must be one of {allowed} or None, got {method!r}")
    return method


def positive_int(value: int | None, name: str, none_means: str) -> int | None:
    """An option that is an int >= 1 or None; returns it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1 or None ({none_means}), "
                        f"not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def task_timeout(value: float | None, name: str = "task_timeout") -> int:
    """A task timeout: seconds > 0 (int or float), or None for no limit;
    returns it as nanoseconds (0: none)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds > 0 (None: no limit), "
                         f"got {value!r}")
    return max(1, round(value * 1e9))


def worker_count(workers: int | None, name: str = "workers") -> int:
    """A pool's `workers`: an int >= 1, or None for one per CPU this process may use."""
    checked = positive_int(workers, name, "one per CPU")
    if checked is not None:
        return checked
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def chunksize(value: int | None) -> int | None:
    return positive_int(value, "chunksize", "automatic")


def retries(value: int | None, default: int | None = None) -> int:
    """`retries`: an int >= 0; None means `default` (a call's: the pool's)."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        what = "an int >= 0" + (" or None (the pool's)" if default is not None else "")
        raise TypeError(f"retries must be {what}, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"retries must be >= 0, got {value}")
    return value


def initializer(fn: Callable[..., object] | None,
                args: Any) -> tuple[Callable[..., object], tuple[Any, ...]] | None:
    """A pool's (initializer, initargs as a tuple), or None when there is
    no initializer.  Errors as multiprocessing.Pool's."""
    if fn is None:
        return None
    if not callable(fn):
        raise TypeError("initializer must be a callable")
    try:
        args = tuple(args)
    except TypeError:
        raise TypeError(f"initargs must be an iterable of arguments, not "
                        f"{type(args).__name__}") from None
    return fn, args


def callable_name(fn: object) -> str:
    """How a task's function is named in errors and progress bars."""
    if isinstance(fn, functools.partial):
        return f"partial({callable_name(fn.func)})"
    name: str = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return name
