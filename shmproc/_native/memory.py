"""Shared memory a process maps whole: out-of-band blobs (with the leases
that keep a reused segment safe across fork) and sparse arenas; and the
private, copy-on-write views through which readers get their buffers."""
from __future__ import annotations

import gc
import os
import threading

from .._shmp_cffi import ffi, lib
from ..common import lifecycle
from .core import ESTATE, OK, _attach_failed, _dup_for_child, _fd_arg, check


def copy_offset(cursor: int, raw) -> int:
    """Where to put a copy of buffer `raw` in a page-aligned segment: the
    first offset >= cursor with the same position within a page as the
    source.  memcpy here runs ~3x slower (3 against 10 GB/s) when source
    and destination sit at different offsets within a cache line."""
    addr = int(ffi.cast("uintptr_t", ffi.from_buffer(raw)))
    off = (cursor & ~4095) | (addr & 4095)
    return off if off >= cursor else off + 4096


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


# ---- private views: writable zero-copy buffers --------------------------------
#
# A reader's buffers (numpy arrays from a Queue, a pool, a Process result)
# are mapped a second time, MAP_PRIVATE: the pages are the segment's own
# until the reader writes one, which then becomes this process's private
# copy (the kernel copies that one page).  So results are writable, cost
# no copy, and a write reaches neither the producer, nor a fork child
# holding the same view, nor the segment's next item.
#
# What does not work on its own: an unwritten private page is still the
# file's page, so it would change under the reader if the producer reused
# the segment.  Solution: the private mapping keeps the shared mapping it
# was made beside (`keep`) alive, and that mapping holds the lease (Blob)
# or keeps its arena from reuse (Arena): reuse waits for the private
# mapping to die, in this process and in every fork child that holds it.

_private: dict = {}                     # start address -> end address, of live private views


def private_view(fd: int, offset: int, length: int, keep):
    """A writable, copy-on-write buffer over `length` bytes of the payload
    of the blob segment behind `fd` from `offset` (any alignment).  `keep`
    lives until the buffer's last view dies, then is let go (after the
    unmap).  The caller keeps `fd`."""
    p = ffi.new("void **")
    check(lib.shmp_seg_map_private(fd, offset, length, p),
          f"mapping {length} bytes of shared memory privately")
    start = int(ffi.cast("uintptr_t", p[0]))
    _private[start] = start + length

    def destroy(ptr, keep=keep):        # `keep` is released with this function, after the unmap
        _private.pop(start, None)
        lib.shmp_seg_unmap_private(ptr, length)
    owner = ffi.gc(ffi.cast("char *", p[0]), destroy, size=length)
    return ffi.buffer(owner, length)


def is_private_view(address: int) -> bool:
    """Does `address` lie in a live private view (wire.detach asks)?"""
    for start, end in list(_private.items()):
        if start <= address < end:
            return True
    return False


def buffer_address(obj) -> int | None:
    """The address of a buffer object's first byte; None if it exports none
    as one contiguous block."""
    try:
        return int(ffi.cast("uintptr_t", ffi.from_buffer(obj)))
    except (TypeError, BufferError, ValueError):
        return None


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
lifecycle.at_fork(before=_count_fork_children, after_in_parent=_forked_parent,
                  after_in_child=_reset_lease_lock)


def _create_segment(size: int):
    """A new segment of `size` bytes, mapped: (fd, payload pointer)."""
    fd = ffi.new("int *")
    p = ffi.new("void **")
    check(lib.shmp_seg_create(lib.SHMP_KIND_BLOB, size, fd, p),
          f"reserving {size} bytes of shared memory")
    return fd[0], p[0]


def _attach_owned(fd: int, what: str):
    """Map the segment behind `fd`, which this takes over (closed if the
    attach fails): (payload pointer, payload size)."""
    p = ffi.new("void **")
    n = ffi.new("uint64_t *")
    rc = lib.shmp_seg_attach(_fd_arg(fd), lib.SHMP_KIND_BLOB, p, n)
    if rc != OK:
        try:
            _attach_failed(rc, fd, what)
        finally:
            os.close(fd)
    return p[0], n[0]


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
        fd, payload = _create_segment(size)
        return cls(fd, size, _mapping(payload, size))

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
        payload, size = _attach_owned(fd, "attaching an arena")
        return cls(fd, size, _mapping(payload, size, on_unmap=on_unmap))

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


class Board:
    """A small shared segment read and written as atomic 32-bit words.

    For shared state laid out in Python: a growing Queue's directory of
    segments (channels/chain.py), a JoinableQueue's count of unfinished
    items.  Offsets are checked against the size this process mapped;
    wider fields go through `view` (plain loads and stores, published by
    a release `store` or `cas` of a word after them).  Owns its descriptor;
    pickles as a duplicate of it (fork, spawn, forkserver).
    """

    __slots__ = ("fd", "size", "buffer", "view", "_base", "__weakref__")

    def __init__(self, fd: int, size: int, buffer):
        self.fd = fd
        self.size = size
        self.buffer = buffer
        self.view = memoryview(buffer)
        self._base = ffi.cast("char *", ffi.from_buffer(buffer))

    @classmethod
    def create(cls, size: int):
        """A zeroed board of `size` bytes, its memory reserved now."""
        fd, payload = _create_segment(size)
        return cls(fd, size, _mapping(payload, size))

    @classmethod
    def attach(cls, fd: int):
        """Map the board behind `fd`; takes ownership of `fd` (closed on failure)."""
        payload, size = _attach_owned(fd, "attaching shared memory")
        return cls(fd, size, _mapping(payload, size))

    def _word(self, offset: int):
        if offset < 0 or offset + 4 > self.size or offset % 4:
            raise ValueError(f"word offset {offset} outside a {self.size}-byte board")
        return self._base + offset

    def _waiters(self, offset):
        return ffi.NULL if offset is None else self._word(offset)

    def load(self, offset: int) -> int:
        """Acquire load of the word at `offset`."""
        return lib.shmp_load_u32(self._word(offset))

    def store(self, offset: int, value: int, waiters: int | None = None):
        """Release store; wakes the sleepers registered at `waiters`, if any."""
        check(lib.shmp_store_u32(self._word(offset), self._waiters(waiters), value),
              "writing a shared word")

    def cas(self, offset: int, expected: int, desired: int, waiters: int | None = None) -> bool:
        """Compare-and-swap (acq_rel), waking as store does; False if the word was not `expected`."""
        rc = lib.shmp_cas_u32(self._word(offset), self._waiters(waiters), expected, desired)
        if rc == ESTATE:
            return False
        check(rc, "updating a shared word")
        return True

    def add(self, offset: int, delta: int) -> int:
        """Fetch-add (acq_rel) of a signed delta; returns the old value."""
        return lib.shmp_add_u32(self._word(offset), delta)

    def wait(self, offset: int, waiters: int, expected: int, timeout_ns: int) -> int:
        """Sleep while the word equals `expected` (OK, ETIMEDOUT or EINTR)."""
        return lib.shmp_wait_u32(self._word(offset), self._word(waiters), expected, timeout_ns)

    def close(self):
        """Close the descriptor; the mapping lives while views of it do."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self):
        self.close()

    def __reduce__(self):
        return _attach_board, (_dup_for_child(self.fd, "a shared board"),)


def _attach_board(dupfd):
    return Board.attach(dupfd.detach())
