"""Backends by name: what `Process.start(on=...)` and `Pool(backend=...)` accept."""
from __future__ import annotations

from .base import Backend

__all__ = ["resolve"]


def resolve(on: str | Backend | None) -> Backend:
    """None / "local" / "ray" / a Backend -> a Backend."""
    if on is None or on == "local":
        from .local.run import LOCAL          # on first use: import shmproc stays light
        return LOCAL
    if isinstance(on, Backend):
        return on
    if on == "ray":
        from .ray.backend import RayBackend   # imports no Ray until it is used
        return RayBackend()
    raise TypeError(f"unknown backend {on!r}: use None or 'local' (this machine), 'ray', "
                    f"or a backend object such as shmproc.RayBackend(address=...)")
