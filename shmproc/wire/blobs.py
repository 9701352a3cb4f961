"""Out-of-band records: large items in their own shared segments.

A record too big for a ring, or carrying large contiguous buffers (numpy
arrays), is copied once into a *blob* segment; only a small descriptor
travels through the ring.  The consumer opens the producer's descriptor of
the blob (Linux: /proc/PID/fd/N, see csrc/platform.c), maps it, and builds
the object on writable copy-on-write views of it (layout.reader_views): no
copy on that side, and a write stays in the reader's process.

The zero-copy lifetime problem, and how it is solved
----------------------------------------------------
The producer must keep its descriptor open until a consumer has opened it,
and may reuse the blob's (already faulted-in) pages only once no process
maps it any more.  The blob's header says where it stands:

    state  PUBLISHED (0) --a consumer claims it--> OPENED (1)
                         --the last mapping in any process dies--> RELEASED (2)
    refs   how many mappings (in any process) hold a lease on it
    nonce  64 random bits, new at each publication, also in the descriptor
    waiters  threads asleep on `state` (a producer waiting at exit): a
             claim or release makes a wake-up syscall only if there are any

A consumer first checks, without writing anything, that the segment its
descriptor names is a blob of the right size whose nonce matches: a
corrupt descriptor, or a dead producer's process id now used by another
shmproc process, can then never touch someone else's item.  Only then does
it claim the blob (an atomic PUBLISHED -> OPENED) and count its mapping in
`refs` (native.Blob.claim).  Every view keeps the mapping alive; when the
last one dies the mapping counts itself out, and the mapping that takes
`refs` to zero stores RELEASED.  A fork copies mappings into the child, so
each leased mapping counts once more before any fork (_native/memory.py): a view a
fork child inherited never changes under it.  The producer sweeps its
blobs now and then: RELEASED ones go to a small free list and are reused
for the next large item of a similar size.  Fresh shared pages cost ~3.5 µs
each to fault in here, so reuse turns a 64 MB put from ~90 ms into a memcpy.

A put that fails after the blob was written (queue full, timeout, closed
queue, Ctrl-C) retracts it: nobody ever saw its descriptor, so it goes
straight back to the free list.

Like multiprocessing.Queue's feeder thread, a producing process waits at
exit until its blobs were at least OPENED (at most EXIT_FLUSH_TIMEOUT),
unless the token's owner opted out (Queue.cancel_join_thread).  It does
not wait for an item whose record a consumer already took from the ring
but never opened (that consumer died): TAKEN_GRACE after the record was
seen taken, the item is given up.
"""
from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from typing import Any, Callable, Sequence

from ..common import faults
from ..common.errors import CorruptSharedMemoryError
from .. import _native as native
from . import layout
from ..common import lifecycle

__all__ = ["BlobPool", "pool", "PEER_FD_OK", "EXIT_FLUSH_TIMEOUT", "encode", "encode_blob",
           "decode", "LOST"]

PUBLISHED, OPENED, RELEASED = 0, 1, 2

#: Seconds a producing process waits at exit for its blobs to be opened.
EXIT_FLUSH_TIMEOUT = 60.0
#: Seconds an item whose record was taken from its ring may stay unopened
#: before the producer stops waiting for it (its consumer died).
TAKEN_GRACE = 1.0
#: Released blobs kept for reuse, and their total size at most.
MAX_FREE_BLOBS = 4
MAX_FREE_BYTES = 512 * 1024 * 1024
#: Opened blobs whose descriptor is kept (for reuse once released); past
#: this, the oldest ones are closed so descriptors stay bounded.
MAX_OPENED_KEPT = 64

PEER_FD_OK = native.PEER_FD_OK

# Blob layout: [state u32 | refs u32 | nonce u64 | descriptor crc u32 |
# waiters u32 | pad to 64][main payload][buffers, each where its source sits
# within a page (see native.copy_offset)].  The crc covers everything the
# descriptor says after (pid, fd): a descriptor altered in any field is
# refused.
HEADER = 64
_STATE, _REFS, _NONCE, _CRC, _WAITERS = 0, 4, 8, 16, 20
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
# Descriptor: pid, fd, blob size, main length, main kind, buffer count,
# nonce; then (offset, length) per buffer.
DESC = struct.Struct("<iiQQIIQ")
DESC_BUF = layout.TABLE_ENTRY
_DESC_ID = 8                # descriptor bytes after (pid, fd): the item's identity
#: Buffers one descriptor may carry (a bound on what a decoder accepts).
MAX_BUFFERS = 1 << 16


def _granule(n: int) -> int:
    # Round sizes up to 1/16 of their power of two (>= 64 KiB), so arrays
    # of similar size share blobs without wasting more than ~6%.
    g = max(64 * 1024, 1 << max(0, n.bit_length() - 5))
    return (n + g - 1) // g * g


class Sent:
    """One published blob: whose it is, and where its descriptor went."""

    __slots__ = ("blob", "token", "nonce", "ring", "ring_id", "seq", "taken_at")

    def __init__(self, blob: native.Blob, token: FlushToken, nonce: int) -> None:
        self.blob = blob
        self.token = token
        self.nonce = nonce
        self.ring: Any = None       # the ring its descriptor was put on (put_tracked)
        self.ring_id: tuple[int, int] | None = None  # its (st_dev, st_ino): who else holds it
        self.seq = 0                # records put on that ring before it
        self.taken_at: float | None = None   # when its record was first seen taken

    def record_taken(self) -> bool:
        ring = self.ring
        if ring is None or ring.closed:
            return False
        taken: int = ring.taken()
        return taken > self.seq


class BlobPool:
    """Blobs this process produced: in flight, and free for reuse."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight: list[Sent] = []     # published or opened
        self.free: list[native.Blob] = []   # released blobs, ready for reuse
        self.registered = False

    def acquire(self, need: int) -> native.Blob:
        """A blob with at least `need` payload bytes, reused when possible."""
        with self.lock:
            for blob in list(self.free):
                if blob.load_word(_STATE) == OPENED:
                    # A reader holds it (it must never have come here): never
                    # write into it, let it go with its reader.
                    self.free.remove(blob)
                    blob.close_fd()
                elif need <= blob.size <= need + need // 4 + 65536:
                    self.free.remove(blob)
                    return blob
        fresh: native.Blob = native.Blob.create(_granule(need))
        return fresh

    def publish(self, blob: native.Blob, token: FlushToken,
                describe: Callable[[int], bytes]) -> tuple[bytes, Sent]:
        """Give `blob` a new identity, count it in flight; returns
        (descriptor, Sent), the descriptor made by describe(nonce)."""
        nonce = int.from_bytes(os.urandom(8), "little")
        desc = describe(nonce)
        view = memoryview(blob.buffer)
        _U64.pack_into(view, _NONCE, nonce)
        _U32.pack_into(view, _CRC, zlib.crc32(desc[_DESC_ID:]))
        view.release()
        blob.store_word(_REFS, 0)
        blob.store_word(_STATE, PUBLISHED, _WAITERS)    # release: the nonce and payload before it
        sent = Sent(blob, token, nonce)
        with self.lock:
            self.in_flight.append(sent)
            if not self.registered:
                # Runs at interpreter exit and at the end of a
                # multiprocessing child (which skips atexit).
                lifecycle.at_exit(self.flush_at_exit, lifecycle.FLUSH_OUT_OF_BAND)
                self.registered = True
        return desc, sent

    def retract(self, sent: Sent) -> None:
        """A put of `sent`'s descriptor failed: nobody saw it; reuse the blob."""
        with self.lock:
            try:
                self.in_flight.remove(sent)
            except ValueError:
                return
            self._recycle(sent.blob)

    def sweep(self) -> None:
        """Recycle released blobs, bound the opened ones; cheap when idle."""
        with self.lock:
            keep: list[Sent] = []
            opened = 0
            for sent in reversed(self.in_flight):     # newest first
                blob = sent.blob
                state = blob.load_word(_STATE)
                if state == RELEASED:
                    self._recycle(blob)
                elif state == OPENED and opened >= MAX_OPENED_KEPT:
                    blob.close_fd()                    # the consumer has its own mapping
                else:
                    opened += state == OPENED
                    keep.append(sent)
            keep.reverse()
            self.in_flight = keep

    def _recycle(self, blob: native.Blob) -> None:
        free_bytes = sum(b.size for b in self.free)
        if len(self.free) < MAX_FREE_BLOBS and free_bytes + blob.size <= MAX_FREE_BYTES:
            self.free.append(blob)
        else:
            blob.close_fd()

    def _unopened(self, token: FlushToken | None, now: float,
                  holders: Callable[[tuple[int, int]], bool]) -> list[Sent]:
        """Blobs of `token` (all, if None) still waiting for a live reader.
        Given up: those whose record was taken TAKEN_GRACE ago and still not
        opened (their reader died), and those on a ring no other process
        holds any more (`holders(ring_id)` says; nobody can ever read them)."""
        waiting: list[Sent] = []
        abandoned: list[Sent] = []
        with self.lock:
            for sent in self.in_flight:
                if token is not None and sent.token is not token:
                    continue
                if not sent.token.wait or sent.blob.load_word(_STATE) != PUBLISHED:
                    continue
                if sent.record_taken():
                    # Taken from the ring but not opened: its reader is
                    # opening it now, or died doing so.
                    if sent.taken_at is None:
                        sent.taken_at = now
                    elif now - sent.taken_at > TAKEN_GRACE:
                        abandoned.append(sent)
                        continue
                elif sent.ring_id is not None and not holders(sent.ring_id):
                    abandoned.append(sent)
                    continue
                waiting.append(sent)
            if abandoned:
                self.in_flight = [s for s in self.in_flight if s not in abandoned]
        for sent in abandoned:
            sent.blob.close_fd()
        return waiting

    def wait_opened(self, token: FlushToken | None, deadline: float) -> bool:
        """Wait until every blob of `token` (all, if None) was opened by a
        consumer, or can no longer be (see _unopened)."""
        holders = _HolderCheck()
        while True:
            self.sweep()
            now = time.monotonic()
            waiting = self._unopened(token, now, holders)
            if not waiting:
                return True
            left = deadline - now
            if left <= 0:
                return False
            waiting[0].blob.wait_word(_STATE, _WAITERS, PUBLISHED, int(min(left, 0.05) * 1e9))

    def flush_at_exit(self) -> None:
        self.wait_opened(None, time.monotonic() + EXIT_FLUSH_TIMEOUT)
        self.close_all()

    def trim(self) -> None:
        """Drop the free list and the descriptors of opened blobs (kept only
        for reuse: their readers hold their own mappings).  Queue.close and
        tests call this."""
        with self.lock:
            keep: list[Sent] = []
            free, self.free = self.free, []
            for sent in self.in_flight:
                if sent.blob.load_word(_STATE) == OPENED:
                    free.append(sent.blob)
                else:
                    keep.append(sent)
            self.in_flight = keep
        for blob in free:
            blob.close_fd()

    def republish(self, fd: int, nonce: int) -> bool:
        """The reader of blob (fd, nonce) died: make it readable again by a
        new reader (same descriptor, same nonce).  False if we no longer
        hold that item (its blob was released and maybe reused)."""
        with self.lock:
            for sent in self.in_flight:
                if sent.blob.fd == fd and sent.nonce == nonce:
                    if sent.blob.load_word(_STATE) == OPENED:
                        # The dead reader's lease can never be given back.
                        sent.blob.store_word(_REFS, 0)
                        sent.blob.store_word(_STATE, PUBLISHED, _WAITERS)
                    return sent.blob.load_word(_STATE) == PUBLISHED
        return False

    def discard(self, fd: int, nonce: int) -> None:
        """Forget blob (fd, nonce) (its record will never be read): close our descriptor."""
        with self.lock:
            mine = [s for s in self.in_flight if s.blob.fd == fd and s.nonce == nonce]
            self.in_flight = [s for s in self.in_flight if s not in mine]
        for sent in mine:
            sent.blob.close_fd()

    def drop(self, token: FlushToken) -> None:
        """Close our descriptors of `token`'s blobs: their reader is gone."""
        with self.lock:
            mine = [s.blob for s in self.in_flight if s.token is token]
            self.in_flight = [s for s in self.in_flight if s.token is not token]
        for blob in mine:
            blob.close_fd()

    def close_all(self) -> None:
        with self.lock:
            blobs = [s.blob for s in self.in_flight] + self.free
            self.in_flight, self.free = [], []
        for blob in blobs:
            blob.close_fd()

    def after_fork_in_child(self) -> None:
        # The child holds copies of the parent's descriptors; they are the
        # parent's business, so the child just closes its copies.
        self.lock = threading.Lock()
        self.registered = False
        self.close_all()


pool = BlobPool()
lifecycle.at_fork(after_in_child=pool.after_fork_in_child)


class _HolderCheck:
    """Does any other process hold a descriptor of ring (dev, ino)?

    A queue's readers hold its ring's descriptor; when no other process
    does, an item still in the ring can never be read, and a producer
    waiting at exit for it stops waiting.  Found by a scan of
    /proc/*/fd (milliseconds), made at most every HOLDER_CHECK_S per ring
    and only while a producer waits.  Where /proc cannot say (another OS),
    readers are assumed alive.
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[int, int], tuple[bool, float]] = {}   # ring id -> (answer, when)

    def __call__(self, ring_id: tuple[int, int]) -> bool:
        now = time.monotonic()
        known = self.seen.get(ring_id)
        if known is not None and now - known[1] < HOLDER_CHECK_S:
            return known[0]
        answer = _held_elsewhere(ring_id)
        self.seen[ring_id] = (answer, now)
        return answer


HolderCheck = _HolderCheck       # for channels/chain.py: who else holds a ring


#: How often a producer waiting at exit looks for its queues' readers.
HOLDER_CHECK_S = 0.25


def _held_elsewhere(ring_id: tuple[int, int]) -> bool:
    dev, ino = ring_id
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True
    for pid in pids:
        if pid == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except PermissionError:
            # Another user's process cannot hold our segments; one of ours
            # that we may not look into (not dumpable) may be a reader.
            try:
                if os.stat(f"/proc/{pid}").st_uid == os.geteuid():
                    return True
            except OSError:
                pass
            continue
        except OSError:
            continue                # gone
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if st.st_ino == ino and st.st_dev == dev:
                return True
    return False


class FlushToken:
    """Per-queue switch: does this queue's producer wait at exit?"""

    __slots__ = ("wait",)

    def __init__(self) -> None:
        self.wait = True


def encode_blob(main: bytes, kind: int, raws: Sequence[memoryview],
                token: FlushToken) -> tuple[bytes, Sent]:
    """Copy `main` and the buffers `raws` into a published blob; returns
    (descriptor, Sent).  Retract the Sent if the descriptor is never put."""
    places, end = layout.place(HEADER + len(main), raws)
    blob = pool.acquire(end)
    view = memoryview(blob.buffer)
    view[HEADER:HEADER + len(main)] = main
    layout.copy_in(view, raws, places)
    view.release()
    tail = layout.table(places)
    pid = os.getpid()
    return pool.publish(blob, token, lambda nonce: DESC.pack(
        pid, blob.fd, blob.size, len(main), kind, len(places), nonce) + tail)


def encode(main: bytes, kind: int, raws: Sequence[memoryview], token: FlushToken) -> bytes:
    """Copy `main` and the buffers `raws` into a blob; returns its descriptor."""
    return encode_blob(main, kind, raws, token)[0]


class _Lost:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<lost out-of-band item>"


#: Returned by decode() when the item's producer is gone (it exited before
#: the item was opened, so its process id or descriptor no longer names it).
LOST = _Lost()


def _corrupt(what: str) -> CorruptSharedMemoryError:
    return CorruptSharedMemoryError(f"out-of-band descriptor {what}")


def _layout(record: Any, size: int, main_len: int, nbufs: int) -> list[tuple[int, int]]:
    """The buffers' (offset, length), checked against the blob's size."""
    if HEADER + main_len > size:
        raise _corrupt(f"says its {main_len}-byte main part fits a {size}-byte segment")
    return layout.read_table(
        record, DESC.size, nbufs, HEADER + main_len, size,
        lambda i, o, n: _corrupt(f"puts buffer {i} ({n} bytes at {o}) outside its "
                                 f"{size}-byte segment"))


def decode(record: Any, copy: bool) -> Any:
    """Descriptor -> (main view, kind, buffers) or LOST.

    Everything is checked before anything is written to the segment: the
    descriptor's own lengths, then that the segment it names is a blob of
    the stated size holding the stated nonce, unclaimed.
    """
    if len(record) < DESC.size:
        raise _corrupt(f"is truncated ({len(record)} bytes, at least {DESC.size} needed)")
    pid, fd, size, main_len, kind, nbufs, nonce = DESC.unpack_from(record)
    if nbufs > MAX_BUFFERS or len(record) != DESC.size + nbufs * DESC_BUF.size:
        raise _corrupt(f"has a bad length ({len(record)} bytes for {nbufs} buffers)")
    if size < HEADER:
        raise _corrupt(f"names a {size}-byte segment, smaller than a blob header")
    places = _layout(record, size, main_len, nbufs)
    if pid <= 0 or fd < 0:
        raise _corrupt(f"names process {pid} descriptor {fd}")
    try:
        peer_fd = native.open_peer_fd(pid, fd)
    except (ProcessLookupError, OSError):
        return LOST             # gone, or something that is no segment (a socket, ...)
    try:
        try:
            blob = native.Blob.attach(peer_fd)
        except (ValueError, OSError):   # CorruptSharedMemoryError included
            return LOST             # that descriptor is not a shmproc blob (any more)
        if not _claim(blob, record, size, nonce):
            return LOST         # not this item: its producer is gone, its pid reused
        faults.point("blob.claimed")
        # The buffers: writable private views (layout.reader_views), which
        # hold the blob's mapping, and so its lease, while any of them lives.
        buffers = layout.reader_views(blob.buffer, places, peer_fd, copy)
    finally:
        os.close(peer_fd)
    main = memoryview(blob.buffer).toreadonly()[HEADER:HEADER + main_len]
    return main, kind, buffers


def _claim(blob: native.Blob, record: Any, size: int, nonce: int) -> bool:
    """Check that `blob` holds the item `record` describes, then claim it;
    False if it holds another; CorruptSharedMemoryError if it is claimed."""
    view = memoryview(blob.buffer)
    try:
        # acquire load of the state first: the nonce was written before it.
        state = blob.load_word(_STATE)
        if blob.size != size or _U64.unpack_from(view, _NONCE)[0] != nonce \
                or _U32.unpack_from(view, _CRC)[0] != zlib.crc32(record[_DESC_ID:]):
            return False
        if state != PUBLISHED:
            raise _corrupt("names an item another reader already claimed")
        try:
            blob.claim(_STATE, _REFS, _WAITERS, PUBLISHED, OPENED, RELEASED)
        except RuntimeError:
            raise _corrupt("names an item another reader already claimed") from None
    finally:
        view.release()
    return True
