"""The Ray cluster as this process uses it: connection, launcher actors.

    driver                                         cluster node
    ------                                         ------------
    p.start(on=RayBackend()) ── serialize ─────►  launcher actor (ray_launcher.py)
      RayRun: wait / stop / kill / lap ────────►    LocalBackend: fork one child per run
      result  ◄──── Outcome via the object store ─  (lives, timeouts, stop: all local)
    Pool(backend="ray") ── chunks of items ─────►  one launcher per slot, each with
      (ray_pool.py)     ◄──── values ────────────    a local one-worker shmproc.Pool

Ray is the scheduler: a launcher is an actor holding the resources asked
for (one CPU by default).  Launchers are long-lived and shared by every
backend object in this process: a run or a pool slot that ends gives its
launcher back, so the next start costs a fork (~20 ms), not a new actor
(~1 s).  Idle launchers of another resource shape are released before a
new one is asked for, so they never starve a request.

Ray is imported only when a backend is first used; without it, a clear
error says how to install it.
"""
from __future__ import annotations

import atexit
import math
import os
import socket
import threading
import time
import weakref
from typing import Any, Callable

from ...common import lifecycle
from ...common.errors import ClusterUnreachable, RayNotInstalled, ResourcesUnavailable

__all__ = ["release_idle", "shutdown", "import_ray", "normalize_resources"]

INSTALL_HINT = "pip install 'shmproc[ray]'"
#: Default seconds to reach a cluster, and for a launcher to be granted its resources.
CONNECT_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
#: Seconds an idle launcher is kept for reuse before its resources go back to the
#: cluster: long enough for a loop of starts, short enough not to starve other Ray work.
IDLE_LAUNCHER_S = 10.0
#: Grace for live runs to stop at interpreter exit before they are killed.
EXIT_GRACE_S = 2.0
#: Longest wait for ray.shutdown() before the local cluster is killed.
SHUTDOWN_TIMEOUT_S = 20.0
#: Longest wait for a launcher to answer stop/kill/lap.
CALL_TIMEOUT_S = 30.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalled(f"the Ray backend needs Ray, which is not installed here: "
                              f"{INSTALL_HINT}") from exc
    return ray


# ---- resources -------------------------------------------------------------------------------

_RAY_NAMES = {"num_cpus": "CPU", "cpu": "CPU", "num_gpus": "GPU", "gpu": "GPU"}


def normalize_resources(resources: dict[str, float] | None) -> dict[str, float]:
    """{"CPU": 1, "GPU": 0.5, "memory": bytes, "custom": n} in Ray's own names."""
    if resources is None:
        return {"CPU": 1.0}
    if not isinstance(resources, dict):
        raise TypeError(f"resources must be a dict such as {{'CPU': 2, 'GPU': 1}}, "
                        f"not {type(resources).__name__}")
    out: dict[str, float] = {}
    for key, amount in resources.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"resource names are strings such as 'CPU', not {key!r}")
        name = _RAY_NAMES.get(key.lower(), key)
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) \
                or not math.isfinite(amount) or amount < 0:
            raise ValueError(f"resources[{key!r}] must be a non-negative number, not {amount!r}")
        out[name] = float(amount)
    out.setdefault("CPU", 1.0)
    return out


def _actor_options(spec: dict[str, float], runtime_env: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": spec.get("CPU", 0.0), "num_gpus": spec.get("GPU", 0.0),
            "max_concurrency": 64}
    if "memory" in spec:
        opts["memory"] = spec["memory"]
    custom = {k: v for k, v in spec.items() if k not in ("CPU", "GPU", "memory")}
    if custom:
        opts["resources"] = custom
    if runtime_env:
        opts["runtime_env"] = runtime_env
    return opts


def _fits(spec: dict[str, float], offered: dict[str, float]) -> bool:
    return all(offered.get(k, 0.0) + 1e-9 >= v for k, v in spec.items() if v > 0)


def _how_many(spec: dict[str, float], offered: dict[str, float]) -> int:
    """Workers of `spec` that fit in `offered` (a node's total resources)."""
    counts = [int((offered.get(k, 0.0) + 1e-9) // v) for k, v in spec.items() if v > 0]
    return min(counts) if counts else 1 << 30


def _free(available: dict[str, float], spec: dict[str, float]) -> str:
    return _describe({k: available.get(k, 0.0) for k in spec})


def _describe(resources: dict[str, float]) -> str:
    parts: list[str] = []
    for k in sorted(resources):
        v = resources[k]
        if k.startswith("node:") or k.startswith("accelerator_type"):
            continue
        if k in ("memory", "object_store_memory"):
            parts.append(f"{k} {v / 2**30:.1f} GiB")
        else:
            parts.append(f"{k} {v:g}")
    return ", ".join(parts) or "nothing"


# ---- the connection ---------------------------------------------------------------------------

class _Cluster:
    """This process's one connection to Ray, and the launchers it holds."""

    ray: Any                            # the ray module, once connected
    actor_class: Any
    hanging: threading.Thread | None
    reaper: threading.Thread | None
    job: Any
    idle: list[tuple[Any, _Launcher, float]]
    busy: set[_Launcher]
    runs: weakref.WeakSet[Any]          # RayRuns and RayPools (backend.py, pool.py:
    pools: weakref.WeakSet[Any]         # which import this module)

    def __init__(self) -> None:
        self.lock = lifecycle.lock(reentrant=True)    # free in a fork child
        self.ray = None
        self.actor_class = None
        self.started_here = False
        self.hanging = None            # a connection attempt that timed out (its thread)
        self.idle = []                 # [(spec key, launcher, since)]
        self.busy = set()
        self.runs = weakref.WeakSet()  # live RayRuns (stopped, then killed, at exit)
        self.pools = weakref.WeakSet()
        self.exit_hook = False
        self.reaper = None             # thread that releases launchers idle too long
        self.job = None                # the Ray job the launchers belong to

    # -- connecting --
    def connect(self, address: str | None, timeout: float) -> Any:
        with self.lock:
            ray = import_ray()
            if self.ray is not None and ray.is_initialized() and self.job == _job_id(ray):
                _check_same_cluster(ray, address)
                return ray
            if self.ray is not None:
                self._forget()                     # Ray was shut down (or restarted) under us
            if self.hanging is not None and self.hanging.is_alive():
                raise ClusterUnreachable(
                    "an earlier attempt to reach the Ray cluster is still hanging in ray.init(); "
                    "fix the address and start a new interpreter")
            if ray.is_initialized():
                _check_same_cluster(ray, address)
            else:
                if address is None:
                    address = os.environ.get("RAY_ADDRESS") or None
                if address is None:
                    self._start_local(ray, timeout)
                else:
                    self._connect(ray, address, timeout)
            self.ray = ray
            self.job = _job_id(ray)
            self.actor_class = ray.remote(_launcher_class())
            if not self.exit_hook:
                # Registered after ray.init, so it runs before Ray's own shutdown.
                lifecycle.at_interpreter_exit(self.shutdown)
                self.exit_hook = True
            return ray

    def _start_local(self, ray: Any, timeout: float) -> None:
        # In this thread: nothing to wait for on a network, and Ray sets its
        # signal handlers only from the main thread.
        try:
            ray.init(include_dashboard=False, configure_logging=False, log_to_driver=True)
        except Exception as exc:                   # noqa: BLE001
            raise ClusterUnreachable(f"could not start a local Ray cluster: "
                                     f"{type(exc).__name__}: {exc}") from exc
        self.started_here = True

    def _connect(self, ray: Any, address: str, timeout: float) -> None:
        hostport = address.split("://", 1)[-1]
        if address != "auto" and ":" in hostport:
            _probe(hostport, timeout)
        self._in_thread(lambda: ray.init(address=address, configure_logging=False),
                        timeout, f"connect to the Ray cluster at {address!r}")

    def _in_thread(self, fn: Callable[[], object], timeout: float, what: str) -> None:
        """ray.init under our own timeout: a wrong address must not hang for minutes."""
        box: dict[str, BaseException] = {}

        def target() -> None:
            try:
                fn()
            except BaseException as exc:          # noqa: BLE001 - re-raised below
                box["error"] = exc
        thread = threading.Thread(target=target, name="shmproc-ray-init", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            self.hanging = thread
            raise ClusterUnreachable(f"could not {what} within {timeout:g} s (ray.init did not "
                                     f"return); check the address and that the cluster runs, "
                                     f"or raise connect_timeout")
        err = box.get("error")
        if err is not None:
            raise ClusterUnreachable(f"could not {what}: {type(err).__name__}: {err}") from err

    # -- launchers --
    def check_feasible(self, spec: dict[str, float], count: int) -> None:
        """Fail at once when the cluster could never hold `count` workers of `spec`."""
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        offered = "; ".join(f"{n.get('NodeManagerAddress', '?')}: {_describe(n.get('Resources', {}))}"
                            for n in nodes) or "no live nodes"
        if not any(_fits(spec, n.get("Resources", {})) for n in nodes):
            raise ResourcesUnavailable(f"no node of the Ray cluster has {_describe(spec)} for "
                                       f"one worker (nodes offer {offered}); ask for less, or "
                                       f"add a node that has it")
        room = sum(_how_many(spec, n.get("Resources", {})) for n in nodes)
        if room < count:
            raise ResourcesUnavailable(f"the Ray cluster can hold at most {room} worker(s) of "
                                       f"{_describe(spec)} at once (nodes offer {offered}); "
                                       f"{count} were asked for: ask for fewer workers or less "
                                       f"per worker")

    def acquire(self, spec: dict[str, float], runtime_env: Any, count: int,
                timeout: float) -> list[_Launcher]:
        """`count` ready launchers for `spec`: idle ones first, then new actors."""
        key = (tuple(sorted(spec.items())), repr(runtime_env))
        got: list[_Launcher] = []
        with self.lock:
            self._reap_finished_runs()
            self._expire()
            keep = []
            for item in self.idle:
                if item[0] == key and len(got) < count:
                    got.append(item[1])
                else:
                    keep.append(item)
            if len(got) < count:
                # Idle launchers of another shape may hold what the new ones need.
                for _, launcher, _ in keep:
                    self._kill(launcher)
                keep = []
            self.idle = keep
            self.busy.update(got)
        if len(got) < count:
            try:
                self.check_feasible(spec, count)
                got.extend(self._create(spec, runtime_env, count - len(got), timeout))
            except BaseException:
                self.release(got)
                raise
        for launcher in got:
            launcher.key = key
        return got

    def _create(self, spec: dict[str, float], runtime_env: Any, count: int,
                timeout: float) -> list[_Launcher]:
        ray = self.ray
        opts = _actor_options(spec, runtime_env)
        actors = [self.actor_class.options(**opts).remote() for _ in range(count)]
        refs = [a.ready.remote() for a in actors]
        try:
            ready, _ = ray.wait(refs, num_returns=count, timeout=timeout)
            if len(ready) < count:
                raise ResourcesUnavailable(
                    f"the Ray cluster did not grant {count - len(ready)} of {count} worker(s) "
                    f"{_describe(spec)} within {timeout:g} s: its resources are in use "
                    f"(free now: {_free(ray.available_resources(), spec)}; this process's "
                    f"shmproc workers hold {len(self.busy)}); wait for other work, ask for "
                    f"fewer workers, or raise start_timeout")
            infos = ray.get(refs)
        except BaseException:
            for a in actors:
                ray.kill(a)
            raise
        out: list[_Launcher] = []
        with self.lock:
            for actor, (pid, node) in zip(actors, infos):
                launcher = _Launcher(actor, pid, node)
                self.busy.add(launcher)
                out.append(launcher)
        return out

    def _reap_finished_runs(self) -> None:
        """Runs that ended but that nobody looked at still hold their launcher:
        take their outcomes now, which hands the launchers back."""
        for run in list(self.runs):
            run.ended()

    def release(self, launchers: list[_Launcher], broken: bool = False) -> None:
        with self.lock:
            for launcher in launchers:
                if launcher not in self.busy:
                    continue                       # handed back already (or forgotten)
                self.busy.discard(launcher)
                if broken or not self.usable():
                    self._kill(launcher)
                else:
                    self.idle.append((launcher.key, launcher, time.monotonic()))
            self._expire()
            if self.idle and (self.reaper is None or not self.reaper.is_alive()):
                self.reaper = threading.Thread(target=self._reap_idle, daemon=True,
                                               name="shmproc-ray-idle")
                self.reaper.start()

    def _reap_idle(self) -> None:
        """Give idle launchers' resources back to the cluster after IDLE_LAUNCHER_S."""
        while True:
            time.sleep(IDLE_LAUNCHER_S / 4)
            with self.lock:
                if self.ray is None:
                    return
                self._expire()
                if not self.idle:
                    self.reaper = None
                    return

    def _expire(self) -> None:
        now = time.monotonic()
        keep = []
        for item in self.idle:
            if now - item[2] > IDLE_LAUNCHER_S:
                self._kill(item[1])
            else:
                keep.append(item)
        self.idle = keep

    def usable(self) -> bool:
        """Connected, and to the Ray session the launchers belong to?  (Calls on
        stale handles after the user's ray.shutdown() would start a new cluster.)"""
        return (self.ray is not None and self.ray.is_initialized()
                and self.job == _job_id(self.ray))

    def _forget(self) -> None:
        """Drop every handle of a Ray session that is gone, without calling Ray."""
        self.idle, self.busy = [], set()
        for pool in list(self.pools):
            pool._lost_cluster()
        self.pools = weakref.WeakSet()
        self.runs = weakref.WeakSet()
        self.ray = None
        self.started_here = False

    def _kill(self, launcher: _Launcher) -> None:
        if not self.usable():
            return
        try:
            self.ray.kill(launcher.actor)
        except Exception:                          # noqa: BLE001 - already gone
            pass

    def shutdown(self) -> None:
        """At exit (or on demand): end pools and runs, free launchers, and stop
        the local cluster if this process started it."""
        with self.lock:
            if self.ray is None:
                return
            if not self.usable():
                self._forget()
                return
            pools = list(self.pools)
        for pool in pools:                         # outside our lock: a pool takes its own first
            pool.terminate()
        with self.lock:
            runs = [r for r in list(self.runs) if not r.ended()]
        for run in runs:
            run.stop()
        deadline = time.monotonic() + EXIT_GRACE_S
        for run in runs:
            try:
                if not run.wait(max(0.0, deadline - time.monotonic())):
                    run.kill()
            except Exception:                      # noqa: BLE001 - the cluster may be gone
                pass
        with self.lock:
            for _, launcher, _ in self.idle:
                self._kill(launcher)
            for launcher in list(self.busy):
                self._kill(launcher)
            self.idle, self.busy = [], set()
            ray, self.ray = self.ray, None
            if self.started_here:
                self.started_here = False
                stop_ray(ray)


def stop_ray(ray: Any, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
    """ray.shutdown() within `timeout` seconds.

    It can block for ever in a gRPC call to a cluster that stopped
    answering (seen at the end of long test sessions); then the local
    cluster's processes are killed, which ends that call, and Ray's own
    exit hook (which would block on the same lock) is removed.
    """
    thread = threading.Thread(target=ray.shutdown, name="shmproc-ray-shutdown", daemon=True)
    thread.start()
    thread.join(timeout)
    if not thread.is_alive():
        return True
    try:
        from ray._private import worker as ray_worker
        node = getattr(ray_worker, "_global_node", None)
        if node is not None:
            node.kill_all_processes(check_alive=False, allow_graceful=False)
        atexit.unregister(ray_worker.shutdown)
    except Exception:                              # noqa: BLE001 - best effort, private API
        pass
    thread.join(5.0)
    return not thread.is_alive()


_cluster = _Cluster()


def _job_id(ray: Any) -> Any:
    try:
        return ray.get_runtime_context().get_job_id()
    except Exception:                              # noqa: BLE001
        return None


def _check_same_cluster(ray: Any, address: str | None) -> None:
    """One process talks to one cluster: a different explicit address is an error."""
    if address is None or address == "auto" or "://" in address:
        return
    try:
        current = ray.get_runtime_context().gcs_address
    except Exception:                              # noqa: BLE001 - cannot tell; let it be
        return
    if current and address != current and address.rsplit(":", 1)[-1] != current.rsplit(":", 1)[-1]:
        raise ClusterUnreachable(f"this process is already connected to the Ray cluster at "
                                 f"{current}; it cannot also use {address}. One process uses "
                                 f"one cluster (call shmproc.ray_backend.shutdown() and "
                                 f"ray.shutdown() first to switch)")


def _probe(hostport: str, timeout: float) -> None:
    host, _, port = hostport.rpartition(":")
    port = port.split("/", 1)[0]
    if not port.isdigit():
        raise ClusterUnreachable(f"bad Ray address {hostport!r}: expected host:port, 'auto', "
                                 f"or ray://host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 10.0)):
            pass
    except socket.gaierror as exc:
        raise ClusterUnreachable(f"cannot resolve the Ray head {host!r}: {exc}") from None
    except ConnectionRefusedError:
        raise ClusterUnreachable(f"nothing listens at {host}:{port} (connection refused): is the "
                                 f"Ray head running there (`ray start --head`)?") from None
    except (socket.timeout, OSError) as exc:
        raise ClusterUnreachable(f"the Ray head at {host}:{port} does not answer "
                                 f"({type(exc).__name__}: {exc})") from None


def _launcher_class() -> type:
    from .launcher import Launcher
    return Launcher


class _Launcher:
    """A launcher actor as the driver holds it."""

    __slots__ = ("actor", "pid", "node", "key", "known", "__weakref__")

    key: Any
    known: set[Any]

    def __init__(self, actor: Any, pid: int, node: str) -> None:
        self.actor, self.pid, self.node, self.key = actor, pid, node, None
        self.known = set()             # pool function keys it was sent (it may forget some)


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


def release_idle() -> None:
    """Give the resources of every idle launcher back to the cluster now
    (instead of after IDLE_LAUNCHER_S), e.g. before running plain Ray work."""
    with _cluster.lock:
        for _, launcher, _ in _cluster.idle:
            _cluster._kill(launcher)
        _cluster.idle = []


def shutdown() -> None:
    """End this process's Ray pools and runs, free its launchers, and stop the
    local cluster if shmproc started it.  Runs at exit on its own."""
    _cluster.shutdown()
