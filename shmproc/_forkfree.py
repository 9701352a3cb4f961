"""Locks that every fork child finds free.

A fork child has only the thread that forked, so a lock another thread
held at that moment would stay held there forever, and the child's first
start, result or timer would block on it.  Locks a child may still take
(module state; the timers and circuits a Process carries into its worker)
are made here; common/lifecycle.py frees them all in every fork child,
first of its hooks.  Not for a lock a `before` fork hook takes on
purpose (held across the fork, released by an after-hook): freed first,
it would then be released twice in the child.  This module imports
nothing of shmproc, so the standalone tools (sktime, circuit) can use it
too.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any

__all__ = ["lock", "free_all"]

_made: "weakref.WeakSet[Any]" = weakref.WeakSet()


def lock(reentrant: bool = False) -> Any:
    """A threading.Lock (an RLock if `reentrant`) freed in every fork child."""
    made = threading.RLock() if reentrant else threading.Lock()
    _made.add(made)
    return made


def free_all() -> None:
    """In a fork child: make every such lock free (as CPython does to its own)."""
    for made in list(_made):
        made._at_fork_reinit()
