"""Can a fork child use its copy of an object instead of unpickling it?

A fork worker already holds the Process object: fork copied the parent's
memory, as multiprocessing's fork start method relies on.  Unpickling the
state serialized at start() instead costs the child ~35 page faults
(~0.2 ms) and a second copy of every array in it.  The two give the same
object when pickling would only have copied values: the object's state is
a dict of atomic values (numbers, strings, bytes, None), containers of
them, numpy arrays that own their memory (not views, which may lie over
shared memory) and numpy scalars, of dtypes without objects, and
instances that are such dicts again, none of which customizes its
pickling.  Then the child rebuilds the
top level the way unpickling does -- a new instance, given the state that
the object's own __reduce_ex__ returns (copy.copy), so a Process's own
__getstate__/__setstate__ still run -- and shares the values, which fork
made private to it already.

Anything else (a function, a class, a lock, a shmproc Queue, a class with
__reduce__, __getstate__, __setstate__ or __slots__, an object array, more
than BUDGET objects to look at) and the child unpickles, as it always may:
the state serialized at start() stays in the arena for later lives.
"""
from __future__ import annotations

import copyreg
from typing import Any

from ..common.config import ProcessConfig, TimeoutConfig

__all__ = ["copies_like_pickle"]

#: Most objects looked at before giving up (the child then unpickles).
BUDGET = 512

_ATOMIC = frozenset({int, float, complex, bool, str, bytes, type(None)})
_CONTAINERS = frozenset({list, tuple, set, frozenset})
# shmproc's own value types: slotted dataclasses of plain fields.
_CONFIGS = frozenset({ProcessConfig, TimeoutConfig})
_OBJECT_GETSTATE = getattr(object, "__getstate__", None)     # Python 3.11+


def copies_like_pickle(obj: Any) -> bool:
    """Would copy.copy of a fork's copy of `obj` equal unpickling `obj`?

    True when its __reduce_ex__ is the plain one (a new instance given a
    state dict) and every value in that state is plain (module doc)."""
    try:
        reduced = obj.__reduce_ex__(5)
    except Exception:                   # noqa: BLE001 - unpicklable: the pickle path reports it
        return False
    if not (isinstance(reduced, tuple) and len(reduced) >= 3
            and reduced[0] is copyreg.__newobj__ and reduced[1] == (type(obj),)
            and type(reduced[2]) is dict and all(r is None for r in reduced[3:])):
        return False
    return _plain_values(reduced[2])


def _plain_values(state: dict[str, Any]) -> bool:
    todo: list[Any] = list(state.values())
    seen: set[int] = set()
    left = BUDGET
    while todo:
        v = todo.pop()
        t = type(v)
        if t in _ATOMIC:
            continue
        if id(v) in seen:
            continue
        seen.add(id(v))
        left -= 1
        if left < 0:
            return False
        if t in _CONTAINERS:
            todo.extend(v)
        elif t is dict:
            todo.extend(v.keys())
            todo.extend(v.values())
        elif t in _CONFIGS:
            todo.extend(getattr(v, name) for name in t.__slots__)
        elif _is_plain_array(v):
            continue
        elif _is_plain_instance(v, t):
            todo.extend(v.__dict__.values())
        else:
            return False
    return True


def _is_plain_array(v: Any) -> bool:
    # numpy without importing it: an ndarray (not a subclass: not a memmap)
    # that owns its memory, or a numpy scalar, of a dtype that holds no
    # Python objects.  A view may lie over shared memory (a mapping, another
    # process's buffer): fork's copy would share what unpickling copies.
    t = type(v)
    if t.__module__ != "numpy":
        return False
    dtype = getattr(v, "dtype", None)
    if dtype is None or dtype.hasobject:
        return False
    if t.__name__ == "ndarray":
        return v.base is None
    return any(k.__name__ == "generic" and k.__module__ == "numpy" for k in t.__mro__)


_HEAPTYPE = 1 << 9                      # Py_TPFLAGS_HEAPTYPE: a class made by a class statement


def _is_plain_instance(v: Any, t: type) -> bool:
    # Built-in types (functions, modules, classes themselves, files, locks)
    # are not: pickle names them, or refuses them.
    if not t.__flags__ & _HEAPTYPE:
        return False
    if t in copyreg.dispatch_table or "<locals>" in t.__qualname__:
        return False
    if t.__reduce_ex__ is not object.__reduce_ex__ or t.__reduce__ is not object.__reduce__:
        return False
    if getattr(t, "__getstate__", _OBJECT_GETSTATE) is not _OBJECT_GETSTATE:
        return False
    if hasattr(t, "__setstate__") or hasattr(t, "__getnewargs_ex__") \
            or hasattr(t, "__getnewargs__"):
        return False
    if any("__slots__" in vars(k) for k in t.__mro__[:-1]):
        return False
    return type(getattr(v, "__dict__", None)) is dict
