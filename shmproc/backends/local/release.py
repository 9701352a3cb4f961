"""Ended Process runs whose segments are not released yet.

A run that reported gives its outcome at once (run.py, LocalRun._finish_once);
what it still holds (its control block's descriptor, its trace segment, its
pidfd, its arena) is released later, off the result path: after a fork every
page the parent writes first is a copy-on-write trap, and each step moved off
that path is time p.result gives back.  Released by every wait() (before
it blocks, or at once if its run had ended already), by every eighth ended run, before a pool forks its workers (so they
inherit none of it) and at exit; so a few runs at most are held.

A run is referred to weakly: one whose Process was dropped meanwhile is
closed from what it held.
"""
from __future__ import annotations

import os
import weakref
from typing import Any

from ...common import lifecycle

__all__ = ["Held", "hold_until_released", "release_ended", "BATCH"]

#: Ended runs held at most before they are all released.
BATCH = 8


class Held:
    """What a run holds, for when nobody else is left to close it."""

    __slots__ = ("run", "ctl_array", "trace", "pidfd", "released")

    def __init__(self, run: Any) -> None:
        self.run = weakref.ref(run)
        self.released = False       # the run released it itself (LocalRun._release)
        self.refresh(run)

    def refresh(self, run: Any) -> None:
        """Take what `run` holds now (a later life has its own pidfd)."""
        self.ctl_array, self.trace, self.pidfd = run.ctl_array, run.trace, run._pidfd


_unreleased: list[Held] = []
_lock = lifecycle.lock()


def hold_until_released(run: Any) -> None:
    """File an ended run (its Held made ahead by its wait's rehearsal, or now)."""
    held = run._held
    if held is None:
        run._held = held = Held(run)
    else:
        held.refresh(run)           # made ahead, maybe in an earlier life
    with _lock:
        _unreleased.append(held)
        full = len(_unreleased) >= BATCH
    if full:
        release_ended()


def release_ended() -> None:
    """Release what every filed run still holds (LocalRun._release)."""
    with _lock:
        batch = _unreleased[:]
        _unreleased.clear()
    first_error = None
    for held in batch:
        try:
            _release_one(held)
        except Exception as exc:    # noqa: BLE001 - the rest of the batch is still closed
            if first_error is None:
                first_error = exc
    if first_error is not None:
        raise first_error


def _release_one(held: Held) -> None:
    run = held.run()
    if run is not None:
        run._release()
    elif not held.released:         # its run is gone: nobody else closes these
        held.released = True
        held.ctl_array.close()
        if held.trace is not None:
            held.trace.close()
        if held.pidfd is not None:
            os.close(held.pidfd)


def held_count() -> int:
    return len(_unreleased)


def _forget_the_parents_runs() -> None:
    global _unreleased              # a fork child: the parent releases its own
    lifecycle.leave_for_later(_unreleased)
    _unreleased = []


lifecycle.at_fork(after_in_child=_forget_the_parents_runs)
lifecycle.at_exit(release_ended, lifecycle.STOP_WORKERS - 1)
