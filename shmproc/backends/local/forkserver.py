"""The fork server, primed: workers started by "forkserver" find the
runtime already imported."""
from __future__ import annotations

__all__ = ["PRELOAD", "preload_into_forkserver"]

#: What every worker imports anyway (the Process base class for users' subclasses).
PRELOAD = ["shmproc.runtime.runner", "shmproc.runtime.pool_worker", "shmproc.process",
           "cloudpickle"]


def preload_into_forkserver():
    """Have the fork server import the runner once, instead of every worker
    importing it (~40 ms each).  Only possible before the server starts;
    modules the user asked to preload are kept."""
    from multiprocessing import forkserver
    server = getattr(forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is not None:
        return
    current = list(getattr(server, "_preload_modules", ["__main__"]))
    missing = [m for m in PRELOAD if m not in current]
    if missing:
        server.set_forkserver_preload(current + missing)
