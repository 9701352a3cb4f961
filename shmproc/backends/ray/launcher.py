"""The launcher: a long-lived Ray actor that runs the local runtime on its node.

    driver (RayRun / RayPool)             launcher actor (this module)        children
    ------                                -----------------------------        --------
    start(blob) ─── actor call ─────────► rebuild the Process, LocalBackend ─► fork: runner.py
    outcome(id) ─── pending call ───────► waits for the run; returns its        (lives, timeouts,
                    (object store) ◄────  Outcome; numpy goes zero-copy          stop: all local)
    stop / kill / lap ──────────────────► the run's control block
    pool_run(chunk) ────────────────────► a local pool engine (1 worker) ──► warm worker

Forked children never call Ray: they run the local runtime only and exit
with os._exit; they die with the actor (PR_SET_PDEATHSIG or the pidfd
watch).  This module is imported on cluster nodes and does not import Ray
itself (Ray wraps the class when the driver connects); it is an async
actor so that stop/kill/lap are answered while an outcome() waits.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import os
import socket
from typing import TYPE_CHECKING, Any

from ..base import Outcome
from ..local.run import LOCAL
from ...common.errors import RemoteTraceback
from ...jobs.task import TaskOptions

if TYPE_CHECKING:
    from ..local.pool import LocalPool
    from ..local.run import LocalRun

#: Functions a launcher keeps unpickled for its pool (least recently used go).
MAX_FUNCTIONS = 64


def node_name() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "?"


def _strip_local_task(exc: BaseException) -> tuple[BaseException, str | None]:
    """An error from the launcher's local pool, ready to travel: the local
    task note (its index is within one chunk) goes; the driver adds the
    global one.  Returns (exception, worker traceback text)."""
    tb = str(exc.__cause__) if isinstance(exc.__cause__, RemoteTraceback) else None
    where = getattr(exc, "shmproc_task", None)
    if where is not None:
        del exc.shmproc_task                    # type: ignore[attr-defined]  # noted above
        notes = getattr(exc, "__notes__", None)
        if notes and where in notes:
            notes.remove(where)
    exc.__cause__ = None
    try:
        import cloudpickle
        cloudpickle.dumps(exc)
    except Exception:                             # noqa: BLE001 - it must reach the driver
        exc = RuntimeError(f"{type(exc).__qualname__}: {exc} (the exception itself could not "
                           f"be pickled)")
    return exc, tb


class Launcher:
    """One pool slot, or the host of one Process run at a time."""

    def __init__(self) -> None:
        self._runs: dict[int, LocalRun] = {}
        self._ids = itertools.count(1)
        self._pool: LocalPool | None = None
        self._functions: collections.OrderedDict[int, Any] = collections.OrderedDict()

    async def ready(self) -> tuple[int, str]:
        return os.getpid(), node_name()

    # -- Process runs ---------------------------------------------------------------------------
    async def start(self, blob: bytes) -> tuple[Any, Any]:
        """Rebuild the Process and start it locally; (run id, pid) or ("error", text)."""
        import cloudpickle
        try:
            proc = cloudpickle.loads(blob)
        except Exception as exc:                  # noqa: BLE001 - reported to the driver
            return ("error", f"{type(exc).__name__}: {exc}")
        if proc.config.start_method is None:
            proc.config.start_method = "fork"     # the launcher's own default, whatever the driver's
        run = LOCAL.launch(proc, messages=False)     # tell / listen: not through Ray
        run_id = next(self._ids)
        self._runs[run_id] = run
        return run_id, run.pid

    async def outcome(self, run_id: int) -> Outcome:
        run = self._runs[run_id]
        await asyncio.to_thread(run.wait, None)
        del self._runs[run_id]
        return run.outcome()

    async def stop(self, run_id: int) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            run.stop()

    async def kill(self, run_id: int) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            await asyncio.to_thread(run.kill)

    async def lap(self, run_id: int) -> int | None:
        run = self._runs.get(run_id)
        return None if run is None else run.lap()

    # -- pool slot ------------------------------------------------------------------------------
    async def pool_open(self, start_method: str | None, max_tasks: int | None, retries: int = 0,
                        init: bytes | None = None) -> list[int]:
        """A one-worker local pool; `init`: the driver's pickled (initializer, initargs)."""
        if self._pool is not None:
            self._pool.terminate()
        initializer, initargs = None, ()
        if init is not None:
            import cloudpickle
            initializer, initargs = cloudpickle.loads(init)
        self._pool = LOCAL.pool(1, start_method or "fork", max_tasks, retries=retries,
                                initializer=initializer, initargs=initargs)
        return self._pool.pids

    async def pool_pids(self) -> list[int]:
        return [] if self._pool is None else self._pool.pids

    async def pool_run(self, units: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Run a batch of pool work units (kind, function key, its pickle or None,
        items, star, retries: None for the pool's, task timeout in ns: 0 for none); one reply each: ("ok", values, extra), ("error", k, values,
        exc, tb, extra), or ("missing",) when the function is not known here."""
        work: list[tuple[Any, ...]] = []
        for kind, fn_key, fn_ref, items, star, retries, timeout_ns in units:
            fn = None
            if kind != "process":
                fn = await self._function(fn_key, fn_ref)
            work.append((kind, fn, items, star, retries, timeout_ns))
        return await asyncio.to_thread(self._run_batch, work)

    def _run_batch(self, work: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [("missing",) if kind != "process" and fn is None
                else self._run_unit(kind, fn, items, star, retries, timeout_ns)
                for kind, fn, items, star, retries, timeout_ns in work]

    async def _function(self, key: int, ref: Any) -> Any:
        # The pickle comes (as a nested ObjectRef) only with a function's first
        # unit here: passing a reference on every call costs Ray a borrow each.
        fn = self._functions.get(key)
        if fn is None:
            if ref is None:
                return None
            import cloudpickle
            fn = cloudpickle.loads(await ref[0])
            self._functions[key] = fn
            while len(self._functions) > MAX_FUNCTIONS:
                self._functions.popitem(last=False)
        else:
            self._functions.move_to_end(key)
        return fn

    def _run_unit(self, kind: str, fn: Any, items: Any, star: bool, retries: int | None,
                  timeout_ns: int) -> tuple[Any, ...]:
        pool: Any = self._pool
        try:
            if kind == "process":                 # submit(a built Process): timers and error back
                proc = items[0]
                task = pool._submit(proc, (), {}, TaskOptions(retries=retries))
                try:
                    return ("ok", [task.result()], (proc.timers, proc.error))
                except BaseException as exc:      # noqa: BLE001
                    return ("error", 0, [], *_strip_local_task(exc), (proc.timers, proc.error))
            if kind == "call":
                args, kwargs = items[0]
                task = pool._submit(fn, args, kwargs or {},
                                    TaskOptions(retries=retries, timeout_ns=timeout_ns))
                return ("ok", [task.result()], None)
            return self._run_chunk(pool, fn, items, star, retries, timeout_ns)
        except BaseException as exc:              # noqa: BLE001 - the driver raises it
            return ("error", 0, [], *_strip_local_task(exc), None)

    def _run_chunk(self, pool: LocalPool, fn: Any, items: Any, star: bool, retries: int | None,
                   timeout_ns: int) -> tuple[Any, ...]:
        """Every item runs once, as on the local pool: a failed one is noted
        and the rest go on.  ("ok", values, None), or ("errors", values
        with None where an item failed, [(position, exc, tb)], None)."""
        values, failed = pool._outcomes(fn, items, star, retries,
                                        timeout_ns / 1e9 if timeout_ns else None)
        if failed:
            errors = [(k, *_strip_local_task(failed[k])) for k in sorted(failed)]
            return ("errors", values, errors, None)
        return ("ok", values, None)

    async def pool_close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(_close_pool, pool)

    async def pool_terminate(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()


def _close_pool(pool: LocalPool) -> None:
    pool.close()
    pool.join()
