"""Ring: a process-local handle on a shared ring of records (csrc/ring.c),
and the receive buffers a consumer reads records into."""
from __future__ import annotations

import os
from functools import partial

from .._shmp_cffi import ffi, lib
from .core import OK, _attach_failed, _fd_arg, check

# A pool worker's loop of plain calls (csrc/python/callloop.c), which calls
# the ring functions below directly; None in an install without it.
try:
    from .._callloop import (encode_call, serve as serve_calls, set_wire as set_call_wire,
                             take_value)
except ImportError:
    encode_call = serve_calls = set_call_wire = take_value = None


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
      poke(): wake the consumers asleep on it, nothing put (shmproc.h)
    """

    __slots__ = ("_h", "fd", "capacity", "max_record", "put", "put_tracked",
                 "put_many", "get_into", "get_record", "get_many_into", "count", "poke",
                 "__weakref__")

    def __init__(self, handle, fd: int):
        # The mapping goes with the handle's last reference, not this
        # object's: a caller may hold one of the bound operations below
        # (a Queue's put/get) while another thread lets the Ring go.
        handle = ffi.gc(handle, lib.shmp_ring_close)
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
        self.count = partial(lib.shmp_ring_count, handle)   # records in it: polled in hot loops
        self.poke = partial(lib.shmp_ring_poke, handle)

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

    def set_wait_slice(self, slice_ns: int):
        """How often this handle's sleepers re-check the ring without a
        wake-up (0: never; negative: the default).  See shmproc.h."""
        lib.shmp_ring_set_wait_slice(self._h, slice_ns)

    @property
    def closed(self) -> bool:
        return self._h is None

    def close(self):
        """Unmap and close the descriptor; idempotent.  Later calls raise."""
        h, self._h = self._h, None
        if h is not None:
            self.put = self.put_tracked = self.put_many = self.get_into = \
                self.get_record = self.get_many_into = self.count = self.poke = _ring_closed
            ffi.release(h)                  # unmaps now
        self._close_fd()

    def _close_fd(self):
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self):
        self._close_fd()                    # the mapping goes with the handle (see __init__)

    def taken(self) -> int:
        """Records ever taken by consumers (see put_tracked's sequence)."""
        return lib.shmp_ring_taken(self._h)

    def used_bytes(self) -> int:
        return lib.shmp_ring_used_bytes(self._h)

    def wait_data(self, timeout_ns: int) -> int:
        return lib.shmp_ring_wait_data(self._h, timeout_ns)

    def wait_poked(self, timeout_ns: int) -> int:
        """Sleep until data (OK), a poke finding none (EEMPTY), the timeout
        (ETIMEDOUT), a signal (EINTR) or a close (ESTATE): shmproc.h."""
        return lib.shmp_ring_wait_poked(self._h, timeout_ns)

    def sleepers(self) -> int:
        """Consumers registered asleep for data now (a snapshot)."""
        return lib.shmp_ring_sleepers(self._h)

    # -- sealing: how an unbounded Queue grows (channels/chain.py) ----------
    @property
    def id(self) -> int:
        """The 64 bits its creator named it with (set_id), 0 if none."""
        return lib.shmp_ring_id(self._h)

    def set_id(self, ring_id: int):
        """Name a ring this process created, before its descriptor is shared."""
        check(lib.shmp_ring_set_id(self._h, ring_id), "naming a ring")

    def seal(self, next_id: int, timeout_ns: int) -> int:
        """No more puts: returns OK, ESTATE (sealed already) or EINTR (retry)."""
        return lib.shmp_ring_seal(self._h, next_id, timeout_ns)

    def sealed(self):
        """The id of the ring that continues this one once sealed, else None."""
        out = ffi.new("uint64_t *")
        return out[0] if lib.shmp_ring_sealed(self._h, out) else None

    def mark_closed(self):
        check(lib.shmp_ring_mark_closed(self._h), "closing a ring")

    def is_closed(self) -> bool:
        return bool(lib.shmp_ring_is_closed(self._h))


def loop_handles(task_ring: Ring, result_ring: Ring) -> tuple[int, ...]:
    """What csrc/python/callloop.c calls the core with: the two rings'
    handles and the addresses of shmp_ring_get_record, shmp_ring_count,
    shmp_ring_put and shmp_ring_wait_poked (the cffi module's own
    functions, not copies).  The handles are valid while both Rings stay
    open."""
    if task_ring._h is None or result_ring._h is None:
        raise RuntimeError("operation on a closed ring")
    return (int(ffi.cast("uintptr_t", task_ring._h)), int(ffi.cast("uintptr_t", result_ring._h)),
            _GET_RECORD, _COUNT, _PUT, _WAIT_POKED)


def take_handles(ring: Ring) -> tuple[int, int, int]:
    """What take_value (csrc/python/callloop.c) calls the core with: the
    ring's handle, shmp_ring_get_record and shmp_ring_count."""
    if ring._h is None:
        raise RuntimeError("operation on a closed ring")
    return int(ffi.cast("uintptr_t", ring._h)), _GET_RECORD, _COUNT


_GET_RECORD = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shmp_ring_get_record")))
_COUNT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shmp_ring_count")))
_PUT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shmp_ring_put")))
_WAIT_POKED = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shmp_ring_wait_poked")))


def _ring_closed(*args):
    raise RuntimeError("operation on a closed ring")


# ---- what a ring's callers hand to it ----------------------------------------
# C arrays and cells for the calls above, so that no module outside this
# package needs ffi.

unpack = ffi.unpack


def u32_array(values_or_count):
    """A uint32_t[] of these values, or of this many zeros."""
    return ffi.new("uint32_t[]", values_or_count)


def u32_cell():
    return ffi.new("uint32_t *")


def u64_cell(value: int = 0):
    return ffi.new("uint64_t *", value)


def char_pointer(obj):
    """A char * into a bytes-like object (valid while `obj` lives)."""
    return ffi.cast("char *", ffi.from_buffer(obj))


class RecvBuffer:
    """A reusable receive buffer with its C views (one per concurrent getter):
    `ptr`/`cptr` for the ring calls, `view` for decoding, `out` the
    (length, tag) pair of the slow path, and many() the arrays of get_many."""

    __slots__ = ("buf", "view", "ptr", "cptr", "size", "out", "_many", "_many_max")

    def __init__(self, size, many_max=1024):
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.ptr = ffi.from_buffer(self.buf)
        self.cptr = ffi.cast("char *", self.ptr)
        self.size = size
        self.out = ffi.new("uint32_t[2]")
        self._many = None
        self._many_max = many_max

    def resize(self, size):
        """Grow in place (the holder keeps using this object)."""
        self.__init__(size, self._many_max)

    def many(self):
        """(lens, tags, count) arrays for get_many, allocated once."""
        if self._many is None:
            n = self._many_max
            self._many = (ffi.new("uint32_t[]", n), ffi.new("uint32_t[]", n),
                          ffi.new("uint32_t *"))
        return self._many
