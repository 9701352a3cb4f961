"""Every error shmproc raises for its own reasons is a ShmprocError and
keeps the stdlib base users already catch (`except TypeError`, ...), and is
reachable from the same import paths as before.  One class object each."""
import builtins
import pickle

import pytest

import shmproc
from shmproc.common import errors
from shmproc import ray_backend
from shmproc.wire import taskwire
from shmproc.wire import pickling as wire

# class, the stdlib bases it must keep, and every import path that names it
PUBLIC = [
    (errors.ShmprocError, (Exception,), [shmproc]),
    (errors.SharedMemoryError, (OSError,), [shmproc]),
    (errors.CorruptSharedMemoryError, (OSError,), [shmproc]),
    (errors.SharedMemoryVersionError, (OSError,), []),
    (errors.ForeignSharedMemoryError, (OSError,), []),
    (errors.SerializationError, (TypeError,), [wire]),
    (errors.LostRecord, (), [taskwire]),
    (errors.RayNotInstalled, (ImportError,), [ray_backend]),
    (errors.ClusterUnreachable, (ConnectionError,), [ray_backend]),
    (errors.ResourcesUnavailable, (RuntimeError,), [ray_backend]),
    (errors.InitializerError, (RuntimeError,), [shmproc]),
    (errors.ProcessError, (), [shmproc, shmproc.processing]),
    (errors.PreloopError, (), [shmproc, shmproc.processing]),
    (errors.MainLoopError, (), [shmproc, shmproc.processing]),
    (errors.PostLoopError, (), [shmproc, shmproc.processing]),
    (errors.OnFinishError, (), [shmproc, shmproc.processing]),
    (errors.ResultError, (), [shmproc, shmproc.processing]),
    (errors.TimeoutError, (builtins.TimeoutError,), [shmproc, shmproc.processing]),
    (errors.ProcessCrashedError, (), [shmproc, shmproc.processing]),
]


@pytest.mark.parametrize("cls,bases,paths", PUBLIC, ids=[c.__name__ for c, _, _ in PUBLIC])
def test_error_class_is_a_shmproc_error_with_its_stdlib_base(cls, bases, paths):
    assert issubclass(cls, errors.ShmprocError)
    for base in bases:
        assert issubclass(cls, base), f"{cls.__name__} must stay a {base.__name__}"
    for module in paths:
        assert getattr(module, cls.__name__) is cls, f"{module.__name__}.{cls.__name__}"


@pytest.mark.parametrize("cls", [errors.SerializationError, errors.LostRecord,
                                 errors.RayNotInstalled, errors.ClusterUnreachable,
                                 errors.ResourcesUnavailable, errors.InitializerError])
def test_plain_error_classes_survive_pickling(cls):
    err = cls("what went wrong")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is cls and str(again) == "what went wrong"


def test_serialization_failure_is_caught_as_type_error_and_shmproc_error():
    import threading
    with pytest.raises(TypeError) as info:
        wire.dumps({"lock": threading.Lock()})
    assert isinstance(info.value, errors.ShmprocError)
    assert "cannot serialize" in str(info.value)
