"""detach(value): a result with nothing left in shared memory.

Large buffers reach a reader as writable copy-on-write views of a shared
segment (layout.reader_views): no copy, but each view keeps its segment
(a blob, an arena) mapped and away from reuse while it lives.  A caller
that keeps results for long, or wants the memory accounted as its own,
detaches them: every array or buffer that still lies in such a view is
copied into ordinary memory; everything else is returned as it is.

Walked: lists, tuples, dicts (plain ones), numpy arrays, memoryviews.
Any other object is asked through pickle whether it carries such a
buffer (a pandas frame, a user class built on PickleBuffer), and if so is
rebuilt on private copies of its buffers.
"""
from __future__ import annotations

import pickle
import sys
from typing import Any

from .. import _native as native

__all__ = ["detach"]

# Values that can hold no buffer: returned as they are, with no look inside.
_ATOMS = frozenset((int, float, complex, bool, str, bytes, bytearray, type(None),
                    range, slice, frozenset, set))


def detach(value: Any) -> Any:
    """`value` with its arrays and buffers that lie in shared memory copied
    out (writable copies); the same object when there are none."""
    t = type(value)
    if t in _ATOMS:
        return value
    if t is list:
        return [detach(v) for v in value]
    if t is tuple:
        return tuple(detach(v) for v in value)
    if t is dict:
        return {k: detach(v) for k, v in value.items()}
    if t is memoryview:
        return _detach_view(value)
    np = sys.modules.get("numpy")       # never imported here: an array implies it is loaded
    if np is not None and isinstance(value, np.ndarray):
        return value.copy() if _in_view(value.__array_interface__["data"][0]) else value
    return _detach_other(value)


def _in_view(address: int | None) -> bool:
    return address is not None and native.is_private_view(address)


def _detach_view(view: memoryview) -> memoryview:
    address = native.buffer_address(view)
    if address is None:                 # not contiguous: look at what it views
        address = native.buffer_address(view.obj)
    if not _in_view(address):
        return view
    copy = memoryview(bytearray(view.tobytes()))
    if view.format != "B" or view.ndim != 1:
        copy = copy.cast(view.format, view.shape)   # type: ignore[call-overload]
    return copy.toreadonly() if view.readonly else copy


def _detach_other(value: Any) -> Any:
    buffers: list[memoryview] = []

    def out_of_band(pb: pickle.PickleBuffer) -> bool:
        try:
            raw = pb.raw()
        except BufferError:             # not contiguous: pickle copies it in-band
            return True
        buffers.append(raw)
        return False

    try:
        data = pickle.dumps(value, 5, buffer_callback=out_of_band)
    except Exception:                   # noqa: BLE001 - not picklable: it came by another way
        return value
    if not any(_in_view(native.buffer_address(raw)) for raw in buffers):
        return value
    return pickle.loads(data, buffers=[bytearray(raw) for raw in buffers])
