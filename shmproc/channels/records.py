"""How a Queue's records are tagged and decoded, and the two holders a
batch leaves behind when one of its items fails (queue.py's backlog)."""
from __future__ import annotations

import pickle
from typing import Any, Iterable, TypeVar

from ..common.errors import CorruptSharedMemoryError

__all__ = ["TAG_PICKLE", "TAG_BYTES", "TAG_STR", "TAG_BLOB", "unpickle", "corrupt_pickle",
           "decode_small", "Raw", "Failed", "NOTHING", "Item"]

#: The type of what a queue carries, for type checkers: Queue[Item].
Item = TypeVar("Item")

# Record tags (15 bits in the ring).  bytes and str skip pickle entirely:
# a raw copy each way is several times cheaper than dumps + loads.
TAG_PICKLE = 0
TAG_BYTES = 1
TAG_STR = 2
TAG_BLOB = 3       # descriptor of an out-of-band record; its kind is inside


def unpickle(view: Any, buffers: Iterable[Any] = ()) -> Any:
    """Unpickle exactly one record; a malformed one is CorruptSharedMemoryError."""
    try:
        return pickle.loads(view, buffers=buffers)
    except Exception as exc:
        raise corrupt_pickle(exc, len(view)) from exc


def corrupt_pickle(exc: BaseException, n: int) -> BaseException:
    """`exc` from pickle.loads of an n-byte record (caught in the frame that
    called loads), or the error to raise instead.

    The unpickler's own complaints (truncated, unknown opcode, bad memo,
    bad length) mean the record is not a pickle we wrote: corruption.  An
    exception raised by a class's own code while it is rebuilt (a Python
    frame below loads), or a class this process cannot import, is the
    item's own error and is raised as it is, as multiprocessing.Queue does.
    """
    tb = exc.__traceback__          # starts at the frame that called loads
    own = tb is not None and tb.tb_next is not None
    if own or isinstance(exc, (ImportError, AttributeError)):
        return exc
    return CorruptSharedMemoryError(
        f"a shmproc.Queue record of {n} bytes is not a valid pickle "
        f"({type(exc).__name__}: {exc})")


def decode_small(view: memoryview, tag: int) -> Any:
    if tag == TAG_PICKLE:
        return unpickle(view)
    if tag == TAG_BYTES:
        return view.tobytes()
    if tag == TAG_STR:
        return str(view, "utf-8", "surrogatepass")
    raise CorruptSharedMemoryError(f"unknown record tag {tag} in a shmproc.Queue")


class Raw:
    """A record of a batch not yet rebuilt (kept after an interruption)."""

    __slots__ = ("data", "tag", "copy")

    def __init__(self, data: bytes, tag: int, copy: bool) -> None:
        self.data, self.tag, self.copy = data, tag, copy


NOTHING = object()     # _from_backlog: the backlog was empty after all


class Failed:
    """An item that could not be decoded, kept to be raised in its turn."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
