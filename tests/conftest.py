"""Shared fixtures: start methods, and a leak check around every test.

Every test runs inside `no_leaks`: after it, no shmproc shared memory may
remain mapped or open in this process, /dev/shm must hold the same
entries, and no child process may be left running.
"""
import gc
import multiprocessing as mp
import os

import pytest

from shmproc.common.validate import start_methods

#: The one list of start methods the suite runs under: the library's own.
START_METHODS = start_methods()
#: The start methods the pool and crash suites run every test under.
#: forkserver behaves as spawn for what these tests look at (a fresh
#: interpreter importing the main module) and costs as much again: it gets
#: its own smoke tests there (test_pool.py::test_forkserver_smoke and the
#: crash matrix's forkserver cases) instead of a third pass.
FULL_METHODS = [m for m in ("fork", "spawn") if m in START_METHODS]


def shmproc_fds():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "memfd:shmproc" in target or "/dev/shm/shmproc" in target:
            out.append(fd)
    return sorted(out)


def shmproc_mappings():
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:shmproc" in line or "/dev/shm/shmproc" in line)


def dev_shm():
    # Only our own names: other programs on a shared machine come and go.
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("shmproc")}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def no_leaks(request):
    if "allow_leaks" in request.keywords:
        yield
        return
    gc.collect()
    fds, maps, shm = shmproc_fds(), shmproc_mappings(), dev_shm()
    yield
    for child in mp.active_children():
        child.join(timeout=10)
    gc.collect()
    # Released out-of-band segments are cached for reuse by design; drop the
    # cache so what remains is a real leak (an item nobody released).
    from shmproc.backends.local import run
    from shmproc.wire import arenas
    from shmproc.wire import blobs
    run.release_ended()         # ended runs' segments wait for the parent's next wait()
    run.trim_spares()           # the next run's control block and trace segment, made ahead
    blobs.pool.sweep()
    blobs.pool.trim()
    arenas.pool.trim()          # finished runs' arenas are kept for reuse, likewise
    from shmproc.channels import mailbox
    mailbox.trim()              # the next run's mailbox, made ahead
    gc.collect()
    assert not mp.active_children(), f"test left child processes: {mp.active_children()}"
    assert shmproc_fds() == fds, "test leaked shmproc file descriptors"
    assert shmproc_mappings() == maps, "test leaked shmproc mappings"
    assert dev_shm() == shm, "test left entries in /dev/shm"


@pytest.fixture(params=START_METHODS)
def ctx(request):
    """A multiprocessing context for each start method."""
    return mp.get_context(request.param)


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_leaks: skip the leak check (the test checks itself)")


# ---- one Ray cluster for the whole session (tests/test_backends.py) -----------------------

def _processes_mentioning(text):
    """Pids whose command line mentions `text` (the cluster's temp dir)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A small local Ray cluster: 2 CPUs, no dashboard, a small object store,
    its temp dir and HOME inside the test tmp dir, usage stats off.  Skips
    when Ray is not installed.  Afterwards nothing of it may remain."""
    ray = pytest.importorskip("ray")
    import shutil
    import time as _time

    base = tmp_path_factory.mktemp("ray")
    home = base / "home"
    home.mkdir()
    saved = {k: os.environ.get(k) for k in ("HOME", "RAY_USAGE_STATS_ENABLED", "PYTHONPATH")}
    os.environ["HOME"] = str(home)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Workers import this directory's test modules (their Process classes).
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, saved["PYTHONPATH"]) if p)
    temp_dir = str(base / "t")
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    try:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
                 _temp_dir=temp_dir, configure_logging=False, log_to_driver=False)
        yield ray
    finally:
        from shmproc import ray_backend
        from shmproc.backends.ray.cluster import stop_ray
        ray_backend.shutdown()
        if not stop_ray(ray):              # bounded: see stop_ray
            import sys
            print("\nray.shutdown() hung; the test cluster was killed", file=sys.stderr)
            for pid in _processes_mentioning(temp_dir):
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        deadline = _time.monotonic() + 30
        while _processes_mentioning(temp_dir) and _time.monotonic() < deadline:
            _time.sleep(0.2)
        left = _processes_mentioning(temp_dir)
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"Ray processes left after the session: {left}"
        shm_after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
        assert not (shm_after - shm_before), f"/dev/shm entries left: {shm_after - shm_before}"


def pytest_collection_modifyitems(config, items):
    # Tests on the Ray cluster run last: the rest of the suite then neither
    # runs beside the cluster's processes nor forks a driver with Ray loaded
    # (a fork of it costs ~3x more).  Order within each group is kept.
    def on_ray(item):
        callspec = getattr(item, "callspec", None)
        return ("ray_cluster" in getattr(item, "fixturenames", ())
                or (callspec is not None and callspec.params.get("backend") == "ray"))
    items.sort(key=on_ray)


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", default=False,
                     help="soak mode: fault-injection storms run for $SHMPROC_SOAK_SECONDS "
                          "(default 600) each instead of a CI-sized number of rounds")


def pytest_collection_finish(session):
    # The leak check collects garbage twice per test.  A full collection
    # walks every tracked object: pytest's items, the imported modules of
    # every test file (numpy, hypothesis, ...), about 0.1 s on this heap,
    # which was most of the suite's setup and teardown time.  What exists
    # once collection is over lives for the whole session; moving it to the
    # permanent generation leaves each collection only what the tests
    # created, which is all the leak check is about.
    gc.collect()
    gc.freeze()
