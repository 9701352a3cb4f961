"""RayBackend: the same Processes and Pools on a Ray cluster.

RayRun is one Process run in a launcher actor (launcher.py); the pools'
engine is RayPool (pool.py); the connection and the launchers, shared by
every backend object in this process, are cluster.py's.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

from ...common.errors import ClusterUnreachable, ProcessCrashedError, ResultError
from ...wire import pickling as wire
from ..base import Backend, Outcome, Run
from .cluster import (CALL_TIMEOUT_S, CONNECT_TIMEOUT_S, START_TIMEOUT_S, _cluster, _describe,
                      _first_line, normalize_resources)
from .pool import RayPool

__all__ = ["RayBackend", "RayRun"]


# ---- Process runs -----------------------------------------------------------------------------

class RayRun(Run):
    """One Process run in a launcher on the cluster."""

    _outcome: Outcome | None        # set once it ended

    def __init__(self, backend: RayBackend, proc: Any) -> None:
        import cloudpickle
        try:
            blob = cloudpickle.dumps(proc, protocol=5)
        except Exception as exc:                   # noqa: BLE001
            raise wire.unserializable(proc, wire.SerializationError(str(exc))) from exc
        ray = backend.connect()
        self._ray = ray
        self._name = type(proc).__name__
        self._launcher = _cluster.acquire(backend.spec, backend.runtime_env, 1,
                                          backend.start_timeout)[0]
        actor = self._launcher.actor
        try:
            reply = ray.get(actor.start.remote(blob), timeout=backend.start_timeout)
        except ray.exceptions.GetTimeoutError:
            _cluster.release([self._launcher], broken=True)
            raise ClusterUnreachable(
                f"the launcher on {self._launcher.node} did not start {self._name} within "
                f"{backend.start_timeout:g} s") from None
        except BaseException:
            _cluster.release([self._launcher], broken=True)
            raise
        if reply[0] == "error":
            _cluster.release([self._launcher])
            raise wire.SerializationError(
                f"cannot start {self._name} on the Ray cluster: node {self._launcher.node} could "
                f"not rebuild it ({reply[1]}). Make its module importable there "
                f"(RayBackend(runtime_env={{'working_dir': ...}} or {{'py_modules': [...]}})), "
                f"or define the class in the script you run")
        self._id, self.pid = reply
        self.node = self._launcher.node
        self._ref = actor.outcome.remote(self._id)
        self._outcome = None
        self._taking = threading.Lock()            # a waiter and a reaper may both see the end
        self._stop_sent = self._kill_sent = False
        self._last_lap = 0
        _cluster.runs.add(self)

    def _take(self) -> None:
        """The run ended: fetch its outcome (once), hand the launcher back."""
        with self._taking:
            if self._outcome is None:
                self._outcome, broken = self._fetch()
                _cluster.runs.discard(self)
                _cluster.release([self._launcher], broken=broken)

    def _fetch(self) -> Any:
        ray = self._ray
        try:
            out = ray.get(self._ref)
        except ray.exceptions.RayActorError as exc:    # the launcher or its node died
            crashed = ProcessCrashedError(
                f"the Ray actor hosting {self._name} (worker pid {self.pid} on "
                f"{self.node}) died: {type(exc).__name__}: {_first_line(exc)}",
                last_lap=self._last_lap, pid=self.pid, process_name=self._name)
            return Outcome("crashed", crashed, None, None, self._last_lap, None), True
        except Exception as exc:                   # noqa: BLE001 - e.g. a class missing here
            err = ResultError(f"the worker's result could not be deserialized in the parent: "
                              f"{type(exc).__name__}: {_first_line(exc)}",
                              current_lap=self._last_lap, original_error=None,
                              process_name=self._name)
            return Outcome("failed", err, None, err, self._last_lap, 0), False
        if self._kill_sent:                        # killed after it ended, before anyone looked
            return Outcome("killed", None, None, None, out.lap, -9), False
        if out.status in ("ok", "failed"):
            for err in (out.error, out.value):
                if hasattr(err, "with_remote_traceback"):
                    err.with_remote_traceback()
        return out, False

    def ended(self) -> bool:
        if self._outcome is not None:
            return True
        return self.wait(0)

    def wait(self, timeout: float | None) -> bool:
        if self._outcome is not None:
            return True
        try:
            ready, _ = self._ray.wait([self._ref], timeout=timeout)
        except Exception:                          # noqa: BLE001 - Ray shut down: the run is gone
            ready = [self._ref]
        if not ready:
            return False
        self._take()
        return True

    def stop(self) -> None:
        if self._outcome is None:
            self._stop_sent = True
            self._launcher.actor.stop.remote(self._id)

    def stop_requested(self) -> bool:
        return self._stop_sent

    def kill(self) -> None:
        if self._outcome is not None:
            return
        self._kill_sent = True
        try:
            self._ray.get(self._launcher.actor.kill.remote(self._id), timeout=CALL_TIMEOUT_S)
        except Exception:                          # noqa: BLE001 - the actor is gone (or hangs)
            _cluster.release([self._launcher], broken=True)
        self.wait(CALL_TIMEOUT_S)
        if self._outcome is None:                  # its launcher does not answer: give up on it
            with self._taking:
                if self._outcome is None:
                    self._outcome = Outcome("killed", None, None, None, self._last_lap, -9)
                    _cluster.runs.discard(self)

    def lap(self) -> int:
        if self._outcome is not None:
            return self._outcome.lap
        try:
            lap = self._ray.get(self._launcher.actor.lap.remote(self._id),
                                timeout=CALL_TIMEOUT_S)
        except Exception:                          # noqa: BLE001 - the actor is gone or slow
            return self._last_lap if not self.ended() else self._outcome.lap
        if lap is None:                            # it ended meanwhile
            self.wait(None)
            return self._outcome.lap
        self._last_lap = lap
        return lap

    @property
    def exitcode(self) -> int | None:
        return None if self._outcome is None else self._outcome.exitcode

    def outcome(self) -> Outcome:
        return self._outcome


class RayBackend(Backend):
    """Run Processes and Pools on a Ray cluster.

    address: None means $RAY_ADDRESS if set, else a local single-node
    cluster started on first use (and shut down at exit); "auto", a
    "host:port" or "ray://host:port" connect to a running cluster, within
    connect_timeout seconds.  resources: what each worker (one Process run,
    or one pool slot) holds, in Ray's names, e.g. {"CPU": 2, "GPU": 1};
    default one CPU.  start_timeout bounds the wait for the cluster to grant
    them.  runtime_env is passed to the launcher actors (ship your code
    with {"working_dir": "."} on a remote cluster).
    """

    name = "ray"

    def __init__(self, address: str | None = None, resources: dict[str, float] | None = None, *,
                 connect_timeout: float = CONNECT_TIMEOUT_S,
                 start_timeout: float = START_TIMEOUT_S,
                 runtime_env: dict[str, Any] | None = None) -> None:
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise TypeError(f"address must be a string such as 'auto', 'host:6379' or "
                            f"'ray://host:10001', or None; not {address!r}")
        for name, value in (("connect_timeout", connect_timeout),
                            ("start_timeout", start_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise TypeError(f"runtime_env must be a dict, not {type(runtime_env).__name__}")
        self.address = address
        self.spec = normalize_resources(resources)
        self.connect_timeout = float(connect_timeout)
        self.start_timeout = float(start_timeout)
        self.runtime_env = runtime_env

    def connect(self) -> Any:
        """Connect to (or start) the cluster now; later calls reuse the connection."""
        return _cluster.connect(self.address, self.connect_timeout)

    def launch(self, proc: Any) -> RayRun:
        return RayRun(self, proc)

    def pool(self, workers: int | None, start_method: str | None,
             max_tasks_per_worker: int | None, retries: int = 0, *,
             initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
             task_timeout: float | None = None) -> RayPool:
        return RayPool(self, workers, start_method, max_tasks_per_worker, retries,
                       initializer, initargs, task_timeout)

    def __repr__(self) -> str:
        return (f"<shmproc RayBackend address={self.address!r} "
                f"resources={_describe(self.spec)}>")
