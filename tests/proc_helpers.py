"""Helpers for tests that check processes are gone (no orphans)."""
import os
import time


def alive(pid) -> bool:
    """Is `pid` running (a zombie counts as gone)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids, seconds=10) -> bool:
    """True once none of `pids` (one pid or several) is alive; False after `seconds`."""
    pids = [pids] if isinstance(pids, int) else list(pids)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def in_fork_child(fn) -> int:
    """Run fn() in a fork of this process; its exit status (fn returns the code)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
