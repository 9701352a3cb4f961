"""The one module that talks to the compiled C core (and to shmproc._marks,
the CPython-API iterator of csrc/python/marks.c).

Everything else in shmproc goes through the small classes here (Ring,
Blob, ControlArray) or the helpers (check, now_ns, timeout_ns).  C status
codes become Python exceptions in ``check`` and nowhere else; the
flow-control codes (full, empty, timed out, interrupted) are returned to
the caller, which decides what they mean (queue.Full, queue.Empty, retry).
"""
from __future__ import annotations

import errno as _errno
import gc
import math
import os
import threading
from functools import partial

from ._marks import marked as _marked
from ._shmp_cffi import ffi, lib
from .errors import (CorruptSharedMemoryError, ForeignSharedMemoryError, SharedMemoryError,
                     SharedMemoryVersionError)

__all__ = [
    "ffi", "lib", "check", "now_ns", "timeout_ns", "Ring", "Blob", "ControlArray", "Control",
    "Arena", "parent_death_signal", "guard_start", "guard_rearm", "guard_stop", "guard_running",
    "open_peer_fd", "copy_offset", "OK", "EFULL", "EEMPTY", "ETIMEDOUT", "EINTR", "ESMALLBUF",
    "ETOOBIG", "ESTATE", "EPEER", "EXIT_EXPIRED", "EXIT_ORPHANED",
]

OK = lib.SHMP_OK
EFULL = lib.SHMP_EFULL
EEMPTY = lib.SHMP_EEMPTY
ETIMEDOUT = lib.SHMP_ETIMEDOUT
EINTR = lib.SHMP_EINTR
ESMALLBUF = lib.SHMP_ESMALLBUF
ETOOBIG = lib.SHMP_ETOOBIG
ESTATE = lib.SHMP_ESTATE
EPEER = lib.SHMP_EPEER
#: Exit statuses of a worker its guard ended (csrc/guard.c).
EXIT_EXPIRED = lib.SHMP_EXIT_EXPIRED
EXIT_ORPHANED = lib.SHMP_EXIT_ORPHANED

now_ns = lib.shmp_now_ns
FOREVER = -1


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


class Ring:
    """A process-local handle on a shared ring (see csrc/ring.c).

    The operations are attributes bound to the C functions with the handle
    already applied (functools.partial), so a hot path costs one C-level
    call.  They return the raw status, letting callers branch on
    EFULL/EEMPTY/ETIMEDOUT without exceptions; `check` turns the rest into
    exceptions.  Signatures (timeouts in ns, -1 = for ever, 0 = try once):

      put(data, len, tag, timeout)
      put_tracked(data, len, tag, timeout, seq_out): seq_out[0] = records put before it
      put_many(blob, lens, tags, count, timeout, done_out)
      get_into(dst, cap, timeout, len_out, tag_out)
      get_record(dst, cap, timeout) -> (tag << 32) | len, or a negative status
      get_many_into(dst, cap, max_count, timeout, lens_out, tags_out, count_out)
    """

    __slots__ = ("_h", "fd", "capacity", "max_record", "put", "put_tracked",
                 "put_many", "get_into", "get_record", "get_many_into", "__weakref__")

    def __init__(self, handle, fd: int):
        self._h = handle
        self.fd = fd
        self.capacity = lib.shmp_ring_capacity(handle)
        self.max_record = lib.shmp_ring_max_record(handle)
        self.put = partial(lib.shmp_ring_put, handle)
        self.put_tracked = partial(lib.shmp_ring_put_tracked, handle)
        self.put_many = partial(lib.shmp_ring_put_many, handle)
        self.get_into = partial(lib.shmp_ring_get, handle)
        self.get_record = partial(lib.shmp_ring_get_record, handle)
        self.get_many_into = partial(lib.shmp_ring_get_many, handle)

    @classmethod
    def create(cls, capacity: int, *, multi_producer=False, multi_consumer=False, max_items=0):
        flags = (lib.SHMP_RING_MULTI_PRODUCER if multi_producer else 0) | \
                (lib.SHMP_RING_MULTI_CONSUMER if multi_consumer else 0)
        fd = ffi.new("int *")
        h = ffi.new("shmp_ring **")
        check(lib.shmp_ring_create(capacity, flags, max_items, fd, h),
              f"creating a ring of {capacity} bytes")
        return cls(h[0], fd[0])

    @classmethod
    def attach(cls, fd: int):
        """Map the ring behind `fd`; takes ownership of `fd` (closed on failure)."""
        h = ffi.new("shmp_ring **")
        rc = lib.shmp_ring_attach(_fd_arg(fd), h)
        if rc != OK:
            try:
                _attach_failed(rc, fd, "attaching a ring")
            finally:
                os.close(fd)
        return cls(h[0], fd)

    @property
    def closed(self) -> bool:
        return self._h is None

    def close(self):
        """Unmap and close the descriptor; idempotent.  Later calls raise."""
        h, self._h = self._h, None
        if h is not None:
            self.put = self.put_tracked = self.put_many = self.get_into = \
                self.get_record = self.get_many_into = _ring_closed
            lib.shmp_ring_close(h)
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self):
        self.close()

    def count(self) -> int:
        return lib.shmp_ring_count(self._h)

    def taken(self) -> int:
        """Records ever taken by consumers (see put_tracked's sequence)."""
        return lib.shmp_ring_taken(self._h)

    def used_bytes(self) -> int:
        return lib.shmp_ring_used_bytes(self._h)

    def wait_data(self, timeout_ns: int) -> int:
        return lib.shmp_ring_wait_data(self._h, timeout_ns)

    def mark_closed(self):
        check(lib.shmp_ring_mark_closed(self._h), "closing a ring")

    def is_closed(self) -> bool:
        return bool(lib.shmp_ring_is_closed(self._h))


def copy_offset(cursor: int, raw) -> int:
    """Where to put a copy of buffer `raw` in a page-aligned segment: the
    first offset >= cursor with the same position within a page as the
    source.  memcpy here runs ~3x slower (3 against 10 GB/s) when source
    and destination sit at different offsets within a cache line."""
    addr = int(ffi.cast("uintptr_t", ffi.from_buffer(raw)))
    off = (cursor & ~4095) | (addr & 4095)
    return off if off >= cursor else off + 4096


def _ring_closed(*args):
    raise RuntimeError("operation on a closed ring")


def _mapping(payload, size: int, on_unmap=None, lease=None):
    """A buffer over a mapped payload that unmaps when the last view dies.

    ffi.gc ties the munmap to the pointer object; ffi.buffer keeps that
    object alive, and every memoryview (and numpy array) made from the
    buffer keeps the buffer alive.  So a result array may outlive the Blob
    that produced it: the mapping goes only with the last reference.
    `on_unmap()` is called after the unmap (arena reuse, see arenas.py).
    `lease`, a one-item list, may later be filled by Blob.claim with the
    lease this mapping holds; it is given back before the unmap.
    """
    def destroy(p):
        if lease is not None and lease[0] is not None:
            _end_lease(p, lease[0])
        lib.shmp_seg_unmap(p, size)
        if on_unmap is not None:
            on_unmap()
    owner = ffi.gc(ffi.cast("char *", payload), destroy, size=size)
    return ffi.buffer(owner, size)


# ---- leases: zero-copy views of a segment another process reuses ------------
#
# A producer reuses an out-of-band segment (blobs.py) once no process maps
# it any more.  Each mapping that may hold views counts itself in the
# segment's `refs` word (Blob.claim); its destructor counts itself out, and
# the one that takes the count to zero stores the RELEASED state.  A fork
# copies every mapping into the child, so before any fork each leased
# mapping counts once more, for the child: the child's copy of the
# mapping gives that count back when it dies in the child.  A child that
# exits without running destructors (os._exit) leaves its count behind:
# the segment is then never reused, only freed, which is safe.

_leases: dict = {}                      # payload address -> (pointer, refs offset)
_lease_lock = threading.RLock()


def _end_lease(p, lease):
    state_off, refs_off, waiters_off, released = lease
    with _lease_lock:
        _leases.pop(int(ffi.cast("uintptr_t", p)), None)
        # acq_rel fetch-add (csrc/wait.c): the holder that counts the last
        # mapping out publishes RELEASED; the producer may then reuse it.
        if lib.shmp_add_u32(p + refs_off, -1) == 1:
            lib.shmp_store_u32(p + state_off, p + waiters_off, released)


def _count_fork_children():
    # Before fork: the child will hold a copy of every leased mapping.  The
    # lock stays held until the fork is done (released in the parent, made
    # anew in the child), so no thread can take a lease the child would
    # inherit uncounted; the cyclic GC stays off so that no destructor
    # unmaps a segment while it is counted.  A fork that fails leaves the
    # counts behind: those segments are then never reused, only freed.
    global _gc_was_enabled, _forking
    _lease_lock.acquire()
    _gc_was_enabled = gc.isenabled()
    gc.disable()
    _forking = True             # a lease taken by a later fork hook counts for the child too
    for p, refs_off in list(_leases.values()):
        lib.shmp_add_u32(p + refs_off, 1)


def _forked_parent():
    global _forking
    _forking = False
    if _gc_was_enabled:
        gc.enable()
    _lease_lock.release()


def _reset_lease_lock():
    global _lease_lock, _forking
    _forking = False
    _lease_lock = threading.RLock()     # held by the forking thread, in the parent's copy
    if _gc_was_enabled:
        gc.enable()


_gc_was_enabled = True
_forking = False
os.register_at_fork(before=_count_fork_children, after_in_parent=_forked_parent,
                   after_in_child=_reset_lease_lock)


class Blob:
    """A shared segment holding one out-of-band record (large buffers)."""

    __slots__ = ("fd", "size", "buffer", "_lease")

    def __init__(self, fd: int, size: int, buffer, lease=None):
        self.fd = fd
        self.size = size
        self.buffer = buffer
        self._lease = lease

    @classmethod
    def create(cls, size: int):
        fd = ffi.new("int *")
        p = ffi.new("void **")
        check(lib.shmp_seg_create(lib.SHMP_KIND_BLOB, size, fd, p),
              f"reserving {size} bytes of shared memory")
        return cls(fd[0], size, _mapping(p[0], size))

    @classmethod
    def attach(cls, fd: int):
        """Map the blob behind `fd` read-write; the caller still owns `fd`.

        Nothing is written to the segment until claim() succeeds.
        """
        p = ffi.new("void **")
        n = ffi.new("uint64_t *")
        rc = lib.shmp_seg_attach(_fd_arg(fd), lib.SHMP_KIND_BLOB, p, n)
        if rc != OK:
            _attach_failed(rc, fd, "attaching shared memory")
        lease = [None]
        return cls(-1, n[0], _mapping(p[0], n[0], lease=lease), lease)

    def claim(self, state_off: int, refs_off: int, waiters_off: int, expected: int,
              claimed: int, released: int):
        """Move the state word from `expected` to `claimed` (atomically) and
        count this mapping in `refs`; when the last counted mapping in any
        process dies, `released` is stored in the state word.  Both changes
        wake the sleepers registered in `waiters` (see wait_word).  Raises
        RuntimeError if the state was not `expected` (someone else claimed
        it, or it is not published)."""
        if self._lease is None or self._lease[0] is not None:
            raise RuntimeError("this blob mapping cannot be claimed (again)")
        self._word(refs_off)
        rc = lib.shmp_cas_u32(self._word(state_off), self._word(waiters_off), expected, claimed)
        if rc == ESTATE:
            raise RuntimeError(f"blob state is {self.load_word(state_off)}, not {expected}")
        check(rc, "claiming a shared segment")
        base = ffi.cast("char *", ffi.from_buffer(self.buffer))
        with _lease_lock:
            lib.shmp_add_u32(base + refs_off, 2 if _forking else 1)
            self._lease[0] = (state_off, refs_off, waiters_off, released)
            _leases[int(ffi.cast("uintptr_t", base))] = (base, refs_off)

    def close_fd(self):
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def _word(self, offset: int):
        if offset < 0 or offset + 4 > self.size or offset % 4:
            raise ValueError(f"word offset {offset} outside a {self.size}-byte blob")
        return ffi.cast("char *", ffi.from_buffer(self.buffer)) + offset

    def load_word(self, offset: int) -> int:
        """Atomic (acquire) read of the 32-bit word at `offset`."""
        return lib.shmp_load_u32(self._word(offset))

    def store_word(self, offset: int, value: int, waiters: int | None = None):
        """Atomic (release) write of the 32-bit word at `offset`; wakes the
        sleepers registered in the word at offset `waiters`, if any (None:
        nobody ever sleeps on this word)."""
        w = ffi.NULL if waiters is None else self._word(waiters)
        check(lib.shmp_store_u32(self._word(offset), w, value), "writing a shared word")

    def wait_word(self, offset: int, waiters: int, expected: int, timeout_ns: int) -> int:
        """Sleep while the word at `offset` equals `expected`, registered in
        the waiters word at offset `waiters` (zero at creation, used for
        nothing else) so that a store or claim wakes us; returns OK,
        ETIMEDOUT or EINTR."""
        return lib.shmp_wait_u32(self._word(offset), self._word(waiters), expected, timeout_ns)


def _control_mapping(payload, count: int):
    # The size comes from our count, never from the shared header: a
    # damaged header must not make us unmap someone else's memory.
    n = lib.shmp_ctl_payload_size(count)
    return ffi.gc(payload, lambda p: lib.shmp_seg_unmap(p, n))


class ControlArray:
    """`count` control blocks in one shared segment (see csrc/control.c).

    Pickles by passing its descriptor (multiprocessing's DupFd), so it can
    be handed to a spawn or forkserver child as a Process argument.
    """

    __slots__ = ("fd", "count", "_payload", "blocks", "__weakref__")

    def __init__(self, fd: int, count: int, payload):
        self.fd = fd
        self.count = count
        self._payload = payload
        out = ffi.new("shmp_control **")
        blocks = []
        for i in range(count):
            check(lib.shmp_ctl_get(payload, count, i, out), "locating a control block")
            blocks.append(out[0])
        self.blocks = blocks

    @classmethod
    def create(cls, count: int):
        fd = ffi.new("int *")
        p = ffi.new("void **")
        check(lib.shmp_ctl_create(count, fd, p), f"creating {count} control blocks")
        return cls(fd[0], count, _control_mapping(p[0], count))

    @classmethod
    def attach(cls, fd: int):
        """Map the control blocks behind `fd`; takes ownership of `fd` (closed on failure)."""
        p = ffi.new("void **")
        n = ffi.new("uint32_t *")
        rc = lib.shmp_ctl_attach(_fd_arg(fd), p, n)
        if rc != OK:
            try:
                _attach_failed(rc, fd, "attaching control blocks")
            finally:
                os.close(fd)
        return cls(fd, n[0], _control_mapping(p[0], n[0]))

    def control(self, index: int) -> "Control":
        return Control(self, index)

    def close(self):
        """Close the descriptor; the mapping goes when the last block reference does."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __reduce__(self):
        return _attach_control_array, (_dup_for_child(self.fd, "control blocks"),)


def _attach_control_array(dupfd):
    return ControlArray.attach(dupfd.detach())


class Control:
    """One worker's control block, with its calls bound (see csrc/control.c).

    The worker's hot path uses `enter`, `end_lap` (stores and a vDSO clock
    read, no syscall); the parent reads the rest at any time.
    """

    __slots__ = ("array", "index", "block", "enter", "end_lap", "leave", "lap", "_lap_addr")

    def __init__(self, array: ControlArray, index: int):
        if not 0 <= index < array.count:
            raise IndexError(f"control block {index} of {array.count}")
        self.array = array                      # keeps the mapping alive
        self.index = index
        self.block = b = array.blocks[index]
        self.enter = partial(lib.shmp_ctl_enter, b)        # (section, timeout_ns) -> bits
        self.end_lap = partial(lib.shmp_ctl_end_lap, b)    # () -> bits
        self.leave = partial(lib.shmp_ctl_leave, b)        # () -> bits
        self.lap = partial(lib.shmp_ctl_lap, b)            # () -> int
        self._lap_addr = None                              # see _lap_address

    def reset(self):
        check(lib.shmp_ctl_reset(self.block), "resetting a control block")

    @property
    def state(self) -> int:
        return lib.shmp_ctl_state(self.block)

    def set_state(self, state: int):
        check(lib.shmp_ctl_set_state(self.block, state), "setting a worker state")

    def wait_state(self, at_least: int, timeout_ns: int) -> int:
        """OK once state >= at_least; ETIMEDOUT or EINTR otherwise."""
        return lib.shmp_ctl_wait_state(self.block, at_least, timeout_ns)

    def request_stop(self):
        lib.shmp_ctl_request_stop(self.block)

    def clear_stop(self):
        lib.shmp_ctl_clear_stop(self.block)

    @property
    def stop_requested(self) -> bool:
        return bool(lib.shmp_ctl_stop_requested(self.block))

    def set_lap(self, lap: int):
        lib.shmp_ctl_set_lap(self.block, lap)

    def lap_word(self) -> memoryview:
        """The lap counter as a writable one-element "Q" memoryview.

        For a pool worker that publishes its progress at every task record
        (~40 ns a store, against ~200 ns for a cffi call).  The store is a
        plain aligned 8-byte store (CPython packs "Q" with an 8-byte
        memcpy: one instruction), not a C11 atomic one: the parent reads
        the word either after the worker is reaped (waitpid orders all the
        worker wrote) or for live progress, where a stale value is fine.
        The view is valid while this Control (and so the mapping) lives.
        """
        return memoryview(ffi.buffer(ffi.cast("uint64_t *", self._lap_address()), 8)).cast("Q")

    def marked(self, iterator, first: int, step: int, count: int):
        """An iterator over the next `count` items of `iterator` (the rest
        stay in it) that stores first, first + step, ... into the lap word
        as it hands out each item (csrc/python/marks.c): a pool worker's
        per-item progress at no measurable cost."""
        return _marked(iterator, self, self._lap_address(), first, step, count)

    def _lap_address(self) -> int:
        addr = self._lap_addr
        if addr is None:
            # lap is the block's first word (shmp_control_shared in
            # csrc/shmp_internal.h): checked once here, not assumed, so a
            # change of layout is an error rather than a store into
            # another field.
            addr = int(ffi.cast("uintptr_t", self.block))
            saved = self.lap()
            probe = 0x5A5A_A5A5_0F0F_F0F0
            lib.shmp_ctl_set_lap(self.block, probe)
            found = ffi.cast("uint64_t *", self.block)[0]
            lib.shmp_ctl_set_lap(self.block, saved)
            if found != probe:
                raise RuntimeError("shmproc's native module has a control block layout this "
                                   "Python code does not know (lap is not its first word)")
            self._lap_addr = addr
        return addr

    @property
    def section(self) -> int:
        return lib.shmp_ctl_section(self.block)

    @property
    def section_start_ns(self) -> int:
        return lib.shmp_ctl_section_start_ns(self.block)

    @property
    def deadline_ns(self) -> int:
        return lib.shmp_ctl_deadline_ns(self.block)

    @property
    def lives(self) -> int:
        return lib.shmp_ctl_lives(self.block)

    def set_lives(self, lives: int):
        lib.shmp_ctl_set_lives(self.block, lives)

    @property
    def pid(self) -> int:
        return lib.shmp_ctl_pid(self.block)

    def set_pid(self, pid: int):
        check(lib.shmp_ctl_set_pid(self.block, pid), "recording a worker pid")

    def set_exit(self, code: int, signo: int):
        check(lib.shmp_ctl_set_exit(self.block, code, signo), "recording a worker exit")

    def exit_info(self):
        code, sig = ffi.new("int32_t *"), ffi.new("int32_t *")
        check(lib.shmp_ctl_exit(self.block, code, sig), "reading a worker exit")
        return code[0], sig[0]

    @property
    def alarm_start_ns(self) -> int:
        """The section start stamp the guard's latest SIGALRM was meant for."""
        return lib.shmp_ctl_alarm_start_ns(self.block)

    def expired(self):
        """(section, timeout_ns, lap) if the guard ended the worker on an
        overrun, else None."""
        tmo, lap = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        section = lib.shmp_ctl_expired(self.block, tmo, lap)
        return (section, tmo[0], lap[0]) if section else None


#: Ranges at least this large are faulted in with one call before writing.
_PREFAULT_MIN = 1 << 20


class Arena:
    """A sparse shared segment for data of unknown size (state, results).

    Costs address space, not memory: pages exist once written.  `reserve`
    a range before writing it, so an exhausted machine gives a clean
    SharedMemoryError rather than SIGBUS.  `view()` is a buffer whose life
    keeps the mapping alive (see _mapping).  `box`: the owner's notes on
    this mapping (arenas.py).
    """

    __slots__ = ("fd", "size", "buffer", "box", "__weakref__")

    def __init__(self, fd: int, size: int, buffer):
        self.fd = fd
        self.size = size
        self.buffer = buffer
        self.box = None

    @classmethod
    def create(cls, size: int, on_unmap=None):
        """A new arena.  on_unmap(): called once this mapping is gone."""
        fd = ffi.new("int *")
        p = ffi.new("void **")
        check(lib.shmp_seg_create_sparse(lib.SHMP_KIND_BLOB, size, fd, p),
              f"creating a {size}-byte arena")
        return cls(fd[0], size, _mapping(p[0], size, on_unmap=on_unmap))

    @classmethod
    def attach(cls, fd: int, on_unmap=None):
        """Map the arena behind `fd`; takes ownership of `fd` (closed on failure)."""
        p = ffi.new("void **")
        n = ffi.new("uint64_t *")
        rc = lib.shmp_seg_attach(_fd_arg(fd), lib.SHMP_KIND_BLOB, p, n)
        if rc != OK:
            try:
                _attach_failed(rc, fd, "attaching an arena")
            finally:
                os.close(fd)
        return cls(fd, n[0], _mapping(p[0], n[0], on_unmap=on_unmap))

    def reserve(self, offset: int, length: int):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"{length} bytes at {offset} do not fit in a {self.size}-byte arena")
        if length:
            check(lib.shmp_seg_reserve(self.fd, offset, length),
                  f"reserving {length} bytes of shared memory")
            if length >= _PREFAULT_MIN:
                base = ffi.cast("char *", ffi.from_buffer(self.buffer))
                check(lib.shmp_prefault(base + offset, length),
                      f"mapping {length} bytes of shared memory")

    def close(self):
        """Close the descriptor; the mapping lives while views of it do."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __reduce__(self):
        return _attach_arena, (_dup_for_child(self.fd, "an arena"),)


def _attach_arena(dupfd):
    return Arena.attach(dupfd.detach())


def _dup_for_child(fd: int, what: str):
    if fd < 0:
        raise ValueError(f"{what} was closed in this process and cannot be sent to another")
    from multiprocessing.reduction import DupFd
    return DupFd(fd)


def guard_start(ctl: Control, parent_pid: int, parent_is_parent: bool, horizon_ns: int,
                grace_ns: int, alarm_signo: int) -> bool:
    """Start this process's native guard on `ctl` (see csrc/guard.c), from
    the main thread; False if the parent is already gone."""
    rc = lib.shmp_guard_start(ctl.block, parent_pid or 0, bool(parent_is_parent), horizon_ns,
                              grace_ns, alarm_signo)
    if rc == EPEER:
        return False
    check(rc, "starting the worker's timeout guard")
    return True


def guard_rearm(horizon_ns: int):
    check(lib.shmp_guard_rearm(horizon_ns), "re-arming the worker's timeout guard")


def guard_stop():
    check(lib.shmp_guard_stop(), "stopping the worker's timeout guard")


def guard_running() -> bool:
    return bool(lib.shmp_guard_running())


def parent_death_signal(signo: int, expected_parent: int) -> bool:
    """Ask for `signo` when the parent dies; False if it already has."""
    rc = lib.shmp_parent_death_signal(signo, expected_parent)
    if rc == EPEER:
        return False
    check(rc, "arranging for the parent's death signal")
    return True
