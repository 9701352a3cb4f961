"""How long a Queue's put or get may wait: the stdlib's (block, timeout)
as nanoseconds for the native calls, and deadlines across retries."""
from __future__ import annotations

import time

from .. import _native as native


def blocking_timeout(block: bool, timeout: float | None) -> int:
    if not block:
        return 0
    return -1 if timeout is None else native.timeout_ns(timeout)


def deadline(tmo_ns: int) -> float | None:
    return None if tmo_ns < 0 else time.monotonic() + tmo_ns / 1e9


def try_room(block: bool, timeout: float | None) -> int:
    blocking_timeout(block, timeout)            # checks the timeout given
    return 0


def left_ns(deadline: float | None) -> int:
    if deadline is None:
        return -1
    return max(0, int((deadline - time.monotonic()) * 1e9))
