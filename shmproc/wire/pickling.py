"""Serialization: pickle protocol 5 at C speed, cloudpickle where needed.

``dumps`` first tries the C pickler.  It falls back to cloudpickle when the
C pickler refuses the object (lambdas, closures, classes defined inside
functions) or when the pickle refers to ``__main__`` by name, which a spawn
or forkserver child could not resolve; cloudpickle then ships those by
value.  So the result is what cloudpickle would produce wherever it
matters, at the cost of the plain pickler for everyday data (cloudpickle
builds a new Pickler per call: ~5 µs against ~0.5 µs).

Contiguous buffers of at least ``OOB_THRESHOLD`` bytes (numpy arrays,
PickleBuffer-wrapped bytearrays, ...) are kept out of the pickle stream
and returned separately, so the caller can copy each one exactly once,
straight into shared memory.
"""
from __future__ import annotations

import io
import pickle
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

from ..common.errors import SerializationError as SerializationError  # re-exported here

PROTOCOL = 5

#: Buffers at least this large travel out-of-band.  Below it, copying the
#: bytes into the pickle costs less than a shared segment (~20 µs to set up).
OOB_THRESHOLD = 256 * 1024

# Matches both b"__main__" and b"__mp_main__" in one scan.
_MAIN_MARKER = b"main__"


def _collector(buffers: list[pickle.PickleBuffer]) -> Callable[[pickle.PickleBuffer], bool]:
    def keep(pb: pickle.PickleBuffer) -> bool:
        try:
            nbytes = pb.raw().nbytes
        except BufferError:          # not contiguous: let pickle copy it in-band
            return True
        if nbytes < OOB_THRESHOLD:
            return True              # in-band
        buffers.append(pb)
        return False                 # out-of-band
    return keep


def _cloudpickle(obj: object, buffers: list[pickle.PickleBuffer], inband: bool = False) -> bytes:
    import cloudpickle          # imported on first need: a spawn child may never need it
    f = io.BytesIO()
    cloudpickle.Pickler(f, protocol=PROTOCOL,
                        buffer_callback=None if inband else _collector(buffers)).dump(obj)
    return f.getvalue()


def dumps(obj: object, same_main: bool = False,
          inband: bool = False) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Serialize `obj`; returns (pickle bytes, out-of-band PickleBuffers).

    same_main: the reader shares this process's __main__ (a fork child), so
    references to __main__ objects resolve there and need not be shipped by
    value (which costs ~1 ms for a class).  inband: every buffer inside the
    pickle (for where nothing can travel out-of-band); no buffers returned.
    """
    buffers: list[pickle.PickleBuffer] = []
    data: bytes | None
    try:
        data = pickle.dumps(obj, PROTOCOL, buffer_callback=None if inband else _collector(buffers))
    except Exception:           # noqa: BLE001 - any refusal: let cloudpickle try, then explain
        data = None
    else:
        if same_main or _MAIN_MARKER not in data:
            return data, buffers
    buffers.clear()
    try:
        return _cloudpickle(obj, buffers, inband), buffers
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {type(obj).__module__}.{type(obj).__qualname__} object: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def loads(data: Any, buffers: Iterable[Any] = ()) -> Any:
    """Inverse of dumps; `buffers` are the out-of-band buffers in order."""
    return pickle.loads(data, buffers=buffers)


def find_unpicklable(obj: object, root: str = "self",
                     max_depth: int = 6) -> tuple[str, type, BaseException] | None:
    """(path, type, error) of the deepest part of `obj` that cannot be
    serialized, or None.  Only called after a failure, so its cost does not
    matter; it names the culprit, e.g. ``self.conn.sock``.
    """
    seen: set[int] = set()

    def children(o: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(o, dict):
            for k, v in o.items():
                yield (f"{path}.{k}" if path == root and isinstance(k, str) else f"{path}[{k!r}]"), v
        elif isinstance(o, (list, tuple, set, frozenset)):
            for i, v in enumerate(o):
                yield f"{path}[{i}]", v
        elif hasattr(o, "__dict__") and not isinstance(o, type):
            for k, v in vars(o).items():
                yield f"{path}.{k}", v

    def walk(o: object, path: str, depth: int) -> tuple[str, type, BaseException] | None:
        if id(o) in seen or depth > max_depth:
            return None
        seen.add(id(o))
        for p, v in children(o, path):
            try:
                dumps(v)
            except Exception as exc:                 # noqa: BLE001 - any failure names it
                return walk(v, p, depth + 1) or (p, type(v), exc.__cause__ or exc)
        return None

    return walk(obj, root, 0)


def preload_for_fork_children() -> None:
    """Import cloudpickle now, in a parent about to fork workers: they then
    inherit it.  Every function of a __main__ script comes to a worker as a
    cloudpickle, and importing it in each worker at its first task cost ~6 ms
    of CPU there (a 64-worker pool's first map: 64 imports)."""
    import cloudpickle  # noqa: F401


def pickle_function(fn: object) -> bytes:
    """A task's callable as one in-band pickle (it is sent to each worker once)."""
    main, bufs = dumps(fn)
    if not bufs:
        return main
    import cloudpickle
    data: bytes = cloudpickle.dumps(fn, protocol=PROTOCOL)
    return data


def unserializable(proc: Any, exc: BaseException) -> SerializationError:
    """The error for a Process object whose state cannot be sent to a worker:
    names the attribute that holds the culprit, and what to do instead."""
    found = find_unpicklable(proc.__getstate__(), "self")
    name = type(proc).__name__
    if found is None:
        return SerializationError(f"cannot start {name}: its state cannot be serialized: {exc}")
    path, typ, err = found
    return SerializationError(
        f"cannot start {name}: {path} holds a {typ.__module__}.{typ.__qualname__}, which cannot be "
        f"sent to another process ({type(err).__name__}: {err}). Create it inside the worker "
        f"(for example in __preloop__, or lazily on first use) instead of in __init__.")
