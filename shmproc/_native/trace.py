"""Trace segments (csrc/trace.c): the spans each worker recorded.

A `TraceArea` is one shared segment with a ring per worker slot; a
worker writes spans on its ring through a `writer` (csrc/python/spans.c,
a few stores per span) or, for a Process's laps, from the C lap loop
(csrc/python/laps.c); the parent reads them with `TraceRing.read` at any
time, and closes the span a dead worker left open (`close_open`).
"""
from __future__ import annotations

import os
import struct

from .._shmp_cffi import ffi, lib
from .._spans import writer as _writer
from .core import OK, _attach_failed, _dup_for_child, _fd_arg, check

#: Spans each ring keeps by default (32 bytes each: 128 KiB a worker).
DEFAULT_CAPACITY = 4096
SPAN_FAILED = lib.SHMP_SPAN_IS_FAILED
SPAN_CRASHED = lib.SHMP_SPAN_IS_CRASHED
_SPAN = struct.Struct("=QQIIII")             # shmp_span (csrc/shmproc.h)
assert _SPAN.size == ffi.sizeof("shmp_span")


def _mapping(payload, rings: int, capacity: int):
    # The size comes from our own counts, never from the shared header.
    n = lib.shmp_trace_payload_size(rings, capacity)
    return ffi.gc(payload, lambda p: lib.shmp_seg_unmap(p, n))


class TraceArea:
    """`rings` trace rings of `capacity` spans in one shared segment.

    Pickles by passing its descriptor (as ControlArray does), so a spawn
    or forkserver worker maps the same rings.
    """

    __slots__ = ("fd", "rings", "capacity", "_payload", "__weakref__")

    def __init__(self, fd: int, rings: int, capacity: int, payload):
        self.fd = fd
        self.rings = rings
        self.capacity = capacity
        self._payload = payload

    @classmethod
    def create(cls, rings: int, capacity: int = DEFAULT_CAPACITY) -> "TraceArea":
        if lib.shmp_trace_payload_size(rings, capacity) == 0:
            raise ValueError(f"a trace area holds 1 to 65536 rings of a power-of-two capacity "
                             f"from 16 to 2**20 spans, not {rings} rings of {capacity}")
        fd, p = ffi.new("int *"), ffi.new("void **")
        check(lib.shmp_trace_create(rings, capacity, fd, p), f"creating {rings} trace rings")
        return cls(fd[0], rings, capacity, _mapping(p[0], rings, capacity))

    @classmethod
    def attach(cls, fd: int) -> "TraceArea":
        """Map the trace area behind `fd`; takes ownership of `fd` (closed on failure)."""
        p = ffi.new("void **")
        rings, cap = ffi.new("uint32_t *"), ffi.new("uint32_t *")
        rc = lib.shmp_trace_attach(_fd_arg(fd), p, rings, cap)
        if rc != OK:
            try:
                _attach_failed(rc, fd, "attaching a trace area")
            finally:
                os.close(fd)
        return cls(fd, rings[0], cap[0], _mapping(p[0], rings[0], cap[0]))

    def ring(self, index: int) -> "TraceRing":
        return TraceRing(self, index)

    def close(self):
        """Close the descriptor; the mapping goes when the last ring reference does."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __reduce__(self):
        return _attach_area, (_dup_for_child(self.fd, "a trace area"),)


def null_writer(pid: int):
    """A writer with the same calls that records nothing (tracing is off)."""
    return _writer(None, 0, DEFAULT_CAPACITY, pid)


def _attach_area(dupfd):
    return TraceArea.attach(dupfd.detach())


class TraceRing:
    """One worker slot's ring of spans."""

    __slots__ = ("area", "index", "ring", "capacity")

    def __init__(self, area: TraceArea, index: int):
        if not 0 <= index < area.rings:
            raise IndexError(f"trace ring {index} of {area.rings}")
        out = ffi.new("shmp_trace **")
        check(lib.shmp_trace_get(area._payload, area.rings, area.capacity, index, out),
              "locating a trace ring")
        self.area = area                        # keeps the mapping alive
        self.index = index
        self.ring = out[0]
        self.capacity = area.capacity

    def writer(self, pid: int):
        """This process's span writer on the ring (csrc/python/spans.c)."""
        return _writer(self, self.address, self.capacity, pid)

    @property
    def address(self) -> int:
        return int(ffi.cast("uintptr_t", self.ring))

    def begin(self, label: int, start_ns: int, pid: int = 0, lap: int = 0):
        check(lib.shmp_trace_begin(self.ring, self.capacity, start_ns, label, pid, lap),
              "beginning a span")

    def end(self, end_ns: int, flags: int = 0):
        check(lib.shmp_trace_end(self.ring, self.capacity, end_ns, flags), "ending a span")

    def close_open(self, end_ns: int, flags: int = SPAN_CRASHED):
        """End the span the ring's (dead) writer left open, if any."""
        check(lib.shmp_trace_close_open(self.ring, self.capacity, end_ns, flags),
              "closing a dead worker's span")

    def read(self):
        """(spans, written): the ring's spans, oldest first, as tuples
        (start_ns, end_ns, label, flags, pid, lap) — end_ns 0 for an open
        one — and how many were ever begun (written - len(spans) were
        overwritten, or dropped as damaged)."""
        return self.snapshot().read()

    def snapshot(self) -> "SpanSnapshot":
        """The ring's spans as they are now, copied out (so the segment
        can be unmapped: a finished pool or run keeps this instead)."""
        written = ffi.new("uint64_t *")
        check(lib.shmp_trace_read(self.ring, self.capacity, ffi.NULL, 0, written),
              "reading a trace ring")
        room = min(written[0], self.capacity)          # only what was written: no big zeroed buffer
        out = ffi.new("shmp_span[]", max(room, 1))
        n = lib.shmp_trace_read(self.ring, self.capacity, out, room, written)
        check(n if n < 0 else OK, "reading a trace ring")
        return SpanSnapshot(self.index, ffi.buffer(out, n * _SPAN.size)[:], written[0],
                            self.tallies())

    def end_tally(self, end_ns: int, flags: int = 0):
        check(lib.shmp_trace_end_tally(self.ring, self.capacity, end_ns, flags), "ending a span")

    def tallies(self) -> list:
        """[(count, total_ns, failed)] for labels 0..7 over every span ended
        with a tally (a Process's sections), however many the ring overwrote."""
        n = 3 * lib.SHMP_TRACE_TALLY_LABELS
        out = ffi.new("uint64_t[]", n)
        check(lib.shmp_trace_tallies(self.ring, out, n), "reading a trace ring's tallies")
        return [tuple(out[i:i + 3]) for i in range(0, n, 3)]


class SpanSnapshot:
    """A ring's spans copied out of shared memory (TraceRing.snapshot)."""

    __slots__ = ("index", "data", "written", "_tallies")

    def __init__(self, index: int, data: bytes, written: int, tallies: list):
        self.index, self.data, self.written, self._tallies = index, data, written, tallies

    def read(self):
        """As TraceRing.read."""
        return list(_SPAN.iter_unpack(self.data)), self.written

    def tallies(self) -> list:
        """As TraceRing.tallies."""
        return self._tallies

    def close_open(self, end_ns: int, flags: int = 0):
        """Nothing is open in a copy (it was taken once its writer ended)."""
