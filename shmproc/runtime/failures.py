"""A pool worker's failures as they travel: a task's exception with its
traceback (or a stand-in when the exception cannot be pickled), a
function that could not be rebuilt, a result that cannot be sent."""
from __future__ import annotations

from ..common.errors import RemoteError, ResultError
from ..common.outcome import FAILED_RESULT
from ..wire import pickling as wire
from ..wire import taskwire
from ..wire.taskwire import R_CHUNK, R_ERROR, R_PART, R_PROCESS


def format_exception(exc) -> str:
    import traceback
    return "".join(traceback.format_exception(exc))


def qualified(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def error_payload(exc):
    """(exception, traceback text), with a stand-in if it cannot travel."""
    tb = format_exception(exc)
    try:
        main, bufs = wire.dumps(exc)
        wire.loads(main, [b.raw() for b in bufs])
    except Exception:                       # noqa: BLE001 - any failure: send a stand-in
        exc = RemoteError(qualified(type(exc)), str(exc))
    return exc, tb


class BrokenFn:
    """A function that could not be rebuilt here: every call reports why."""

    def __init__(self, exc):
        self.exc = exc

    def __call__(self, *args, **kwargs):
        raise self.exc


def unsendable(op, ident, payload, exc, us, token, slot, failed):
    """The record to send instead of a result that cannot be pickled:
    a chunk's items that cannot travel fail alone; a Process's outcome
    becomes a ResultError; anything else fails with SerializationError.
    `failed()` counts each item failed here."""
    what = f"cannot send the result of task {ident} back to the parent: " \
           f"{type(exc).__name__}: {exc}"
    if op in (R_CHUNK, R_PART):         # fail only the items that cannot travel
        values, errors = payload
        for i, v in enumerate(values):
            if i not in errors:
                try:
                    wire.dumps(v)
                except Exception as e:   # noqa: BLE001
                    values[i] = None
                    errors[i] = error_payload(wire.SerializationError(
                        f"cannot send the result of item {i} of this chunk back to the "
                        f"parent: {type(e).__name__}: {e}"))
                    failed()
        for i, e in list(errors.items()):
            try:
                wire.dumps(e)
            except Exception:            # noqa: BLE001
                errors[i] = (RemoteError(qualified(type(e[0])), str(e[0])), e[1])
        try:
            return taskwire.encode(op, ident, (values, errors), token, slot, us)
        except Exception as e2:          # noqa: BLE001 - give up on the whole chunk
            exc = e2
    if op == R_PROCESS:
        if payload[0] != FAILED_RESULT:     # (a failed outcome was counted as it failed)
            failed()
        lap = payload[4]
        err = ResultError(what, current_lap=lap, original_error=exc)
        return taskwire.encode(R_PROCESS, ident, (2, err, None, err, lap), token, slot, us)
    if op != R_ERROR:                   # (a task's error was counted where it was raised)
        failed()
    return taskwire.encode(R_ERROR, ident, error_payload(wire.SerializationError(what)),
                           token, slot, us)
