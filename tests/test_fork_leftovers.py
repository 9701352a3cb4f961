"""A fork child's hooks let go of the parent's objects without tearing them
down (common/lifecycle.py: leave_for_later); they go at drop_leftovers(),
which a pool worker calls before its first sleep and any child before its
first run or pool.  Measured: ~0.7 ms less per fork child of a process
that used shmproc (docs/benchmarks.md)."""
from __future__ import annotations

import gc
import os
import time

from conftest import shmproc_fds
from proc_helpers import in_fork_child as _in_child

import shmproc
from shmproc.channels import mailbox
from shmproc.common import lifecycle
from shmproc.processing import Process
from shmproc.wire import arenas, blobs


class One(Process):
    def __init__(self):
        self.config.num_loops = 1

    def __result__(self):
        return 1


def test_a_fork_child_keeps_the_parents_spares_until_it_drops_them():
    p = One()
    p.start()
    assert p.result == 1                        # the parent now holds spares
    assert mailbox._spare                       # (the next run's mailbox, made after the fork)
    from shmproc.backends.local import run as local_run

    def child():
        if mailbox._spare:                      # a fresh list: the parent's are not ours
            return 2
        if not lifecycle._leftovers:            # kept, not torn down, by the hooks
            return 3
        if set(shmproc_fds()) != kept:          # nothing else closed yet
            return 4
        lifecycle.drop_leftovers()
        if lifecycle._leftovers or len(shmproc_fds()) >= len(kept):
            return 5                            # the parent's spare segments are closed now
        return 0

    # A fork child closes the arena pool's kept arenas and the blob pool's
    # segments at once (arenas.py, blobs.py): the former are emptied first,
    # the latter left out, and no garbage is collected until the fork (an
    # earlier test's garbage collected in between could hand an arena back
    # to the pool).
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        arenas.pool.trim()
        blobs.pool.sweep()
        blobs.pool.trim()
        closed_at_fork = {str(local_run._spares["arena"].fd)}          # (test below)
        closed_at_fork |= {str(s.blob.fd) for s in blobs.pool.in_flight}
        closed_at_fork |= {str(b.fd) for b in blobs.pool.free}
        # All the parent's other shmproc descriptors stay open in the
        # child until it drops them.
        kept = set(shmproc_fds()) - closed_at_fork
        assert _in_child(child) == 0
    finally:
        if was_enabled:
            gc.enable()
    assert mailbox._spare                       # the parent's own are untouched


def test_a_fork_child_that_starts_a_run_drops_them_first():
    p = One()
    p.start()
    assert p.result == 1

    def child():
        if not lifecycle._leftovers:
            return 2
        q = One()
        q.start()
        ok = q.result == 1 and not lifecycle._leftovers
        return 0 if ok else 3

    assert _in_child(child) == 0


def _leftovers_now():
    return len(lifecycle._leftovers)


def test_a_pool_worker_drops_them_before_it_first_sleeps():
    p = One()
    p.start()
    assert p.result == 1
    with shmproc.Pool(1) as pool:
        pool.apply(_leftovers_now)              # (they may still be there: a task was waiting)
        time.sleep(0.3)                         # the worker has gone to sleep, dropping them
        assert pool.apply(_leftovers_now) == 0


def test_the_parents_spare_arena_goes_at_the_fork():
    """An arena may hold a large result's pages: a long-lived child must not
    keep them alive, so it is not among what the child leaves for later."""
    from shmproc.backends.local import run as local_run

    p = One()
    p.start()
    assert p.result == 1
    assert "arena" in local_run._spares         # the next run's, taken after the fork
    spare_fd = local_run._spares["arena"].fd    # (no reference kept here: the child's would
                                                # keep the mapping)

    def child():
        kept = [o for o in lifecycle._leftovers if isinstance(o, dict)]
        if any("arena" in d for d in kept):
            return 2
        try:
            os.fstat(spare_fd)
        except OSError:
            return 0                            # closed in the child at the fork
        return 3

    assert _in_child(child) == 0
