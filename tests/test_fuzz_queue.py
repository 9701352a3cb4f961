"""Property tests: a Queue reading records no honest producer wrote.

Random and mutated ring records (every tag) and out-of-band descriptors
(random, and real ones with bytes flipped) must give back the item, skip
it as lost, or raise a clear error -- never crash, hang, hand back
another item's bytes, or write to a segment they do not own.  The ring
itself is fuzzed in tests/test_fuzz_native.py.
"""
import os
import pickle
import queue

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import shmproc
from shmproc.wire import blobs
from shmproc import _native as native
from shmproc import _shmp_cffi as _cffi
from shmproc.common.errors import CorruptSharedMemoryError

EXAMPLES = int(os.environ.get("SHMPROC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
TAG_PICKLE, TAG_BYTES, TAG_STR, TAG_BLOB = 0, 1, 2, 3
# What a reader of a bad record may see: the record was not ours to trust.
CLEAR = (CorruptSharedMemoryError, ImportError, AttributeError)


@pytest.fixture(scope="module")
def q():
    q = shmproc.Queue()
    yield q
    q.close()


def _put_raw(q, data, tag):
    assert q._ring.put(data, len(data), tag, 10**9) == native.OK


def _read(q):
    """One get after a bad record: the value, LOST-skip (Empty), or a clear error."""
    try:
        return ("value", q.get(timeout=0.05))
    except queue.Empty:
        return ("skipped", None)
    except CLEAR as exc:
        return ("error", exc)


SAMPLES = [None, 0, -1, 2**70, 1.5, "text", b"bytes", (1, "a"), [1, [2, [3]]], {"k": (1, 2)},
           frozenset({1, 2}), bytearray(b"xy"), 10**100, "é" * 30]


@FUZZ
@given(data=st.binary(max_size=300), tag=st.integers(0, 32767))
def test_random_records_of_any_tag(q, data, tag):
    if tag == TAG_PICKLE:
        data = data.replace(b"c", b"C")     # keep GLOBAL opcodes out: no imports of chance modules
        data = bytes(b for b in data if b not in b"\x93i")   # STACK_GLOBAL, INST
    _put_raw(q, data, tag)
    kind, value = _read(q)
    if tag == TAG_BYTES:
        assert (kind, value) == ("value", data)
    elif tag == TAG_STR:
        assert kind in ("value", "error")
    elif tag > TAG_BLOB:
        assert kind == "error" and "unknown record tag" in str(value)
    q.put("sentinel")
    assert q.get(timeout=1) == "sentinel"       # the queue goes on, in order


@FUZZ
@given(obj=st.sampled_from(SAMPLES), cut=st.integers(0, 200),
       flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4))
def test_mutated_pickles(q, obj, cut, flips):
    data = bytearray(pickle.dumps(obj, 5))
    for at, byte in flips:
        if at < len(data):
            data[at] = byte
    data = bytes(data[:cut] if cut < len(data) else data)
    if b"c" in data or b"\x93" in data or b"i" in data:
        data = pickle.dumps(obj, 5)[:cut]          # a mutation that could import: plain cut
    _put_raw(q, data, TAG_PICKLE)
    kind, value = _read(q)
    if data == pickle.dumps(obj, 5):
        assert (kind, value) == ("value", obj)
    else:
        assert kind in ("value", "error")
    q.put("sentinel")
    assert q.get(timeout=1) == "sentinel"


@FUZZ
@given(data=st.binary(min_size=0, max_size=200))
def test_random_descriptors_never_open_anything(q, data):
    before = q.lost_items
    _put_raw(q, data, TAG_BLOB)
    kind, value = _read(q)
    assert kind in ("skipped", "error")
    assert kind == "error" or q.lost_items == before + 1


@pytest.fixture(scope="module")
def item():
    """A real large item whose descriptor the next test mutates."""
    q = shmproc.Queue()
    arr = np.arange(100_000, dtype=np.int32)     # 400 kB: out-of-band
    q.put(arr)
    buf = bytearray(4096)
    out = _cffi.ffi.new("uint32_t[2]")
    assert q._ring.get_into(_cffi.ffi.from_buffer(buf), len(buf), 10**9, out, out + 1) == 0
    desc = bytes(buf[:out[0]])
    yield q, arr, desc
    # After all the fuzzing, the real descriptor still reads its item whole.
    _put_raw(q, desc, TAG_BLOB)
    got = q.get(timeout=5)
    q.close()
    assert np.array_equal(got, arr)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(8, 55), st.integers(1, 255)), min_size=1, max_size=3))
def test_mutated_descriptors_of_a_live_item(item, flips):
    """Any change to what a real descriptor says of its item (everything
    after pid and fd, which only say where to look; random ones are the
    test above): the item stays untouched, unclaimed and unread."""
    q, arr, desc = item
    bad = bytearray(desc)
    for at, x in flips:
        if at < len(bad):
            bad[at] ^= x
    bad = bytes(bad)
    assume(bad != desc)                              # flips that cancel out
    _put_raw(q, bad, TAG_BLOB)
    kind, value = _read(q)
    assert kind in ("skipped", "error")
    fd = blobs.DESC.unpack_from(desc)[1]
    state = next(s.blob.load_word(0) for s in blobs.pool.in_flight if s.blob.fd == fd)
    assert state == blobs.PUBLISHED                  # nothing claimed it
