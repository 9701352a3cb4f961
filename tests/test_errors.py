"""Tests for the Process run errors in shmproc.common.errors.

They are raised in the worker and re-raised in the parent, so beyond their
messages and fields the tests check that every one survives pickle and
cloudpickle with every field intact, even when the user's exception cannot.
"""

import builtins
import pickle
import signal
import threading
import traceback

import cloudpickle
import pytest

import shmproc
from shmproc.common import errors
from shmproc.common.errors import (
    SECTION_ERRORS,
    MainLoopError,
    OnFinishError,
    PostLoopError,
    PreloopError,
    ProcessCrashedError,
    ProcessError,
    RemoteError,
    RemoteTraceback,
    ResultError,
    ShmprocError,
    TimeoutError,
)

PICKLERS = [pytest.param(pickle, id="pickle"), pytest.param(cloudpickle, id="cloudpickle")]

SECTION_CLASSES = [
    ("preloop", PreloopError),
    ("loop", MainLoopError),
    ("postloop", PostLoopError),
    ("onfinish", OnFinishError),
    ("result", ResultError),
]


def roundtrip(obj, dumper):
    return pickle.loads(dumper.dumps(obj))


def raised(exc):
    """``exc`` after being raised and caught, so it has a __traceback__."""
    try:
        raise exc
    except BaseException as caught:
        return caught


class LockHolder(Exception):
    """A user exception that cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class TwoArgs(Exception):
    """Pickles, but cannot be unpickled: __init__ does not accept its own args."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


class WithFields(Exception):
    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


class BrokenStr(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


# -- hierarchy ----------------------------------------------------------------------


def test_hierarchy():
    for cls in (PreloopError, MainLoopError, PostLoopError, OnFinishError, ResultError,
                TimeoutError, ProcessCrashedError):
        assert issubclass(cls, ProcessError)
    assert issubclass(ProcessError, ShmprocError)
    assert issubclass(TimeoutError, builtins.TimeoutError)
    assert issubclass(TimeoutError, OSError)
    assert TimeoutError is not builtins.TimeoutError
    assert not issubclass(ProcessError, OSError)  # only TimeoutError is an OSError


def test_section_class_attributes():
    assert ProcessError.section is None
    for name, cls in SECTION_CLASSES:
        assert cls.section == f"__{name}__"
        assert SECTION_ERRORS[f"__{name}__"] is cls
    assert len(SECTION_ERRORS) == 5


def test_module_exports():
    for name in errors.__all__:
        assert hasattr(errors, name), name
    # A star import must not drag in the module's helpers.
    assert "pickle" not in errors.__all__ and "builtins" not in errors.__all__


def test_reachable_from_the_package():
    assert shmproc.common.errors.MainLoopError is MainLoopError


# -- ProcessError and the section errors --------------------------------------------------


def test_exact_message_of_the_spec():
    e = MainLoopError(current_lap=3, original_error=ValueError("bad item"))
    assert str(e) == "Error in __loop__ on lap 3: ValueError: bad item"
    assert e.args == ("Error in __loop__ on lap 3: ValueError: bad item",)
    assert e.original_error.args == ("bad item",)
    assert e.current_lap == 3 and e.section == "__loop__"
    assert e.traceback_text is None and e.process_name is None


def test_each_section_message():
    for name, cls in SECTION_CLASSES:
        e = cls(current_lap=0, original_error=KeyError("k"))
        assert str(e) == f"Error in __{name}__ on lap 0: KeyError: 'k'"


def test_message_without_lap_or_original():
    assert str(PostLoopError()) == "Error in __postloop__"
    assert str(PostLoopError(current_lap=2)) == "Error in __postloop__ on lap 2"
    assert str(PostLoopError(original_error=OSError("disk"))) == "Error in __postloop__: OSError: disk"


def test_message_with_an_empty_or_broken_original_message():
    assert str(MainLoopError(current_lap=1, original_error=StopIteration())) == (
        "Error in __loop__ on lap 1: StopIteration"
    )
    e = MainLoopError(current_lap=1, original_error=BrokenStr())
    assert str(e) == "Error in __loop__ on lap 1: BrokenStr: <str() of BrokenStr failed>"


def test_base_class_defaults_and_custom_message():
    e = ProcessError()
    assert str(e) == "Error in the process"
    assert (e.current_lap, e.original_error, e.section, e.traceback_text, e.process_name) == (
        None, None, None, None, None,
    )
    e = ProcessError("custom text", current_lap=4, process_name="w1")
    assert str(e) == "custom text" and e.current_lap == 4 and e.process_name == "w1"


def test_section_keyword_is_normalized_or_kept():
    assert ProcessError(section="loop").section == "__loop__"
    assert ProcessError(section="__result__").section == "__result__"
    assert ProcessError(section="serialization").section == "serialization"
    assert str(ProcessError(section="start()")) == "Error in start()"


def test_all_fields_are_kept():
    orig = ValueError("x")
    e = PreloopError(
        "msg", current_lap=5, original_error=orig, traceback_text="tb", process_name="p"
    )
    assert (str(e), e.current_lap, e.original_error, e.section, e.traceback_text, e.process_name) == (
        "msg", 5, orig, "__preloop__", "tb", "p",
    )


def test_fields_are_keyword_only():
    with pytest.raises(TypeError):
        MainLoopError("msg", 3)


# -- wrap -----------------------------------------------------------------------------


def test_wrap_picks_the_class_for_both_spellings():
    for name, cls in SECTION_CLASSES:
        for spelling in (name, f"__{name}__"):
            e = ProcessError.wrap(spelling, ValueError("v"), 2, "tb text")
            assert type(e) is cls
            assert e.section == f"__{name}__"
            assert e.current_lap == 2 and e.traceback_text == "tb text"
            assert e.original_error.args == ("v",)


def test_wrap_is_also_reachable_from_subclasses():
    assert type(MainLoopError.wrap("preloop", ValueError())) is PreloopError


def test_wrap_formats_the_traceback_of_a_caught_exception():
    def user_hook():
        raise ValueError("bad item")

    try:
        user_hook()
    except ValueError as exc:
        e = ProcessError.wrap("loop", exc, 3, process_name="w")
    assert str(e) == "Error in __loop__ on lap 3: ValueError: bad item"
    assert e.traceback_text.startswith("Traceback (most recent call last):")
    assert "in user_hook" in e.traceback_text
    assert e.traceback_text.rstrip().endswith("ValueError: bad item")
    assert e.process_name == "w"


def test_wrap_without_traceback():
    e = ProcessError.wrap("loop", ValueError("never raised"), 0)
    assert e.traceback_text is None


def test_wrap_passes_our_timeout_through_and_fills_missing_fields():
    t = raised(TimeoutError("loop", 0.3))
    assert t.current_lap is None and t.traceback_text is None
    w = ProcessError.wrap("loop", t, 4, process_name="w")
    assert w is t
    assert t.current_lap == 4 and t.process_name == "w"
    assert "TimeoutError" in t.traceback_text
    # Fields already set are not overwritten.
    t2 = TimeoutError("loop", 0.3, 1, traceback_text="original tb")
    assert ProcessError.wrap("loop", t2, 9, "other tb") is t2
    assert t2.current_lap == 1 and t2.traceback_text == "original tb"
    assert str(t2) == "__loop__ timed out after 0.3 s on lap 1"


def test_wrap_wraps_other_process_errors():
    # e.g. a nested process's failure read inside this process's __loop__
    nested = MainLoopError(current_lap=8, original_error=ValueError("inner"))
    e = ProcessError.wrap("loop", nested, 1)
    assert type(e) is MainLoopError and e.original_error is nested
    assert str(e) == (
        "Error in __loop__ on lap 1: MainLoopError: Error in __loop__ on lap 8: ValueError: inner"
    )
    # The builtin TimeoutError (e.g. a socket timeout) is a user error, so it is wrapped.
    e = ProcessError.wrap("loop", builtins.TimeoutError("socket"), 1)
    assert type(e) is MainLoopError


def test_wrap_accepts_base_exceptions():
    e = ProcessError.wrap("onfinish", SystemExit(3), 2)
    assert type(e) is OnFinishError and str(e) == "Error in __onfinish__ on lap 2: SystemExit: 3"


def test_wrap_of_a_failing_error_hook_gives_a_plain_process_error():
    # The runner wraps a failure of __error__ too (then reports the run's error).
    for spelling in ("error", "__error__"):
        e = ProcessError.wrap(spelling, RuntimeError("handler broke"), 4)
        assert type(e) is ProcessError and e.section == "__error__"
        assert str(e) == "Error in __error__ on lap 4: RuntimeError: handler broke"
        assert type(pickle.loads(pickle.dumps(e))) is ProcessError


def test_wrap_rejects_unknown_sections():
    for bad in ("full_loop", "init", "Loop", "_loop_", "", None):
        with pytest.raises(ValueError, match="unknown process section .*expected one of preloop, loop, .*error"):
            ProcessError.wrap(bad, ValueError(), 0)


def test_wrap_rejects_non_exceptions():
    with pytest.raises(TypeError, match="needs the exception the hook raised, got str"):
        ProcessError.wrap("loop", "oops", 0)


# -- TimeoutError -----------------------------------------------------------------------


def test_timeout_error_fields_and_message():
    t = TimeoutError("__loop__", 0.3, 2)
    assert str(t) == "__loop__ timed out after 0.3 s on lap 2"
    assert (t.section, t.timeout, t.current_lap) == ("__loop__", 0.3, 2)
    assert t.original_error is None and t.traceback_text is None
    assert t.args == ("__loop__ timed out after 0.3 s on lap 2",)


def test_timeout_error_message_variants():
    assert str(TimeoutError("preloop", 30.0, 0)) == "__preloop__ timed out after 30 s on lap 0"
    assert str(TimeoutError("onfinish", 60)) == "__onfinish__ timed out after 60 s"
    assert str(TimeoutError("loop", 0.001, 1)) == "__loop__ timed out after 0.001 s on lap 1"
    assert str(TimeoutError("loop", 1, 1, message="custom")) == "custom"


def test_timeout_error_is_caught_as_the_builtin():
    with pytest.raises(builtins.TimeoutError):
        raise TimeoutError("loop", 1.0, 0)
    with pytest.raises(OSError):
        raise TimeoutError("loop", 1.0, 0)
    t = TimeoutError("loop", 1.0, 0)
    assert t.errno is None and t.strerror is None


def test_timeout_error_rejects_unknown_sections():
    with pytest.raises(ValueError, match="unknown process section 'lop'"):
        TimeoutError("lop", 1.0, 0)


def test_timeout_error_keyword_fields():
    t = TimeoutError("postloop", 2.5, 3, traceback_text="tb", process_name="p",
                     original_error=KeyboardInterrupt())
    assert t.traceback_text == "tb" and t.process_name == "p"
    assert isinstance(t.original_error, KeyboardInterrupt)


# -- ProcessCrashedError -------------------------------------------------------------------


def test_crash_by_signal_derives_the_name_from_the_exitcode():
    e = ProcessCrashedError(exitcode=-signal.SIGSEGV, last_lap=7, pid=1234)
    assert str(e) == "worker process 1234 died (SIGSEGV) on lap 7 without reporting a result"
    assert (e.exitcode, e.signal_name, e.last_lap, e.pid) == (-11, "SIGSEGV", 7, 1234)
    assert e.current_lap == 7 and e.section is None


def test_crash_with_explicit_signal_name():
    e = ProcessCrashedError(signal_name="SIGKILL", last_lap=0, pid=5)
    assert str(e) == "worker process 5 died (SIGKILL) on lap 0 without reporting a result"
    assert e.exitcode is None


def test_crash_by_exit_code():
    e = ProcessCrashedError(exitcode=3, last_lap=7, pid=1234)
    assert str(e) == "worker process 1234 exited with code 3 on lap 7 without reporting a result"
    assert e.signal_name is None


def test_crash_message_variants():
    assert str(ProcessCrashedError()) == "worker process ended without reporting a result"
    assert str(ProcessCrashedError(exitcode=0, pid=9)) == (
        "worker process 9 exited with code 0 without reporting a result"
    )
    assert ProcessCrashedError(exitcode=-200).signal_name == "signal 200"
    assert str(ProcessCrashedError("custom", pid=1)) == "custom"
    e = ProcessCrashedError(exitcode=-9, last_lap=2, section="loop", process_name="w")
    assert e.signal_name == "SIGKILL" and e.section == "__loop__" and e.process_name == "w"


# -- remote traceback ------------------------------------------------------------------------


def test_remote_traceback_str_is_the_text():
    r = RemoteTraceback("Traceback (most recent call last):\n  boom\n")
    assert str(r) == "Traceback (most recent call last):\n  boom\n"
    assert r.text == str(r)


def test_with_remote_traceback_chains_the_text():
    e = MainLoopError(current_lap=1, original_error=ValueError("bad"), traceback_text="WORKER TB\n")
    assert e.with_remote_traceback() is e
    assert isinstance(e.__cause__, RemoteTraceback)
    assert str(e.__cause__) == "WORKER TB\n"
    assert e.__suppress_context__
    printed = "".join(traceback.format_exception(raised(e)))
    assert "WORKER TB" in printed
    assert "The above exception was the direct cause of the following exception" in printed
    assert printed.index("WORKER TB") < printed.index("Error in __loop__ on lap 1")


def test_with_remote_traceback_without_text_changes_nothing():
    e = MainLoopError(current_lap=1)
    assert e.with_remote_traceback() is e
    assert e.__cause__ is None


# -- pickling ----------------------------------------------------------------------------------


def every_error():
    """One instance of each class, with every field set."""
    kwargs = dict(traceback_text="Traceback...\nValueError: bad item\n", process_name="worker-1")
    out = [
        ProcessError("plain", current_lap=1, original_error=ValueError("bad item"),
                     section="__loop__", **kwargs),
        TimeoutError("loop", 0.3, 2, original_error=RuntimeError("interrupted"), **kwargs),
        ProcessCrashedError(exitcode=-9, last_lap=7, pid=4321, section="loop", **kwargs),
    ]
    out += [cls(current_lap=3, original_error=ValueError("bad item"), **kwargs)
            for _, cls in SECTION_CLASSES]
    return out


FIELDS = ("args", "current_lap", "section", "traceback_text", "process_name",
          "timeout", "exitcode", "signal_name", "last_lap", "pid")


def assert_same_error(back, e):
    assert type(back) is type(e)
    assert str(back) == str(e)
    for name in FIELDS:
        assert getattr(back, name, "absent") == getattr(e, name, "absent"), name
    if e.original_error is None:
        assert back.original_error is None
    else:
        assert type(back.original_error) is type(e.original_error)
        assert back.original_error.args == e.original_error.args


@pytest.mark.parametrize("dumper", PICKLERS)
def test_every_error_roundtrips(dumper):
    for e in every_error():
        assert_same_error(roundtrip(e, dumper), e)


@pytest.mark.parametrize("dumper", PICKLERS)
def test_roundtrip_of_a_raised_and_wrapped_error(dumper):
    try:
        raise ValueError("bad item")
    except ValueError as exc:
        e = ProcessError.wrap("loop", exc, 3, process_name="w")
    back = roundtrip(e, dumper)
    assert str(back) == "Error in __loop__ on lap 3: ValueError: bad item"
    assert back.original_error.args == ("bad item",)
    assert back.traceback_text == e.traceback_text
    # What the parent does: chain the worker's traceback, then raise.
    with pytest.raises(MainLoopError) as info:
        raise back.with_remote_traceback()
    assert str(info.value.__cause__) == e.traceback_text
    assert isinstance(info.value, ShmprocError)


@pytest.mark.parametrize("dumper", PICKLERS)
def test_timeout_roundtrip_is_still_a_builtin_timeout(dumper):
    back = roundtrip(TimeoutError("loop", 0.3, 2), dumper)
    assert isinstance(back, builtins.TimeoutError)
    assert str(back) == "__loop__ timed out after 0.3 s on lap 2"
    assert (back.section, back.timeout, back.current_lap) == ("__loop__", 0.3, 2)


@pytest.mark.parametrize("dumper", PICKLERS)
def test_original_error_fields_survive(dumper):
    e = MainLoopError(current_lap=0, original_error=WithFields("nope", 42))
    back = roundtrip(e, dumper)
    assert type(back.original_error) is WithFields
    assert back.original_error.args == ("nope", 42) and back.original_error.code == 42


@pytest.mark.parametrize("dumper", PICKLERS)
def test_unpicklable_original_becomes_a_remote_error(dumper):
    with pytest.raises(TypeError):
        pickle.dumps(LockHolder("held"))  # the premise
    e = MainLoopError(current_lap=2, original_error=LockHolder("held"), traceback_text="tb")
    back = roundtrip(e, dumper)
    assert str(back) == "Error in __loop__ on lap 2: LockHolder: held"
    assert back.current_lap == 2 and back.traceback_text == "tb"
    stand_in = back.original_error
    assert type(stand_in) is RemoteError
    assert stand_in.type_name == f"{__name__}.LockHolder"
    assert str(stand_in) == "held" and stand_in.message == "held"
    # The stand-in travels again unchanged.
    again = roundtrip(back, dumper).original_error
    assert type(again) is RemoteError and again.type_name == stand_in.type_name
    assert e.original_error.lock is not None  # the original object was not touched


@pytest.mark.parametrize("dumper", PICKLERS)
def test_original_that_cannot_be_rebuilt_becomes_a_remote_error(dumper):
    e = ResultError(current_lap=1, original_error=TwoArgs("a", "b"))
    back = roundtrip(e, dumper)
    assert type(back.original_error) is RemoteError
    assert back.original_error.type_name.endswith("TwoArgs")
    assert str(back.original_error) == "a/b"
    assert str(back) == "Error in __result__ on lap 1: TwoArgs: a/b"


def test_original_of_a_local_class_travels_through_plain_pickle():
    # Classes defined in functions (or __main__) only pickle by value; the
    # original error is packed with cloudpickle whatever the outer pickler.
    class LocalError(Exception):
        pass

    e = MainLoopError(current_lap=0, original_error=LocalError("local"))
    back = pickle.loads(pickle.dumps(e))
    assert type(back.original_error).__name__ == "LocalError"
    assert back.original_error.args == ("local",)


def test_builtin_originals_keep_their_type_for_every_pickler():
    for dumper in (pickle, cloudpickle):
        for orig in (KeyError("k"), OSError(2, "No such file"), SystemExit(3), StopIteration(5)):
            back = roundtrip(OnFinishError(original_error=orig), dumper).original_error
            assert type(back) is type(orig) and back.args == orig.args


@pytest.mark.parametrize("dumper", PICKLERS)
def test_nested_process_error_as_original(dumper):
    inner = MainLoopError(current_lap=8, original_error=LockHolder("deep"))
    outer = MainLoopError(current_lap=1, original_error=inner)
    back = roundtrip(outer, dumper)
    assert type(back.original_error) is MainLoopError
    assert back.original_error.current_lap == 8
    assert type(back.original_error.original_error) is RemoteError


@pytest.mark.parametrize("dumper", PICKLERS)
def test_notes_and_extra_attributes_survive(dumper):
    e = PreloopError(current_lap=0, original_error=ValueError("v"))
    e.__notes__ = ["while loading config"]      # add_note's state (add_note is 3.11+)
    e.extra = {"k": 1}
    back = roundtrip(e, dumper)
    assert back.__notes__ == ["while loading config"] and back.extra == {"k": 1}


@pytest.mark.parametrize("dumper", PICKLERS)
def test_helper_exceptions_pickle(dumper):
    r = roundtrip(RemoteError("pkg.Thing", "msg"), dumper)
    assert (type(r), r.type_name, r.message, str(r)) == (RemoteError, "pkg.Thing", "msg", "msg")
    t = roundtrip(RemoteTraceback("tb text"), dumper)
    assert (type(t), str(t), t.text) == (RemoteTraceback, "tb text", "tb text")


def test_copy_keeps_fields():
    import copy

    e = MainLoopError(current_lap=3, original_error=ValueError("bad item"), process_name="p")
    c = copy.copy(e)
    assert_same_error(c, e)
