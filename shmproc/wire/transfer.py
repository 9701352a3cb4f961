"""One object in an Arena: how a Process's state and result cross over.

The parent writes the serialized Process into the worker's arena before
starting it; the worker copies it out, and at the end writes its outcome
(result value, timers, error) over it.  Layout at offset 0:

    [header][buffer table][pad to 64][main pickle][buffer][buffer]...

The header ends with a CRC-32 of itself and the buffer table, so damage
to the framing (lengths, offsets, counts) is a CorruptSharedMemoryError
rather than a pickle read from the wrong place; every length and offset is
also checked against the arena before it is used.  The pickle itself is
trusted: whoever can write the arena can already send code
(docs/architecture.md, "Trust boundary").

Large contiguous buffers (numpy arrays) are copied once into the arena by
the writer and read back as writable copy-on-write views of the arena
(layout.reader_views), so a big result costs one copy in the worker and
none in the parent; the views keep the mapping, and so the arena, from
reuse for as long as the caller holds them.
"""
from __future__ import annotations

import pickle
import struct
import zlib
from typing import Any

from . import layout as layout_
from . import pickling as wire
from ..common.errors import CorruptSharedMemoryError

_MAGIC = 0x52504853          # "SHPR"
_HEADER = struct.Struct("<IIQII")     # magic, kind, main length, buffer count, check
_CHECKED = 20                         # the header bytes before `check`
_BUF = layout_.TABLE_ENTRY           # offset, length (layout.py)


_align64 = layout_.align64
_loads = pickle.loads           # wire.loads, one call less on p.result's path


def write(arena: Any, obj: object, kind: int = 0, same_main: bool = False,
          present: int = 0) -> int:
    """Serialize `obj` into `arena` at offset 0; returns the bytes used.

    Raises wire.SerializationError if `obj` cannot be serialized and
    SharedMemoryError if the machine has no memory for it.  same_main: see
    wire.dumps (the reader is a fork child of this process).  present: the
    first `present` bytes already have their pages (the record the writer
    read from this arena): only what lies beyond them is reserved.
    """
    main, bufs = wire.dumps(obj, same_main)
    raws = [b.raw() for b in bufs]
    table = _HEADER.size + _BUF.size * len(raws)
    main_at = _align64(table)
    layout, off = layout_.place(main_at + len(main), raws)
    if off > arena.size:
        raise ValueError(f"object needs {off} bytes, more than the {arena.size}-byte arena")
    if off > present:
        arena.reserve(present, off - present)
    view = memoryview(arena.buffer)
    try:
        _HEADER.pack_into(view, 0, _MAGIC, kind, len(main), len(raws), 0)
        for i, (o, n) in enumerate(layout):
            _BUF.pack_into(view, _HEADER.size + i * _BUF.size, o, n)
        struct.pack_into("<I", view, _CHECKED, _check(view, table))
        view[main_at:main_at + len(main)] = main
        layout_.copy_in(view, raws, layout)
    finally:
        view.release()
    return off


#: What clear() reserves: an outcome this small is then written with no
#: reservation (a syscall) on its path.
CLEARED_BYTES = 4096
_CLEARED = 0x52454C43          # "CLER": no record, CLEARED_BYTES reserved


def clear(arena: Any) -> None:
    """Leave `arena` holding no record but CLEARED_BYTES of reserved pages:
    read() then raises CorruptSharedMemoryError (never returns an earlier
    run's object) and extent() returns CLEARED_BYTES."""
    arena.reserve(0, CLEARED_BYTES)
    view = memoryview(arena.buffer)
    try:
        _HEADER.pack_into(view, 0, _CLEARED, 0, 0, 0, 0)
    finally:
        view.release()


def _check(view: memoryview, table_end: int) -> int:
    return zlib.crc32(view[_HEADER.size:table_end], zlib.crc32(view[:_CHECKED]))


def _frame(view: memoryview, size: int) -> tuple[int, int, int, list[tuple[int, int]], int]:
    """(kind, main_at, main_len, [(offset, length)], end) of the record in
    `view`, every number checked against `size`; raises CorruptSharedMemoryError."""
    if size < _HEADER.size or len(view) < size:
        raise CorruptSharedMemoryError("the worker's arena holds no valid record")
    magic, kind, main_len, nbufs, check = _HEADER.unpack_from(view, 0)
    if magic != _MAGIC:
        raise CorruptSharedMemoryError("the worker's arena holds no valid record")
    if nbufs > (size - _HEADER.size) // _BUF.size:
        raise CorruptSharedMemoryError(f"the worker's arena record claims {nbufs} buffers")
    table = _HEADER.size + _BUF.size * nbufs
    if check != _check(view, table):
        raise CorruptSharedMemoryError("the worker's arena record header is damaged")
    main_at = _align64(table)
    end = main_at + main_len
    if end > size:
        raise CorruptSharedMemoryError("the worker's arena record is truncated")
    if not nbufs:
        return kind, main_at, main_len, [], end   # the common outcome: p.result's path is short
    layout = layout_.read_table(
        view, _HEADER.size, nbufs, main_at + main_len, size,
        lambda i, o, n: CorruptSharedMemoryError("a buffer lies outside the worker's arena"))
    for o, n in layout:
        end = max(end, o + n)
    return kind, main_at, main_len, layout, end


def read(arena: Any, copy: bool = False) -> tuple[Any, int, bool]:
    """(object, kind, views) written by `write`; buffers are writable
    copy-on-write views of the arena (they keep its mapping, so the arena is
    not reused while they live) unless copy; `views` says whether any were
    made."""
    view = memoryview(arena.buffer).toreadonly()
    kind, main_at, main_len, layout, _ = _frame(view, arena.size)
    buffers = layout_.reader_views(arena.buffer, layout, getattr(arena, "fd", -1),
                                   copy) if layout else ()
    try:
        obj = _loads(view[main_at:main_at + main_len], buffers=buffers)
    except (pickle.UnpicklingError, EOFError) as exc:
        # A pickle cut short or out of step with its buffers: framing damage.
        # (A class missing here raises its own error, for the caller.)
        raise CorruptSharedMemoryError(f"the worker's arena record does not unpickle: {exc}") from exc
    return obj, kind, bool(buffers) and not copy


def extent(arena: Any) -> int:
    """The bytes the record in `arena` spans (header, pickle and buffers),
    checked as read() checks them; CLEARED_BYTES after clear()."""
    view = memoryview(arena.buffer).toreadonly()
    try:
        if arena.size >= _HEADER.size and _HEADER.unpack_from(view, 0)[0] == _CLEARED:
            return CLEARED_BYTES
        return _frame(view, arena.size)[4]
    finally:
        view.release()


class BytesArena:
    """An in-memory stand-in for an Arena."""

    def __init__(self, data: bytes | bytearray) -> None:
        self.buffer = data
        self.size = len(data)


class _ScratchArena(BytesArena):
    """A private, writable stand-in for an Arena (rehearse_write)."""

    def __init__(self, size: int) -> None:
        super().__init__(bytearray(size))

    def reserve(self, offset: int, length: int) -> None:
        if offset + length > self.size:
            raise ValueError("scratch arena too small")


def rehearse_write() -> None:
    """Write a small outcome into private memory, to no purpose but this:

    after a fork, every page the two processes share is copy-on-write, and
    the first write to each traps (~1 µs on bare metal, ~5-8 µs on a VM).
    Running the outcome's path once on a throwaway record, at a moment the
    process would wait anyway, takes those traps early, so the real outcome
    later crosses on pages already private.  `sample()` serves the reader.
    """
    write(_ScratchArena(4096), (None, None, None, 0), 0)


_sample: BytesArena | None = None


def sample() -> BytesArena:
    """A small outcome record in private memory, for rehearsing the read path."""
    global _sample
    if _sample is None:
        scratch = _ScratchArena(4096)
        write(scratch, (None, None, None, 0), 0)
        _sample = scratch
    return _sample
