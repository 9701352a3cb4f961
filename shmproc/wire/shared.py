"""Shared arrays: one copy of a large input for every process that uses it.

    big = shmproc.share(np.load("weights.npy"))      # copied once, into shared memory
    pool.map(score, items, ...)  # with `big` in the task: each worker maps it, no copy
    p = Worker(big).start()      # the same for a Process, a Queue item, ...

`share(array)` copies an array once into a shared segment and returns a
SharedArray: a numpy array (a subclass) on that memory which pickles as a
*reference* to the segment, not as its bytes.  Unpickled in another
process, it maps the same memory; slices and views of it travel the same
way.  Read-only unless shared with writable=True, when writes are seen by
every holder at once (the users synchronise them).

Lifetime is the kernel's: the segment is a memfd, freed when the last
process holding a descriptor or a mapping of it lets go, so a holder that
crashes frees nothing early and leaks nothing.  A process holds the
descriptor while one of its SharedArrays on the segment lives (so it can
pass the array on); a plain view (np.asarray) keeps only the mapping.

Passing one along names the sender's descriptor (its pid and fd), which
the receiver opens while the sender is alive (as with every shmproc
transfer); a random nonce written in the segment's header and carried in
the reference is checked before anything is read, so a reference that
outlived its sender (pid and fd reused) is refused, never misread.
"""
from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

from .. import _native as native
from ..common.errors import CorruptSharedMemoryError, SharedMemoryError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, DTypeLike

    from .._native import Arena

__all__ = ["share", "SharedArray", "empty_shared"]

_HEADER = 64                    # nonce (8) · data bytes (8) · padding: data is 64-aligned

try:
    import numpy as _np
except ImportError:             # numpy is optional at import; shared arrays need it
    _np = None                  # type: ignore[assignment]


class _Segment:
    """This process's hold on one shared segment: its descriptor and mapping."""

    __slots__ = ("arena", "nonce", "nbytes", "address", "writable", "__weakref__")
    address: int

    def __init__(self, arena: Arena, nonce: int, nbytes: int, writable: bool) -> None:
        self.arena = arena
        self.nonce = nonce
        self.nbytes = nbytes
        self.writable = writable
        self.address = native.buffer_address(arena.buffer) + _HEADER   # type: ignore[operator]
        weakref.finalize(self, arena.close)        # the descriptor goes with the last holder

    def ref(self) -> tuple[int, int, int, int, bool]:
        return (os.getpid(), self.arena.fd, self.nonce, self.nbytes, self.writable)

    def data(self) -> memoryview:
        view = memoryview(self.arena.buffer)[_HEADER:_HEADER + self.nbytes]
        return view if self.writable else view.toreadonly()

    def holds(self, arr: Any) -> bool:
        start: int = arr.__array_interface__["data"][0]
        return self.address <= start and start + max(arr.nbytes, 0) <= self.address + self.nbytes


#: nonce -> this process's segment, so an array sent here twice maps once.
_segments: "weakref.WeakValueDictionary[int, _Segment]" = weakref.WeakValueDictionary()


def _need_numpy() -> None:
    if _np is None:
        raise ImportError("shared arrays need numpy: pip install numpy")


def _check_dtype(dtype: Any) -> None:
    if dtype.hasobject:
        raise TypeError(f"cannot share an array of dtype {dtype}: it holds Python objects, "
                        f"which live in one process's memory; convert it to a numeric, string "
                        f"or structured dtype first")


def _new_segment(nbytes: int, writable: bool) -> _Segment:
    arena = native.Arena.create(_HEADER + max(nbytes, 1))
    arena.reserve(0, _HEADER + nbytes)
    nonce = int.from_bytes(os.urandom(8), "little") | 1
    head = memoryview(arena.buffer)[:16]
    head[:8] = nonce.to_bytes(8, "little")
    head[8:16] = nbytes.to_bytes(8, "little")
    seg = _Segment(arena, nonce, nbytes, writable)
    _segments[nonce] = seg
    return seg


def _open_segment(pid: int, fd: int, nonce: int, nbytes: int, writable: bool) -> _Segment:
    seg = _segments.get(nonce)
    if seg is not None and seg.nbytes == nbytes:
        return seg
    try:
        own = native.open_peer_fd(pid, fd)
    except ProcessLookupError as exc:
        raise SharedMemoryError(
            f"cannot map a shared array: the process that sent it (pid {pid}) no longer holds "
            f"it; keep the sender's SharedArray alive until the receiver has it") from exc
    arena = native.Arena.attach(own)               # checks the segment's kind and version
    head = bytes(memoryview(arena.buffer)[:16])
    if (arena.size < _HEADER + nbytes or int.from_bytes(head[:8], "little") != nonce
            or int.from_bytes(head[8:16], "little") != nbytes):
        arena.close()
        raise CorruptSharedMemoryError(
            f"a shared array's reference does not match its segment (pid {pid}, fd {fd}): the "
            f"sender is gone and its descriptor now names something else")
    seg = _Segment(arena, nonce, nbytes, writable)
    _segments[nonce] = seg
    return seg


def _view(seg: _Segment, shape: Any, dtype: Any, offset: int, strides: Any) -> SharedArray:
    # Through frombuffer: numpy then refuses `flags.writeable = True` on a
    # read-only share (an ndarray made straight on a read-only buffer allows it).
    flat = _np.frombuffer(seg.data(), dtype=_np.uint8)
    arr = _np.ndarray(shape, dtype=dtype, buffer=flat, offset=offset, strides=strides)
    out = arr.view(SharedArray)
    out._shm = seg
    return out


def _rebuild(ref: tuple[int, int, int, int, bool], offset: int, shape: Any, dtype: Any,
             strides: Any) -> SharedArray:
    _need_numpy()
    return _view(_open_segment(*ref), shape, dtype, offset, strides)


if _np is not None:
    class SharedArray(_np.ndarray):
        """A numpy array on shared memory that pickles as a reference to it
        (see the module doc).  Results of arithmetic on it are ordinary
        arrays' worth of new memory: they pickle as usual, by value."""

        _shm: _Segment | None = None

        def __array_finalize__(self, obj: Any) -> None:
            seg = getattr(obj, "_shm", None)
            # A view of shared memory stays a reference; a new array (a
            # ufunc's result, a copy) does not point into the segment.
            self._shm = seg if seg is not None and seg.holds(self) else None

        def __reduce_ex__(self, protocol: Any) -> Any:
            seg = self._shm
            if seg is None or not seg.holds(self):
                return _np.asarray(self).copy().__reduce_ex__(protocol)
            offset = self.__array_interface__["data"][0] - seg.address
            return _rebuild, (seg.ref(), offset, self.shape, self.dtype, self.strides)

        def __reduce__(self) -> Any:
            return self.__reduce_ex__(2)

        @property
        def shared(self) -> bool:
            """True while this array's memory lies in a shared segment."""
            return self._shm is not None
else:                                   # pragma: no cover - numpy is installed for the tests
    SharedArray = None                          # type: ignore[misc]


def share(array: ArrayLike, *, writable: bool = False) -> SharedArray:
    """A SharedArray holding a copy of `array` (made once): pass it to
    Processes, Pool tasks and Queues, and each process maps the same
    memory.  writable=True: writes through any holder are seen by all."""
    _need_numpy()
    if not isinstance(writable, bool):
        raise TypeError(f"writable must be True or False, not {writable!r}")
    arr = _np.asarray(array)
    _check_dtype(arr.dtype)
    seg = _new_segment(arr.nbytes, True)
    target = _view(seg, arr.shape, arr.dtype, 0, None)
    target[...] = arr
    seg.writable = writable
    return _view(seg, arr.shape, arr.dtype, 0, None)


def empty_shared(shape: int | Sequence[int], dtype: DTypeLike = float, *,
                 writable: bool = True) -> SharedArray:
    """A new SharedArray of zeros (shared memory starts zeroed), writable
    by default: the way to fill a shared output from many workers."""
    _need_numpy()
    if not isinstance(writable, bool):
        raise TypeError(f"writable must be True or False, not {writable!r}")
    dtype = _np.dtype(dtype)
    _check_dtype(dtype)
    nbytes = int(_np.prod(shape, dtype=_np.int64)) * dtype.itemsize
    seg = _new_segment(nbytes, writable)
    return _view(seg, shape, dtype, 0, None)
