"""Where a record's out-of-band buffers lie in a segment: one layout for
every record that carries them (Process state and results in an arena,
transfer.py; out-of-band items in a blob, blobs.py).

    [... main pickle][pad][buffer][pad][buffer]...      each buffer placed
    where its source sits within a page (see _native.copy_offset: memcpy
    is ~3x faster when source and destination share their offset within a
    cache line), every start 64-byte aligned or page-matched

The reader gets each buffer as a writable view of a private, copy-on-write
mapping of the segment (reader_views; see _native/memory.py): no copy,
and a write stays in the reader's process.

A record's buffer table is (offset, length) per buffer, 16 bytes each,
written with TABLE_ENTRY and read back with read_table, which checks every
entry against the segment before anything is addressed.
"""
from __future__ import annotations

import struct
from typing import Any, Callable, Iterable, Sequence

from .. import _native as native

__all__ = ["TABLE_ENTRY", "align64", "place", "copy_in", "table", "read_table", "reader_views"]

#: One buffer's entry in a record's table: offset, length.
TABLE_ENTRY = struct.Struct("<QQ")


def align64(n: int) -> int:
    return (n + 63) & ~63


def place(start: int, raws: Sequence[memoryview]) -> tuple[list[tuple[int, int]], int]:
    """(layout, end): an (offset, length) for each buffer in `raws`, the
    first at or after `start`, and the offset just past the last."""
    layout: list[tuple[int, int]] = []
    off = align64(start)
    for raw in raws:
        off = native.copy_offset(off, raw)
        layout.append((off, raw.nbytes))
        off = align64(off + raw.nbytes)
    return layout, off


def copy_in(view: memoryview, raws: Sequence[memoryview],
            layout: Sequence[tuple[int, int]]) -> None:
    """Copy each buffer to its place (the one copy a large buffer costs)."""
    for raw, (o, n) in zip(raws, layout):
        view[o:o + n] = raw


def table(layout: Iterable[tuple[int, int]]) -> bytes:
    return b"".join(TABLE_ENTRY.pack(o, n) for o, n in layout)


def read_table(data: Any, at: int, count: int, lowest: int, size: int,
               corrupt: Callable[[int, int, int], BaseException]) -> list[tuple[int, int]]:
    """The `count` entries of a table at `data[at:]`, each checked to lie in
    [lowest, size); a bad one raises corrupt(index, offset, length)."""
    layout: list[tuple[int, int]] = []
    for i in range(count):
        o, n = TABLE_ENTRY.unpack_from(data, at + i * TABLE_ENTRY.size)
        if o < lowest or o > size or n > size - o:
            raise corrupt(i, o, n)
        layout.append((o, n))
    return layout


def reader_views(shared: Any, layout: Sequence[tuple[int, int]], fd: int,
                 copy: bool) -> list[Any]:
    """The buffers at `layout` in the segment behind `fd`, whose shared
    mapping is `shared` (a buffer), for the reader: private copies if
    `copy`, else writable copy-on-write views of one private mapping over
    all of them.  That mapping keeps `shared` alive, and with it the lease
    or arena that keeps the segment from being rewritten under it.  With no
    segment (fd < 0: a record held in bytes) the views are slices of `shared`."""
    if copy or fd < 0:
        view = memoryview(shared)
        return [bytearray(view[o:o + n]) if copy else view[o:o + n] for o, n in layout]
    lo = min((o for o, n in layout if n), default=None)
    if lo is None:
        return [memoryview(bytearray()) for _ in layout]     # no bytes at all (none, or empty)
    hi = max(o + n for o, n in layout)
    private = memoryview(native.private_view(fd, lo, hi - lo, shared))
    return [private[o - lo:o - lo + n] if n else memoryview(bytearray()) for o, n in layout]
