"""Unit tests of each C function of the core, through shmproc._native.

These run in one process (cross-process behaviour is in test_native_mp.py
and test_stress.py) and are also run under AddressSanitizer + UBSan by
tests/asan.py.
"""
import mmap
import os
import struct

import pytest

from shmproc import _native as native
from shmproc.common.errors import CorruptSharedMemoryError, SharedMemoryError
from shmproc._native import EEMPTY, EFULL, ESMALLBUF, ESTATE, ETOOBIG, OK
from shmproc._shmp_cffi import ffi, lib

pytestmark = pytest.mark.asan

PAGE = 4096
FEATURES = lib.shmp_platform_features()
needs_peer_fd = pytest.mark.skipif(not FEATURES & lib.SHMP_FEAT_PEER_FD,
                                   reason="this build cannot open a peer's descriptor")
needs_memfd = pytest.mark.skipif(not FEATURES & lib.SHMP_FEAT_MEMFD,
                                 reason="this build has no sealed memfd segments")


def out_u32(n=1):
    return ffi.new("uint32_t[]", n)


def get(ring, cap=1 << 20, timeout=0):
    buf = bytearray(max(cap, 1))
    out = out_u32(2)
    rc = ring.get_into(ffi.from_buffer(buf), cap, timeout, out, out + 1)
    if rc != OK:
        return rc, None, None
    return rc, bytes(buf[:out[0]]), out[1]


# ---- basics ------------------------------------------------------------------

def test_abi_clock_and_strings():
    assert lib.shmp_abi_version() == 4
    a = lib.shmp_now_ns()
    b = lib.shmp_now_ns()
    assert 0 < a <= b
    for code in (OK, EFULL, EEMPTY, ESMALLBUF, ETOOBIG, ESTATE, lib.SHMP_ECORRUPT, -999):
        assert ffi.string(lib.shmp_strerror(code))
    assert FEATURES & ~(lib.SHMP_FEAT_MEMFD | lib.SHMP_FEAT_FUTEX | lib.SHMP_FEAT_PEER_FD) == 0


def test_timeout_conversion():
    assert native.timeout_ns(None) == -1
    assert native.timeout_ns(0) == 0
    assert native.timeout_ns(0.25) == 250_000_000
    assert native.timeout_ns(float("inf")) == -1
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        native.timeout_ns(-1)
    with pytest.raises(ValueError):
        native.timeout_ns(float("nan"))
    with pytest.raises(TypeError, match="timeout must be a number"):
        native.timeout_ns("1")
    with pytest.raises(TypeError):
        native.timeout_ns(True)


def test_check_maps_codes_to_exceptions():
    assert native.check(OK, "x") == OK
    with pytest.raises(ValueError, match="doing it: invalid argument"):
        native.check(lib.SHMP_EINVAL, "doing it")
    with pytest.raises(CorruptSharedMemoryError):
        native.check(lib.SHMP_ECORRUPT, "x")
    with pytest.raises(MemoryError):
        native.check(lib.SHMP_ENOMEM, "x")
    with pytest.raises(SharedMemoryError):
        native.check(lib.SHMP_ENOSPC, "x")
    with pytest.raises(RuntimeError):
        native.check(ESTATE, "x")


# ---- segments ------------------------------------------------------------------

def test_segment_create_attach_unmap():
    fd = ffi.new("int *")
    p = ffi.new("void **")
    assert lib.shmp_seg_create(lib.SHMP_KIND_BLOB, 10000, fd, p) == OK
    try:
        assert int(ffi.cast("uintptr_t", p[0])) % PAGE == 0       # page-aligned payload
        size = ffi.new("uint64_t *")
        assert lib.shmp_seg_payload_size(p[0], size) == OK and size[0] == 10000
        assert lib.shmp_seg_verify(p[0], lib.SHMP_KIND_BLOB) == OK
        assert lib.shmp_seg_verify(p[0], lib.SHMP_KIND_RING) == lib.SHMP_ECORRUPT
        ffi.memmove(p[0], b"hello", 5)
        q = ffi.new("void **")
        assert lib.shmp_seg_attach(fd[0], lib.SHMP_KIND_BLOB, q, size) == OK
        assert ffi.buffer(q[0], 5)[:] == b"hello"                  # same memory
        assert lib.shmp_seg_attach(fd[0], lib.SHMP_KIND_RING, q, size) == lib.SHMP_ECORRUPT
        assert lib.shmp_seg_unmap(q[0], 10000) == OK
        if FEATURES & lib.SHMP_FEAT_MEMFD:
            # the file cannot be resized under a mapping (sealed)
            with pytest.raises(OSError):
                os.ftruncate(fd[0], 100)
    finally:
        assert lib.shmp_seg_unmap(p[0], 10000) == OK
        os.close(fd[0])


def test_segment_bad_arguments():
    fd = ffi.new("int *")
    p = ffi.new("void **")
    assert lib.shmp_seg_create(lib.SHMP_KIND_BLOB, 0, fd, p) == lib.SHMP_EINVAL
    assert lib.shmp_seg_create(99, 100, fd, p) == lib.SHMP_EINVAL
    assert lib.shmp_seg_create(lib.SHMP_KIND_BLOB, 1 << 50, fd, p) == lib.SHMP_EINVAL
    assert lib.shmp_seg_create(lib.SHMP_KIND_BLOB, 100, ffi.NULL, p) == lib.SHMP_EINVAL
    assert lib.shmp_seg_attach(-1, 0, p, ffi.NULL) == lib.SHMP_EINVAL
    assert lib.shmp_seg_unmap(ffi.NULL, 1) == lib.SHMP_EINVAL
    assert lib.shmp_seg_verify(ffi.cast("void *", 12345), 0) == lib.SHMP_EINVAL   # unaligned
    assert lib.shmp_seg_open_peer(0, 3, fd) == lib.SHMP_EINVAL
    assert lib.shmp_seg_open_peer(os.getpid(), -1, fd) == lib.SHMP_EINVAL


def test_segment_attach_rejects_foreign_and_corrupt_files(tmp_path):
    # A file that is not a segment at all.
    path = tmp_path / "junk"
    path.write_bytes(b"\0" * 3 * PAGE)
    with open(path, "rb+") as f:
        p = ffi.new("void **")
        assert lib.shmp_seg_attach(f.fileno(), 0, p, ffi.NULL) == lib.SHMP_ECORRUPT
    # A real segment whose header is damaged after creation.
    blob = native.Blob.create(PAGE)
    with mmap.mmap(blob.fd, PAGE) as m:
        m[8:12] = b"\xff\xff\xff\xff"                       # ABI version
    with pytest.raises(CorruptSharedMemoryError):
        native.Blob.attach(blob.fd)
    blob.close_fd()


def test_private_mapping_is_copy_on_write_and_checked(tmp_path):
    blob = native.Blob.create(5 * PAGE)
    shared = memoryview(blob.buffer)
    shared[:] = b"s" * len(shared)
    for offset, length in ((0, 5 * PAGE), (PAGE + 100, 3000), (4095, 2)):  # any alignment
        view = memoryview(native.private_view(blob.fd, offset, length, None))
        assert not view.readonly and bytes(view) == b"s" * length
        shared[offset] = ord("t")                   # unwritten private pages follow the file
        assert view[0] == ord("t")
        view[:] = b"p" * length                     # a write stays private
        assert shared[offset] == ord("t") and shared[offset + length - 1] == ord("s")
        shared[offset] = ord("s")
        view.release()
    p = ffi.new("void **")
    assert lib.shmp_seg_map_private(blob.fd, 0, 0, p) == lib.SHMP_EINVAL
    assert lib.shmp_seg_map_private(-1, 0, 1, p) == lib.SHMP_EINVAL
    assert lib.shmp_seg_map_private(blob.fd, 5 * PAGE, 1, p) == lib.SHMP_EINVAL   # past the end
    assert lib.shmp_seg_map_private(blob.fd, 1, 5 * PAGE, p) == lib.SHMP_EINVAL
    assert lib.shmp_seg_map_private(blob.fd, 1 << 62, 1 << 62, p) == lib.SHMP_EINVAL
    assert lib.shmp_seg_unmap_private(ffi.NULL, 1) == lib.SHMP_EINVAL
    path = tmp_path / "junk"                         # not a segment
    path.write_bytes(b"\0" * 3 * PAGE)
    with open(path, "rb+") as f:
        assert lib.shmp_seg_map_private(f.fileno(), 0, 1, p) == lib.SHMP_ECORRUPT
    ring = native.Ring.create(1 << 16)               # a segment of another kind
    assert lib.shmp_seg_map_private(ring.fd, 0, 1, p) == lib.SHMP_ECORRUPT
    ring.close()
    shared.release()
    blob.close_fd()


@needs_peer_fd
def test_peer_open_of_own_descriptor():
    blob = native.Blob.create(PAGE)
    blob.buffer[:3] = b"abc"
    fd = native.open_peer_fd(os.getpid(), blob.fd)
    try:
        other = native.Blob.attach(fd)
        assert other.buffer[:3] == b"abc"
    finally:
        os.close(fd)
        blob.close_fd()
    with pytest.raises(ProcessLookupError):
        native.open_peer_fd(os.getpid(), 100000)


def test_blob_words():
    blob = native.Blob.create(PAGE)
    assert blob.load_word(0) == 0
    blob.store_word(8, 7)                                  # nobody sleeps on it: no waiters word
    assert blob.load_word(8) == 7
    blob.store_word(8, 7, 12)
    assert blob.wait_word(8, 12, 0, 0) == OK               # differs already: no wait
    t0 = lib.shmp_now_ns()
    assert blob.wait_word(8, 12, 7, 1_000_000) == native.ETIMEDOUT
    assert lib.shmp_now_ns() - t0 >= 1_000_000
    assert blob.load_word(12) == 0                         # unregistered again
    with pytest.raises(ValueError):
        blob.load_word(PAGE)
    with pytest.raises(ValueError):
        blob.store_word(3, 1)
    with pytest.raises(ValueError):
        blob.store_word(8, 1, 2)                           # misaligned waiters word
    blob.close_fd()


def test_cas_u32_with_and_without_a_waiters_word():
    blob = native.Blob.create(PAGE)
    assert lib.shmp_cas_u32(blob._word(0), blob._word(20), 0, 1) == OK
    assert lib.shmp_cas_u32(blob._word(0), blob._word(20), 0, 1) == ESTATE
    assert lib.shmp_cas_u32(blob._word(0), ffi.NULL, 1, 0) == OK  # no waiters word: no wake
    assert blob.load_word(0) == 0
    blob.close_fd()


def test_wait_wake_argument_checks():
    word = ffi.new("uint32_t[2]")
    assert lib.shmp_wait_u32(ffi.NULL, word + 1, 0, 0) == lib.SHMP_EINVAL
    assert lib.shmp_wait_u32(word, ffi.NULL, 0, 0) == lib.SHMP_EINVAL   # a sleeper must register
    assert lib.shmp_wait_u32(word, word, 0, 0) == lib.SHMP_EINVAL       # not its own counter
    assert lib.shmp_wait_u32(word, word + 1, 1, 0) == OK
    assert lib.shmp_wait_u32(word, word + 1, 0, 0) == native.ETIMEDOUT
    assert lib.shmp_store_u32(ffi.NULL, ffi.NULL, 1) == lib.SHMP_EINVAL
    assert lib.shmp_store_u32(word, word, 1) == lib.SHMP_EINVAL
    assert lib.shmp_store_u32(word, word + 1, 1) == OK and word[0] == 1
    assert lib.shmp_store_u32(word, ffi.NULL, 2) == OK and word[0] == 2
    assert lib.shmp_cas_u32(ffi.NULL, ffi.NULL, 0, 1) == lib.SHMP_EINVAL
    assert lib.shmp_cas_u32(word, word, 2, 1) == lib.SHMP_EINVAL
    odd = ffi.cast("char *", word) + 1
    assert lib.shmp_store_u32(word, odd, 1) == lib.SHMP_EINVAL
    assert lib.shmp_load_u32(ffi.NULL) == 0
    assert word[1] == 0                                    # no waiter left registered


# ---- rings ---------------------------------------------------------------------

def test_ring_create_validates():
    for cap in (0, 63, 100, 1 << 40):
        with pytest.raises(ValueError):
            native.Ring.create(cap)
    fd = ffi.new("int *")
    h = ffi.new("shmp_ring **")
    assert lib.shmp_ring_create(4096, 0x80, 0, fd, h) == lib.SHMP_EINVAL
    with pytest.raises(TypeError):
        native.Ring.attach("3")
    with pytest.raises(ValueError):
        native.Ring.attach(-1)


@pytest.mark.parametrize("locked", [False, True])
def test_ring_put_get_roundtrip_with_tags(locked):
    r = native.Ring.create(4096, multi_producer=locked, multi_consumer=locked)
    assert r.capacity == 4096 and r.max_record == 4096 - 8
    assert r.count() == 0 and r.used_bytes() == 0
    for i, payload in enumerate([b"", b"a", b"bc" * 10, bytes(range(256))]):
        assert r.put(payload, len(payload), i, 0) == OK
    assert r.count() == 4
    assert r.used_bytes() == 8 + (8 + 8) + (8 + 24) + (8 + 256)   # header + 8-aligned payload each
    for i, payload in enumerate([b"", b"a", b"bc" * 10, bytes(range(256))]):
        assert get(r) == (OK, payload, i)
    assert get(r)[0] == EEMPTY
    r.close()


def test_ring_tag_range():
    r = native.Ring.create(4096)
    assert r.put(b"x", 1, 0x7FFF, 0) == OK
    assert r.put(b"x", 1, 0x8000, 0) == lib.SHMP_EINVAL
    assert get(r)[2] == 0x7FFF
    r.close()


def test_ring_full_empty_and_timeouts():
    r = native.Ring.create(256)
    rec = b"x" * 56                                  # 64 bytes per record
    for _ in range(4):
        assert r.put(rec, 56, 0, 0) == OK
    assert r.put(rec, 56, 0, 0) == EFULL
    t = lib.shmp_now_ns()
    assert r.put(rec, 56, 0, 20_000_000) == EFULL      # waited ~20 ms, then gave up
    assert lib.shmp_now_ns() - t >= 19_000_000
    for _ in range(4):
        assert get(r)[0] == OK
    t = lib.shmp_now_ns()
    assert get(r, timeout=20_000_000)[0] == EEMPTY
    assert lib.shmp_now_ns() - t >= 19_000_000
    r.close()


@pytest.mark.parametrize("locked", [False, True])
def test_ring_seal_ends_puts_and_reports_drained(locked):
    """A sealed ring takes no more puts; its records are still read, then
    every get (and get_many, and a blocked waiter) says SHMP_ESEALED."""
    import threading
    r = native.Ring.create(4096, multi_producer=locked, multi_consumer=locked)
    r.set_id(0x1234)
    assert r.id == 0x1234 and r.sealed() is None
    assert r.put(b"a", 1, 0, 0) == OK
    assert r.seal(0xBEEF, -1) == OK
    assert r.sealed() == 0xBEEF
    assert r.seal(0xF00D, -1) == ESTATE                # one seal only; the first link stays
    assert r.sealed() == 0xBEEF
    assert r.put(b"b", 1, 0, 0) == lib.SHMP_ESEALED
    assert r.put(b"b", 1, 0, 10**9) == lib.SHMP_ESEALED  # never waits for room
    done = out_u32()
    assert r.put_many(b"cd", out_u32([1, 1]), ffi.NULL, 2, 0, done) == lib.SHMP_ESEALED
    assert done[0] == 0
    assert get(r)[1] == b"a"                           # what was put before the seal
    assert get(r)[0] == lib.SHMP_ESEALED
    assert get(r, timeout=10**9)[0] == lib.SHMP_ESEALED  # drained: no wait
    buf = bytearray(64)
    assert r.get_many_into(ffi.from_buffer(buf), 64, 4, 0, out_u32(4), out_u32(4),
                           out_u32()) == lib.SHMP_ESEALED
    # A consumer asleep on an empty ring wakes up when it is sealed.
    r2 = native.Ring.create(4096, multi_producer=locked, multi_consumer=locked)
    got = []
    t = threading.Thread(target=lambda: got.append(get(r2, timeout=5 * 10**9)[0]))
    t.start()
    import time
    time.sleep(0.05)
    assert r2.seal(1, -1) == OK
    t.join(5)
    assert got == [lib.SHMP_ESEALED]
    r.close()
    r2.close()


def test_ring_wraps_around_many_times():
    r = native.Ring.create(1024)
    import random
    rnd = random.Random(1)
    sent = []
    for i in range(5000):
        n = rnd.randrange(0, 300)
        data = bytes([i % 251]) * n
        while r.put(data, n, 0, 0) == EFULL:
            sent.append(get(r)[1])
        sent.append(None)
    # drain and check order: every record equals what was put, in order
    rnd = random.Random(1)
    got = [s for s in sent if s is not None]
    while True:
        rc, data, _ = get(r)
        if rc != OK:
            break
        got.append(data)
    assert len(got) == 5000
    for i, data in enumerate(got):
        assert data == bytes([i % 251]) * rnd.randrange(0, 300)
    r.close()


def test_ring_oversized_and_small_buffer():
    r = native.Ring.create(1024)
    big = b"z" * 1017
    assert r.put(big, 1017, 0, 0) == ETOOBIG
    assert r.put(big, 1016, 0, 0) == OK               # max_record fits when empty
    buf = ffi.new("char[]", 10)
    out = out_u32(2)
    assert r.get_into(buf, 10, 0, out, out + 1) == ESMALLBUF
    assert out[0] == 1016                             # reports the size it needs
    assert r.count() == 1                             # and consumed nothing
    assert get(r, cap=2000) == (OK, big[:1016], 0)
    r.close()


def test_ring_put_many_get_many():
    r = native.Ring.create(4096)
    items = [bytes([i]) * i for i in range(40)]
    blob = b"".join(items)
    lens = ffi.new("uint32_t[]", [len(x) for x in items])
    tags = ffi.new("uint32_t[]", list(range(40)))
    done = ffi.new("uint32_t *")
    assert r.put_many(blob, lens, tags, 40, 0, done) == OK and done[0] == 40
    out = bytearray(1 << 16)
    olens, otags, count = out_u32(64), out_u32(64), out_u32()
    assert r.get_many_into(ffi.from_buffer(out), len(out), 64, 0, olens, otags, count) == OK
    assert count[0] == 40
    assert list(olens[0:40]) == [len(x) for x in items]
    assert list(otags[0:40]) == list(range(40))
    assert bytes(out[:len(blob)]) == blob
    r.close()


def test_ring_put_many_partial_when_full_and_too_big():
    r = native.Ring.create(256)
    lens = ffi.new("uint32_t[]", [56] * 6)
    done = ffi.new("uint32_t *")
    assert r.put_many(b"y" * 56 * 6, lens, ffi.NULL, 6, 0, done) == EFULL
    assert done[0] == 4                                # the ones that fit were published
    assert r.count() == 4
    lens2 = ffi.new("uint32_t[]", [1, 5000])
    r2 = native.Ring.create(256)
    assert r2.put_many(b"a" + b"b" * 5000, lens2, ffi.NULL, 2, 0, done) == ETOOBIG
    assert done[0] == 1
    bad_tags = ffi.new("uint32_t[]", [0x9000])
    assert r2.put_many(b"a", lens2, bad_tags, 1, 0, done) == lib.SHMP_EINVAL
    r.close()
    r2.close()


def test_ring_get_many_stops_at_buffer_size_and_max_count():
    r = native.Ring.create(4096)
    for i in range(10):
        assert r.put(b"q" * 100, 100, 0, 0) == OK
    out = bytearray(250)
    olens, count = out_u32(10), out_u32()
    assert r.get_many_into(ffi.from_buffer(out), 250, 10, 0, olens, ffi.NULL, count) == OK
    assert count[0] == 2                               # a third would not fit in 250 bytes
    assert r.get_many_into(ffi.from_buffer(out), 250, 1, 0, olens, ffi.NULL, count) == OK
    assert count[0] == 1
    assert r.count() == 7
    assert r.get_many_into(ffi.from_buffer(out), 50, 1, 0, olens, ffi.NULL, count) == ESMALLBUF
    assert olens[0] == 100
    assert r.get_many_into(ffi.from_buffer(out), 250, 0, 0, olens, ffi.NULL, count) == lib.SHMP_EINVAL
    r.close()


def test_ring_max_items():
    fd = ffi.new("int *")
    h = ffi.new("shmp_ring **")
    assert lib.shmp_ring_create(4096, 0, 2, fd, h) == OK
    r = native.Ring(h[0], fd[0])
    assert lib.shmp_ring_max_items(h[0]) == 2
    assert r.put(b"1", 1, 0, 0) == OK
    assert r.put(b"2", 1, 0, 0) == OK
    assert r.put(b"3", 1, 0, 0) == EFULL
    assert get(r)[1] == b"1"
    assert r.put(b"3", 1, 0, 0) == OK
    r.close()


def test_ring_mark_closed_wakes_and_refuses():
    r = native.Ring.create(256)
    assert r.put(b"last", 4, 0, 0) == OK
    r.mark_closed()
    assert r.is_closed()
    assert r.put(b"x", 1, 0, 0) == ESTATE
    assert get(r)[1] == b"last"                        # queued data still drains
    assert r.wait_data(-1) == ESTATE                   # no hang on a closed, empty ring
    r.close()


def test_ring_attach_shares_memory_and_validates():
    r = native.Ring.create(4096)
    other = native.Ring.attach(os.dup(r.fd))
    assert r.put(b"shared", 6, 0, 0) == OK
    assert get(other) == (OK, b"shared", 0)
    other.close()
    # damage the capacity field: attach must refuse, not trust it
    with mmap.mmap(r.fd, 2 * PAGE) as m:
        cap_offset = PAGE                              # first field of the ring's shared block
        old = m[cap_offset:cap_offset + 8]
        m[cap_offset:cap_offset + 8] = struct.pack("<Q", 3000)
        with pytest.raises(CorruptSharedMemoryError):
            native.Ring.attach(os.dup(r.fd))
        m[cap_offset:cap_offset + 8] = old
    r.close()


def test_ring_corrupt_record_header_is_an_error_not_a_crash():
    r = native.Ring.create(4096)
    assert r.put(b"MARKER-PAYLOAD", 14, 0, 0) == OK
    with mmap.mmap(r.fd, 3 * PAGE) as m:
        at = m.find(b"MARKER-PAYLOAD")
        m[at - 8:at - 4] = struct.pack("<I", 1_000_000)   # len far beyond what was written
        assert get(r)[0] == lib.SHMP_ECORRUPT
        m[at - 8:at] = struct.pack("<II", 14, 0x8000)      # flags past the tags (once "PAD")
        assert get(r)[0] == lib.SHMP_ECORRUPT
    r.close()


def test_ring_use_after_close_raises():
    r = native.Ring.create(4096)
    r.close()
    r.close()                                          # idempotent
    with pytest.raises(RuntimeError, match="closed ring"):
        r.put(b"x", 1, 0, 0)


# ---- control blocks --------------------------------------------------------------

def test_control_blocks_fields():
    ctl = native.ControlArray.create(3)
    c = ctl.blocks[1]
    assert lib.shmp_ctl_state(c) == lib.SHMP_STATE_NEW
    assert lib.shmp_ctl_set_state(c, lib.SHMP_STATE_RUNNING) == OK
    assert lib.shmp_ctl_state(c) == lib.SHMP_STATE_RUNNING
    assert lib.shmp_ctl_set_state(c, 99) == lib.SHMP_EINVAL
    assert lib.shmp_ctl_stop_requested(c) == 0
    assert lib.shmp_ctl_enter(c, 2, 5_000_000) == 0
    assert lib.shmp_ctl_section(c) == 2
    start, deadline = lib.shmp_ctl_section_start_ns(c), lib.shmp_ctl_deadline_ns(c)
    assert deadline - start == 5_000_000
    assert lib.shmp_ctl_leave(c) == OK and lib.shmp_ctl_deadline_ns(c) == 0
    assert lib.shmp_ctl_enter(c, 1, 0) == 0 and lib.shmp_ctl_deadline_ns(c) == 0
    assert lib.shmp_ctl_request_stop(c) == OK
    assert lib.shmp_ctl_stop_requested(c) == 1
    assert lib.shmp_ctl_end_lap(c) == 1                # returns the stop flag
    assert lib.shmp_ctl_lap(c) == 1
    assert lib.shmp_ctl_set_lap(c, 41) == OK and lib.shmp_ctl_lap(c) == 41
    assert lib.shmp_ctl_set_lives(c, 3) == OK and lib.shmp_ctl_lives(c) == 3
    assert lib.shmp_ctl_set_pid(c, 1234) == OK and lib.shmp_ctl_pid(c) == 1234
    assert lib.shmp_ctl_set_pid(c, -1) == lib.SHMP_EINVAL
    assert lib.shmp_ctl_set_exit(c, -9, 9) == OK
    code, sig = ffi.new("int32_t *"), ffi.new("int32_t *")
    assert lib.shmp_ctl_exit(c, code, sig) == OK and (code[0], sig[0]) == (-9, 9)
    assert lib.shmp_ctl_clear_stop(c) == OK and lib.shmp_ctl_stop_requested(c) == 0
    # blocks are independent
    other = ctl.blocks[0]
    assert lib.shmp_ctl_lap(other) == 0 and lib.shmp_ctl_state(other) == lib.SHMP_STATE_NEW
    assert lib.shmp_ctl_reset(c) == OK
    assert lib.shmp_ctl_lap(c) == 0 and lib.shmp_ctl_pid(c) == 0
    ctl.close()


SCALARS = [None, False, True, 0, -1, 7, (1 << 63) - 1, -(1 << 63), 0.0, -0.0, 1.5,
           float("inf"), float("-inf"), 1e-310]


def test_control_scalar_outcome_round_trips():
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)
    assert c.outcome()[2:] == (False, None)                  # nothing reported
    for value in SCALARS:
        c.reset()
        assert c.report_scalar(value)
        assert c.state == lib.SHMP_STATE_DONE
        found, got = c.outcome()[2:]
        assert found and type(got) is type(value) and repr(got) == repr(value)
        assert c.exit_info() == (0, 0)
    c.reset()
    assert c.report_scalar(float("nan")) and c.outcome()[2:][1] != c.outcome()[2:][1]
    for other in [1 << 63, -(1 << 63) - 1, "s", b"b", (1,), 1j, [], True.__class__]:
        c.reset()
        assert not c.report_scalar(other) and c.state == lib.SHMP_STATE_NEW
    c.reset()
    assert c.report_scalar(3)
    c.set_state(lib.SHMP_STATE_FAILED)                 # only DONE carries a scalar
    assert c.outcome()[2:] == (False, None)
    c.reset()
    assert c.outcome()[2:] == (False, None)
    assert lib.shmp_ctl_report_scalar(c.block, lib.SHMP_SCALAR_NONE, 0) == lib.SHMP_EINVAL
    assert lib.shmp_ctl_report_scalar(c.block, 6, 0) == lib.SHMP_EINVAL
    assert lib.shmp_ctl_report_scalar(ffi.NULL, 1, 0) == lib.SHMP_EINVAL
    assert lib.shmp_ctl_scalar(c.block, ffi.NULL) == lib.SHMP_EINVAL
    ctl.close()


def test_control_scalar_tag_is_checked():
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)
    assert c.report_scalar(5)
    # scalar_tag sits 48 bytes into the block's second line (shmp_internal.h;
    # control.c asserts the block is two lines): a tag no worker writes.
    ffi.cast("uint32_t *", c.block)[(64 + 48) // 4] = 99
    with pytest.raises(CorruptSharedMemoryError):
        c.outcome()[2:]
    ctl.close()


def test_control_scalar_across_processes():
    """A child reports, the parent waits and reads: every value, many times."""
    ctl = native.ControlArray.create(1)
    c = ctl.control(0)
    rounds = max(20, int(200 * float(os.environ.get("SHMPROC_STRESS_SCALE", "1"))))
    for i in range(rounds):
        value = SCALARS[i % len(SCALARS)]
        c.reset()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if c.report_scalar(value) else 2
            finally:
                os._exit(code)
        assert c.wait_state(lib.SHMP_STATE_DONE, 10 * 10**9) == OK
        found, got = c.outcome()[2:]
        assert found and type(got) is type(value) and repr(got) == repr(value)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    ctl.close()


def test_control_waits_time_out_and_return():
    ctl = native.ControlArray.create(1)
    c = ctl.blocks[0]
    assert lib.shmp_ctl_wait_state(c, lib.SHMP_STATE_DONE, 5_000_000) == native.ETIMEDOUT
    assert lib.shmp_ctl_wait_stop(c, 5_000_000) == native.ETIMEDOUT
    lib.shmp_ctl_set_state(c, lib.SHMP_STATE_DONE)
    assert lib.shmp_ctl_wait_state(c, lib.SHMP_STATE_RUNNING, -1) == OK
    lib.shmp_ctl_request_stop(c)
    assert lib.shmp_ctl_wait_stop(c, -1) == OK
    ctl.close()


def test_control_bad_arguments():
    fd = ffi.new("int *")
    p = ffi.new("void **")
    assert lib.shmp_ctl_create(0, fd, p) == lib.SHMP_EINVAL
    assert lib.shmp_ctl_create(1 << 20, fd, p) == lib.SHMP_EINVAL
    ctl = native.ControlArray.create(2)
    out = ffi.new("shmp_control **")
    assert lib.shmp_ctl_get(ctl._payload, ctl.count, 2, out) == lib.SHMP_EINVAL
    for f in (lib.shmp_ctl_set_state, lib.shmp_ctl_set_lap, lib.shmp_ctl_set_lives):
        assert f(ffi.NULL, 1) == lib.SHMP_EINVAL
    assert lib.shmp_ctl_request_stop(ffi.NULL) == lib.SHMP_EINVAL
    assert lib.shmp_ctl_lap(ffi.NULL) == 0
    # a ring segment is not a control segment
    r = native.Ring.create(4096)
    count = ffi.new("uint32_t *")
    assert lib.shmp_ctl_attach(r.fd, p, count) == lib.SHMP_ECORRUPT
    r.close()
    other = native.ControlArray.attach(os.dup(ctl.fd))
    assert other.count == 2
    lib.shmp_ctl_set_lap(ctl.blocks[1], 7)
    assert lib.shmp_ctl_lap(other.blocks[1]) == 7
    other.close()
    ctl.close()


# ---- sparse segments, section overrun bits, parent-death signal ------------------

def test_sparse_segment_reserves_on_demand():
    fd = ffi.new("int *")
    p = ffi.new("void **")
    big = 1 << 36                                       # 64 GiB of address space, ~0 used
    assert lib.shmp_seg_create_sparse(lib.SHMP_KIND_BLOB, big, fd, p) == OK
    try:
        assert lib.shmp_seg_create_sparse(lib.SHMP_KIND_RING, 4096, fd, p) == lib.SHMP_EINVAL
        assert lib.shmp_seg_reserve(fd[0], 0, 1 << 20) == OK
        ffi.memmove(p[0], b"x" * (1 << 20), 1 << 20)
        assert lib.shmp_seg_reserve(fd[0], big - 4096, 4096) == OK
        assert lib.shmp_seg_reserve(fd[0], big - 4096, 8192) == lib.SHMP_EINVAL   # past the end
        assert lib.shmp_seg_reserve(fd[0], 0, 0) == lib.SHMP_EINVAL
        assert lib.shmp_seg_reserve(-1, 0, 10) == lib.SHMP_EINVAL
        assert os.fstat(fd[0]).st_blocks * 512 < 64 << 20      # only what was reserved
        q = ffi.new("void **")
        size = ffi.new("uint64_t *")
        assert lib.shmp_seg_attach(fd[0], lib.SHMP_KIND_BLOB, q, size) == OK   # no prefault
        assert size[0] == big and ffi.buffer(q[0], 3)[:] == b"xxx"
        assert lib.shmp_seg_unmap(q[0], big) == OK
        assert os.fstat(fd[0]).st_blocks * 512 < 64 << 20
    finally:
        assert lib.shmp_seg_unmap(p[0], big) == OK
        os.close(fd[0])


def test_reserve_rejects_a_non_segment(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"\0" * 3 * PAGE)
    with open(path, "rb+") as f:
        assert lib.shmp_seg_reserve(f.fileno(), 0, 10) == lib.SHMP_ECORRUPT


def test_section_overrun_and_stop_bits():
    ctl = native.ControlArray.create(1)
    c = ctl.blocks[0]
    assert lib.shmp_ctl_enter(c, 1, 1) == 0             # 1 ns deadline: overran at once
    t = lib.shmp_now_ns()
    while lib.shmp_now_ns() - t < 1000:
        pass
    assert lib.shmp_ctl_enter(c, 2, 10**12) == lib.SHMP_CTL_OVERRAN
    assert lib.shmp_ctl_enter(c, 3, 0) == 0             # left section 2 in time
    lib.shmp_ctl_request_stop(c)
    assert lib.shmp_ctl_enter(c, 1, 1) == lib.SHMP_CTL_STOP
    while lib.shmp_now_ns() - t < 5000:
        pass
    assert lib.shmp_ctl_end_lap(c) == lib.SHMP_CTL_STOP | lib.SHMP_CTL_OVERRAN
    assert lib.shmp_ctl_deadline_ns(c) == 0 and lib.shmp_ctl_section(c) == 0
    assert lib.shmp_ctl_enter(c, 1, 1) == lib.SHMP_CTL_STOP
    while lib.shmp_now_ns() - t < 10000:
        pass
    assert lib.shmp_ctl_leave(c) == lib.SHMP_CTL_STOP | lib.SHMP_CTL_OVERRAN
    ctl.close()


def test_parent_death_signal_checks_the_parent():
    assert lib.shmp_parent_death_signal(0, os.getppid()) == OK
    assert lib.shmp_parent_death_signal(0, 1 if os.getppid() != 1 else 2) == lib.SHMP_EPEER
    assert lib.shmp_parent_death_signal(-1, 0) == lib.SHMP_EINVAL


def test_small_rings_get_pages_as_written_large_ones_and_blobs_at_creation():
    """With memfd (a filesystem that cannot run out of space) a ring of at
    most 8 MiB gets its pages as they are first written: reserving every
    pool worker's ring was most of a large pool's setup.  A larger ring (a
    Queue's capacity is its user's) is reserved at creation, short of
    memory a clear error there rather than a kill at a first touch; a blob
    is backed whole at creation; and everything is reserved where space
    can run out (the portable layer's /dev/shm)."""
    cap = 1 << 20
    r = native.Ring.create(cap)
    mid = native.Ring.create(4 << 20)                   # a pool's result ring, a Queue's default
    big = native.Ring.create(16 << 20)
    fd = ffi.new("int *")
    p = ffi.new("void **")
    assert lib.shmp_seg_create(lib.SHMP_KIND_BLOB, cap, fd, p) == OK
    try:
        held = os.fstat(r.fd).st_blocks * 512
        if native.PEER_FD_OK:                           # memfd
            assert held < cap // 8
            for _ in range(64):
                assert r.put(b"x" * 8000, 8000, 0, 0) == OK
                assert get(r)[1] == b"x" * 8000
            assert os.fstat(r.fd).st_blocks * 512 >= held + 256 * 1024
            assert os.fstat(mid.fd).st_blocks * 512 < 1 << 20
        else:
            assert held >= cap
            assert os.fstat(mid.fd).st_blocks * 512 >= 4 << 20
        assert os.fstat(big.fd).st_blocks * 512 >= 16 << 20
        assert os.fstat(fd[0]).st_blocks * 512 >= cap
    finally:
        r.close()
        mid.close()
        big.close()
        assert lib.shmp_seg_unmap(p[0], cap) == OK
        os.close(fd[0])
