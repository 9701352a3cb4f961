"""The words a run's outcome is told in, shared by the worker side and the
parent side: section ids (stored in a control block), their names, the
hook methods they run, which failures consume a life, and the kinds of
outcome a worker writes back.  No shmproc imports: every layer may use it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar
    _F = TypeVar("_F", bound=Callable[..., Any])

__all__ = ["PRELOOP", "LOOP", "POSTLOOP", "ONFINISH", "RESULT", "ERROR", "CALL", "SECTION_NAMES",
           "HOOKS", "HOOK_NAMES", "RETRIED", "OK_RESULT", "FAILED_RESULT", "PROCESS_MARK",
           "default_hook", "is_default_hook", "is_process_class", "is_process"]

# Section ids in the control block (0 = none).
PRELOOP, LOOP, POSTLOOP, ONFINISH, RESULT, ERROR = 1, 2, 3, 4, 5, 6
CALL = 7        # a pool's plain function call under its task_timeout

#: Section id -> the name errors and timers use.
SECTION_NAMES = {PRELOOP: "preloop", LOOP: "loop", POSTLOOP: "postloop", ONFINISH: "onfinish",
                 RESULT: "result", ERROR: "error", CALL: "call"}

#: Section name -> the hook method it runs.
HOOKS = {name: f"__{name}__" for sec, name in SECTION_NAMES.items() if sec != CALL}

#: Every hook a Process may define, in the order a run calls them.
HOOK_NAMES = tuple(HOOKS.values())

#: Sections whose failure (or timeout) consumes a life.
RETRIED = (PRELOOP, LOOP, POSTLOOP)

#: Kinds of outcome a worker writes back.
OK_RESULT, FAILED_RESULT = 1, 2

# ---- telling a Process apart without importing it ----------------------------------
# The worker side (runtime/) must not import the parent-side Process class:
# the base class marks itself and its empty default hooks instead.

#: Class attribute set to True on shmproc's Process base class (so on every subclass).
PROCESS_MARK = "__shmproc_process__"
#: Attribute set on the base class's empty hooks: a run skips them.
DEFAULT_HOOK_MARK = "__shmproc_default_hook__"


def default_hook(fn: _F) -> _F:
    """Mark `fn` as an empty default hook of the Process base class."""
    setattr(fn, DEFAULT_HOOK_MARK, True)
    return fn


def is_default_hook(fn: object) -> bool:
    return getattr(fn, DEFAULT_HOOK_MARK, False) is True


def is_process_class(obj: object) -> bool:
    """Is `obj` shmproc's Process class or a subclass of it?"""
    return isinstance(obj, type) and getattr(obj, PROCESS_MARK, False) is True


def is_process(obj: object) -> bool:
    """Is `obj` an instance of a Process subclass?"""
    return is_process_class(type(obj))
