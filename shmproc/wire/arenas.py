"""Arenas of finished runs, kept for the next run with their pages.

A fresh shared page costs ~3.5 µs to allocate and fault in here; a 256 MB
result in a fresh arena spends most of its time on that, not on copying.
So when the parent's mapping of a finished run's arena goes away (its
result decoded, or the last numpy view of it dropped), the descriptor
comes back here instead of being closed, and the next Process started by
this process reuses the file, whose pages already exist.  The old worker
has stopped writing by then (it reported, crashed, or was killed).

Bounded: at most MAX_KEPT arenas and MAX_KEPT_BYTES of their pages.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from .. import _native as native
from ..common import lifecycle

#: Address space of one arena.  Sparse: only what is written costs memory;
#: a result larger than this is an error.
ARENA_BYTES = 1 << 34
MAX_KEPT = 4
MAX_KEPT_BYTES = 1 << 30


class ArenaPool:
    def __init__(self) -> None:
        # Reentrant: an unmap callback may run in a GC pass inside a locked
        # section of the same thread (the fork hooks hold it across fork).
        self.lock = threading.RLock()
        self.kept: list[tuple[int, int]] = []   # (fd, bytes of pages it holds)
        self.exposed: dict[int, dict[str, Any]] = {}    # id(box) -> box, of exposed arenas

    def take(self) -> native.Arena:
        """An arena for a new run: a kept one if any, else a new one."""
        with self.lock:
            fd = self.kept.pop()[0] if self.kept else None
        # The descriptor belongs to the mapping: it comes back here when the
        # mapping goes.  Never close such an Arena's fd yourself.
        box: dict[str, Any] = {"fd": -1, "pinned": False, "pid": os.getpid()}
        on_unmap = lambda: self._returned(box)         # noqa: E731
        arena: native.Arena
        if fd is None:
            arena = native.Arena.create(ARENA_BYTES, on_unmap=on_unmap)
        else:
            arena = native.Arena.attach(fd, on_unmap=on_unmap)
        box["fd"] = arena.fd
        arena.box = box                 # type: ignore[assignment]  # Arena.box: None until set
        return arena

    def expose(self, arena: native.Arena) -> None:
        """Views of `arena` were handed to the user: if this process forks
        while they live, a child holds them too, so the pages must never
        be reused for another run (see _pin_for_fork)."""
        box = arena.box
        if box is None:
            return                      # not one of ours (a worker's attached copy)
        with self.lock:
            self.exposed[id(box)] = box

    def _returned(self, box: dict[str, Any]) -> None:
        fd = box["fd"]
        with self.lock:
            self.exposed.pop(id(box), None)
        if box["pinned"] or box["pid"] != os.getpid():
            # A fork child may still read these pages; or we are that child,
            # and the arena is the parent's (maybe its live run's).
            os.close(fd)
            return
        try:
            held = os.fstat(fd).st_blocks * 512
        except OSError:
            return
        with self.lock:
            if len(self.kept) < MAX_KEPT and held + sum(h for _, h in self.kept) <= MAX_KEPT_BYTES:
                self.kept.append((fd, held))
                return
        os.close(fd)

    def trim(self) -> None:
        """Close every kept arena (tests, and memory-conscious callers)."""
        with self.lock:
            kept, self.kept = self.kept, []
        for fd, _ in kept:
            os.close(fd)

    def _pin_for_fork(self) -> None:
        # A fork child inherits the mappings of the views the user holds;
        # once the parent drops its views the arena would be reused under
        # the child.  So such arenas are never reused, only freed.  The lock
        # stays held until the fork is done, so no view is exposed between
        # this pass and the fork.
        self.lock.acquire()
        for box in self.exposed.values():
            box["pinned"] = True

    def _forked_parent(self) -> None:
        self.lock.release()

    def _after_fork_in_child(self) -> None:
        self.lock = threading.RLock()
        self.exposed = {}
        kept, self.kept = self.kept, []
        for fd, _ in kept:
            os.close(fd)


pool = ArenaPool()
lifecycle.at_fork(before=pool._pin_for_fork, after_in_parent=pool._forked_parent,
                  after_in_child=pool._after_fork_in_child)
