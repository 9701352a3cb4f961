"""A pool's results in an asyncio event loop: aimap / aimap_unordered.

No thread per call and no blocking of the loop.  The pool's one
background driver (the local pool's driver thread, the Ray pool's
dispatcher) feeds the job and, when results come in, wakes the loop with
call_soon_threadsafe; the loop's coroutine then takes them under the
engine's lock, which it only ever tries to take (it never waits on it:
the driver may hold it for a few milliseconds while it waits for results).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .task import SLICE_S

if TYPE_CHECKING:
    import threading
    from collections.abc import AsyncGenerator

    from .job import Job

__all__ = ["results"]

TERMINATED = "terminated"       # engine.TERMINATED (engine.py imports this module)


async def _locked(lock: threading.RLock) -> None:
    """Take the engine's lock without blocking the event loop."""
    while not lock.acquire(blocking=False):
        await asyncio.sleep(0.0002)


async def results(engine: Any, job: Job, ordered: bool) -> AsyncGenerator[Any, None]:
    """The job's results as an async generator, in order or as they finish;
    a failed item raises when its turn comes, as in imap."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def notify() -> None:               # the driver's thread: results came in
        if not wake.is_set():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:        # the loop is closed: nobody is waiting
                pass
    nxt = [0]
    engine._watch_job(job, notify)
    try:
        while True:
            wake.clear()                # before looking: a result after the look wakes us
            await _locked(engine._lock)
            try:
                ready, error, drained = engine._take_ready(job, ordered, nxt)
            finally:
                engine._lock.release()
            for chunk in ready:
                for value in chunk:
                    yield value
            if engine._over(job, error, drained):
                return
            if ready:
                continue
            engine._check_broken()
            if engine._status == TERMINATED:
                raise RuntimeError("the pool was terminated while this map was running")
            try:
                await asyncio.wait_for(wake.wait(), SLICE_S * 5)
            except asyncio.TimeoutError:
                pass                    # look again: a pool broken meanwhile is noticed
    finally:
        engine._unwatch_job(job)
        engine._end_job(job)
