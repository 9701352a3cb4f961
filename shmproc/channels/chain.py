"""The segments of an unbounded Queue: it grows instead of filling, and
gives the memory back once drained.

    directory (a Board every handle maps)          rings, each its own segment
    ------------------------------------           ---------------------------
    entry  gen 4  LINKED  id  cap  holders ──────► gen 4  sealed, next = gen 5's id
    entry  gen 5  LINKED  id  cap  holders ──────► gen 5  open: producers put here

Producers put into the newest ring; consumers read the oldest to its end,
then follow its seal to the next.  A ring that has been sealed and read to
its end is *drained*: its directory entry is freed and every process
drops its mapping the next time it touches the queue, so a queue that
grew for a burst shrinks back to one ring (see _capacity_for: rings past
the first few double, and a large ring is replaced by one of the queue's
size as soon as it is found empty).

Growing (a producer's put found the newest ring full)
-----------------------------------------------------
1. create a ring, name it with 64 random bits (its id), and register it in
   the directory as PENDING gen+1, this process its first holder;
2. seal the full ring with the new ring's id (csrc/ring.c: under the
   producer lock, so no put can land after the seal); exactly one of the
   producers racing here wins;
3. the winner marks its entry LINKED and puts there; a loser frees its
   entry, drops its ring and follows the winner's seal.
A process killed between 1 and 2 leaves a PENDING entry nobody links to
(freed once its holders are seen dead); between 2 and 3, followers mark
the entry LINKED themselves.  Per-producer order holds: a producer moves
only forward, and consumers finish a ring before they start the next.

Finding a ring another process made
-----------------------------------
Things that don't work: passing descriptors through the ring (shared
memory cannot carry them); a named segment in /dev/shm (a killed process
leaks its name for good, and anyone can open it); asking only the creator
(/proc/PID/fd/N), since the creator may exit while other producers' items
are in the ring.  Solution: every process that maps a ring registers
itself in the ring's entry as a holder (pid, fd), up to HOLDERS of them,
and a process opens the ring through any live holder, then checks the
ring's id against the entry: a reused pid leads to someone else's ring,
which is refused.  A process that holds the only mapping of a ring with
items still in it waits at exit until another process holds it (at most
blobs.EXIT_FLUSH_TIMEOUT; cancel_join_thread() skips it), as
multiprocessing.Queue's feeder thread flushes before exit.  A ring all of
whose holders died is *lost* with its items: it is skipped, or, if it was
the newest, replaced in place by a fresh ring so the queue goes on.

Trust: every entry is read under its sequence word and checked (a CRC of
gen, id and capacity; capacity a power of two within limits; holders'
pids and descriptors in range).  A damaged entry, a seal naming a ring the
directory does not list, or a holder whose descriptor is not a ring is
CorruptSharedMemoryError, never a crash.
"""
from __future__ import annotations

import os
import struct
import threading
import time
import weakref
import zlib
from typing import Any, Iterable, Optional

from .. import _native as native
from ..common import faults, lifecycle
from ..common.errors import CorruptSharedMemoryError, SharedMemoryError
from ..wire import blobs
from .._native import EINTR, ESTATE, OK

__all__ = ["Chain", "DIRECTORY_BYTES"]

#: The directory: a 64-byte header, then ENTRIES entries of 128 bytes.
DIRECTORY_BYTES = 16384
_HEADER, _ENTRY = 64, 128
ENTRIES = (DIRECTORY_BYTES - _HEADER) // _ENTRY
_MAGIC, _VERSION = 0x4E494843, 1        # "CHIN"
# Header words: magic, version, entries.  Entry: its state word, a spare
# word, gen/id/capacity (u64 each) and their CRC, then HOLDERS (pid, fd)
# pairs.  The state word is (version << 2) | state, the version bumped
# each time the entry is claimed: every change of an entry is a
# compare-and-swap from the exact word its maker read, so a process that
# read an entry never frees or links the entry's next occupant (ABA).
# Fields are written only in WRITING, which readers skip; a reader
# checks the word is unchanged after reading them.
_STATE, _FIELDS, _CRC, _HOLDERS = 0, 8, 32, 40
HOLDERS = (_ENTRY - _HOLDERS) // 8
_FIELDS_FMT = struct.Struct("<QQQ")
FREE, WRITING, PENDING, LINKED = 0, 1, 2, 3
_BUSY = 0xFFFFFFFF                      # a holder slot being written
_READER = 1 << 31                       # in a holder's pid word: it reads (a consumer)
_PID_MAX, _FD_MAX = 1 << 22, 1 << 24    # Linux's limits: larger values are damage

#: Rings of the queue's own size until this many are live, then each new one
#: twice the last (up to MAX_RING): a burst of any size needs few entries.
SAME_SIZE_RINGS = 8
MAX_RING = 1 << 30
#: How long a follower waits for a directory caught mid-update before it
#: calls a seal's link corrupt.
_SETTLE_S = 0.25

_me = os.getpid


class _Entry:
    __slots__ = ("index", "word", "gen", "id", "capacity")

    def __init__(self, index: int, word: int, gen: int, ring_id: int, capacity: int) -> None:
        self.index, self.word, self.gen, self.id, self.capacity = \
            index, word, gen, ring_id, capacity

    @property
    def state(self) -> int:
        return self.word & 3


class _Held:
    """A ring this process maps: its generation and our holder slot."""

    __slots__ = ("ring", "gen", "slot")

    def __init__(self, ring: native.Ring, gen: int, slot: Optional[tuple[int, int, int]]) -> None:
        self.ring, self.gen, self.slot = ring, gen, slot   # slot: (entry, i, our word) or None


class _Lost(Exception):
    """Every holder of a ring is gone: its items went with them."""


class _Recycled(Exception):
    """The entry changed while we tried its holders (drained, freed, reused): look again."""


def _crc(gen: int, ring_id: int, capacity: int) -> int:
    return zlib.crc32(_FIELDS_FMT.pack(gen, ring_id, capacity))


def _new_id() -> int:
    return int.from_bytes(os.urandom(8), "little") | 1     # never 0: "no id"


class Chain:
    """One process's view of a growing Queue's rings (see the module doc)."""

    def __init__(self, board: native.Board, capacity: int) -> None:
        self.board = board
        self.board_id = _identity(board.fd)     # who else holds the queue: blobs.HolderCheck
        self.capacity = capacity        # the queue's ring size: the first ring's, and the floor
        self.held: dict[int, _Held] = {}    # ring id -> _Held
        self._words: Any = None         # the directory as u32 words (see _entries)
        self.lock = threading.RLock()   # threads of this process sharing the handle
        self.wait_at_exit = True        # Queue.cancel_join_thread() clears it
        _live.add(self)

    # -- making and sharing ---------------------------------------------------
    @classmethod
    def create(cls, capacity: int) -> tuple[Chain, native.Ring]:
        """A new directory with its first ring (gen 0); returns (chain, ring)."""
        board = native.Board.create(DIRECTORY_BYTES)
        for off, value in ((0, _MAGIC), (4, _VERSION), (8, ENTRIES)):
            board.store(off, value)
        chain = cls(board, capacity)
        _register_exit()
        ring = chain._new_ring(capacity)
        index, _ = chain._register(0, ring, LINKED, reader=True)
        chain.held[ring.id] = _Held(ring, 0, (index, 0, _me() | _READER))  # type: ignore[arg-type]
        return chain, ring

    @classmethod
    def attach(cls, board: native.Board, capacity: int, ring: native.Ring, gen: int) -> Chain:
        """A handle rebuilt in another process, reading from `ring`."""
        words = [board.load(off) for off in (0, 4, 8)]
        if words != [_MAGIC, _VERSION, ENTRIES]:
            raise CorruptSharedMemoryError(
                f"a shmproc.Queue directory has header {words}, expected "
                f"{[_MAGIC, _VERSION, ENTRIES]}")
        chain = cls(board, capacity)
        chain.held[ring.id] = held = _Held(ring, gen, None)
        for e in chain._entries():
            if e.id == ring.id:
                held.slot = chain._join_holders(e, reader=True)
        return chain

    def gen_of(self, ring: native.Ring) -> int:
        return self.held[ring.id].gen

    # -- the directory ------------------------------------------------------------
    def _base(self, index: int) -> int:
        return _HEADER + index * _ENTRY

    def _read(self, index: int) -> _Entry | None:
        """Entry `index` if it names a ring (PENDING or LINKED), else None."""
        b, base = self.board, self._base(index)
        for _ in range(1000):
            word = b.load(base + _STATE)        # acquire: the fields written before it
            if word & 3 in (FREE, WRITING):
                return None
            gen, ring_id, cap = _FIELDS_FMT.unpack_from(b.view, base + _FIELDS)
            crc = struct.unpack_from("<I", b.view, base + _CRC)[0]
            if b.load(base + _STATE) != word:
                continue                        # freed and reused while we read
            if crc != _crc(gen, ring_id, cap) or cap < 4096 or cap > (1 << 36) or \
                    cap & (cap - 1):
                raise CorruptSharedMemoryError(
                    f"entry {index} of a shmproc.Queue directory is damaged (state {word & 3}, "
                    f"gen {gen}, capacity {cap})")
            return _Entry(index, word, gen, ring_id, cap)
        raise CorruptSharedMemoryError(f"entry {index} of a shmproc.Queue directory never settles")

    def _entries(self) -> list[_Entry]:
        # A plain look at every state word first (one memoryview index each):
        # free entries, most of them, cost no call into the core; the others
        # are read properly, under their sequence word (_read).
        words = self._words
        if words is None:
            words = self._words = self.board.view.cast("I")
        out: list[_Entry] = []
        stride, first = _ENTRY // 4, (_HEADER + _STATE) // 4
        for i in range(ENTRIES):
            if words[first + i * stride] & 3 == FREE:
                continue
            e = self._read(i)
            if e is not None:
                out.append(e)
        return out

    def _holders(self, index: int) -> list[tuple[int, int, int, int]]:
        """(slot, pid word, pid, fd) of the holders entry `index` names."""
        b, base = self.board, self._base(index) + _HOLDERS
        out: list[tuple[int, int, int, int]] = []
        for i in range(HOLDERS):
            word = b.load(base + 8 * i)
            if word == 0 or word == _BUSY:
                continue
            fd, pid = b.load(base + 8 * i + 4), word & ~_READER
            if pid == 0 or pid >= _PID_MAX or fd >= _FD_MAX:
                raise CorruptSharedMemoryError(
                    f"a shmproc.Queue directory names holder pid {pid}, descriptor {fd}")
            out.append((i, word, pid, fd))
        return out

    def _join_holders(self, e: _Entry, reader: bool) -> tuple[int, int, int] | None:
        """Register this process as a holder of entry `e` (a reader: a consumer
        that will read it); the slot, or None if every slot is taken."""
        b, base = self.board, self._base(e.index) + _HOLDERS
        ring = self.held[e.id].ring
        for i in range(HOLDERS):
            off = base + 8 * i
            if b.load(off) == 0 and b.cas(off, 0, _BUSY):
                b.store(off + 4, ring.fd)
                word = _me() | (_READER if reader else 0)
                b.store(off, word)          # release: the fd before the pid that vouches for it
                return (e.index, i, word)
        return None

    def _register(self, gen: int, ring: native.Ring, state: int,
                  reader: bool = False) -> tuple[int, int] | tuple[None, None]:
        """Write a new entry for `ring`, this process its first holder:
        (index, state word), or (None, None) when the directory is full."""
        b = self.board
        for attempt in range(2):
            for i in range(ENTRIES):
                word = b.load(self._base(i) + _STATE)
                if word & 3 == FREE:
                    word = self._write(i, word, gen, ring, state, reader)   # type: ignore[assignment]
                    if word is not None:
                        return i, word
            if attempt == 0:
                self._collect_abandoned()
        return None, None

    def _write(self, index: int, old: int, gen: int, ring: native.Ring, state: int,
               reader: bool) -> int | None:
        """Claim entry `index` from exactly the word `old` and fill it for
        `ring`; the new word, or None if someone else changed it first."""
        b, base = self.board, self._base(index)
        version = ((old >> 2) + 1) & 0x3FFFFFFF
        if not b.cas(base + _STATE, old, version << 2 | WRITING):
            return None
        _FIELDS_FMT.pack_into(b.view, base + _FIELDS, gen, ring.id, ring.capacity)
        struct.pack_into("<I", b.view, base + _CRC, _crc(gen, ring.id, ring.capacity))
        for h in range(1, HOLDERS):
            b.store(base + _HOLDERS + 8 * h, 0)
        b.store(base + _HOLDERS + 4, ring.fd)
        b.store(base + _HOLDERS, _me() | (_READER if reader else 0))
        word = version << 2 | state
        b.store(base + _STATE, word)        # release: everything above before it
        return word

    def _set_state(self, index: int, word: int, state: int) -> bool:
        """Move entry `index` from exactly `word` to `state` (same version)."""
        return self.board.cas(self._base(index) + _STATE, word, (word & ~3) | state)

    def _free(self, e: _Entry) -> None:
        self._set_state(e.index, e.word, FREE)

    def _collect_abandoned(self) -> None:
        """Free PENDING entries whose holders are all dead (a grower killed before its seal)."""
        for e in self._entries():
            if e.state == PENDING and e.id not in self.held and \
                    not any(_alive(pid) for _, _, pid, _ in self._holders(e.index)):
                self._free(e)

    # -- moving along the chain -------------------------------------------------------
    def _new_ring(self, capacity: int) -> native.Ring:
        ring: native.Ring = native.Ring.create(capacity, multi_producer=True, multi_consumer=True)
        ring.set_id(_new_id())
        return ring

    def _capacity_for(self, after: native.Ring) -> int:
        """Size of the ring to add after `after`: the queue's own while few
        are live, then doubling, so entries never run out before memory."""
        live = len(self._entries())
        if live < SAME_SIZE_RINGS:
            return self.capacity
        return min(max(after.capacity * 2, self.capacity), max(MAX_RING, self.capacity))

    def grow(self, full: native.Ring) -> native.Ring | None:
        """`full` (the newest ring we know) has no room: add a ring after it,
        or follow whoever added one first.  Returns the ring to put into."""
        with self.lock:
            _register_exit()
            gen = self.gen_of(full)
            ring = self._new_ring(self._capacity_for(full))
            index, word = self._register(gen + 1, ring, PENDING)
            if index is None:
                return None         # the directory is full: the caller waits for room
            self.held[ring.id] = _Held(ring, gen + 1, (index, 0, _me()))
            faults.point("chain.registered")
            while True:
                rc = full.seal(ring.id, -1)
                if rc != EINTR:
                    break
            if rc == OK:
                faults.point("chain.sealed")
                self._set_state(index, word, LINKED)    # type: ignore[arg-type]  # registered
                return ring
            self._drop(ring.id, free_entry=True)
            if rc != ESTATE:
                native.check(rc, "sealing a shmproc.Queue segment")
            return self.follow(full)

    def shrink(self, ring: native.Ring) -> native.Ring:
        """`ring` is larger than the queue's size and was found empty: seal it
        behind a ring of the queue's own size (how a burst's memory comes
        back).  Returns the ring to use, or `ring` if someone got there first."""
        with self.lock:
            new = self._new_ring(self.capacity)
            index, word = self._register(self.gen_of(ring) + 1, new, PENDING)
            if index is None:
                return ring
            self.held[new.id] = _Held(new, self.gen_of(ring) + 1, (index, 0, _me()))
            if ring.used_bytes() == 0 and ring.seal(new.id, 0) == OK:
                self._set_state(index, word, LINKED)    # type: ignore[arg-type]  # registered
                return new
            self._drop(new.id, free_entry=True)
            return ring

    def follow(self, sealed: native.Ring, reader: bool = False) -> native.Ring:
        """The ring after `sealed` (which must be sealed); `reader`: we will read it."""
        with self.lock:
            _register_exit()
            gen, link = self.gen_of(sealed), sealed.sealed()
            if link is None:
                raise RuntimeError("follow() on a ring that is not sealed")
            settle = time.monotonic() + _SETTLE_S
            while True:
                if link in self.held:
                    return self.held[link].ring
                entries = self._entries()
                e = next((x for x in entries if x.id == link), None)
                if e is None:       # drained and freed (or lost): the next one in order
                    later = sorted((x for x in entries if x.state == LINKED and x.gen > gen),
                                   key=lambda x: x.gen)
                    e = later[0] if later else None
                if e is None:
                    if time.monotonic() > settle:
                        raise CorruptSharedMemoryError(
                            f"a sealed shmproc.Queue segment (gen {gen}) links to id {link:#x}, "
                            f"which its directory does not list")
                    time.sleep(0.001)
                    continue
                if e.id in self.held:
                    return self.held[e.id].ring
                if e.state == PENDING:
                    # Its grower sealed our ring and died before saying so.
                    self._set_state(e.index, e.word, LINKED)
                try:
                    return self._open(e, reader)
                except _Recycled:
                    continue
                except _Lost:
                    if any(x.state == LINKED and x.gen > e.gen for x in entries):
                        self._free(e)           # skip it: its items died with its holders
                        gen, link = e.gen, 0
                        continue
                    return self._replace(e)

    def _open(self, e: _Entry, reader: bool) -> native.Ring:
        """Map entry `e`'s ring through one of its holders and hold it too."""
        dead, odd = 0, 0
        for i, word, pid, fd in self._holders(e.index):
            if pid == _me():
                dead += 1               # not in self.held: we let it go, so it is drained
                continue
            try:
                nfd = native.open_peer_fd(pid, fd)
            except ProcessLookupError:
                # Gone, or let the ring go: free its slot for a live holder.
                self.board.cas(self._base(e.index) + _HOLDERS + 8 * i, word, 0)
                dead += 1
                continue
            except OSError:
                odd += 1
                continue
            try:
                ring = native.Ring.attach(nfd)
            except (SharedMemoryError, ValueError, OSError):
                odd += 1                # not a ring: a reused pid, or damage
                continue
            if ring.id != e.id or ring.capacity != e.capacity:
                ring.close()            # a reused pid's ring, not ours
                dead += 1
                continue
            self.held[e.id] = _Held(ring, e.gen, None)
            self.held[e.id].slot = self._join_holders(e, reader)
            return ring
        if self.board.load(self._base(e.index) + _STATE) != e.word:
            raise _Recycled
        if odd and not dead:
            raise CorruptSharedMemoryError(
                f"no holder named by a shmproc.Queue directory entry (gen {e.gen}) has its "
                f"segment")
        raise _Lost

    def _replace(self, e: _Entry) -> native.Ring:
        """The newest ring was lost with its holders: put a fresh one in its place."""
        ring = self._new_ring(e.capacity)
        if self._write(e.index, e.word, e.gen, ring, LINKED, False) is None:
            ring.close()                # someone else replaced it (or it moved on)
            return self.follow_gen(e.gen - 1)
        self.held[ring.id] = _Held(ring, e.gen, (e.index, 0, _me()))
        return ring

    def follow_gen(self, gen: int, reader: bool = False) -> native.Ring:
        """The oldest linked ring after generation `gen` (someone else replaced a lost one)."""
        settle = time.monotonic() + _SETTLE_S
        while True:
            later = sorted((x for x in self._entries() if x.state == LINKED and x.gen > gen),
                           key=lambda x: x.gen)
            for e in later:
                if e.id in self.held:
                    return self.held[e.id].ring
                try:
                    return self._open(e, reader)
                except (_Lost, _Recycled):
                    continue
            if time.monotonic() > settle:
                raise CorruptSharedMemoryError(
                    f"a shmproc.Queue directory lists no segment after gen {gen}")
            time.sleep(0.001)

    # -- giving memory back ---------------------------------------------------------------
    def open_all(self, reader: bool = False) -> list[native.Ring]:
        """Hold every ring the directory lists (so producers of later rings may
        exit, and qsize() can count them); the rings we hold, oldest first."""
        with self.lock:
            for e in self._entries():
                if e.state == LINKED and e.id not in self.held:
                    try:
                        self._open(e, reader)
                    except (_Lost, _Recycled, CorruptSharedMemoryError):
                        pass
            return [h.ring for h in sorted(self.held.values(), key=lambda h: h.gen)]

    def catch_up(self, prod: native.Ring,
                 cons: native.Ring) -> tuple[native.Ring, native.Ring]:
        """A handle's (producer, consumer) rings moved past the drained and
        sealed ones, so that tidy() can let those go."""
        with self.lock:
            while _drained(cons):
                cons = self.follow(cons, reader=True)
            while prod.sealed() is not None:
                prod = self.follow(prod)
            if prod is cons and cons.capacity > self.capacity and not cons.used_bytes():
                prod = cons = self.shrink(cons)     # a burst's large ring, now empty
            return prod, cons

    def tidy(self, keep: Iterable[native.Ring]) -> None:
        """Let go of the drained rings we hold, except those in `keep`."""
        with self.lock:
            for ring_id, h in list(self.held.items()):
                if h.ring not in keep and _drained(h.ring):
                    self._drop(ring_id, free_entry=True)

    def _drop(self, ring_id: int, free_entry: bool) -> None:
        h = self.held.pop(ring_id)
        if h.slot is not None:
            index, i, word = h.slot
            self.board.cas(self._base(index) + _HOLDERS + 8 * i, word, 0)
        if free_entry:
            try:
                e = next((x for x in self._entries() if x.id == ring_id), None)
            except CorruptSharedMemoryError:
                e = None                # a damaged directory: reported where it is read
            if e is not None:
                self._free(e)
        # No explicit close: a blob's record may still name this ring
        # (blobs.Sent.ring); the mapping goes with the last reference.

    def flush(self, deadline: float) -> bool:
        """Wait until every ring with items that we hold is drained or held by
        another live reader (see the module doc); False if the deadline
        passed first.  Does not wait when no other process holds the queue."""
        others = blobs.HolderCheck()
        while True:
            if not others(self.board_id):
                return True             # nobody left who could read it
            with self.lock:
                waiting = [h for h in self.held.values() if h.ring.used_bytes()]
                waiting = [h for h in waiting if not self._read_elsewhere(h.ring.id)]
            if not waiting:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def _read_elsewhere(self, ring_id: int) -> bool:
        e = next((x for x in self._entries() if x.id == ring_id), None)
        if e is None:
            return True                 # freed: drained, nothing to keep
        return any(word & _READER and pid != _me() and _alive(pid)
                   for _, word, pid, _ in self._holders(e.index))

    def close(self) -> None:
        """This handle is done: close our descriptors, except those of rings
        with items that only we hold while someone else holds the queue (the
        exit flush waits for them; see the module doc)."""
        with self.lock:
            others = blobs.HolderCheck()        # a /proc scan: only asked when a ring has items
            for ring_id, h in list(self.held.items()):
                try:
                    if h.ring.used_bytes() and not self._read_elsewhere(ring_id) and \
                            others(self.board_id):
                        continue
                except CorruptSharedMemoryError:
                    pass                # a damaged directory: nobody can be sent there
                self._drop(ring_id, free_entry=_drained(h.ring))
                _close_fd(h.ring)
            _close_fd(self.board)


class Moving:
    """A Queue's side of its chain: the rings its producer and consumer use
    (`_prod`, `_cons`, with `_put` and `_get` bound to them) and moving them
    along.  Mixed into Queue; `_chain` is None for a queue that does not grow."""

    _chain: Chain | None
    _prod: native.Ring
    _cons: native.Ring
    _put: Any
    _get: Any
    _closed: bool

    def _use_producer(self, ring: native.Ring) -> None:
        self._prod, self._put = ring, ring.put

    def _use_consumer(self, ring: native.Ring) -> None:
        self._cons, self._get = ring, ring.get_record

    def _next_producer(self, rc: int) -> None:
        """The producer's ring said sealed (follow it) or full (grow after it)."""
        chain: Chain = self._chain          # type: ignore[assignment]  # a growing queue's
        with chain.lock:
            ring = self._prod
            if rc == native.ESEALED and ring.sealed() is None:
                return                      # another thread of ours moved on: retry there
            nxt = chain.follow(ring) if rc == native.ESEALED else chain.grow(ring)
            if nxt is None:                 # the directory is full (see docs/queue.md)
                time.sleep(0.01)
                return
            self._use_producer(nxt)

    def _next_consumer(self) -> None:
        """The consumer's ring is sealed and drained: on to the next; let drained ones go."""
        chain: Chain = self._chain          # type: ignore[assignment]  # a growing queue's
        with chain.lock:
            ring = self._cons
            if ring.sealed() is not None and not ring.used_bytes():
                # (else another thread of ours moved on: retry there)
                self._use_consumer(chain.follow(ring, reader=True))
                chain.open_all(reader=True)     # hold the later rings: their producers may exit
                chain.tidy((self._prod, self._cons))

    def _only_ring(self) -> native.Ring | None:
        """The ring that holds all of the queue's items, when this handle can
        tell without reading the directory (~25 us): a fixed queue's ring, or
        a growing queue's when this handle holds one ring only, of the
        queue's own size, and puts and takes on it, and nobody sealed it (a
        ring is sealed before anything goes into its successor, so none has
        items yet).  None: the directory is read, which also lets go of
        drained rings and of a burst's large one (see _rings)."""
        if self._closed:
            return None
        ring = self._prod
        chain = self._chain
        if chain is None:
            return ring
        if (ring is self._cons and len(chain.held) == 1 and ring.capacity <= chain.capacity
                and ring.sealed() is None):
            return ring
        return None

    def _rings(self) -> list[native.Ring]:
        if self._chain is None:
            return [self._prod]
        with self._chain.lock:
            prod, cons = self._chain.catch_up(self._prod, self._cons)
            self._use_producer(prod)
            self._use_consumer(cons)
            self._chain.tidy((prod, cons))
            return self._chain.open_all()


def _drained(ring: native.Ring) -> bool:
    return ring.sealed() is not None and ring.used_bytes() == 0


def _close_fd(obj: Any) -> None:
    fd, obj.fd = obj.fd, -1
    if fd >= 0:
        os.close(fd)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# ---- at exit: rings only this process holds --------------------------------------

_live: weakref.WeakSet[Chain] = weakref.WeakSet()


def _flush_all() -> None:
    deadline = time.monotonic() + blobs.EXIT_FLUSH_TIMEOUT
    for chain in list(_live):
        if chain.wait_at_exit and chain.held:
            chain.flush(deadline)


_exit_pid: int | None = None


def _register_exit() -> None:
    # Registered in each process that creates, grows or follows a chain, and
    # no earlier: a multiprocessing child clears its exit hooks once it is
    # started, so a hook registered from a fork handler, or while a spawned
    # child unpickles its arguments (Chain.attach), would be lost.
    global _exit_pid
    if _exit_pid != _me():
        lifecycle.at_exit(_flush_all, lifecycle.FLUSH_OUT_OF_BAND)
        _exit_pid = _me()
