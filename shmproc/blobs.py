"""Out-of-band records: large items in their own shared segments.

A record too big for a ring, or carrying large contiguous buffers (numpy
arrays), is copied once into a *blob* segment; only a small descriptor
travels through the ring.  The consumer opens the producer's descriptor of
the blob (Linux: /proc/PID/fd/N, see csrc/platform.c), maps it, and builds
the object on read-only views of the mapping: no copy on that side.

The zero-copy lifetime problem, and how it is solved
----------------------------------------------------
The producer must keep its descriptor open until a consumer has opened it,
and may reuse the blob's (already faulted-in) pages only once no consumer
view is left.  Both facts live in one 32-bit word at the start of the blob:

    PUBLISHED (0) --consumer maps it--> OPENED (1) --last view dies--> RELEASED (2)

The consumer's mapping is owned by a cffi gc object that every view keeps
alive (native._mapping); its destructor stores RELEASED and unmaps.  The
producer sweeps its blobs now and then: OPENED ones no longer hold up its
exit; RELEASED ones go to a small free list and are reused for the next
large item of a similar size.  Fresh shared pages cost ~3.5 µs each to
fault in here, so reuse turns a 64 MB put from ~90 ms into a memcpy.

Like multiprocessing.Queue's feeder thread, a producing process waits at
exit until its blobs were at least OPENED (at most EXIT_FLUSH_TIMEOUT),
unless the token's owner opted out (Queue.cancel_join_thread).
"""
from __future__ import annotations

import os
import struct
import threading
import time
from multiprocessing import util as _mp_util

from . import native
from .native import lib

__all__ = ["BlobPool", "pool", "PEER_FD_OK", "EXIT_FLUSH_TIMEOUT", "encode", "decode", "LOST"]

PUBLISHED, OPENED, RELEASED = 0, 1, 2

#: Seconds a producing process waits at exit for its blobs to be opened.
EXIT_FLUSH_TIMEOUT = 60.0
#: Released blobs kept for reuse, and their total size at most.
MAX_FREE_BLOBS = 4
MAX_FREE_BYTES = 512 * 1024 * 1024
#: Opened blobs whose descriptor is kept (for reuse once released); past
#: this, the oldest ones are closed so descriptors stay bounded.
MAX_OPENED_KEPT = 64

PEER_FD_OK = bool(lib.shmp_platform_features() & lib.SHMP_FEAT_PEER_FD)

# Blob layout: [state word | pad to 64][main payload][buffers, each where its
# source sits within a page (see native.copy_offset)]
HEADER = 64
_STATE = 0
# Descriptor: pid, fd, blob size, main length, main kind, buffer count;
# then (offset, length) per buffer.
DESC = struct.Struct("<iiQQII")
DESC_BUF = struct.Struct("<QQ")


def _align64(n: int) -> int:
    return (n + 63) & ~63


def _granule(n: int) -> int:
    # Round sizes up to 1/16 of their power of two (>= 64 KiB), so arrays
    # of similar size share blobs without wasting more than ~6%.
    g = max(64 * 1024, 1 << max(0, n.bit_length() - 5))
    return (n + g - 1) // g * g


class BlobPool:
    """Blobs this process produced: in flight, and free for reuse."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight: list = []       # (blob, token): published or opened
        self.free: list = []            # released blobs, ready for reuse
        self.registered = False

    def acquire(self, need: int):
        """A blob with at least `need` payload bytes, reused when possible."""
        with self.lock:
            for i, blob in enumerate(self.free):
                if need <= blob.size <= need + need // 4 + 65536:
                    del self.free[i]
                    blob.store_word(_STATE, PUBLISHED)
                    return blob
        return native.Blob.create(_granule(need))

    def publish(self, blob, token):
        with self.lock:
            self.in_flight.append((blob, token))
            if not self.registered:
                # Runs at interpreter exit and at the end of a
                # multiprocessing child (which skips atexit).
                _mp_util.Finalize(None, self.flush_at_exit, exitpriority=-10)
                self.registered = True

    def sweep(self):
        """Recycle released blobs, bound the opened ones; cheap when idle."""
        with self.lock:
            keep, opened = [], 0
            for blob, token in reversed(self.in_flight):     # newest first
                state = blob.load_word(_STATE)
                if state == RELEASED:
                    self._recycle(blob)
                elif state == OPENED and opened >= MAX_OPENED_KEPT:
                    blob.close_fd()                          # the consumer has its own mapping
                else:
                    opened += state == OPENED
                    keep.append((blob, token))
            keep.reverse()
            self.in_flight = keep

    def _recycle(self, blob):
        free_bytes = sum(b.size for b in self.free)
        if len(self.free) < MAX_FREE_BLOBS and free_bytes + blob.size <= MAX_FREE_BYTES:
            self.free.append(blob)
        else:
            blob.close_fd()

    def wait_opened(self, token, deadline) -> bool:
        """Wait until every blob of `token` (all, if None) was opened by a consumer."""
        while True:
            self.sweep()
            with self.lock:
                waiting = [b for b, t in self.in_flight
                           if (token is None or t is token) and t.wait
                           and b.load_word(_STATE) == PUBLISHED]
            if not waiting:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            waiting[0].wait_word(_STATE, PUBLISHED, int(min(left, 0.1) * 1e9))

    def flush_at_exit(self):
        self.wait_opened(None, time.monotonic() + EXIT_FLUSH_TIMEOUT)
        self.close_all()

    def trim(self):
        """Drop the free list (Queue.close and tests call this)."""
        with self.lock:
            free, self.free = self.free, []
        for blob in free:
            blob.close_fd()

    def republish(self, fd: int) -> bool:
        """The reader of blob `fd` died before releasing it: mark it unread so
        a new reader can open it.  False if we no longer hold it."""
        with self.lock:
            for blob, _ in self.in_flight:
                if blob.fd == fd:
                    blob.store_word(_STATE, PUBLISHED)
                    return True
        return False

    def discard(self, fd: int):
        """Forget blob `fd` (its record will never be read): close our descriptor."""
        with self.lock:
            mine = [b for b, _ in self.in_flight if b.fd == fd]
            self.in_flight = [(b, t) for b, t in self.in_flight if b.fd != fd]
        for blob in mine:
            blob.close_fd()

    def drop(self, token):
        """Close our descriptors of `token`'s blobs: their reader is gone."""
        with self.lock:
            mine = [b for b, t in self.in_flight if t is token]
            self.in_flight = [(b, t) for b, t in self.in_flight if t is not token]
        for blob in mine:
            blob.close_fd()

    def close_all(self):
        with self.lock:
            blobs = [b for b, _ in self.in_flight] + self.free
            self.in_flight, self.free = [], []
        for blob in blobs:
            blob.close_fd()

    def after_fork_in_child(self):
        # The child holds copies of the parent's descriptors; they are the
        # parent's business, so the child just closes its copies.
        self.lock = threading.Lock()
        self.registered = False
        self.close_all()


pool = BlobPool()
os.register_at_fork(after_in_child=pool.after_fork_in_child)


class FlushToken:
    """Per-queue switch: does this queue's producer wait at exit?"""

    __slots__ = ("wait",)

    def __init__(self):
        self.wait = True


def encode(main: bytes, kind: int, raws, token) -> bytes:
    """Copy `main` and the buffers `raws` into a blob; returns its descriptor."""
    layout = []
    off = _align64(HEADER + len(main))
    for raw in raws:
        off = native.copy_offset(off, raw)
        layout.append((off, raw.nbytes))
        off = _align64(off + raw.nbytes)
    blob = pool.acquire(off)
    view = memoryview(blob.buffer)
    view[HEADER:HEADER + len(main)] = main
    for raw, (o, n) in zip(raws, layout):
        view[o:o + n] = raw
    view.release()
    pool.publish(blob, token)
    desc = DESC.pack(os.getpid(), blob.fd, blob.size, len(main), kind, len(layout))
    return desc + b"".join(DESC_BUF.pack(o, n) for o, n in layout)


class _Lost:
    __slots__ = ()

    def __repr__(self):
        return "<lost out-of-band item>"


#: Returned by decode() when the producer died before the item was opened.
LOST = _Lost()


def decode(record, copy: bool):
    """Descriptor -> (main view, kind, buffers) or LOST."""
    if len(record) < DESC.size:
        raise native.CorruptSharedMemoryError("truncated out-of-band descriptor")
    pid, fd, size, main_len, kind, nbufs = DESC.unpack_from(record)
    if len(record) != DESC.size + nbufs * DESC_BUF.size:
        raise native.CorruptSharedMemoryError("out-of-band descriptor has a bad length")
    try:
        peer_fd = native.open_peer_fd(pid, fd)
    except ProcessLookupError:
        return LOST
    try:
        blob = native.Blob.attach(peer_fd, release_word=_STATE, release_value=RELEASED)
    finally:
        os.close(peer_fd)
    blob.store_word(_STATE, OPENED)      # the producer may stop waiting for it
    if blob.size != size or HEADER + main_len > size:
        raise native.CorruptSharedMemoryError("out-of-band descriptor does not match its segment")
    view = memoryview(blob.buffer).toreadonly()
    buffers = []
    for i in range(nbufs):
        o, n = DESC_BUF.unpack_from(record, DESC.size + i * DESC_BUF.size)
        if o < HEADER or o + n > size:
            raise native.CorruptSharedMemoryError("out-of-band buffer outside its segment")
        part = view[o:o + n]
        buffers.append(bytearray(part) if copy else part)
    return view[HEADER:HEADER + main_len], kind, buffers
