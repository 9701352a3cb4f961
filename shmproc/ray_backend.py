"""The Ray backend's public names (see docs/scaleout.md).

    from shmproc import RayBackend
    shmproc.ray_backend.release_idle()     # give idle launchers back now
    shmproc.ray_backend.shutdown()         # end Ray pools and runs, stop a cluster we started

Importing this module does not import Ray: that waits for first use.
"""
from .backends.ray.backend import RayBackend, RayRun
from .backends.ray.cluster import release_idle, shutdown
from .common.errors import ClusterUnreachable, RayNotInstalled, ResourcesUnavailable

__all__ = ["RayBackend", "RayRun", "RayNotInstalled", "ClusterUnreachable",
           "ResourcesUnavailable", "release_idle", "shutdown"]
