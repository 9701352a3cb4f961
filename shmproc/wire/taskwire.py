"""What crosses a Pool's rings: record header, opcodes and payload codec.

Every record is bytes: a fixed header, then a protocol-5 pickle of the
payload.  The header sits outside the pickle so that a record whose
payload cannot be rebuilt on the other side still names its task (the
worker reports that task as failed instead of losing it).

    header  op (u8) · flags (u8) · slot (u16) · count (u32) · id (u64)

count: in a task record, how many items it carries; in a result, the
microseconds the worker spent on it.

When a payload carries large contiguous buffers (numpy arrays), the
pickle and the buffers go to their own shared segment (blobs.py) and the
record holds the segment's descriptor (flag BLOB): one copy on the
writing side, read-only views with no copy on the reading side.
"""
from __future__ import annotations

import pickle
import struct
from typing import Any, Iterable

from . import blobs
from . import pickling as wire
from ..common.errors import CorruptSharedMemoryError, LostRecord  # noqa: F401 - LostRecord re-exported

HEADER = struct.Struct("<BBHIQ")
HEADER_SIZE = HEADER.size

# parent -> worker
OP_DEF = 1          # id: function id; payload: the pickled callable (bytes)
OP_FORGET = 2       # id: function id the parent no longer uses
OP_CALL = 3         # id: task id; payload: (fn id, args, kwargs)
OP_CHUNK = 4        # id: first task id; payload: (fn id, star, items)
OP_RUN = 5          # id: task id; payload: a Process instance
OP_STOP = 6         # finish and exit
OP_RETRY = 7        # id: task id; payload: (lives left, op, that op's payload): a Process
                    # task's next life, after its worker was ended past a timeout
OP_LIMIT = 8        # id: the task timeout, in ns, of the calls after it (0: none)

# worker -> parent
R_VALUE = 16        # payload: the value
R_ERROR = 17        # payload: (exception or RemoteError, worker traceback text)
R_CHUNK = 18        # payload: (values, {offset: (exception, traceback text)}): the
                    # chunk's items not yet sent in an R_PART; it ends the task
R_PROCESS = 19      # payload: (kind, value, timers, error, lap)
R_VALUES = 20       # payload: (ids, values): several tasks' values in one record
R_PART = 21         # payload as R_CHUNK: the next items of a chunk still running
R_MESSAGE = 23      # id: a submitted Process task; payload: what it told (self.tell)
R_INIT_FAILED = 22  # payload: (exception or RemoteError, traceback text): the pool's
                    # initializer raised; the worker exits after sending it

FLAG_BLOB = 1
FLAG_TELLS = 2      # a task record: a submitted Process, whose self.tell goes to its caller


_pack = HEADER.pack
_dumps = pickle.dumps
_loads = pickle.loads
_MAIN_MARKER = wire._MAIN_MARKER


def fits(record: bytes, limit: int | None) -> bytes:
    """`record`, or ValueError if it is larger than `limit`: what the ring
    it goes on carries in-band where records cannot go out-of-band (the
    portable layer; None elsewhere).  Such a record could never be put: it
    fails where it is encoded, which fails its task (an argument) or item
    (a result), not in the put, which would end the process putting it."""
    if limit is not None and len(record) > limit:
        raise ValueError(f"its record needs {len(record)} bytes, more than a pool's ring "
                         f"carries ({limit}) on this platform, which cannot pass large items "
                         f"out-of-band; send large data through shared memory or a file")
    return record


def encode(op: int, ident: int, payload: object, token: Any, slot: int = 0,
           elapsed_us: int = 0, flags: int = 0) -> bytes:
    """A record; raises wire.SerializationError if `payload` cannot be pickled."""
    # Fast path, the common small task or result: the C pickler took it, no
    # buffers and nothing from __main__.  Anything else goes the long way.
    bufs: list[Any] = []
    main: bytes | None
    try:
        main = _dumps(payload, 5, buffer_callback=bufs.append)
    except Exception:                       # noqa: BLE001 - wire.dumps explains or copes
        main = None
    if main is not None and not bufs and _MAIN_MARKER not in main:
        return _pack(op, flags, slot, elapsed_us, ident) + main
    main, bufs = wire.dumps(payload)
    if not bufs:
        return HEADER.pack(op, flags, slot, elapsed_us, ident) + main
    if not blobs.PEER_FD_OK:
        # Nothing can be handed over out-of-band (the portable layer): the
        # buffers go in the record itself, whose size its ring then checks
        # (fits).  A blob sent anyway was lost to its reader: the task's
        # arguments failed in the worker, and a result never came.
        return HEADER.pack(op, flags, slot, elapsed_us, ident) + wire.dumps(payload,
                                                                            inband=True)[0]
    if blobs.pool.in_flight:
        blobs.pool.sweep()           # recycle segments whose views are gone
    desc = blobs.encode(main, 0, [b.raw() for b in bufs], token)
    return HEADER.pack(op, FLAG_BLOB | flags, slot, elapsed_us, ident) + desc


_NUMBERS = frozenset((int, float, bool, type(None)))

#: The OP_CALL record of fn(i) for an int i that fits 32 bits, whole: the
#: header, then a hand-written protocol-5 pickle of (fn id, (i,), None)
#: (PROTO, BININT, BININT, TUPLE1, NONE, TUPLE3, STOP), which the worker's
#: pickle.loads reads as any other.  One pack per item instead of a Pickler
#: (map over a range is the common case).
_INT_CALL = struct.Struct(HEADER.format + "2sBiBi4s")     # the header's layout, then the pickle
_INT_HEAD, _BININT, _INT_TAIL = b"\x80\x05", 0x4A, b"\x85N\x87."
_I32 = range(-2**31, 2**31)


def encode_calls(fn_id: int, items: Iterable[Any], ids: Iterable[int]) -> list[bytes | None]:
    """OP_CALL records for fn(item), one per item (a map with chunksize 1),
    with the common case inline: a list of records, None where an item
    needs encode()'s general path (buffers out-of-band, a reference to
    __main__, a pickling error it explains).  The hot path of such a map:
    no call per item beyond pickle's own."""
    pack, dumps, marker = _pack, _dumps, _MAIN_MARKER
    numbers = _NUMBERS
    int_call = _INT_CALL.pack if fn_id in _I32 else None
    i32 = _I32
    oob: list[pickle.PickleBuffer] = []   # buffers pickle wants out-of-band: then the general path
    keep = oob.append
    out: list[bytes | None] = []
    append = out.append
    for item, ident in zip(items, ids):
        if type(item) is int and int_call is not None and item in i32:
            append(int_call(OP_CALL, 0, 0, 1, ident, _INT_HEAD, _BININT, fn_id, _BININT, item,
                            _INT_TAIL))
            continue
        if type(item) in numbers:                  # cannot fail, refer to __main__ or go OOB
            append(pack(OP_CALL, 0, 0, 1, ident) + dumps((fn_id, (item,), None), 5))
            continue
        main: bytes | None
        try:
            main = dumps((fn_id, (item,), None), 5, buffer_callback=keep)
        except Exception:                          # noqa: BLE001 - the general path decides
            main = None
        if oob:
            oob.clear()
            append(None)
        elif main is not None and marker not in main:
            append(pack(OP_CALL, 0, 0, 1, ident) + main)
        else:
            append(None)
    return out


def encode_raw(op: int, ident: int, data: bytes = b"", slot: int = 0) -> bytes:
    return HEADER.pack(op, 0, slot, 0, ident) + data


def header(record: Any) -> tuple[int, int, int, int, int]:
    """(op, flags, slot, elapsed µs, id); CorruptSharedMemoryError if too short."""
    if len(record) < HEADER_SIZE:
        raise CorruptSharedMemoryError(f"a {len(record)}-byte pool record has no header")
    return HEADER.unpack_from(record)


def payload(record: Any, flags: int) -> Any:
    """The payload of a record whose header was read with header().

    Damaged framing (unknown flags, a pickle cut short) raises
    CorruptSharedMemoryError; a payload whose class is missing here raises
    what unpickling raises, for the caller to report.
    """
    flags &= ~FLAG_TELLS
    if not flags:
        try:
            return _loads(record[HEADER_SIZE:])
        except (pickle.UnpicklingError, EOFError) as exc:
            raise CorruptSharedMemoryError(f"a pool record does not unpickle: {exc}") from exc
    if flags != FLAG_BLOB:
        raise CorruptSharedMemoryError(f"a pool record has unknown flags {flags:#x}")
    body = memoryview(record)[HEADER_SIZE:]
    out = blobs.decode(body, False)
    if out is blobs.LOST:
        raise LostRecord("the process that wrote this record exited before it was read")
    main, _, buffers = out
    return pickle.loads(main, buffers=buffers)


def blob_ref(record: Any) -> tuple[int, int] | None:
    """(our descriptor, nonce) of the blob an out-of-band record we wrote
    names, or None: the descriptor number alone is no identity (a blob is
    reused with a new nonce under the same number)."""
    if not record[1] & FLAG_BLOB:
        return None
    desc = blobs.DESC.unpack_from(record, HEADER_SIZE)
    return desc[1], desc[6]


def raw_payload(record: Any) -> bytes:
    return bytes(memoryview(record)[HEADER_SIZE:])
