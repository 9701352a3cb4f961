"""One namespace per worker for the functions of the parent's __main__ script.

cloudpickle ships functions from ``__main__`` by value, and rebuilds each
one with its own copy of the globals it uses.  So an initializer that sets
a global (``global _model; _model = load()``) never reaches the task
functions that read it, which is the stdlib's canonical initializer
pattern.  In a pool worker, every function rebuilt from ``__main__`` is
bound instead to one shared namespace, as if the script were one module
in the worker:

* a name seen for the first time takes the value the parent shipped;
* a name shipped again takes the parent's newer value, unless the
  worker's own code reassigned it since (the initializer's state stays).
"""
from __future__ import annotations

import types

__all__ = ["adopt"]

_MAIN_MODULES = ("__main__", "__mp_main__")
_shared: dict = {}          # the worker's namespace of the script
_shipped: dict = {}         # name -> the value last taken from the parent
_UNSET = object()


def _from_main(obj) -> bool:
    return type(obj) is types.FunctionType and obj.__module__ in _MAIN_MODULES


def _rebind(fn):
    new = types.FunctionType(fn.__code__, _shared, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    new.__annotations__ = fn.__annotations__
    new.__dict__.update(fn.__dict__)
    return new


def adopt(obj):
    """`obj` bound to the worker's script namespace if it is a function of
    the parent's __main__ (rebuilt by cloudpickle); anything else as is."""
    if not _from_main(obj) or obj.__globals__ is _shared:
        return obj
    shipped = obj.__globals__
    # The functions rebuilt with it share its globals dict (one pickle):
    # all of them move to the shared namespace, so they call one another there.
    moved = {id(obj): _rebind(obj)}
    for value in shipped.values():
        if _from_main(value) and value.__globals__ is shipped and id(value) not in moved:
            moved[id(value)] = _rebind(value)
    for name, value in shipped.items():
        value = moved.get(id(value), value)
        if name not in _shared or _shared[name] is _shipped.get(name, _UNSET):
            _shared[name] = value
        _shipped[name] = value
    return moved[id(obj)]
