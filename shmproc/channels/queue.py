"""shmproc.Queue: a multiprocessing.Queue work-alike on a shared-memory ring.

    producer process                          consumer process
    ----------------                          ----------------
    put(obj) ─ wire.dumps ─┬─ small: record ──► ring ──► get ─ wire.loads ─► obj
                           └─ large: blob segment (one copy)
                                      descriptor ─► ring ──► open blob, ack,
                                                             copy-on-write views ─► obj

No feeder thread and no pipe: ``put`` copies the record into the ring and
returns; ``get`` copies it out.  Each side of the ring is serialised by a
robust process-shared lock (csrc/lock.c), so any number of producers and
consumers may share a queue and a process killed mid-operation never
wedges the others; a producer never waits for a consumer's lock or the
reverse.

Growing.  An unbounded queue (maxsize=0) never fills, as
multiprocessing.Queue never does: when its ring stays full it seals it
behind a new one, and consumers follow (chain.py, with the essay).  A
ring that does not fill costs what it always did.

Large objects.  A record bigger than a quarter of the ring, or any
contiguous buffer of at least wire.OOB_THRESHOLD bytes (numpy arrays),
goes out-of-band through its own shared segment (see blobs.py): one copy
on the producer side, writable zero-copy (copy-on-write) views on the
consumer side (``copy=True`` for private copies).  Like multiprocessing.Queue, whose
feeder thread must flush before exit, a producing process waits at exit
until its large items were picked up (at most blobs.EXIT_FLUSH_TIMEOUT
seconds); ``cancel_join_thread()`` skips the wait.  A large item whose
producer died before any consumer opened it is lost with that producer;
``get`` skips it and counts it in ``lost_items``.
"""
from __future__ import annotations

import os
import pickle
import queue as _stdlib_queue
import time
from typing import Any, Generic, Iterable

from ..wire import blobs, pickling as wire
from ..common import faults
from .. import _native as native
from ..wire.blobs import EXIT_FLUSH_TIMEOUT, LOST
from .._native import EEMPTY, EFULL, EINTR, ESEALED, ESMALLBUF, ETIMEDOUT, OK
from .chain import Chain, Moving
from .waits import (blocking_timeout as _blocking_timeout, deadline as _deadline,
                    left_ns as _left_ns, try_room as _try_room)
from .records import (NOTHING, TAG_BLOB, TAG_BYTES, TAG_PICKLE, TAG_STR, Failed, Item, Raw,
                      corrupt_pickle, decode_small, unpickle)

__all__ = ["Queue", "DEFAULT_CAPACITY", "EXIT_FLUSH_TIMEOUT"]

#: Default ring size.  Records up to a quarter of it travel in the ring.
DEFAULT_CAPACITY = 4 * 1024 * 1024
MIN_CAPACITY = 4096
MAX_CAPACITY = 1 << 36

#: A blocking put that finds an unbounded queue's ring full waits this long
#: for room before it grows the queue.  A new ring costs its page faults
#: (~1 ms a MiB here), so a consumer that keeps up is not made to pay for
#: rings it would drain at once; the wait is no longer than growing costs,
#: and a put still never waits for a consumer that is not coming.
GROW_AFTER_NS = 2_000_000

_SCRATCH_START = 64 * 1024
_MANY_MAX = 1024            # get_many arrays kept per scratch buffer


def _round_capacity(capacity: int) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int number of bytes, not {type(capacity).__name__}")
    if capacity < MIN_CAPACITY:
        raise ValueError(f"capacity must be at least {MIN_CAPACITY} bytes, got {capacity}")
    if capacity > MAX_CAPACITY:
        raise ValueError(f"capacity must be at most {MAX_CAPACITY} bytes, got {capacity}")
    return 1 << (capacity - 1).bit_length()     # next power of two


# ---- the queue ----------------------------------------------------------------

_JUST_BYTES = {bytes}
_UNSENT = (1 << 64) - 1        # no record number yet (see _put_blob)
_dumps = wire.dumps
_loads = pickle.loads
_unpack = native.unpack
_pool = blobs.pool


def _Scratch(size: int) -> Any:
    """A reusable receive buffer (one per concurrent getter)."""
    return native.RecvBuffer(size, _MANY_MAX)


def _many(side: str, name: str) -> bool:
    if side not in ("one", "many"):
        raise ValueError(f"{name} must be 'one' or 'many', not {side!r}")
    return side == "many"


class Queue(Moving, Generic[Item]):
    """A process-safe FIFO queue in shared memory, compatible with multiprocessing.Queue.

    ``maxsize`` bounds the number of items (0: unbounded); ``capacity`` is
    the ring size in bytes (rounded up to a power of two, default 4 MiB).
    A bounded queue's ring bounds the bytes of small items in flight; an
    unbounded one never fills: it chains further rings when its ring is
    full and gives them back once drained (chain.py).  Pass the queue to
    processes as an argument (fork, spawn or forkserver) or send it
    through another queue.

    Private, for shmproc's own queues: ``_producers="one"`` (or
    ``_consumers="one"``) makes that side of the ring lock-free (csrc/ring.c)
    for a caller that guarantees one thread of one process at a time on it
    (puts, or gets, never overlap; handing the side over to another
    process is fine once the first has stopped or died).  Nothing checks
    it: two at once corrupt the queue.  A single side keeps no journal, so
    a process killed inside a get may leave qsize() one high for good:
    use single sides with maxsize=0.  The default, ``"many"``, is the
    robust locked side.  A queue with a single side does not grow: its
    ring's room is the flow control the pool relies on.
    """

    def __init__(self, maxsize: int = 0, *, capacity: int | None = None,
                 _producers: str = "many", _consumers: str = "many") -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 (0 means unbounded), got {maxsize}")
        cap = DEFAULT_CAPACITY if capacity is None else _round_capacity(capacity)
        producers, consumers = _many(_producers, "_producers"), _many(_consumers, "_consumers")
        if maxsize == 0 and producers and consumers and blobs.PEER_FD_OK:
            # Unbounded: grows instead of filling.  Growing needs to open the
            # rings other processes made (peer descriptors); without them (the
            # portable layer) the queue is one ring and put waits for room.
            chain, ring = Chain.create(cap)
        else:
            chain, ring = None, native.Ring.create(cap, multi_producer=producers,
                                                   multi_consumer=consumers, max_items=maxsize)
        self._setup(ring, maxsize, chain)

    def _setup(self, ring: Any, maxsize: int, chain: Chain | None = None) -> None:
        self._chain = chain
        self._use_producer(ring)
        self._use_consumer(ring)
        # Ring-level timeout of a put: a growing queue first tries (a try
        # reads no clock), then waits GROW_AFTER_NS for room, then grows.
        self._room_wait = -1 if chain is None else 0
        self._room_timeout = _blocking_timeout if chain is None else _try_room
        self._maxsize = maxsize
        self._inband_max = min(ring.max_record, ring.capacity // 4)
        self._closed = False
        self._token = blobs.FlushToken()
        self._scratch: list[Any] = []   # free list of _Scratch, one taken per get
        self._lost = 0
        self._backlog: list[Any] = []   # items of a batch taken behind one that failed
        st = os.fstat(ring.fd if chain is None else chain.board.fd)
        self._ring_id = (st.st_dev, st.st_ino)      # who else holds it: blobs._HolderCheck

    @property
    def _ring(self) -> Any:
        """The ring producers put into now (tests and tools reach the ring here)."""
        return self._prod

    # -- pickling: hand the ring's descriptor to the other process ------------
    def __reduce__(self) -> tuple[Any, ...]:
        if self._closed:
            raise ValueError("this shmproc.Queue was closed in this process and cannot be "
                             "passed to another process; pass it before calling close()")
        from multiprocessing.reduction import DupFd
        chain = self._chain
        if chain is not None:
            return _rebuild_grown, (chain.board, chain.capacity, DupFd(self._cons.fd),
                                    chain.gen_of(self._cons))
        return _rebuild_queue, (DupFd(self._prod.fd), self._maxsize)

    # -- introspection ------------------------------------------------------------
    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.qsize()} items"
        return f"<shmproc.Queue maxsize={self._maxsize} capacity={self.capacity} {state}>"

    @property
    def capacity(self) -> int:
        """Ring size in bytes (of the first ring, for a queue that grew)."""
        return self._chain.capacity if self._chain is not None else self._prod.capacity

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def lost_items(self) -> int:
        """Large items skipped by this handle because their producer died first."""
        return self._lost

    def qsize(self) -> int:
        """Approximate number of items queued (exact when nothing runs concurrently)."""
        ring = self._only_ring()
        if ring is not None:
            return ring.count()             # type: ignore[no-any-return]  # one C call
        self._check_open()
        return sum(ring.count() for ring in self._rings())

    def empty(self) -> bool:
        ring = self._only_ring()
        if ring is not None:
            return ring.used_bytes() == 0   # type: ignore[no-any-return]
        self._check_open()
        return all(ring.used_bytes() == 0 for ring in self._rings())

    def full(self) -> bool:
        self._check_open()
        if self._chain is not None:
            return False                    # unbounded: never full
        if self._maxsize and self._prod.count() >= self._maxsize:
            return True
        return self._prod.capacity - self._prod.used_bytes() < 64

    def _wait_readable(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for an item of a one-ring queue, not taking it:
        the pool's driver waits so, without the lock its reader takes items under."""
        if self._closed:            # (closing while a thread waits is safe: the mapping stays)
            return False
        return self._cons.wait_data(int(timeout_s * 1e9)) == native.OK

    def _sleep_until_woken(self) -> None:
        """Waits for an item sleep until woken, never re-checking: only for a reader
        whose writers' death ends it anyway (a pool worker: see pool_worker.run)."""
        if self._chain is None:
            self._cons.set_wait_slice(0)

    def _poke(self) -> None:    # the pool's lone submit (dispatch.py): its path kept short
        """Wake the reader asleep on this queue, nothing put (shmp_ring_poke)."""
        self._prod.poke()

    def _put_now(self, data: bytes) -> bool:
        """put(data, block=False) of bytes in one ring call; False: too large, no room now."""
        return len(data) <= self._inband_max and not self._put(data, len(data), TAG_BYTES, 0)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("operation on a closed shmproc.Queue")

    # -- producer -------------------------------------------------------------------
    def put(self, obj: Item, block: bool = True, timeout: float | None = None) -> None:
        """Put `obj`; with block and no timeout waits for room for ever."""
        # Hot path: kept inline on purpose (each Python call costs ~0.1 µs).
        if self._closed:
            self._check_open()
        tmo = self._room_wait if block and timeout is None else self._room_timeout(block, timeout)
        t = type(obj)
        if t is bytes:
            data, tag, bufs = obj, TAG_BYTES, None
        elif t is str:
            data, tag, bufs = obj.encode("utf-8", "surrogatepass"), TAG_STR, None  # type: ignore[attr-defined]
        else:
            data, bufs = _dumps(obj)                      # type: ignore[assignment]
            tag = TAG_PICKLE
        if bufs or len(data) > self._inband_max:            # type: ignore[arg-type]
            self._put_blob(data, tag, bufs, _deadline(tmo), block)
            return
        if _pool.in_flight:
            _pool.sweep()
        rc = self._put(data, len(data), tag, tmo)                   # type: ignore[arg-type]
        if rc:
            self._put_retry(rc, data, tag, tmo, block)

    def _put_encoded(self, data: Any, tag: int, bufs: Any = None) -> None:
        """put(block=False) of an item already encoded: `data` and its
        out-of-band buffers (channels/outbox.py encodes when told, puts later)."""
        if self._closed:
            self._check_open()
        tmo = self._room_timeout(False, None)
        if bufs or len(data) > self._inband_max:
            self._put_blob(data, tag, bufs, _deadline(tmo), False)
            return
        if _pool.in_flight:
            _pool.sweep()
        rc = self._put(data, len(data), tag, tmo)
        if rc:
            self._put_retry(rc, data, tag, tmo, False)

    def _put_blob(self, data: Any, tag: int, bufs: Any, deadline: float | None, block: bool) -> None:
        """Put a large item out-of-band; a put that fails retracts its blob."""
        if _pool.in_flight:
            _pool.sweep()
        # put_tracked writes the record's number only once the record is in
        # the ring: whatever interrupts us (Ctrl-C, a section's timeout),
        # the blob is retracted only if its descriptor never got in.
        seq = native.u64_cell(_UNSENT)
        sent = None
        try:
            desc, sent = self._to_blob(data, tag, bufs)
            faults.point("queue.blob_written")
            wait_room = block and self._chain is not None
            while True:
                ring = self._prod
                left = GROW_AFTER_NS if wait_room else _left_ns(deadline)
                rc = ring.put_tracked(desc, len(desc), TAG_BLOB, left, seq)
                if self._chain is not None and rc in (ESEALED, EFULL, ETIMEDOUT):
                    if rc == EFULL and wait_room:
                        wait_room = False   # waited once for room: now grow
                    elif rc != ETIMEDOUT:   # (ETIMEDOUT: the producer lock is busy)
                        self._next_producer(rc)
                elif rc != EINTR:           # EINTR: a signal handler ran and did not raise
                    break
            if rc == OK:
                # The exit flush needs to know when this record leaves the ring.
                sent.seq = seq[0]
                sent.ring = ring
                sent.ring_id = self._ring_id
                faults.point("queue.blob_put")
                return
            if rc == EFULL or rc == ETIMEDOUT:
                raise _stdlib_queue.Full
            native.check(rc, "putting an item on a shmproc.Queue")
        except BaseException:
            if sent is not None and seq[0] == _UNSENT:
                _pool.retract(sent)     # nobody saw its descriptor: reuse it, wait for nothing
            raise

    def _put_retry(self, rc: int, data: Any, tag: int, tmo: int, block: bool) -> None:
        deadline = _deadline(tmo)
        wait_room = block and self._chain is not None       # once, before growing
        while rc != OK:
            if self._chain is not None and (rc == ESEALED or rc == EFULL):
                if rc == EFULL and wait_room:
                    wait_room = False
                    rc = self._put(data, len(data), tag, GROW_AFTER_NS)
                    continue
                self._next_producer(rc)
            elif self._chain is not None and rc == ETIMEDOUT:
                pass                        # the producer lock is busy: wait for it, not room
            elif rc == EFULL or rc == ETIMEDOUT:
                raise _stdlib_queue.Full
            elif rc != EINTR:               # EINTR: a signal handler ran and did not raise
                native.check(rc, "putting an item on a shmproc.Queue")
            rc = self._put(data, len(data), tag, _left_ns(deadline))

    def put_nowait(self, obj: Item) -> None:
        return self.put(obj, False)

    def put_many(self, objs: Iterable[Item], block: bool = True, timeout: float | None = None) -> None:
        """Put every item of `objs` in order, published in batches.

        Much faster than a put() per item: one lock, one copy and at most
        one wake-up per batch.  If room runs out (block=False, or the
        timeout passes) raises queue.Full after the items before it were
        put; ``exc.args[1]`` is how many were put.
        """
        self._check_open()
        deadline = _deadline(self._room_timeout(block, timeout))
        objs = objs if isinstance(objs, (list, tuple)) else list(objs)
        total = len(objs)
        inband_max = self._inband_max
        if total and set(map(type, objs)) == _JUST_BYTES:
            # A batch of raw bytes: no per-item Python work at all.
            lens = list(map(len, objs))
            if max(lens) <= inband_max:
                self._put_run(objs, lens, None, deadline, 0, total, block)
                return
        done = 0
        run, lens, tags = [], [], []         # type: ignore[var-annotated]
        for obj in objs:                     # encoding inlined: this loop is the hot path
            t = type(obj)
            bufs = None
            if t is bytes:
                data, tag = obj, TAG_BYTES
            elif t is str:
                data, tag = obj.encode("utf-8", "surrogatepass"), TAG_STR  # type: ignore[union-attr]
            else:
                data, bufs = _dumps(obj)
                tag = TAG_PICKLE
            if bufs or len(data) > inband_max:              # type: ignore[arg-type]
                done += self._put_run(run, lens, tags, deadline, done, total, block)
                run, lens, tags = [], [], []
                try:
                    self._put_blob(data, tag, bufs, deadline, block)
                except _stdlib_queue.Full:
                    raise _stdlib_queue.Full(
                        f"queue full after putting {done} of {total} items", done) from None
                done += 1
                continue
            run.append(data)
            lens.append(len(data))                          # type: ignore[arg-type]
            tags.append(tag)
        self._put_run(run, lens, tags, deadline, done, total, block)

    def _put_run(self, run, lens, tags, deadline, done_before, total, block):
        if not run:
            return 0
        if _pool.in_flight:
            _pool.sweep()
        blob = b"".join(run)
        base = native.char_pointer(blob)      # `blob` keeps it alive
        n = len(run)
        clens = native.u32_array(lens)
        # tags None: all raw bytes
        ctags = native.u32_array([TAG_BYTES] * n if tags is None else tags)
        done = native.u32_cell()
        put = off = 0
        wait_room = block and self._chain is not None       # once, before growing
        while True:
            left = GROW_AFTER_NS if wait_room else _left_ns(deadline)
            rc = self._prod.put_many(base + off, clens + put, ctags + put, n - put, left, done)
            off += sum(lens[put:put + done[0]])
            put += done[0]
            if rc == OK:
                return put
            if rc == EINTR:
                continue
            if self._chain is not None and rc in (ESEALED, EFULL, ETIMEDOUT):
                if rc == EFULL and wait_room:
                    wait_room = False
                elif rc != ETIMEDOUT:       # (ETIMEDOUT: the producer lock is busy)
                    self._next_producer(rc)
                continue
            if rc in (EFULL, ETIMEDOUT):
                raise _stdlib_queue.Full(
                    f"queue full after putting {done_before + put} of {total} items",
                    done_before + put)
            native.check(rc, "putting items on a shmproc.Queue")

    def _to_blob(self, data: Any, tag: int, bufs: Any) -> Any:
        """Copy a large record out-of-band; returns (descriptor, blobs.Sent)."""
        raws = [b.raw() for b in bufs] if bufs else []
        if not blobs.PEER_FD_OK:
            raise ValueError(
                f"object needs {len(data) + sum(r.nbytes for r in raws)} bytes, more than this "
                f"queue carries in its ring ({self._inband_max}) and this platform cannot pass "
                f"large items out-of-band; create the Queue with a larger capacity=")
        return blobs.encode_blob(data, tag, raws, self._token)

    # -- consumer -------------------------------------------------------------------
    def _take_scratch(self, need: int = 0) -> Any:
        try:
            s = self._scratch.pop()
        except IndexError:
            s = None
        if s is None or s.size < need:
            s = _Scratch(max(need, _SCRATCH_START))
        return s

    def get(self, block: bool = True, timeout: float | None = None, *, copy: bool = False) -> Item:
        """Remove and return an item; with block and no timeout waits for ever.

        Large numpy arrays come back as writable copy-on-write views of
        shared memory (a write stays in this process) unless ``copy=True``,
        which gives private copies.
        """
        # Hot path: kept inline on purpose (each Python call costs ~0.1 µs).
        if self._closed:
            self._check_open()
        if self._backlog:
            item = self._from_backlog()
            if item is not NOTHING:
                return item                 # type: ignore[no-any-return]
        tmo = -1 if block and timeout is None else _blocking_timeout(block, timeout)
        scratch = self._scratch
        s = scratch.pop() if scratch else _Scratch(_SCRATCH_START)
        try:
            rc = self._get(s.ptr, s.size, tmo)
            if rc >= 0:
                tag = rc >> 32
                if tag == TAG_PICKLE:
                    # Exactly the record's bytes: what lies after them in the
                    # scratch buffer is an older item.
                    n = rc & 0xFFFFFFFF
                    try:
                        return _loads(s.view[:n])
                    except Exception as exc:
                        raise corrupt_pickle(exc, n) from exc
                if tag == TAG_BYTES:
                    return _unpack(s.cptr, rc & 0xFFFFFFFF)
            return self._get_slow(rc, s, tmo, copy)     # other kinds, errors, waiting
        finally:
            scratch.append(s)

    def _get_slow(self, rc: int, s: Any, tmo: int, copy: bool) -> Any:
        deadline = _deadline(tmo)
        while True:
            if rc >= 0:
                item = self._decode(s.view[:rc & 0xFFFFFFFF], rc >> 32, copy)
                if item is not LOST:
                    return item
            elif rc == ESMALLBUF:
                # Another consumer may have taken that record meanwhile, so ask
                # again with this buffer: the next record is either taken
                # (whatever its size, even 0) or reported with its size, never
                # consumed and dropped.
                probe = self._cons.get_into(s.ptr, s.size, 0, s.out, s.out + 1)
                if probe == OK:
                    rc = (s.out[1] << 32) | s.out[0]
                    continue
                if probe == ESMALLBUF:
                    s.resize(max(s.out[0], _SCRATCH_START))   # grow in place: get() returns it
            elif rc == ESEALED and self._chain is not None:
                self._next_consumer()
            elif rc == EEMPTY or rc == ETIMEDOUT:
                if self._chain is not None and self._cons.capacity > self._chain.capacity:
                    self._rings()           # drained after a burst: back to a ring of our size
                raise _stdlib_queue.Empty
            elif rc != EINTR:
                native.check(rc, "getting an item from a shmproc.Queue")
            rc = self._get(s.ptr, s.size, _left_ns(deadline))

    def get_nowait(self) -> Item:
        return self.get(False)

    def get_many(self, block: bool = True, timeout: float | None = None, *,
                 max_items: int = 1024, copy: bool = False) -> list[Item]:
        """Remove and return 1..max_items items in one call.

        Waits (as get does) only for the first item; the rest are whatever
        is queued at that moment.  Raises queue.Empty if none arrives.
        """
        self._check_open()
        if isinstance(max_items, bool) or not isinstance(max_items, int):
            raise TypeError(f"max_items must be an int, not {type(max_items).__name__}")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if self._backlog:
            out: list[Any] = []
            while len(out) < max_items:
                try:
                    if out and type(self._backlog[0]) is Failed:
                        break                   # raised by the next call, after these
                except IndexError:
                    break
                item = self._from_backlog()
                if item is NOTHING:
                    break
                out.append(item)
            if out:
                return out
        deadline = _deadline(_blocking_timeout(block, timeout))
        s = self._take_scratch()
        if max_items <= _MANY_MAX:
            lens, tags, count = s.many()
        else:
            lens, tags = native.u32_array(max_items), native.u32_array(max_items)
            count = native.u32_cell()
        try:
            while True:
                rc = self._cons.get_many_into(s.ptr, s.size, max_items, _left_ns(deadline),
                                              lens, tags, count)
                if rc == OK:
                    n = count[0]
                    out = self._decode_many(s.view, _unpack(lens, n), _unpack(tags, n), copy)
                    if out:
                        return out
                elif rc == ESMALLBUF:
                    s.resize(max(lens[0], _SCRATCH_START))    # grow in place
                    if max_items <= _MANY_MAX:
                        lens, tags, count = s.many()
                elif rc == ESEALED and self._chain is not None:
                    self._next_consumer()
                elif rc == EEMPTY or rc == ETIMEDOUT:
                    raise _stdlib_queue.Empty
                elif rc != EINTR:
                    native.check(rc, "getting items from a shmproc.Queue")
        finally:
            self._scratch.append(s)

    def _decode_many(self, view: Any, lens: Any, tags: Any, copy: bool) -> list[Any]:
        out: list[Any] = []
        append = out.append
        tag = tags[0]
        if tags.count(tag) == len(tags) and tag != TAG_BLOB:
            # One kind of small record, the common batch: copy the records out
            # in one go, then slice (cheaper than a memoryview per record).
            data = view[:sum(lens)].tobytes()
            off = 0
            if tag == TAG_BYTES:
                for ln in lens:
                    end = off + ln
                    append(data[off:end])
                    off = end
                return out
            view = memoryview(data)
        off = i = 0
        try:
            for i, (ln, tag) in enumerate(zip(lens, tags)):
                item = self._decode(view[off:off + ln], tag, copy)
                off += ln
                if item is not LOST:
                    append(item)
        except BaseException as exc:
            return self._after_bad_item(out, exc, view, lens, tags, i, off, copy)
        return out

    def _after_bad_item(self, good, exc, view, lens, tags, i, off, copy):
        """Item i of a batch (at offset off) raised while it was rebuilt.  The
        whole batch left the ring, so nothing may be dropped.  An error of
        the item: the items before it are returned now, the error is raised
        by the next call, the items after it follow.  An interruption
        (KeyboardInterrupt, a section's timeout): raised now, and the
        batch, item i included, is kept for the next calls."""
        bad = Raw(bytes(view[off:off + lens[i]]), tags[i], copy)
        rest, at = [], off + lens[i]
        for ln, tag in zip(lens[i + 1:], tags[i + 1:]):
            rest.append(Raw(bytes(view[at:at + ln]), tag, copy))
            at += ln
        if isinstance(exc, Exception):
            self._backlog[:0] = [Failed(exc)] + rest
            if good:
                return good
            item = self._from_backlog()         # raises exc
            return [] if item is NOTHING else [item]
        self._backlog[:0] = good + [bad] + rest
        raise exc

    def _from_backlog(self) -> Any:
        """The next item kept from a batch, or NOTHING if another thread took
        the last one first."""
        while True:
            try:
                item = self._backlog.pop(0)     # atomic: threads may share this handle
            except IndexError:
                return NOTHING
            kind = type(item)
            if kind is Failed:
                raise item.exc
            if kind is not Raw:
                return item
            try:
                value = self._decode(memoryview(item.data), item.tag, item.copy)
            except Exception:
                raise                           # the item's own error: reported, gone
            except BaseException:
                self._backlog.insert(0, item)   # interrupted: it stays first in line
                raise
            if value is not LOST:
                return value

    def _decode(self, record: Any, tag: int, copy: bool) -> Any:
        if tag != TAG_BLOB:
            return decode_small(record, tag)
        faults.point("queue.record_taken")
        out = blobs.decode(record, copy)
        if out is LOST:
            self._lost += 1
            return LOST
        main, kind, buffers = out
        if kind == TAG_PICKLE:
            return unpickle(main, buffers)
        return decode_small(main, kind)

    # -- lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        """No more puts or gets through this handle in this process.

        Releases the descriptor now; the mapping goes when the object is
        collected (so a thread still blocked in get() cannot crash).
        """
        if not self._closed:
            self._closed = True
            if self._chain is not None:
                self._chain.close()         # rings with items stay held for the exit flush
            else:
                fd, self._prod.fd = self._prod.fd, -1
                if fd >= 0:
                    os.close(fd)
        if blobs.pool.in_flight:
            blobs.pool.sweep()
        blobs.pool.trim()

    def join_thread(self) -> None:
        """Wait until the large items this handle put were picked up (after close())."""
        if not self._closed:
            raise ValueError("join_thread() is only valid after close()")
        deadline = time.monotonic() + EXIT_FLUSH_TIMEOUT
        blobs.pool.wait_opened(self._token, deadline)
        if self._chain is not None:
            self._chain.flush(deadline)

    def cancel_join_thread(self) -> None:
        """Do not wait at exit for this handle's large items to be picked up."""
        self._token.wait = False
        if self._chain is not None:
            self._chain.wait_at_exit = False

    def __enter__(self) -> Queue[Item]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rebuild_queue(dupfd: Any, maxsize: int) -> Queue[Any]:
    q = Queue.__new__(Queue)
    q._setup(native.Ring.attach(dupfd.detach()), maxsize)
    return q


def _rebuild_grown(board: Any, capacity: int, dupfd: Any, gen: int) -> Queue[Any]:
    ring = native.Ring.attach(dupfd.detach())
    q = Queue.__new__(Queue)
    q._setup(ring, 0, Chain.attach(board, capacity, ring, gen))
    return q
