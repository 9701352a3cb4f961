"""Where Processes and Pools run: the backend interface.

A backend knows how to start one run of a Process and how to build a
pool; everything else (the lifecycle, lives, timeouts, errors) is the
local runtime's, wherever it runs.  Two implementations exist:

    LocalBackend   this machine: fork/forkserver/spawn a worker (local/)
    RayBackend     a Ray cluster: launcher actors that run the local runtime
                   on their node and fork one child per run (ray/)

`Process.start(on=...)` and `Pool(backend=...)` accept a backend object,
or the names "local" and "ray" (a RayBackend with default options).
"""
from __future__ import annotations

import abc
import collections
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from ..channels.mailbox import Mailbox
    from ..jobs.engine import JobEngine

__all__ = ["Backend", "Run", "Outcome"]

Outcome = collections.namedtuple("Outcome", "status value timers error lap exitcode")
Outcome.__doc__ = """How a run ended.

status: "ok" (value is __result__'s return), "failed" (value is the error
to raise, or what __error__ returned instead), "killed" (kill() ended it),
"crashed" (the worker died; value is the ProcessCrashedError).  timers and
error are the worker's ProcessTimers and its error; lap the laps completed.
"""


class Run(abc.ABC):
    """One run of one Process, as its parent sees it.  `pid` is the worker's."""

    pid: int | None = None
    mailbox: Mailbox | None = None  # where tell / listen work (None: they don't)

    @abc.abstractmethod
    def ended(self) -> bool:
        """Non-blocking: has the run ended (reported, died or was killed)?"""

    @abc.abstractmethod
    def wait(self, timeout: float | None) -> bool:
        """Block until the run ended; False if `timeout` seconds pass first."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Ask the worker to finish its lap, then onfinish and result."""

    @abc.abstractmethod
    def stop_requested(self) -> bool:
        """Has stop() been asked for (by the parent or a hook)?"""

    @abc.abstractmethod
    def kill(self) -> None:
        """End the worker now: no onfinish, no result.  Returns once it has ended."""

    @abc.abstractmethod
    def lap(self) -> int:
        """Laps completed so far (live while running, final after)."""

    @property
    @abc.abstractmethod
    def exitcode(self) -> int | None:
        """As multiprocessing's: None while running, negative signal number if killed."""

    @abc.abstractmethod
    def outcome(self) -> Outcome:
        """How the run ended; only called once ended() is True."""

    def spans(self) -> tuple[list[tuple[int, int, int, int, int, int]], int, int, int,
                             list[tuple[int, int, int]]] | None:
        """What the worker recorded, for Process.timeline(): (spans, lost,
        origin_ns, end_ns, tallies) -- spans as (start_ns, end_ns, section,
        flags, pid, lap) on the now_ns clock (end_ns 0: running), lost the
        number overwritten, origin_ns and end_ns when the run started and
        ended (or now), tallies (count, total_ns, failed) per section id over
        the whole run -- or None where this backend records nothing."""
        return None

    async def until_ended(self) -> None:
        """Await the end of the run in an asyncio loop, never blocking it.
        This default looks every few milliseconds; a backend with a file
        descriptor that becomes readable at the end wakes the loop with it."""
        import asyncio
        pause = 0.0005
        while not self.ended():
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.02)


class Backend(abc.ABC):
    """Starts Process runs and builds pools somewhere."""

    name = "?"

    @abc.abstractmethod
    def launch(self, proc: Any) -> Run:
        """Start one run of `proc` (config already validated); return its Run."""

    @abc.abstractmethod
    def pool(self, workers: int | None, start_method: str | None,
             max_tasks_per_worker: int | None, retries: int = 0, *,
             initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
             task_timeout: float | None = None) -> JobEngine:
        """The engine of a shmproc.Pool whose workers run on this backend: a
        jobs.engine.JobEngine (arguments as Pool's, checked by the engine;
        `initializer(*initargs)` runs once in every worker; a plain call
        running past task_timeout seconds fails with TimeoutError)."""

    def __repr__(self) -> str:
        return f"<shmproc {type(self).__name__}>"
