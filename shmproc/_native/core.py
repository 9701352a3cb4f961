"""The compiled C core's status codes, error mapping and descriptor checks.

This package (shmproc._native) is the only part of shmproc that touches the
compiled modules (shmproc._shmp_cffi, shmproc._marks).  C status codes
become Python exceptions in ``check`` and nowhere else; the flow-control
codes (full, empty, timed out, interrupted) are returned to the caller,
which decides what they mean (queue.Full, queue.Empty, retry).
"""
from __future__ import annotations

import errno as _errno
import math
import os

from .._shmp_cffi import ffi, lib
from .._spans import now as _spans_now
from ..common import lifecycle
from ..common.errors import (CorruptSharedMemoryError, ForeignSharedMemoryError,
                             SharedMemoryError, SharedMemoryVersionError)


def _resolve_lib_once() -> None:
    """cffi makes `lib.f`'s function object at its first use.  A worker's
    first use of a function the parent never called would make it in the
    child, on pages the parent wrote last: ~15 copy-on-write traps each
    (~5 µs apiece on a VM), before its first task.  So the first fork of
    this process makes them all (132, ~170 µs, once)."""
    global _resolved
    if not _resolved:
        _resolved = True
        for name in dir(lib):
            getattr(lib, name)


_resolved = False
lifecycle.at_fork(before=_resolve_lib_once)

OK = lib.SHMP_OK
EFULL = lib.SHMP_EFULL
EEMPTY = lib.SHMP_EEMPTY
ETIMEDOUT = lib.SHMP_ETIMEDOUT
EINTR = lib.SHMP_EINTR
ESMALLBUF = lib.SHMP_ESMALLBUF
ETOOBIG = lib.SHMP_ETOOBIG
ESTATE = lib.SHMP_ESTATE
EPEER = lib.SHMP_EPEER
ESEALED = lib.SHMP_ESEALED
#: Exit statuses of a worker its guard ended (csrc/guard.c).
EXIT_EXPIRED = lib.SHMP_EXIT_EXPIRED
EXIT_ORPHANED = lib.SHMP_EXIT_ORPHANED

#: A worker's state in its control block (csrc/shmproc.h).
STATE_NEW = lib.SHMP_STATE_NEW
STATE_STARTING = lib.SHMP_STATE_STARTING
STATE_RUNNING = lib.SHMP_STATE_RUNNING
STATE_FINISHING = lib.SHMP_STATE_FINISHING
STATE_DONE = lib.SHMP_STATE_DONE
STATE_FAILED = lib.SHMP_STATE_FAILED
STATE_CRASHED = lib.SHMP_STATE_CRASHED
STATE_KILLED = lib.SHMP_STATE_KILLED
#: Bits Control.enter returns: a stop was asked for; the section left overran.
CTL_STOP = lib.SHMP_CTL_STOP
CTL_OVERRAN = lib.SHMP_CTL_OVERRAN
#: Can a process open another's descriptor (/proc/PID/fd) on this platform?
PEER_FD_OK = bool(lib.shmp_platform_features() & lib.SHMP_FEAT_PEER_FD)

#: The core's clock (shmp_now_ns: CLOCK_MONOTONIC, ns), read through the
#: CPython extension: ~30 ns a read instead of a cffi call's ~145 ns.
now_ns = _spans_now
FOREVER = -1

#: A yield that kept the caller off the core this long: another task wanted it.
CONTENDED_NS = 50_000


def spin_politely(ready, end_ns: int) -> None:
    """Watch ready() until it holds or the now_ns clock reaches end_ns,
    yielding the core each turn (free when nobody else wants it).  Stops
    early once a yield took over CONTENDED_NS: the machine is loaded, the
    peer we wait for may be the task that wants this core, and a futex
    sleep (woken the moment the peer is done) beats taking turns.  The
    Python twin of wait.c's spin, for waits that poll a ring's count."""
    now, give_way = now_ns, os.sched_yield
    while not ready():
        t = now()
        if t >= end_ns:
            return
        give_way()
        if now() - t > CONTENDED_NS:
            return


def timeout_ns(timeout) -> int:
    """Seconds (float, int or None) to the C convention: -1 forever, else >= 0 ns."""
    if timeout is None:
        return FOREVER
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    if math.isinf(timeout):
        return FOREVER
    return min(int(timeout * 1e9), 2**62)


def check(rc: int, what: str) -> int:
    """Raise the exception for a failed C call; return rc otherwise."""
    if rc >= 0:
        return rc
    text = ffi.string(lib.shmp_strerror(rc)).decode()
    if rc == lib.SHMP_EINVAL or rc == lib.SHMP_ETOOBIG:
        raise ValueError(f"{what}: {text}")
    if rc == lib.SHMP_ENOMEM:
        raise MemoryError(f"{what}: {text}")
    if rc == lib.SHMP_ENOSPC:
        err = lib.shmp_last_errno() or _errno.ENOSPC
        raise SharedMemoryError(err, f"{what}: {text}")
    if rc == lib.SHMP_ECORRUPT:
        raise CorruptSharedMemoryError(f"{what}: {text}")
    if rc == lib.SHMP_EOS:
        err = lib.shmp_last_errno()
        raise SharedMemoryError(err, f"{what}: {os.strerror(err) if err else text}")
    if rc == lib.SHMP_ESTATE:
        raise RuntimeError(f"{what}: {text}")
    raise SharedMemoryError(f"{what}: {text} (status {rc})")


def _attach_failed(rc: int, fd: int, what: str):
    """Raise for a failed attach of `fd`; names versions and owners when they differ."""
    if rc == lib.SHMP_EABI or rc == lib.SHMP_EFOREIGN:
        abi, uid = ffi.new("uint32_t *"), ffi.new("uint32_t *")
        if lib.shmp_seg_identify(fd, abi, uid) == OK:
            ours = lib.shmp_abi_version()
            if rc == lib.SHMP_EABI:
                err = SharedMemoryVersionError(
                    f"{what}: the segment was made by shmproc ABI version {abi[0]}, this shmproc "
                    f"speaks version {ours}: every process sharing it must run the same shmproc")
                err.found, err.expected = abi[0], ours
            else:
                err = ForeignSharedMemoryError(
                    f"{what}: the segment belongs to user {uid[0]}, not to this process's user "
                    f"{os.geteuid()}; shmproc shares memory only among one user's processes")
                err.owner_uid, err.uid = uid[0], os.geteuid()
            raise err
    check(rc, what)


def _fd_arg(fd) -> int:
    """Check a descriptor handed to an attach call and make it close-on-exec.

    Descriptors arrive from multiprocessing (spawn's pass_fds, forkserver's
    and resource_sharer's SCM_RIGHTS) inheritable; left so, os.system,
    subprocess.Popen(close_fds=False) or exec* in user code would hand
    our shared memory to an unrelated program.
    """
    if isinstance(fd, bool) or not isinstance(fd, int):
        raise TypeError(f"file descriptor must be an int, not {type(fd).__name__}")
    if fd < 0:
        raise ValueError(f"file descriptor must be >= 0, got {fd}")
    os.set_inheritable(fd, False)
    return fd


def open_peer_fd(pid: int, fd: int) -> int:
    """Open a descriptor held by live process `pid`; returns a new fd or raises.

    Raises ProcessLookupError when the process or its descriptor is gone.
    """
    out = ffi.new("int *")
    rc = lib.shmp_seg_open_peer(pid, fd, out)
    if rc == EPEER:
        raise ProcessLookupError(f"process {pid} or its descriptor {fd} is gone")
    check(rc, "opening a peer's shared memory")
    return out[0]


def _dup_for_child(fd: int, what: str):
    if fd < 0:
        raise ValueError(f"{what} was closed in this process and cannot be sent to another")
    from multiprocessing.reduction import DupFd
    return DupFd(fd)
