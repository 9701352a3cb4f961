"""The words a run's outcome is told in, shared by the worker side and the
parent side: section ids (stored in a control block), their names, the
hook methods they run, which failures consume a life, and the kinds of
outcome a worker writes back.  No imports: every layer may use it.
"""
from __future__ import annotations

__all__ = ["PRELOOP", "LOOP", "POSTLOOP", "ONFINISH", "RESULT", "ERROR", "SECTION_NAMES",
           "HOOKS", "HOOK_NAMES", "RETRIED", "OK_RESULT", "FAILED_RESULT"]

# Section ids in the control block (0 = none).
PRELOOP, LOOP, POSTLOOP, ONFINISH, RESULT, ERROR = 1, 2, 3, 4, 5, 6

#: Section id -> the name errors and timers use.
SECTION_NAMES = {PRELOOP: "preloop", LOOP: "loop", POSTLOOP: "postloop", ONFINISH: "onfinish",
                 RESULT: "result", ERROR: "error"}

#: Section name -> the hook method it runs.
HOOKS = {name: f"__{name}__" for name in SECTION_NAMES.values()}

#: Every hook a Process may define, in the order a run calls them.
HOOK_NAMES = tuple(HOOKS.values())

#: Sections whose failure (or timeout) consumes a life.
RETRIED = (PRELOOP, LOOP, POSTLOOP)

#: Kinds of outcome a worker writes back.
OK_RESULT, FAILED_RESULT = 1, 2
