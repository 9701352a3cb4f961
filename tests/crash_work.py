"""What the crash matrix's workers run: the failing objects, the Process
under test and the mapped functions of test_crash_matrix.py.

A spawn or forkserver worker imports the module these come from; here
that is this small module instead of the test file with pytest and
conftest (about half a second per worker on a busy two-core machine).
test_crash_matrix.py imports every name from here.
"""
import ctypes
import os
import resource
import signal

from shmproc.processing import Process

#: A pool chunk of N items in which item K fails (see test_crash_matrix.py).
N, K = 5, 2


class Fault(Exception):
    """What the `raise` failures raise (deliberately not a TypeError)."""


def fail(how, where):
    """Die or raise, as `how` says; `where` goes into the message."""
    if how in ("abort", "segv", "kill_segv"):
        try:                                  # no core files from the deliberate crashes
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ValueError, OSError):
            pass
    if how == "abort":
        os.abort()
    elif how == "segv":
        ctypes.string_at(0)                   # read through a NULL pointer
    elif how == "kill_segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    elif how == "raise":
        raise Fault(f"injected failure in {where}")
    raise AssertionError(f"{how} did not end the process")


class FailsWhenPickled:
    """Its __reduce__ fails: raises `exc_type`, or does `how`."""

    def __init__(self, how, exc_type=Fault):
        self.how = how
        self.exc_type = exc_type

    def __reduce__(self):
        if self.how == "raise":
            raise self.exc_type(f"{type(self).__name__} refuses to be pickled")
        fail(self.how, "__reduce__")


def _rebuild(how, creator_pid):
    """Reconstructor of FailsWhenUnpickledElsewhere."""
    if os.getpid() != creator_pid:
        fail(how, "the reconstructor")
    return FailsWhenUnpickledElsewhere(how, creator_pid)


class FailsWhenUnpickledElsewhere:
    """Pickles fine; its reconstructor fails when run in any process but
    the one that created the object."""

    def __init__(self, how, creator_pid=None):
        self.how = how
        self.creator_pid = os.getpid() if creator_pid is None else creator_pid

    def __reduce__(self):
        return (_rebuild, (self.how, self.creator_pid))


class FailsInSetstate:
    """Pickles fine; its __setstate__ fails outside the creating process."""

    def __init__(self, how):
        self.how = how
        self.creator_pid = os.getpid()

    def __getstate__(self):
        return {"how": self.how, "creator_pid": self.creator_pid}

    def __setstate__(self, state):
        if os.getpid() != state["creator_pid"]:
            fail(state["how"], "__setstate__")
        self.__dict__.update(state)


def _rebuild_unless_marked(how, marker):
    """Reconstructor of FailsOnRebuild."""
    if os.path.exists(marker):
        fail(how, "the reconstructor (rebuilding for the next life)")
    return FailsOnRebuild(how, marker)


class FailsOnRebuild:
    """Unpickles fine until the file `marker` exists: then its reconstructor
    fails.  The first life creates the marker, so rebuilding the state for
    the second life fails."""

    def __init__(self, how, marker):
        self.how = how
        self.marker = marker

    def __reduce__(self):
        return (_rebuild_unless_marked, (self.how, self.marker))


class Holder:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


class Target(Process):
    """Runs 3 laps; fails at `point` as `how` says."""

    def __init__(self, point, how, exc_type=Fault, marker=None):
        self.point = point
        self.how = how
        self.marker = marker
        self.config.num_loops = 3
        if point == "pickle_state":
            self.bad = FailsWhenPickled(how, exc_type)
        elif point == "pickle_state_nested":
            self.holder = Holder(ok=[1, 2], inner=Holder(bad=FailsWhenPickled(how, exc_type)))
        elif point == "unpickle_state":
            self.bad = FailsWhenUnpickledElsewhere(how)
        elif point == "unpickle_state_setstate":
            self.bad = FailsInSetstate(how)
        elif point == "unpickle_state_retry":
            self.bad = FailsOnRebuild(how, marker)
            self.config.lives = 2

    def __loop__(self):
        if self.point == "loop" and self.how and self.current_lap == 1:
            fail(self.how, "__loop__")
        if self.point == "unpickle_state_retry" and self.current_lap == 1 and self.config.lives == 2:
            open(self.marker, "w").close()
            raise Fault("the first life fails")

    def __result__(self):
        if self.point == "pickle_result":
            return FailsWhenPickled(self.how)
        if self.point == "unpickle_result":
            return FailsWhenUnpickledElsewhere(self.how)
        return ("ok", self.current_lap)


def record_run(path, i):
    """One line per run of item i (O_APPEND: whole lines, whatever the process)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"%d\n" % i)
    finally:
        os.close(fd)


def runs(path):
    """{item: times it ran}."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split()
    except FileNotFoundError:
        return {}
    out = {}
    for line in lines:
        out[int(line)] = out.get(int(line), 0) + 1
    return out


class Item:
    """The argument of one item: its number, and what it carries."""

    def __init__(self, i, payload=None):
        self.i = i
        self.payload = payload


def work(path, point, how, slow, x):
    """The mapped function: records its run, then fails if x is item K at `point`."""
    i = x.i if isinstance(x, Item) else x
    record_run(path, i)
    if slow:
        import time
        time.sleep(0.002)
    if i == K:
        if point == "fn":
            fail(how, "fn")
        if point == "pickle_result":
            return FailsWhenPickled(how)
        if point == "unpickle_result":
            return FailsWhenUnpickledElsewhere(how)
    return i


def flaky(path, how, x):
    """Item K fails (as `how` says) on its first run only.  Slow, like
    work(): the results of the items before K are out before K runs."""
    import time
    record_run(path, x)
    time.sleep(0.002)
    if x == K and runs(path).get(K) == 1:
        fail(how, "the first run")
    return x


def always_fails(path, how, x):
    record_run(path, x)
    if x == K:
        fail(how, "every run")
    return x


class Recorded(Process):
    """A Process class as a pool task: its one lap records the run, sleeps
    2 ms (like work()), and item K's first run dies by SIGKILL."""

    def __init__(self, path, i):
        self.path = path
        self.i = i
        self.config.num_loops = 1

    def __loop__(self):
        import time
        record_run(self.path, self.i)
        time.sleep(0.002)
        if self.i == K and runs(self.path).get(K) == 1:
            fail("sigkill", "__loop__")

    def __result__(self):
        return self.i
