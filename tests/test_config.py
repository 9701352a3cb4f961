"""Tests for shmproc.common.config: defaults, validate() on every field, pickling."""

import copy
import math
import multiprocessing
import pickle
import sys
from dataclasses import asdict, fields, is_dataclass

import cloudpickle
import numpy as np
import pytest

from shmproc.common.config import ProcessConfig, TimeoutConfig, default_start_method, validate

PICKLERS = [pytest.param(pickle, id="pickle"), pytest.param(cloudpickle, id="cloudpickle")]


def roundtrip(obj, dumper):
    return pickle.loads(dumper.dumps(obj))


# -- defaults and dataclass behaviour -------------------------------------------


def test_timeout_defaults():
    t = TimeoutConfig()
    assert (t.preloop, t.loop, t.postloop, t.onfinish) == (30.0, 300.0, 60.0, 60.0)


def test_process_defaults():
    c = ProcessConfig()
    assert c.num_loops is None
    assert c.join_in is None
    assert c.lives == 1
    assert c.timeouts == TimeoutConfig()
    assert c.start_method is None
    validate(c)  # the defaults are valid


def test_are_dataclasses_with_expected_fields():
    assert is_dataclass(ProcessConfig) and is_dataclass(TimeoutConfig)
    assert [f.name for f in fields(ProcessConfig)] == [
        "num_loops", "join_in", "lives", "timeouts", "start_method",
    ]
    assert [f.name for f in fields(TimeoutConfig)] == ["preloop", "loop", "postloop", "onfinish"]


def test_each_config_gets_its_own_timeouts():
    a, b = ProcessConfig(), ProcessConfig()
    a.timeouts.loop = 1.0
    assert b.timeouts.loop == 300.0


def test_mutable_and_keyword_construction():
    c = ProcessConfig(num_loops=5, lives=3, timeouts=TimeoutConfig(loop=None))
    c.join_in = 2.5
    c.timeouts.preloop = 0.001
    assert asdict(c) == {
        "num_loops": 5, "join_in": 2.5, "lives": 3, "start_method": None,
        "timeouts": {"preloop": 0.001, "loop": None, "postloop": 60.0, "onfinish": 60.0},
    }
    validate(c)


def test_repr_is_useful():
    r = repr(ProcessConfig(num_loops=10))
    assert r.startswith("ProcessConfig(num_loops=10, join_in=None, lives=1, timeouts=TimeoutConfig(")
    assert "loop=300.0" in r and "start_method=None" in r


def test_misspelled_field_is_refused_with_a_suggestion():
    for cls, typo, suggestion in [
        (ProcessConfig, "num_loop", "num_loops"),
        (ProcessConfig, "live", "lives"),
        (TimeoutConfig, "loops", "loop"),
    ]:
        obj = cls()
        with pytest.raises(AttributeError, match=f"has no field '{typo}'; did you mean '{suggestion}'"):
            setattr(obj, typo, 5)
        assert not hasattr(obj, typo)


def test_unknown_field_without_a_close_match_lists_the_fields():
    with pytest.raises(AttributeError, match="the fields are: num_loops, join_in, lives"):
        ProcessConfig().zzz = 1


def test_equality_and_copy():
    c = ProcessConfig(num_loops=3)
    d = copy.deepcopy(c)
    assert d == c and d is not c and d.timeouts is not c.timeouts


# -- pickling --------------------------------------------------------------------


@pytest.mark.parametrize("dumper", PICKLERS)
def test_configs_pickle(dumper):
    c = ProcessConfig(num_loops=7, join_in=1.5, lives=2, start_method="spawn")
    c.timeouts.loop = 0.3
    c.timeouts.onfinish = None
    back = roundtrip(c, dumper)
    assert back == c
    assert type(back) is ProcessConfig and type(back.timeouts) is TimeoutConfig
    back.lives = 1  # still mutable, still typo-proof
    with pytest.raises(AttributeError):
        back.typo = 1
    assert roundtrip(TimeoutConfig(preloop=None), dumper) == TimeoutConfig(preloop=None)


# -- default_start_method ---------------------------------------------------------


def test_default_start_method():
    expected = "fork" if sys.platform.startswith("linux") else "spawn"
    assert default_start_method() == expected
    assert default_start_method() in multiprocessing.get_all_start_methods()


# -- validate: accepted values -----------------------------------------------------
#
# Value tables are looped inside one test per field rather than parametrized:
# the suite's autouse leak check costs ~40 ms per test, and each assertion
# names the value that failed anyway.

ACCEPTED = [
    ("num_loops", 0), ("num_loops", 10**9), ("num_loops", np.int64(4)),
    ("join_in", 0), ("join_in", 0.0), ("join_in", 2), ("join_in", np.float64(0.5)),
    ("lives", 1), ("lives", 100),
    ("start_method", None),
] + [("start_method", m) for m in multiprocessing.get_all_start_methods()]


def test_validate_accepts():
    for name, value in ACCEPTED:
        c = ProcessConfig()
        setattr(c, name, value)
        validate(c)  # raises (and names the field) if refused


def test_validate_accepts_timeouts():
    for section in ("preloop", "loop", "postloop", "onfinish"):
        for value in (None, 0.001, 1, 1e6, np.float32(0.25)):
            c = ProcessConfig()
            setattr(c.timeouts, section, value)
            validate(c)


# -- validate: every failure path -----------------------------------------------------


def rejection(config):
    """validate(config)'s ValueError message; fails the test if it passes."""
    with pytest.raises(ValueError) as info:
        validate(config)
    return str(info.value)


def check_all_rejected(make_config, cases, *fragments):
    for value, shown in cases:
        message = rejection(make_config(value))
        for fragment in (*fragments, shown):
            assert fragment in message, f"value {value!r}: {fragment!r} not in {message!r}"


def test_num_loops_message_exact():
    assert rejection(ProcessConfig(num_loops=-3)) == (
        "config.num_loops must be a non-negative int or None, got -3"
    )


def test_num_loops_rejected():
    cases = [
        (-1, "got -1"), (2.0, "got 2.0"), (True, "got True"), (False, "got False"),
        ("5", "got '5'"), (float("nan"), "got nan"), ([3], "got [3] (list)"),
    ]
    check_all_rejected(
        lambda v: ProcessConfig(num_loops=v), cases, "config.num_loops", "non-negative int or None"
    )


def test_join_in_rejected():
    cases = [
        (-0.5, "got -0.5"), (-1, "got -1"), (math.inf, "got inf"), (math.nan, "got nan"),
        (True, "got True"), ("1", "got '1'"), (1j, "got 1j (complex)"),
    ]
    check_all_rejected(
        lambda v: ProcessConfig(join_in=v), cases, "config.join_in", "non-negative", "or None"
    )


def test_lives_rejected():
    cases = [
        (0, "got 0"), (-2, "got -2"), (1.0, "got 1.0"), (True, "got True"),
        (None, "got None"), ("3", "got '3'"),
    ]
    check_all_rejected(lambda v: ProcessConfig(lives=v), cases, "config.lives must be an int >= 1")


def test_timeout_message_names_path_and_value():
    c = ProcessConfig()
    c.timeouts.loop = 0
    message = rejection(c)
    assert message.startswith("config.timeouts.loop must be a positive")
    assert "number of seconds or None" in message and message.endswith("got 0")


def test_each_timeout_rejected():
    cases = [
        (0, "got 0"), (0.0, "got 0.0"), (-1.5, "got -1.5"), (math.inf, "got inf"),
        (math.nan, "got nan"), (True, "got True"), ("10", "got '10'"),
    ]
    for section in ("preloop", "loop", "postloop", "onfinish"):
        def make(value, section=section):
            c = ProcessConfig()
            setattr(c.timeouts, section, value)
            return c

        check_all_rejected(make, cases, f"config.timeouts.{section} ")


def test_timeouts_must_be_a_timeout_config():
    for value in (None, {"loop": 1.0}, 30.0):
        c = ProcessConfig()
        c.timeouts = value
        message = rejection(c)
        assert "config.timeouts must be a shmproc TimeoutConfig" in message
        assert "config.timeouts.loop = 5.0" in message


def test_unknown_start_method_lists_the_valid_ones():
    for value in ("threads", "Fork", "", 1):
        message = rejection(ProcessConfig(start_method=value))
        assert "config.start_method" in message and f"got {value!r}" in message
        for method in multiprocessing.get_all_start_methods():
            assert repr(method) in message


def test_config_itself_must_be_a_process_config():
    for value in (None, {"num_loops": 3}, TimeoutConfig()):
        message = rejection(value)
        assert "config must be a shmproc ProcessConfig" in message
        assert "set fields on self.config" in message


def test_first_bad_field_is_reported():
    assert "config.num_loops" in rejection(ProcessConfig(num_loops=-1, lives=0))
