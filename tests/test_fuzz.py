"""Property-based fuzzing of every decoder that reads shared memory.

The C decoders (ring headers and records, segment headers, control
blocks) are fed damaged bytes written straight into a segment through its
descriptor; the Python decoders (transfer.py's arena records, taskwire.py's
pool records) get random and mutated byte strings.  Each must give a clear
error (CorruptSharedMemoryError, ValueError) or a valid result: never a
crash, a hang (every wait here is bounded) or a write outside the
segment.  The robust mutexes are the one part never written: glibc follows
pointers there, which no check can make safe (docs/architecture.md, "Trust
boundary").

tests/asan.py runs these same inputs under AddressSanitizer + UBSan.
SHMPROC_FUZZ_EXAMPLES raises the number of examples (default: modest, so
that this file stays well under a minute).
"""
import os
import pickle
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shmproc import _native as native

from shmproc.wire import taskwire

from shmproc.wire import transfer
from shmproc.common.errors import CorruptSharedMemoryError
from shmproc._native import OK
from shmproc._shmp_cffi import ffi, lib

pytestmark = pytest.mark.asan

EXAMPLES = int(os.environ.get("SHMPROC_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

PAGE = 4096
ALLOWED = {OK, native.EFULL, native.EEMPTY, native.ETIMEDOUT, native.EINTR, native.ESMALLBUF,
           native.ETOOBIG, native.ESTATE, lib.SHMP_ECORRUPT,
           native.ESEALED}          # a damaged `sealed` word reads as sealed (chain.py checks links)

U64 = [0, 1, 7, 8, 56, 63, 64, 65, 4088, 4096, 4104, 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63,
       (1 << 64) - 8, (1 << 64) - 1]
U32 = [0, 1, 7, 8, 0x7fff, 0x8000, 0x8001, 0xffff, 0x10000, 1 << 31, (1 << 32) - 1]


def values():
    return st.one_of(st.binary(min_size=1, max_size=8),
                     st.sampled_from(U64).map(lambda v: struct.pack("<Q", v)),
                     st.sampled_from(U32).map(lambda v: struct.pack("<I", v)))


def write_at(fd, offset, data):
    os.pwrite(fd, data, offset)


def read_at(fd, offset, n):
    return os.pread(fd, n, offset)


# ---- rings ------------------------------------------------------------------------

# Offsets in the ring's shared block (csrc/shmp_internal.h), payload-relative:
# line 0 capacity/max_items/flags, line 1 producer, line 2 consumer, lines
# 3-5 wait words and `closed`.  Lines 6-7 hold the robust mutexes: not fuzzed.
RING_FIELDS = [0, 8, 16, 20, 64, 72, 80, 88, 128, 136, 144, 152, 192, 196, 256, 260, 320]
RING_LOCKS_AT = 384


def ring_layout(cap):
    """(data offset in the file, end of the mapped file) for a ring of `cap`."""
    r = native.Ring.create(cap)
    try:
        assert r.put(b"LAYOUT-MARK", 11, 0, 0) == OK
        with open(f"/proc/self/fd/{r.fd}", "rb") as f:
            raw = f.read()
        return raw.index(b"LAYOUT-MARK") - 8, len(raw)
    finally:
        r.close()


@st.composite
def ring_damage(draw):
    cap = draw(st.sampled_from([64, 128, 4096]))
    flags = draw(st.sampled_from([0, 1, 2, 3]))
    max_items = draw(st.sampled_from([0, 1, 3]))
    records = draw(st.lists(st.binary(max_size=cap // 3), max_size=6))
    taken = draw(st.integers(0, len(records)))
    where = st.one_of(
        st.sampled_from(RING_FIELDS).map(lambda o: ("shared", o)),
        st.integers(0, RING_LOCKS_AT - 1).map(lambda o: ("shared", o)),
        st.integers(0, cap - 1).map(lambda o: ("data", o)),
        st.integers(0, cap // 8 - 1).map(lambda o: ("data", o * 8)),      # record headers
        st.integers(0, cap // 8 - 1).map(lambda o: ("data", o * 8 + 4)),  # their flags
    )
    edits = draw(st.lists(st.tuples(where, values()), min_size=0, max_size=6))
    if draw(st.booleans()):
        # head and tail moved together: plausible-looking indices (close to
        # each other) that a lone random write rarely makes.
        head = draw(st.one_of(st.sampled_from(U64), st.integers(0, 4 * cap)))
        tail = (head + draw(st.integers(-16, cap + 16))) % (1 << 64)
        edits += [(("shared", 128), struct.pack("<Q", head)), (("shared", 64), struct.pack("<Q", tail))]
        if draw(st.booleans()):
            n = draw(st.integers(-4, 4))
            edits.append((("shared", 72), struct.pack("<q", n)))     # tail_count vs head_count 0
    if not edits:
        edits = [(("data", 0), b"\xff")]
    return cap, flags, max_items, records, taken, edits


def exercise_ring(ring, cap):
    """Every operation once; each must return a known status."""
    buf = bytearray(cap)
    out = ffi.new("uint32_t[2]")
    rc = ring.get_into(ffi.from_buffer(buf), cap, 0, out, out + 1)
    assert rc in ALLOWED, rc
    if rc == OK:
        assert out[0] <= cap
    rec = ring.get_record(ffi.from_buffer(buf), cap, 0)
    assert rec >= 0 or rec in ALLOWED, rec
    lens, tags, n = ffi.new("uint32_t[8]"), ffi.new("uint32_t[8]"), ffi.new("uint32_t *")
    rc = ring.get_many_into(ffi.from_buffer(buf), cap, 8, 0, lens, tags, n)
    assert rc in ALLOWED, rc
    if rc == OK:
        assert sum(lens[i] for i in range(n[0])) <= cap
    rc = ring.put(b"abc", 3, 1, 0)
    assert rc in ALLOWED, rc
    lens2 = ffi.new("uint32_t[2]", [2, 2])
    done = ffi.new("uint32_t *")
    rc = ring.put_many(b"xxyy", lens2, ffi.NULL, 2, 0, done)
    assert rc in ALLOWED and done[0] <= 2, rc
    assert ring.count() >= 0 and 0 <= ring.used_bytes() <= cap
    assert ring.wait_data(1_000_000) in ALLOWED


@FUZZ
@given(ring_damage())
def test_fuzz_ring_headers_and_records(case):
    cap, flags, max_items, records, taken, edits = case
    data_at, file_end = LAYOUTS[cap]
    ring = native.Ring.create(cap, multi_producer=bool(flags & 1), multi_consumer=bool(flags & 2),
                              max_items=max_items)
    try:
        for r in records:
            if ring.put(r, len(r), 0, 0) != OK:
                break
        out = ffi.new("uint32_t[2]")
        scratch = bytearray(cap)
        for _ in range(taken):
            ring.get_into(ffi.from_buffer(scratch), cap, 0, out, out + 1)
        head_page = read_at(ring.fd, 0, PAGE)
        tail_slack = read_at(ring.fd, data_at + cap, file_end - data_at - cap)
        for (area, off), value in edits:
            base = PAGE if area == "shared" else data_at
            limit = RING_LOCKS_AT if area == "shared" else cap
            value = value[:limit - off]
            write_at(ring.fd, base + off, value)
        # The handle made before the damage (its cached views are stale) and
        # a fresh attach (which re-checks the shared block) both survive.
        exercise_ring(ring, cap)
        try:
            other = native.Ring.attach(os.dup(ring.fd))
        except CorruptSharedMemoryError:
            other = None
        if other is not None:
            try:
                exercise_ring(other, cap)
            finally:
                other.close()
        # Nothing was written outside the ring's shared block and data area.
        assert read_at(ring.fd, 0, PAGE) == head_page
        assert read_at(ring.fd, data_at + cap, file_end - data_at - cap) == tail_slack
    finally:
        ring.close()


LAYOUTS = {}


@pytest.fixture(autouse=True, scope="module")
def _layouts():
    for cap in (64, 128, 4096):
        LAYOUTS[cap] = ring_layout(cap)
    yield


# ---- segment headers ----------------------------------------------------------------

def _attach_any(kind, fd):
    if kind == "blob":
        b = native.Blob.attach(fd)
        b.buffer[0:1]                       # mapped and readable
        return
    if kind == "ring":
        native.Ring.attach(os.dup(fd)).close()
        return
    native.ControlArray.attach(os.dup(fd)).close()


@FUZZ
@given(st.sampled_from(["blob", "ring", "control"]),
       st.lists(st.tuples(st.integers(0, 63), values()), min_size=1, max_size=6))
def test_fuzz_segment_headers(kind, edits):
    if kind == "blob":
        owner = native.Blob.create(2 * PAGE)
        fd, close = owner.fd, owner.close_fd
    elif kind == "ring":
        owner = native.Ring.create(4096)
        fd, close = owner.fd, owner.close
    else:
        owner = native.ControlArray.create(3)
        fd, close = owner.fd, owner.close
    try:
        for off, value in edits:
            write_at(fd, off, value[:64 - off])
        try:
            _attach_any(kind, fd)
        except (CorruptSharedMemoryError, ValueError):
            pass
    finally:
        close()


# ---- control blocks -------------------------------------------------------------------

@FUZZ
@given(st.integers(1, 4),
       st.lists(st.tuples(st.integers(0, 64 + 4 * 128 - 1), values()), min_size=1, max_size=8))
def test_fuzz_control_blocks(count, edits):
    ctl = native.ControlArray.create(count)
    try:
        for off, value in edits:
            write_at(ctl.fd, PAGE + off, value)
        size = os.fstat(ctl.fd).st_size
        blocks_at, blocks_end = PAGE + 64, PAGE + 64 + 128 * count     # csrc/shmp_internal.h
        before = read_at(ctl.fd, 0, size)
        try:
            other = native.ControlArray.attach(os.dup(ctl.fd))
        except CorruptSharedMemoryError:
            other = None
        for arr in (ctl, other):
            if arr is None:
                continue
            for i in range(arr.count):
                c = arr.control(i)
                c.state, c.section, c.section_start_ns, c.deadline_ns, c.lives
                c.pid, c.stop_requested, c.lap(), c.exit_info()
                assert c.wait_state(lib.SHMP_STATE_DONE, 0) in (OK, native.ETIMEDOUT)
                assert lib.shmp_ctl_wait_stop(c.block, 0) in (OK, native.ETIMEDOUT)
                assert c.enter(1, 1000) >= 0 and c.leave() >= 0 and c.end_lap() >= 0
        if other is not None:
            other.close()
        # The calls wrote inside the blocks and nowhere else.
        after = read_at(ctl.fd, 0, size)
        assert after[:blocks_at] == before[:blocks_at]
        assert after[blocks_end:] == before[blocks_end:]
    finally:
        ctl.close()


# ---- Python decoders: arena records (transfer.py) -------------------------------------

class FakeArena:
    def __init__(self, size):
        self.buffer = bytearray(size)
        self.size = size

    def reserve(self, offset, length):
        pass


def _arena_record(obj):
    a = FakeArena(1 << 21)
    used = transfer.write(a, obj, kind=1)
    return bytes(a.buffer[:max(used, 64)])


SAMPLES = None


def _samples():
    global SAMPLES
    if SAMPLES is None:
        import numpy as np
        SAMPLES = [_arena_record(o) for o in (
            None, 42, ("value", {"timers": [1.5]}, None, 3),
            # above wire.OOB_THRESHOLD: out-of-band buffers, so a buffer table
            (np.arange(40_000, dtype=np.int64), b"x" * 100),
            [np.ones(70_000, dtype=np.float32), np.zeros(300_000, dtype=np.uint8)])]
    return SAMPLES


def _decode_arena(data):
    arena = transfer.BytesArena(bytes(data))
    for fn in (lambda: transfer.read(arena), lambda: transfer.read(arena, copy=True),
               lambda: transfer.extent(arena)):
        try:
            fn()
        except (CorruptSharedMemoryError, ValueError):
            pass


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_arena_random_bytes(data):
    _decode_arena(data)


@FUZZ
@given(st.integers(0, 4), st.data())
def test_fuzz_arena_mutated_framing(which, data):
    rec = bytearray(_samples()[which])
    nbufs = struct.unpack_from("<I", rec, 16)[0]
    framing = 24 + 16 * nbufs
    edits = data.draw(st.lists(st.tuples(st.integers(0, framing - 1), values()),
                               min_size=1, max_size=4))
    for off, value in edits:
        rec[off:off + len(value)] = value
    cut = data.draw(st.integers(0, len(rec)))
    _decode_arena(rec[:cut] if data.draw(st.booleans()) else rec)


def test_arena_framing_damage_is_detected():
    """One field changed, the record refused: the header's check at work."""
    rec = bytearray(_samples()[3])
    for off in (4, 8, 16, 24, 32):
        bad = bytearray(rec)
        bad[off] ^= 0x01
        with pytest.raises(CorruptSharedMemoryError):
            transfer.read(transfer.BytesArena(bytes(bad)))
    with pytest.raises(CorruptSharedMemoryError):
        transfer.extent(transfer.BytesArena(bytes(rec[:10])))
    assert transfer.read(transfer.BytesArena(bytes(rec)))[1] == 1


# ---- Python decoders: pool records (taskwire.py) --------------------------------------

@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_taskwire_header_random_bytes(data):
    try:
        op, flags, slot, count, ident = taskwire.header(data)
    except CorruptSharedMemoryError:
        assert len(data) < taskwire.HEADER_SIZE


@FUZZ
@given(st.sampled_from([(1, 2, 3), {"a": [1.5, None]}, "text" * 20, list(range(50))]),
       st.integers(0, 255), st.data())
def test_fuzz_taskwire_payload_framing(obj, flags, data):
    rec = bytearray(taskwire.encode(taskwire.OP_CALL, 7, obj, None))
    if flags == taskwire.FLAG_BLOB:
        flags = 0           # out-of-band descriptors: blobs.py's decoder, fuzzed with the queue
    rec[1] = flags
    cut = data.draw(st.integers(0, len(rec)))
    rec = bytes(rec[:cut])
    try:
        op, fl, _, _, _ = taskwire.header(rec)
        value = taskwire.payload(rec, fl)
    except CorruptSharedMemoryError:
        return
    assert fl & ~taskwire.FLAG_TELLS == 0 and value == obj      # TELLS: a known flag, no framing


@FUZZ
@given(st.integers(1, 2**40), st.lists(st.integers(-2**40, 2**40), max_size=8))
def test_fuzz_int_call_records_read_as_pickle_does(fn_id, items):
    """map's one-item calls over ints: the hand-packed records (ints of 32
    bits) are pickles like any other, and read as the general encoding's."""
    ids = list(range(100, 100 + len(items)))
    for rec, item, ident in zip(taskwire.encode_calls(fn_id, items, ids), items, ids):
        assert taskwire.header(rec) == (taskwire.OP_CALL, 0, 0, 1, ident)
        assert taskwire.payload(rec, 0) == (fn_id, (item,), None)
        assert pickle.loads(rec[taskwire.HEADER_SIZE:]) == pickle.loads(
            taskwire.encode(taskwire.OP_CALL, ident, (fn_id, (item,), None), None,
                            elapsed_us=1)[taskwire.HEADER_SIZE:])


def test_taskwire_short_record_and_unknown_flags_are_corrupt():
    rec = taskwire.encode(taskwire.OP_CALL, 7, (1, 2), None)
    with pytest.raises(CorruptSharedMemoryError):
        taskwire.header(rec[:5])
    with pytest.raises(CorruptSharedMemoryError):
        taskwire.payload(rec[:20], 0)
    with pytest.raises(CorruptSharedMemoryError, match="unknown flags"):
        taskwire.payload(rec, 4)
    assert taskwire.payload(rec, 0) == (1, 2)
