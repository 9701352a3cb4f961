"""The public face of the Process runtime.

    from shmproc.processing import Process, timesection

Everything here is defined in its own module (process, config, timing,
errors); this module only gathers the names users import.
"""
from .common.config import ProcessConfig, TimeoutConfig
from .common.errors import (
    MainLoopError, OnFinishError, PostLoopError, PreloopError, ProcessCrashedError,
    ProcessError, ResultError, TimeoutError,
)
from .process import Process
from .common.timing import ProcessTimers, timesection

__all__ = [
    "Process", "ProcessConfig", "TimeoutConfig", "ProcessTimers", "timesection",
    "ProcessError", "PreloopError", "MainLoopError", "PostLoopError", "OnFinishError",
    "ResultError", "TimeoutError", "ProcessCrashedError",
]
