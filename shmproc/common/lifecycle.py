"""What shmproc does around fork() and at exit, registered in one place.

Fork hooks: several layers keep per-process state that a fork child must
not believe is its own (leases counted for the child, arenas pinned, pools
and live runs that belong to the parent).  They register here; this module
makes the one os.register_at_fork call.  As with os.register_at_fork,
`before` hooks run newest first and `after_*` hooks oldest first, so a
lower layer (registered first, being imported first) is the last to
prepare and the first to recover.

Locks that a fork child may still take are made with `lock()`
(_forkfree.py), and freed here in every fork child before any other hook
runs.

A child's hooks let go of the parent's objects (spare segments, ended
runs) with `leave_for_later`, not by tearing them down there: teardown
touches their pages, and every page a fresh fork child writes is copied
first, ~0.7 ms per child in all -- paid by every fork child of a process
that used shmproc, multiprocessing's and the user's own included.  They
go at `drop_leftovers()`, which a child calls at a quiet moment (a pool
worker before its first sleep, any child before it starts a run or a
pool of its own), or with the process.

Exit hooks run in multiprocessing's exit function, which also runs at the
end of a multiprocessing child (that skips atexit): priority >= 0 runs
before multiprocessing joins its children (so live workers are stopped,
not waited for), higher first; negative priorities run after.
"""
from __future__ import annotations

import atexit
import os
import sys
import traceback
from typing import Callable, Iterable

from .._forkfree import free_all, lock

__all__ = ["at_fork", "lock", "at_exit", "at_interpreter_exit", "leave_for_later",
           "drop_leftovers", "STOP_WORKERS", "FLUSH_OUT_OF_BAND"]

#: Stop live Process runs and pools before multiprocessing joins children.
STOP_WORKERS = 100
#: Keep out-of-band segments until readers took them (after the joins).
FLUSH_OUT_OF_BAND = -10

_Hook = Callable[[], object]

_before: list[_Hook] = []
_after_in_parent: list[_Hook] = []
_after_in_child: list[_Hook] = [free_all]       # first: later hooks may take them
_exit_registered: set[tuple[_Hook, int]] = set()
_leftovers: list[object] = []                  # the parent's, let go of in this fork child


def at_fork(*, before: _Hook | None = None, after_in_parent: _Hook | None = None,
            after_in_child: _Hook | None = None) -> None:
    """Run these around every os.fork() of this process (see module doc)."""
    if before is not None:
        _before.append(before)
    if after_in_parent is not None:
        _after_in_parent.append(after_in_parent)
    if after_in_child is not None:
        _after_in_child.append(after_in_child)


def _run(hooks: Iterable[_Hook]) -> None:
    for fn in hooks:
        try:
            fn()
        except Exception:                   # noqa: BLE001 - one hook's failure must not skip the rest
            traceback.print_exc(file=sys.stderr)


os.register_at_fork(before=lambda: _run(reversed(_before)),
                    after_in_parent=lambda: _run(_after_in_parent),
                    after_in_child=lambda: _run(_after_in_child))


def leave_for_later(obj: object) -> None:
    """In an after-fork-in-child hook: the parent's `obj`, let go of without
    tearing it down now (module doc); it goes at drop_leftovers()."""
    _leftovers.append(obj)


def drop_leftovers() -> None:
    """Tear down what this process's fork hooks left (leave_for_later)."""
    global _leftovers
    if _leftovers:
        batch, _leftovers = _leftovers, []
        batch.clear()                       # the teardown: unmaps, closes, frees


def at_exit(fn: _Hook, priority: int) -> None:
    """Run fn() once in multiprocessing's exit function (see module doc).
    Registering the same function again does nothing."""
    key = (fn, priority)
    if key in _exit_registered:
        return
    import multiprocessing.util as mp_util      # loaded on first need: import shmproc stays light
    mp_util.Finalize(None, fn, exitpriority=priority)
    _exit_registered.add(key)


def at_interpreter_exit(fn: _Hook) -> None:
    """Run fn() from atexit (for what must run after multiprocessing's exit
    function, such as leaving a Ray cluster this process started)."""
    atexit.register(fn)



def _exit_hooks_are_the_parents() -> None:
    # multiprocessing runs a Finalize only in the process that made it: a
    # fork child must register its own exit hooks again.
    global _exit_registered
    leave_for_later(_exit_registered)
    _exit_registered = set()


at_fork(after_in_child=_exit_hooks_are_the_parents)
