"""One object in an Arena: how a Process's state and result cross over.

The parent writes the serialized Process into the worker's arena before
starting it; the worker copies it out, and at the end writes its outcome
(result value, timers, error) over it.  Layout at offset 0:

    [header][buffer table][pad to 64][main pickle][buffer][buffer]...

Large contiguous buffers (numpy arrays) are copied once into the arena by
the writer and read back as read-only views on the arena mapping, so a big
result costs one copy in the worker and none in the parent; the views keep
the mapping alive for as long as the caller holds them.
"""
from __future__ import annotations

import struct

from . import native, wire
from .errors import CorruptSharedMemoryError

_MAGIC = 0x52504853          # "SHPR"
_HEADER = struct.Struct("<IIQI")      # magic, kind, main length, buffer count
_BUF = struct.Struct("<QQ")           # offset, length


def _align64(n: int) -> int:
    return (n + 63) & ~63


def write(arena, obj, kind: int = 0, same_main: bool = False) -> int:
    """Serialize `obj` into `arena` at offset 0; returns the bytes used.

    Raises wire.SerializationError if `obj` cannot be serialized and
    SharedMemoryError if the machine has no memory for it.  same_main: see
    wire.dumps (the reader is a fork child of this process).
    """
    main, bufs = wire.dumps(obj, same_main)
    raws = [b.raw() for b in bufs]
    table = _HEADER.size + _BUF.size * len(raws)
    main_at = _align64(table)
    off = _align64(main_at + len(main))
    layout = []
    for raw in raws:
        off = native.copy_offset(off, raw)
        layout.append((off, raw.nbytes))
        off = _align64(off + raw.nbytes)
    if off > arena.size:
        raise ValueError(f"object needs {off} bytes, more than the {arena.size}-byte arena")
    arena.reserve(0, off)
    view = memoryview(arena.buffer)
    try:
        _HEADER.pack_into(view, 0, _MAGIC, kind, len(main), len(raws))
        for i, (o, n) in enumerate(layout):
            _BUF.pack_into(view, _HEADER.size + i * _BUF.size, o, n)
        view[main_at:main_at + len(main)] = main
        for raw, (o, n) in zip(raws, layout):
            view[o:o + n] = raw
    finally:
        view.release()
    return off


def read(arena, copy: bool = False):
    """(object, kind, views) written by `write`; buffers are read-only views
    on the arena unless copy; `views` says whether any were made."""
    view = memoryview(arena.buffer).toreadonly()
    magic, kind, main_len, nbufs = _HEADER.unpack_from(view, 0)
    table = _HEADER.size + _BUF.size * nbufs
    main_at = _align64(table)
    if magic != _MAGIC or nbufs > 1 << 20 or main_at + main_len > arena.size:
        raise CorruptSharedMemoryError("the worker's arena holds no valid record")
    buffers = []
    for i in range(nbufs):
        o, n = _BUF.unpack_from(view, _HEADER.size + i * _BUF.size)
        if o < main_at + main_len or o + n > arena.size:
            raise CorruptSharedMemoryError("a buffer lies outside the worker's arena")
        part = view[o:o + n]
        buffers.append(bytearray(part) if copy else part)
    return wire.loads(view[main_at:main_at + main_len], buffers), kind, bool(buffers) and not copy


def read_bytes(arena) -> bytes:
    """The raw record (header included), to rebuild the object later (lives)."""
    view = memoryview(arena.buffer)
    magic, _, main_len, nbufs = _HEADER.unpack_from(view, 0)
    if magic != _MAGIC:
        raise CorruptSharedMemoryError("the worker's arena holds no valid record")
    end = _align64(_HEADER.size + _BUF.size * nbufs) + main_len
    for i in range(nbufs):
        o, n = _BUF.unpack_from(view, _HEADER.size + i * _BUF.size)
        end = max(end, o + n)
    if end > arena.size:
        raise CorruptSharedMemoryError("the worker's arena record is truncated")
    return bytes(view[:end])


class BytesArena:
    """An in-memory stand-in for an Arena (to re-read a copied record)."""

    def __init__(self, data: bytes):
        self.buffer = data
        self.size = len(data)


def loads_copy(record: bytes):
    """Rebuild the object from read_bytes() output, with private buffers."""
    return read(BytesArena(record), copy=True)[0]
