"""Whether workers record a span per task and per Process section, for
Pool.timeline() and Process.timeline() (shared-memory trace rings,
csrc/trace.c).

On unless the environment says SHMPROC_TRACE=0 when the pool is made or
the Process started: the recording costs a few stores per task (see
docs/observability.md for what it costs, measured), and a program that
wants even those back, or a benchmark comparing, turns it off.
"""
from __future__ import annotations

import os

__all__ = ["enabled"]


def enabled() -> bool:
    return os.environ.get("SHMPROC_TRACE", "1").strip().lower() not in ("0", "false", "no", "off")
