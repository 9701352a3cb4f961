"""What a local pool holds that must be let go of however it ends: its
workers, their task rings, the result ring, control blocks and trace area
(Resources, also run from a weakref finalizer, so it never refers to the
Pool itself)."""
from __future__ import annotations

import os

from ...wire import blobs

__all__ = ["Resources", "close_task_queue", "kill_worker"]


class Resources:
    """What must be released when a pool ends, however it ends (also from a
    weakref finalizer, so it must not refer to the Pool itself)."""

    def __init__(self):
        self.slots = []
        self.ctl = None
        self.trace = None
        self.results = None
        self.lone = None              # the result ring's C wait (runtime/call_loop.py)
        self.token = blobs.FlushToken()
        self.token.wait = False       # a task's arguments matter only while its worker lives
        self.owner = os.getpid()

    def kill(self):
        if os.getpid() != self.owner:
            return                    # a fork child's copy: the workers are the parent's
        slots, self.slots = self.slots, []
        for slot in slots:
            kill_worker(slot.proc)
        for slot in slots:
            slot.proc.join()
            close_task_queue(slot.task_q)
        self.release()

    def release(self):
        self.lone = None              # before the ring it points into goes
        if self.results is not None:
            self.results.close()
            self.results = None
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.trace is not None:
            self.trace.close()        # the pool unmaps it once it has copied the spans
            self.trace = None
        blobs.pool.drop(self.token)


def close_task_queue(q):
    """Close a worker's task queue once the worker is gone, with the large
    records it never read (the Queue keeps their segments for its reader)."""
    q.close()
    blobs.pool.drop(q._token)


def kill_worker(proc):
    if proc.exitcode is None:
        try:
            proc.kill()
        except (ProcessLookupError, AttributeError):
            pass
