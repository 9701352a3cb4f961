"""Setting a signal handler in a worker as it starts, without signal.signal's enums.

signal.signal converts its arguments and result through the Signals and
Handlers enums.  In a fresh fork child that machinery sits on pages the
parent wrote last, and the first write to each is a copy-on-write trap
(~5 µs on a VM): measured, ~20 traps per call against ~4 for the bare
_signal.signal.  A worker sets two or three handlers before its first
task, so they use this.
"""
from __future__ import annotations

import _signal
from typing import Any, Callable

SIGINT: int = _signal.SIGINT
SIGALRM: int = _signal.SIGALRM
SIGKILL: int = _signal.SIGKILL
SIG_IGN: int = _signal.SIG_IGN


def set_handler(signum: int, handler: int | Callable[[int, Any], object]) -> None:
    """signal.signal(signum, handler) for plain ints and callables, result dropped."""
    _signal.signal(signum, handler)
