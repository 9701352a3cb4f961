"""The same Process and Pool behaviour on every backend (local, Ray), and
the Ray backend's own bad input.

The Ray cases share one session-wide local cluster (conftest.ray_cluster)
and skip when Ray is not installed.
"""
import functools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from proc_helpers import wait_gone
from shmproc import Pool
from shmproc.processing import (MainLoopError, Process, ProcessCrashedError, ProcessError,
                                TimeoutError, timesection)
from shmproc.wire import SerializationError

BACKENDS = ["local", "ray"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "local":
        return None
    request.getfixturevalue("ray_cluster")
    from shmproc import RayBackend
    return RayBackend(start_timeout=30)


@pytest.fixture
def pool(backend):
    with Pool(2, backend=backend) as p:
        yield p


def test_pool_is_one_class_on_every_backend(pool, backend):
    # Pool(backend=...) is a Pool whose engine the backend chose (issue 11).
    assert type(pool) is Pool
    engine = type(pool._engine).__name__
    assert engine == ("LocalPool" if backend is None else "RayPool")
    assert pool.map(abs, [-1, -2]) == [1, 2]


_INIT = {}


def _remember(value):
    _INIT["value"] = value


def _recall(_=None):
    return _INIT.get("value")


def test_pool_initializer_on_every_backend(backend):
    # multiprocessing.Pool's initializer: once in every worker, before its tasks.
    with Pool(1, _remember, ("ready",), backend=backend) as p:
        assert p.map(_recall, range(4)) == ["ready"] * 4


def test_pool_async_calls_on_every_backend(pool):
    # multiprocessing.Pool's asynchronous calls, on the one job engine.
    import threading
    fired = threading.Event()
    assert pool.apply_async(abs, (-3,), callback=lambda v: fired.set()).get(60) == 3
    assert fired.wait(60)
    assert pool.map_async(abs, [-1, -2, -3], chunksize=2).get(60) == [1, 2, 3]
    assert pool.starmap_async(pow, [(2, 2)]).get(60) == [4]
    assert pool.apply(abs, (-5,)) == 5


# ---- Process classes (module level: the Ray workers import this module) ---------------------

class Lifecycle(Process):
    def __init__(self, n):
        self.config.num_loops = n
        self.log = []

    def __preloop__(self):
        self.log.append("pre")

    @timesection()
    def __loop__(self):
        self.log.append(("loop", self.current_lap))

    def __postloop__(self):
        self.log.append("post")

    def __onfinish__(self):
        self.log.append(("finish", self.current_lap))

    def __result__(self):
        return self.log


class LivesCounter(Process):
    """Fails its first two lives; each life must start from fresh state."""

    def __init__(self):
        self.config.lives = 3
        self.config.num_loops = 2
        self.seen = []

    def __loop__(self):
        self.seen.append(self.config.lives)
        if self.config.lives > 1:
            raise ValueError(f"life {self.config.lives}")

    def __result__(self):
        return self.seen


class SleepsTooLong(Process):
    def __init__(self, lives=1):
        self.config.timeouts.loop = 0.2
        self.config.lives = lives

    def __loop__(self):
        time.sleep(30)


class Endless(Process):
    def __init__(self):
        self.finished = False

    def __loop__(self):
        time.sleep(0.002)

    def __onfinish__(self):
        self.finished = True

    def __result__(self):
        return ("stopped", self.current_lap, self.finished)


class DiesOnLap(Process):
    def __init__(self, lap, how="exit"):
        self.at, self.how = lap, how

    def __loop__(self):
        if self.current_lap == self.at:
            if self.how == "exit":
                os._exit(7)
            os.kill(os.getpid(), signal.SIGSEGV)


class BadLoop(Process):
    def __init__(self):
        self.config.num_loops = 5

    def __loop__(self):
        if self.current_lap == 3:
            raise KeyError("bad item")


class ArrayResult(Process):
    def __init__(self, n):
        self.n = n
        self.config.num_loops = 1

    def __result__(self):
        return np.arange(self.n, dtype=np.float64)


class HoldsALock(Process):
    def __init__(self):
        self.lock = threading.Lock()


class Echo(Process):
    def __init__(self, x):
        self.x = x
        self.config.num_loops = 1

    def __result__(self):
        return self.x * 2


class TellsOnRay(Process):
    def __init__(self):
        self.config.num_loops = 1

    def __loop__(self):
        self.tell("nobody hears this through Ray")


def square(x):
    return x * x


def fails_on_seven(x):
    if x == 7:
        raise ValueError(f"bad {x}")
    return x


def dies_on_five(x):
    if x == 5:
        os._exit(3)
    return x


def pid_of_worker(_):
    return os.getpid()


IN_DRIVER = False            # set by the tests in the driver only (workers import us fresh)


def _explode_in_driver():
    if IN_DRIVER:
        raise RuntimeError("this value cannot be loaded in the driver")
    return LoadsOnlyInWorkers()           # a launcher loads it, and sends it on as it was


class LoadsOnlyInWorkers:
    def __reduce__(self):
        return (_explode_in_driver, ())


def unloadable_result(_):
    return LoadsOnlyInWorkers()


# ---- Process: the same semantics on every backend ------------------------------------------

def test_lifecycle_result_laps_and_timers(backend):
    p = Lifecycle(3).start(on=backend)
    assert p.wait(60)
    assert p.result == ["pre", ("loop", 0), "post", "pre", ("loop", 1), "post",
                        "pre", ("loop", 2), "post", ("finish", 3)]
    assert p.current_lap == 3
    assert p.is_alive is False
    assert p.exitcode == 0
    assert p.timers.loop.num_times == 3
    assert p.timers.full_loop.num_times == 3
    assert p.error is None


def test_lives_start_from_fresh_state(backend):
    p = LivesCounter().start(on=backend)
    assert p.result == [1, 1]          # the third life; the earlier lives' entries are gone


def test_timeout_interrupts_the_hook_and_uses_lives(backend):
    start = time.monotonic()
    p = SleepsTooLong(lives=2).start(on=backend)
    with pytest.raises(TimeoutError) as info:
        p.result
    assert time.monotonic() - start < 20          # two 0.2 s timeouts, not the 30 s sleep
    assert info.value.section == "__loop__"
    assert isinstance(p.error, TimeoutError)


def test_stop_lets_the_lap_finish(backend):
    p = Endless().start(on=backend)
    deadline = time.monotonic() + 30
    while p.current_lap < 3 and time.monotonic() < deadline:   # live lap counter
        time.sleep(0.01)
    assert p.current_lap >= 3
    assert p.is_alive
    p.stop()
    assert p.wait(30)
    status, laps, finished = p.result
    assert status == "stopped" and finished is True and laps == p.current_lap >= 3


def test_wait_with_a_timeout(backend):
    p = Endless().start(on=backend)
    assert p.wait(0.05) is False
    p.stop()
    assert p.wait(30) is True


def test_kill_leaves_no_result(backend):
    p = Endless().start(on=backend)
    pid = p.pid
    time.sleep(0.1)
    p.kill()
    assert p.is_alive is False
    assert p.result is None
    assert p.exitcode == -signal.SIGKILL
    assert wait_gone(pid)                      # same machine here, whatever the backend


@pytest.mark.parametrize("how", ["exit", "segv"])
def test_a_worker_that_dies_is_a_crash(backend, how):
    p = DiesOnLap(2, how).start(on=backend)
    with pytest.raises(ProcessCrashedError) as info:
        p.result
    err = info.value
    assert err.last_lap == 2
    if how == "exit":
        assert err.exitcode == 7
    else:
        assert err.signal_name == "SIGSEGV"


def test_section_error_with_the_workers_traceback(backend):
    p = BadLoop().start(on=backend)
    with pytest.raises(MainLoopError) as info:
        p.result
    err = info.value
    assert err.current_lap == 3
    assert isinstance(err.original_error, KeyError)
    assert "raise KeyError" in str(err.__cause__)          # the worker's traceback text
    assert p.error is not None


def test_numpy_result_is_writable_locally(backend):
    p = ArrayResult(100_000).start(on=backend)
    arr = p.result
    assert arr.sum() == sum(range(100_000))
    # Locally a copy-on-write view of the worker's arena; through Ray's
    # object store still a read-only zero-copy view (not changed yet).
    assert arr.flags.writeable == (backend is None)
    mine = arr.copy()
    mine[0] = 5.0
    assert mine.flags.writeable


def test_restart_after_finish(backend):
    p = Echo(21)
    p.start(on=backend)
    assert p.result == 42
    p.x = 5
    p.start(on=backend)
    assert p.result == 10


def test_kill_after_it_ended_unseen_counts_as_killed(backend):
    p = Echo(1).start(on=backend)
    time.sleep(1.0)                        # it has ended; nobody has looked
    p.kill()
    assert p.result is None
    assert p.exitcode == -signal.SIGKILL


def test_unserializable_process_is_refused_at_start(backend):
    with pytest.raises(SerializationError, match=r"self\.lock"):
        HoldsALock().start(on=backend)


# ---- Pool: the same API on every backend -----------------------------------------------------

def test_pool_map_family(pool):
    assert pool.map(square, range(500)) == [x * x for x in range(500)]
    assert pool.map(square, range(100), chunksize=1) == [x * x for x in range(100)]
    assert list(pool.imap(square, range(300))) == [x * x for x in range(300)]
    assert sorted(pool.imap_unordered(square, range(300))) == [x * x for x in range(300)]
    assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
    assert list(pool.istarmap(pow, [(2, 5), (5, 2)])) == [32, 25]
    assert pool.map(lambda x: x + 1, [1, 2]) == [2, 3]
    assert pool.map(square, []) == []


def _nap(s):
    time.sleep(s)
    return s


def test_pool_task_timeout_on_every_backend(backend):
    """task_timeout (issue 12): a call past it fails with TimeoutError, on Ray too."""
    with Pool(1, backend=backend, task_timeout=0.3) as pool:
        with pytest.raises(TimeoutError):
            pool.submit(_nap, 30).result(timeout=60)
        with pytest.raises(TimeoutError):
            pool.map(_nap, [0.01, 30], chunksize=1)
        assert pool.options(task_timeout=5).submit(_nap, 0.5).result(timeout=60) == 0.5
        assert pool.map(square, range(4)) == [0, 1, 4, 9]


def test_pool_aimap_on_every_backend(pool):
    """aimap (issue 12): results in an asyncio loop, on Ray too."""
    import asyncio

    async def main():
        ordered = [r async for r in pool.aimap(square, range(40))]
        unordered = [r async for r in pool.aimap_unordered(square, range(40))]
        return ordered, sorted(unordered)
    ordered, unordered = asyncio.run(asyncio.wait_for(main(), 120))
    assert ordered == unordered == [i * i for i in range(40)]


def test_pool_submit_and_cancel(pool):
    from concurrent.futures import CancelledError
    blockers = [pool.submit(time.sleep, 0.3) for _ in range(6)]  # more than workers take ahead
    last = pool.submit(square, 4)
    assert last.cancel() is True and last.cancelled()           # nobody has it yet
    with pytest.raises(CancelledError):
        last.result()
    for t in blockers:
        assert t.result() is None
    assert blockers[0].cancel() is False                       # already done
    tasks = [pool.submit(square, i) for i in range(20)]
    assert [t.result() for t in tasks] == [i * i for i in range(20)]
    assert all(t.done() for t in tasks)


def test_pool_task_error_names_the_task(pool):
    with pytest.raises(ValueError, match="bad 7") as info:
        pool.map(fails_on_seven, range(20), chunksize=3)
    assert "task 7" in info.value.shmproc_task
    assert "fails_on_seven" in str(info.value.__cause__)
    got = []
    with pytest.raises(ValueError):
        for v in pool.imap(fails_on_seven, range(20)):
            got.append(v)
    assert got == list(range(7))


def test_pool_items_after_a_failure_in_their_chunk_still_run(backend):
    with Pool(2, backend=backend) as p:
        got = []
        with pytest.raises(ValueError):
            for v in p.imap_unordered(fails_on_seven, range(10), chunksize=10):
                got.append(v)
        if backend is None:
            # A local chunk's results may come in parts (at least every
            # millisecond): those after the error may come after it raised.
            assert set(range(7)) <= set(got) <= {0, 1, 2, 3, 4, 5, 6, 8, 9}, got
        else:                           # a Ray unit's results come in one reply
            assert sorted(got) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    with Pool(1, backend=backend) as p:
        with pytest.raises(ValueError, match="bad 7"):
            p.map(fails_on_seven, range(10), chunksize=10)
        assert p.submit(square, 3).result() == 9      # after the chunk, on the one worker
        assert tuple(p.progress) == (11, 11, 1)      # so every item ran, once


def test_pool_crash_fails_only_that_task(pool):
    # The tasks before it are done and their results in hand first (a worker
    # that dies also fails the finished tasks whose results had not left it).
    assert [pool.submit(dies_on_five, i).result() for i in range(5)] == list(range(5))
    tasks = [pool.submit(dies_on_five, i) for i in range(5, 8)]
    with pytest.raises(ProcessCrashedError):
        tasks[0].result()
    assert [t.result() for t in tasks[1:]] == [6, 7]
    assert pool.map(square, range(10)) == [x * x for x in range(10)]


def dies_first_time_on_three(path, x):
    """Counts its runs in `path` (one line each); item 3's first run kills its worker."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"%d\n" % x)
    finally:
        os.close(fd)
    if x == 3:
        with open(path, "rb") as f:
            if f.read().split().count(b"3") == 1:
                os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_pool_retries(backend, tmp_path):
    path = str(tmp_path / "runs")
    fn = functools.partial(dies_first_time_on_three, path)
    with Pool(1, backend=backend, retries=1) as p:
        assert p.submit(fn, 3).result() == 3                      # the pool's retries
    with open(path, "rb") as f:
        assert f.read().split() == [b"3", b"3"]
    os.remove(path)
    with Pool(1, backend=backend) as p:
        with pytest.raises(ProcessCrashedError):
            p.map(fn, [3])                                       # retries=0: once
        with open(path, "rb") as f:
            assert f.read().split() == [b"3"]
        os.remove(path)
        assert p.map(fn, [3], retries=1) == [3]                  # the call's own
    with open(path, "rb") as f:
        assert f.read().split() == [b"3", b"3"]
    with pytest.raises(ValueError, match="retries"):
        Pool(1, backend=backend, retries=-1)


def test_pool_runs_process_classes(pool):
    assert pool.map(Echo, [1, 2, 3]) == [2, 4, 6]
    assert pool.starmap(LivesCounter, [(), ()], chunksize=1) == [[1, 1], [1, 1]]
    with pytest.raises(TimeoutError):
        pool.submit(SleepsTooLong).result()
    proc = Lifecycle(2)
    assert pool.submit(proc).result()[-1] == ("finish", 2)
    assert proc.timers.loop.num_times == 2


def test_pool_numpy_results(pool, backend):
    arr = pool.submit(np.ones, 100_000).result()
    assert arr.sum() == 100_000
    assert arr.flags.writeable == (backend is None)         # Ray's object store: read-only still
    mine = pool.options(copy=True).submit(np.ones, 1000).result()
    assert mine.flags.writeable
    out = pool.map(np.ones, [10, 20], copy=True)
    assert all(a.flags.writeable for a in out)


def test_pool_progress_and_lifecycle(backend):
    p = Pool(2, backend=backend)
    p.map(square, range(50))
    done, total, failed = p.progress
    assert (done, total, failed) == (50, 50, 0)
    p.close()
    with pytest.raises(ValueError):
        p.submit(square, 1)
    p.join()
    q = Pool(2, backend=backend)
    t = q.submit(time.sleep, 5)
    time.sleep(0.2)
    q.terminate()
    assert t.cancelled()
    with pytest.raises(ValueError):
        q.map(square, [1])


def test_pool_imap_over_an_endless_input_reads_ahead_only_so_far(pool):
    import itertools
    it = pool.imap(square, itertools.count())
    assert [next(it) for _ in range(10)] == [x * x for x in range(10)]
    time.sleep(0.5)
    assert pool.progress.total < 20_000            # paused, not reading the input for ever
    it.close()
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_pool_many_distinct_functions(pool):
    # More than a Ray launcher keeps (64): the early ones are forgotten there
    # and sent again when used again.
    fns = [lambda x, k=k: x + k for k in range(150)]
    assert [pool.submit(f, 1).result() for f in fns] == [1 + k for k in range(150)]
    assert pool.map(fns[0], [5, 6]) == [5, 6]
    assert pool.submit(fns[1], 1).result() == 2


def test_pool_unpicklable_item_fails_only_that_item(pool):
    with pytest.raises(SerializationError):
        pool.map(square, [1, threading.Lock(), 3], chunksize=1)
    assert pool.submit(square, 4).result() == 16
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_pool_result_that_cannot_load_in_the_driver(pool, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "IN_DRIVER", True)
    with pytest.raises(RuntimeError, match="could not be read in the parent"):
        pool.submit(unloadable_result, 0).result()
    assert pool.submit(square, 3).result() == 9


@pytest.mark.parametrize("call", ["map", "imap"])
def test_pool_progress_bar(pool, call, capsys):
    if call == "map":
        assert pool.map(square, range(20), progress=True) == [x * x for x in range(20)]
    else:
        assert list(pool.imap(square, range(20), progress=True)) == [x * x for x in range(20)]


def test_pool_cannot_be_pickled(pool):
    import pickle
    with pytest.raises(TypeError, match="cannot be sent"):
        pickle.dumps(pool)


# ---- Ray only --------------------------------------------------------------------------------

def _run(code, timeout=120, env=None):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=full)


def test_import_shmproc_never_imports_ray():
    out = _run("""
        import sys
        import shmproc, shmproc.processing, shmproc.pool
        from shmproc import RayBackend, Pool, Process
        RayBackend(resources={"CPU": 1})
        print("ray" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_ray_missing_says_how_to_install():
    out = _run("""
        import sys
        sys.modules["ray"] = None          # as if it were not installed
        from shmproc import Process, Pool, RayBackend
        class P(Process):
            pass
        for attempt in (lambda: P().start(on="ray"), lambda: Pool(2, backend="ray")):
            try:
                attempt()
            except ImportError as exc:
                print(type(exc).__name__, exc)
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("RayNotInstalled" in line and "pip install 'shmproc[ray]'" in line for line in lines)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("ray"), reason="Ray not installed")
def test_unreachable_addresses_fail_fast_and_clearly(tmp_path):
    # A closed port is refused at once; a port that accepts but never speaks
    # Ray's protocol is cut off by connect_timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    silent = listener.getsockname()[1]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
    probe.close()
    code = f"""
        import time
        from shmproc import RayBackend
        from shmproc.ray_backend import ClusterUnreachable
        for address in ("127.0.0.1:{closed}", "no-such-host.invalid:6379", "127.0.0.1:{silent}"):
            t = time.monotonic()
            try:
                RayBackend(address=address, connect_timeout=3).connect()
            except ClusterUnreachable as exc:
                print(round(time.monotonic() - t, 1), exc)
    """
    try:
        out = _run(code, env={"RAY_USAGE_STATS_ENABLED": "0", "HOME": str(tmp_path),
                              "RAY_AUTH_MODE": "disabled"})
    finally:
        listener.close()
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3, out.stdout + out.stderr
    assert "connection refused" in lines[0]
    assert "resolve" in lines[1]
    assert "within 3 s" in lines[2]
    assert all(float(line.split()[0]) < 30 for line in lines)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("ray"), reason="Ray not installed")
def test_no_address_starts_a_local_cluster_and_stops_it_at_exit(tmp_path):
    import shutil
    import tempfile
    short = tempfile.mkdtemp(prefix="shmproc-rt-")    # Ray's socket paths must stay short
    try:
        _auto_started_cluster(tmp_path, short)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _auto_started_cluster(tmp_path, short):
    env = {"RAY_USAGE_STATS_ENABLED": "0", "HOME": str(tmp_path), "RAY_TMPDIR": short,
           "RAY_ADDRESS": "", "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
    out = _run("""
        from shmproc import Pool, RayBackend
        from test_backends import Echo, square
        print(Echo(21).start(on=RayBackend()).result)
        with Pool(2, backend="ray") as pool:
            print(sum(pool.map(square, range(10))))
    """, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", "285"]
    from conftest import _processes_mentioning
    deadline = time.monotonic() + 20
    while _processes_mentioning(short) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(short), "the cluster outlived its driver"


def test_tell_and_listen_on_ray_are_clear_errors_on_both_sides(ray_cluster):
    """tell / listen (issue 13) are not carried through Ray: the parent's
    calls and the worker's both raise NotImplementedError naming the way."""
    from shmproc import RayBackend
    p = Echo(1).start(on=RayBackend())
    with pytest.raises(NotImplementedError, match="ray.util.queue.Queue"):
        p.listen(0)
    assert p.result == 2
    q = TellsOnRay().start(on=RayBackend())
    with pytest.raises(ProcessError, match="on Ray"):
        q.result
    with Pool(1, backend="ray") as pool:                 # map items' listen() too
        it = pool.imap(square, range(3))
        with pytest.raises(NotImplementedError, match="ray.util.queue.Queue"):
            it.listen(0)
        assert list(it) == [0, 1, 4]
        with pytest.raises(NotImplementedError, match="on_message"):
            pool.map(square, range(3), on_message=print)


def test_timelines_on_ray_are_clear_errors(ray_cluster):
    """timeline() (issue 15) is recorded by the local backend's workers;
    on Ray it raises NotImplementedError naming Ray's own."""
    from shmproc import RayBackend
    p = Echo(1).start(on=RayBackend())
    assert p.result == 2
    with pytest.raises(NotImplementedError, match="local backend"):
        p.timeline()
    with Pool(1, backend="ray") as pool:
        assert pool.map(square, range(3)) == [0, 1, 4]
        with pytest.raises(NotImplementedError, match="ray.timeline"):
            pool.timeline()


def test_another_address_while_connected_is_refused(ray_cluster):
    from shmproc import RayBackend
    from shmproc.ray_backend import ClusterUnreachable
    RayBackend().connect()
    with pytest.raises(ClusterUnreachable, match="already connected"):
        RayBackend(address="10.1.2.3:1").connect()


def test_bad_backend_arguments():
    from shmproc import RayBackend
    with pytest.raises(ValueError, match="resources"):
        RayBackend(resources={"CPU": -1})
    with pytest.raises(TypeError, match="dict"):
        RayBackend(resources=["CPU"])
    with pytest.raises(ValueError, match="connect_timeout"):
        RayBackend(connect_timeout=0)
    with pytest.raises(TypeError, match="address"):
        RayBackend(address=6379)
    with pytest.raises(TypeError, match="unknown backend"):
        Echo(1).start(on="cluster")
    with pytest.raises(TypeError, match="unknown backend"):
        Pool(2, backend="cluster")


def test_resources_no_node_has_fail_at_once(ray_cluster):
    from shmproc import RayBackend
    from shmproc.ray_backend import ResourcesUnavailable
    for resources in ({"GPU": 1}, {"CPU": 64}, {"tpu_pod": 1}):
        start = time.monotonic()
        with pytest.raises(ResourcesUnavailable, match="no node"):
            Echo(1).start(on=RayBackend(resources=resources))
        assert time.monotonic() - start < 10
    with pytest.raises(ResourcesUnavailable, match="no node"):
        Pool(2, backend=RayBackend(resources={"GPU": 2}))


def test_more_workers_than_the_cluster_holds_fail_at_once(ray_cluster):
    from shmproc import RayBackend
    from shmproc.ray_backend import ResourcesUnavailable
    start = time.monotonic()
    with pytest.raises(ResourcesUnavailable, match="at most 2 worker"):
        Pool(3, backend=RayBackend())
    with pytest.raises(ResourcesUnavailable, match="at most 1 worker"):
        Pool(2, backend=RayBackend(resources={"CPU": 1.5}))
    assert time.monotonic() - start < 10


def test_an_unread_run_gives_its_launcher_back(ray_cluster):
    from shmproc import RayBackend
    for n in range(4):                 # 2 CPUs: the third start needs the first launcher back
        p = Echo(n).start(on=RayBackend(start_timeout=20))
        # Ended, but nobody asked: the run still holds its launcher.
        ray_cluster.wait([p._rt().run._ref], timeout=20)
        del p
    with Pool(2, backend=RayBackend(start_timeout=20)) as p:
        assert p.map(square, [3]) == [9]


def test_resources_in_use_fail_after_start_timeout(ray_cluster):
    from shmproc import RayBackend
    from shmproc.ray_backend import ResourcesUnavailable
    with Pool(2, backend=RayBackend()) as busy:
        busy.map(square, [1])
        start = time.monotonic()
        with pytest.raises(ResourcesUnavailable, match="within 1 s"):
            Echo(1).start(on=RayBackend(start_timeout=1))
        assert time.monotonic() - start < 10
    assert Echo(4).start(on=RayBackend()).result == 8      # freed again


def test_a_class_the_cluster_cannot_import(ray_cluster, tmp_path, monkeypatch):
    from shmproc import RayBackend
    (tmp_path / "only_here.py").write_text(textwrap.dedent("""
        from shmproc import Process
        class OnlyHere(Process):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))        # the driver's path, not the workers'
    from only_here import OnlyHere
    with pytest.raises(SerializationError, match="could not rebuild.*only_here"):
        OnlyHere().start(on=RayBackend())
    assert Echo(2).start(on=RayBackend()).result == 4  # the launcher is still usable


def test_launcher_death_is_a_crash_and_takes_the_worker(ray_cluster):
    from shmproc import RayBackend
    p = Endless().start(on=RayBackend())
    while p.current_lap < 2:
        time.sleep(0.01)
    ray_cluster.kill(p._rt().run._launcher.actor)
    with pytest.raises(ProcessCrashedError, match="Ray actor"):
        p.result
    assert wait_gone(p.pid)            # the forked worker notices its launcher is gone


def test_launchers_are_reused(ray_cluster):
    from shmproc import RayBackend
    backend = RayBackend()
    first = Echo(1).start(on=backend)
    first.result
    launcher = first._rt().run._launcher
    again = Echo(2).start(on=backend)
    assert again.result == 4
    assert again._rt().run._launcher is launcher


def test_a_dropped_ray_pool_gives_its_launchers_back(ray_cluster):
    import gc
    from shmproc import RayBackend
    p = Pool(2, backend=RayBackend())
    assert p.map(square, [2]) == [4]
    del p
    gc.collect()
    with Pool(2, backend=RayBackend(start_timeout=10)) as again:   # needs both CPUs back
        assert again.map(square, [3]) == [9]


def test_a_launcher_handed_back_twice_is_idle_once(ray_cluster):
    from shmproc import RayBackend
    from shmproc.backends.ray.cluster import _cluster
    backend = RayBackend()
    backend.connect()
    launcher = _cluster.acquire(backend.spec, None, 1, 30)[0]
    _cluster.release([launcher])
    _cluster.release([launcher])
    assert [item[1] for item in _cluster.idle].count(launcher) == 1


def test_after_the_users_ray_shutdown_nothing_starts_a_new_cluster(tmp_path):
    import shutil
    import tempfile
    pytest.importorskip("ray")
    short = tempfile.mkdtemp(prefix="shmproc-rt-")
    code = f"""
        import ray, time
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=80 * 2**20, _temp_dir={short!r}, log_to_driver=False)
        from shmproc import Pool, RayBackend
        from test_backends import Echo, square
        assert Echo(2).start(on=RayBackend()).result == 4
        pool = Pool(2, backend="ray")
        assert pool.map(square, [3]) == [9]
        ray.shutdown()                            # the user's own: stale handles everywhere
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=80 * 2**20, _temp_dir={short!r}, log_to_driver=False)
        assert Echo(3).start(on=RayBackend()).result == 6   # fresh launchers, new session
        ray.shutdown()
        t = time.monotonic()
        print("done")
    """
    env = {"RAY_USAGE_STATS_ENABLED": "0", "HOME": str(tmp_path), "RAY_ADDRESS": "",
           "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
    try:
        start = time.monotonic()
        out = _run(code, env=env)
        took = time.monotonic() - start
    finally:
        from conftest import _processes_mentioning
        deadline = time.monotonic() + 20
        while _processes_mentioning(short) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _processes_mentioning(short)
        shutil.rmtree(short, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["done"]
    assert out.stderr.count("Started a local Ray instance") == 2     # the user's two, no more
    assert not os.path.exists(os.path.join(str(tmp_path), "ray"))
    assert not left
    assert took < 100


def test_ray_pool_survives_a_dead_launcher(ray_cluster):
    from shmproc import RayBackend
    with Pool(2, backend=RayBackend()) as p:
        assert p.map(square, range(10)) == [x * x for x in range(10)]
        ray_cluster.kill(p._engine._slots[0].launcher.actor)
        assert p.map(square, range(40), chunksize=1) == [x * x for x in range(40)]


def test_process_errors_pickle_through_ray_with_their_fields(ray_cluster):
    from shmproc import RayBackend
    p = BadLoop().start(on=RayBackend())
    with pytest.raises(ProcessError) as info:
        p.result
    assert info.value.section == "__loop__"
    assert "Error in __loop__ on lap 3" in str(info.value)
