"""The exceptions of shmproc: the native layer and the queue's, and the
errors of a Process run (ProcessError and its subclasses, below).

The engine's errors (ProcessError and the section errors) derive from
ShmprocError too, so one ``except shmproc.ShmprocError`` catches anything
the library raises on its own behalf.
"""

import builtins
from typing import Any, Callable, Optional

from .outcome import HOOKS

# pickle, signal and traceback are imported where used: they are needed only
# when an error is pickled or built, and `import shmproc` must stay cheap.


class ShmprocError(Exception):
    """Base class of every error shmproc raises for its own reasons."""


class SharedMemoryError(ShmprocError, OSError):
    """Shared memory could not be created, reserved or mapped."""


class CorruptSharedMemoryError(SharedMemoryError):
    """A shared header or record failed its checks.

    The segment was written by something other than this version of
    shmproc, or was damaged; nothing was mapped or consumed from it.
    """


class SharedMemoryVersionError(CorruptSharedMemoryError):
    """A segment made by another version of shmproc's shared layouts.

    ``found`` and ``expected`` are the two ABI versions: processes of one
    program must run the same shmproc (an upgrade while workers run, or
    two virtual environments, gives this).
    """


class ForeignSharedMemoryError(CorruptSharedMemoryError):
    """A segment owned by another user (``owner_uid``; ours: ``uid``).

    Only processes of one user share segments: a descriptor from another
    user's process is refused before anything is mapped.
    """


# ---------------------------------------------------------------------------
# Errors of a Process run.
#
# They are created in the worker and travel to the parent by pickle or
# cloudpickle, so each one pickles with every field intact (__reduce__
# below), including an original_error that cannot itself be pickled.

# Section names as the engine knows them -> the hook they name (outcome.py).
# "error" (__error__) has no error class of its own: wrap() reports it as a
# plain ProcessError, which the engine discards in favour of the run's error.
# "call" is a Pool's plain function call past its task_timeout.
_HOOKS = dict(HOOKS, call="__call__")


def _hook_name(section: Any) -> str:
    """"loop" or "__loop__" -> "__loop__"; ValueError for anything else."""
    if isinstance(section, str):
        bare = section[2:-2] if section.startswith("__") and section.endswith("__") else section
        if bare in _HOOKS:
            return _HOOKS[bare]
    raise ValueError(
        f"unknown process section {section!r}; expected one of "
        f"{', '.join(_HOOKS)} (with or without the surrounding double underscores)"
    )


def _safe_str(exc: BaseException) -> str:
    # A user exception's __str__ can itself be broken; reporting the
    # failure must not fail because of that.
    try:
        return str(exc)
    except Exception:
        return f"<str() of {type(exc).__name__} failed>"


def _describe(exc: BaseException) -> str:
    """"ValueError: bad item", or just "ValueError" when the message is empty."""
    text = _safe_str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SerializationError(ShmprocError, TypeError):
    """An object could not be serialized; the message names what and why.
    (Also importable as shmproc.wire.SerializationError.)"""


class LostRecord(ShmprocError):
    """The writer of an out-of-band record died before it could be read."""


class RayNotInstalled(ShmprocError, ImportError):
    """The Ray backend was asked for, and Ray is not installed."""


class ClusterUnreachable(ShmprocError, ConnectionError):
    """The Ray cluster could not be reached (in the time allowed)."""


class ResourcesUnavailable(ShmprocError, RuntimeError):
    """The cluster cannot grant a launcher the resources asked for."""


class InitializerError(ShmprocError, RuntimeError):
    """A pool's initializer raised in a worker: the pool cannot run tasks.
    Its tasks and later calls raise this, with the initializer's own
    exception (and the worker's traceback) as ``__cause__``."""


class NotRunningError(ShmprocError, RuntimeError):
    """A call that needs a running worker came before start() or after the
    run ended (e.g. tell() to a Process that has finished)."""


class MessageBacklogError(ShmprocError, RuntimeError):
    """tell() could not queue a message: the other side left too many
    unread and the queue cannot grow further."""


def _qualified_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class RemoteError(Exception):
    """Stand-in for a worker exception that could not be sent to the parent.

    Used as ``original_error`` when the user's exception could not be
    pickled in the worker (it held a lock, a socket...) or unpickled in the
    parent (its class is missing there, or its ``__init__`` does not accept
    its own ``args``). ``type_name`` is the original class's qualified name;
    ``str()`` gives the original message.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return self.message


class RemoteTraceback(Exception):
    """The worker's formatted traceback, chained as ``__cause__`` of a ProcessError.

    Its ``str()`` is the traceback text, so Python prints it above "The
    above exception was the direct cause of the following exception".
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def note_where(err: BaseException, where: str) -> BaseException:
    """Say where a task failed: as a note (Python 3.11+) and as ``err.shmproc_task``."""
    if hasattr(err, "add_note"):
        err.add_note(where)
    err.shmproc_task = where                    # type: ignore[attr-defined]
    return err


def remote_failure(exc: Any, tb: Optional[str], where: str) -> BaseException:
    """A task's exception from a worker, ready to raise here: the worker's
    traceback text chained as ``__cause__`` and `where` noted.  A
    ProcessError carries its own traceback (``with_remote_traceback``).
    This is the one place remote tracebacks are attached."""
    if isinstance(exc, ProcessError):
        return exc.with_remote_traceback()
    if not isinstance(exc, BaseException):
        exc = RuntimeError(repr(exc))
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    return note_where(exc, where)


def _dumps(obj: Any) -> bytes:
    import pickle

    try:
        import cloudpickle  # a dependency, but keep errors usable without it
    except ImportError:  # pragma: no cover
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def _pack_original(exc: Optional[BaseException]) -> Optional[tuple[Optional[bytes], str, str]]:
    """Pre-serialize ``exc`` so that failing to pickle it cannot fail the outer pickle.

    cloudpickle is used whatever the outer pickler is, so user exceptions of
    local or ``__main__`` classes travel too; its output loads with plain
    ``pickle.loads``. Type name and message are kept for the stand-in.
    """
    if exc is None:
        return None
    try:
        payload: Optional[bytes] = _dumps(exc)
    except Exception:
        payload = None
    return (payload, _qualified_name(type(exc)), _safe_str(exc))


def _unpack_original(packed: Optional[tuple[Optional[bytes], str, str]]) -> Optional[BaseException]:
    if packed is None:
        return None
    payload, type_name, message = packed
    if payload is not None:
        import pickle

        try:
            error: BaseException = pickle.loads(payload)
            return error
        except Exception:
            pass  # e.g. class missing here, or __init__ rejects its own args
    return RemoteError(type_name, message)


def _restore_error(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """Unpickling constructor: make the instance without calling ``__init__``.

    ``__init__`` takes keyword-only fields, which plain ``cls(*args)``
    (BaseException's way) would lose; the fields come back in __setstate__.
    """
    err = cls.__new__(cls)
    # Set explicitly: OSError subclasses (TimeoutError) ignore the
    # arguments given to __new__ when they define their own __init__.
    err.args = args
    return err


class ProcessError(ShmprocError):
    """Base class of the errors of a Process run.

    Fields:
      - ``current_lap``: the lap the failure happened on (None if unknown).
      - ``original_error``: the user's exception object (or a
        :class:`RemoteError` stand-in if it could not travel), or None.
      - ``section``: the hook that failed, e.g. "__loop__", or None.
      - ``traceback_text``: the worker's formatted traceback, or None.
      - ``process_name``: the failing process's name, or None.

    Without ``message`` one is built from the fields, e.g.
    "Error in __loop__ on lap 3: ValueError: bad item".
    """

    #: The hook this class reports failures of; set by each subclass.
    section: Optional[str] = None

    def __init__(
        self,
        message: Optional[str] = None,
        *,
        current_lap: Optional[int] = None,
        original_error: Optional[BaseException] = None,
        section: Optional[str] = None,
        traceback_text: Optional[str] = None,
        process_name: Optional[str] = None,
    ) -> None:
        if section is None:
            section = type(self).section
        else:
            try:
                section = _hook_name(section)  # "loop" -> "__loop__"
            except ValueError:
                pass  # not a hook name: kept as given (free text for the base class)
        self.section = section
        self.current_lap = current_lap
        self.original_error = original_error
        self.traceback_text = traceback_text
        self.process_name = process_name
        super().__init__(self._default_message() if message is None else message)

    def _default_message(self) -> str:
        text = f"Error in {self.section or 'the process'}"
        if self.current_lap is not None:
            text += f" on lap {self.current_lap}"
        if self.original_error is not None:
            text += f": {_describe(self.original_error)}"
        return text

    @classmethod
    def wrap(
        cls,
        section: str,
        exc: BaseException,
        current_lap: Optional[int] = None,
        traceback_text: Optional[str] = None,
        *,
        process_name: Optional[str] = None,
    ) -> "ProcessError":
        """Wrap ``exc``, raised by the hook ``section``, in that hook's error class.

        ``section`` is "loop" or "__loop__" (likewise preloop, postloop,
        onfinish, result, error; "error" has no class of its own and gives a
        ProcessError with section "__error__"). Without ``traceback_text``, it is formatted from
        ``exc.__traceback__``, so call this in the ``except`` block.

        A shmproc :class:`TimeoutError` is not wrapped: it is returned
        itself, with its missing fields filled in, because the timeout is
        the error the user should see. Any other exception, including a
        ProcessError from a nested process, is wrapped.
        """
        hook = _hook_name(section)
        if not isinstance(exc, BaseException):
            raise TypeError(
                f"ProcessError.wrap() needs the exception the hook raised, got {type(exc).__name__}"
            )
        if traceback_text is None and exc.__traceback__ is not None:
            import traceback

            traceback_text = "".join(traceback.format_exception(exc))
        if isinstance(exc, TimeoutError):
            for name, value in (
                ("current_lap", current_lap),
                ("traceback_text", traceback_text),
                ("process_name", process_name),
            ):
                if getattr(exc, name) is None:
                    setattr(exc, name, value)
            return exc
        error_class = SECTION_ERRORS.get(hook, ProcessError)
        return error_class(
            section=hook,
            current_lap=current_lap,
            original_error=exc,
            traceback_text=traceback_text,
            process_name=process_name,
        )

    def with_remote_traceback(self) -> "ProcessError":
        """Chain the worker's traceback as ``__cause__`` (if known); return self.

        The parent calls this before raising an error that came from the
        worker, so the traceback prints with it.
        """
        if self.traceback_text:
            self.__cause__ = RemoteTraceback(self.traceback_text)
            self.__suppress_context__ = True
        return self

    def __reduce__(self) -> tuple[Callable[..., BaseException], tuple[Any, ...], dict[str, Any]]:
        state = dict(self.__dict__)
        state["original_error"] = _pack_original(state.get("original_error"))
        return (_restore_error, (type(self), self.args), state)

    # Only ever called with __reduce__'s dict (BaseException's allows None).
    def __setstate__(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        state = dict(state)
        packed = state.pop("original_error", None)
        self.__dict__.update(state)
        self.original_error = _unpack_original(packed)


class PreloopError(ProcessError):
    """``__preloop__`` raised; the user's exception is ``original_error``."""

    section = "__preloop__"


class MainLoopError(ProcessError):
    """``__loop__`` raised; the user's exception is ``original_error``."""

    section = "__loop__"


class PostLoopError(ProcessError):
    """``__postloop__`` raised; the user's exception is ``original_error``."""

    section = "__postloop__"


class OnFinishError(ProcessError):
    """``__onfinish__`` raised; the user's exception is ``original_error``."""

    section = "__onfinish__"


class ResultError(ProcessError):
    """``__result__`` raised; the user's exception is ``original_error``."""

    section = "__result__"


#: Hook name -> the error class that reports its failures.
SECTION_ERRORS = {
    cls.section: cls
    for cls in (PreloopError, MainLoopError, PostLoopError, OnFinishError, ResultError)
}


def _format_seconds(seconds: Any) -> str:
    # 0.3 -> "0.3", 300.0 -> "300": no float noise, no needless ".0".
    try:
        return f"{seconds:g}"
    except (TypeError, ValueError):
        return str(seconds)


class TimeoutError(ProcessError, builtins.TimeoutError):
    """A section ran longer than its ``config.timeouts`` limit.

    Also a builtin ``TimeoutError`` (and so an ``OSError``), so generic
    timeout handling catches it. Fields: ``section`` (e.g. "__loop__"),
    ``timeout`` (the limit in seconds), ``current_lap``.
    """

    def __init__(
        self,
        section: str,
        timeout: float,
        current_lap: Optional[int] = None,
        *,
        message: Optional[str] = None,
        original_error: Optional[BaseException] = None,
        traceback_text: Optional[str] = None,
        process_name: Optional[str] = None,
    ) -> None:
        self.timeout = timeout
        super().__init__(
            message,
            current_lap=current_lap,
            original_error=original_error,
            section=_hook_name(section),
            traceback_text=traceback_text,
            process_name=process_name,
        )

    def _default_message(self) -> str:
        text = f"{self.section} timed out after {_format_seconds(self.timeout)} s"
        if self.current_lap is not None:
            text += f" on lap {self.current_lap}"
        return text


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class ProcessCrashedError(ProcessError):
    """The worker process ended on its own without reporting a result.

    A segfault, ``os._exit()``, or the OOM killer, for example (``kill()``
    from the parent is not a crash). Fields: ``exitcode`` (as in
    ``multiprocessing``: negative signal number if a signal ended it),
    ``signal_name`` (e.g. "SIGSEGV"; derived from a negative exitcode when
    not given), ``last_lap`` (the last lap seen; also ``current_lap``), ``pid``.
    """

    def __init__(
        self,
        message: Optional[str] = None,
        *,
        exitcode: Optional[int] = None,
        signal_name: Optional[str] = None,
        last_lap: Optional[int] = None,
        pid: Optional[int] = None,
        section: Optional[str] = None,
        traceback_text: Optional[str] = None,
        process_name: Optional[str] = None,
    ) -> None:
        if signal_name is None and isinstance(exitcode, int) and exitcode < 0:
            signal_name = _signal_name(-exitcode)
        self.exitcode = exitcode
        self.signal_name = signal_name
        self.last_lap = last_lap
        self.pid = pid
        super().__init__(
            message,
            current_lap=last_lap,
            section=section,
            traceback_text=traceback_text,
            process_name=process_name,
        )

    def _default_message(self) -> str:
        who = "worker process" if self.pid is None else f"worker process {self.pid}"
        if self.signal_name is not None:
            how = f"died ({self.signal_name})"
        elif self.exitcode is not None:
            how = f"exited with code {self.exitcode}"
        else:
            how = "ended"
        lap = "" if self.last_lap is None else f" on lap {self.last_lap}"
        return f"{who} {how}{lap} without reporting a result"


__all__ = [
    "ShmprocError", "SharedMemoryError", "CorruptSharedMemoryError",
    "ProcessError", "PreloopError", "MainLoopError", "PostLoopError",
    "OnFinishError", "ResultError", "TimeoutError", "ProcessCrashedError",
    "RemoteError", "RemoteTraceback", "SECTION_ERRORS",
    "SharedMemoryVersionError", "ForeignSharedMemoryError", "SerializationError", "LostRecord",
    "RayNotInstalled", "ClusterUnreachable", "ResourcesUnavailable", "InitializerError",
    "NotRunningError", "MessageBacklogError",
]
