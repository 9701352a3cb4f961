"""Pools at the edges (issue 14's bad input): a 256-worker pool on a
2-core machine starts, runs and shuts down cleanly; a pool whose workers
are all stuck in long tasks still answers terminate() promptly; and the
workers of a pool whose process is killed do not outlive it, whether
PR_SET_PDEATHSIG ends them (a pool made on the main thread: their guard
thread is then only started for a timeout) or their guard does (a pool
made on another thread, whose end must not end them)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import shmproc


def square(x):
    return x * x


def nap(s):
    time.sleep(s)
    return s


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:                 # a zombie is not alive
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc")
def test_256_workers_start_run_and_shut_down_cleanly():
    with shmproc.Pool(1, start_method="fork") as warm:    # once-per-process descriptors
        warm.map(square, [1])                              # (fork workers' /dev/null) open now
    fds_before = len(os.listdir("/proc/self/fd"))
    with shmproc.Pool(256, start_method="fork") as pool:
        pids = pool.pids
        assert len(set(pids)) == 256
        assert pool.map(square, range(1024), chunksize=1) == [x * x for x in range(1024)]
    assert not [pid for pid in pids if _alive(pid)]
    assert len(os.listdir("/proc/self/fd")) <= fds_before   # every ring and pipe closed


def test_terminate_answers_while_every_worker_is_busy():
    pool = shmproc.Pool(4, start_method="fork")
    tasks = [pool.submit(nap, 60) for _ in range(8)]
    deadline = time.monotonic() + 30
    while not all(t.running() for t in tasks[:4]) and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = pool.pids
    t0 = time.monotonic()
    pool.terminate()
    took = time.monotonic() - t0
    assert took < 2.0, f"terminate() took {took:.2f} s"      # the bound is 1 s; slack for load
    assert not [pid for pid in pids if _alive(pid)]
    assert all(t.cancelled() for t in tasks)


_ORPHANS = """
import sys, threading, time
import shmproc

def square(x):
    return x * x

if __name__ == "__main__":
    method, where = sys.argv[1], sys.argv[2]
    pools = []

    def make():
        pools.append(shmproc.Pool(2, start_method=method))
        pools[0].map(square, range(4))

    if where == "thread":
        t = threading.Thread(target=make)
        t.start()
        t.join()                                  # the thread that made the pool has ended
    else:
        make()
    print(" ".join(map(str, pools[0].pids)), flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc")
@pytest.mark.parametrize("method,where", [("fork", "main"), ("spawn", "main"), ("fork", "thread")])
def test_workers_do_not_outlive_a_killed_pool_process(tmp_path, method, where):
    script = tmp_path / "orphans.py"
    script.write_text(textwrap.dedent(_ORPHANS))
    proc = subprocess.Popen([sys.executable, str(script), method, where],
                            stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        assert all(_alive(pid) for pid in pids)           # a pool made on a thread that ended lives on
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in pids if _alive(pid)], "workers outlived their pool's process"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_fork_that_fails_midway_leaves_no_worker_and_no_ring(monkeypatch):
    """Pool(4) whose third fork fails (EAGAIN: a process limit): the error
    reaches the caller, and the two workers already forked are ended, their
    rings and every other descriptor closed."""
    import multiprocessing as mp
    from shmproc.backends.local import forking

    with shmproc.Pool(1, start_method="fork") as warm:    # once-per-process descriptors
        warm.map(square, [1])
    fds_before = len(os.listdir("/proc/self/fd"))
    real_start, calls, pids = forking.DirectForkProcess.start, [0], []

    def start(self):                    # holds no reference to the Process (nor its ring)
        calls[0] += 1
        if calls[0] == 3:
            raise BlockingIOError(11, "Resource temporarily unavailable (fork)")
        real_start(self)
        pids.append(self.pid)

    monkeypatch.setattr(forking.DirectForkProcess, "start", start)
    with pytest.raises(BlockingIOError, match="fork"):
        shmproc.Pool(4, start_method="fork")
    assert len(pids) == 2
    assert not [pid for pid in pids if _alive(pid)]             # ended and reaped
    assert not [p for p in mp.active_children() if p.pid in pids]
    assert len(os.listdir("/proc/self/fd")) <= fds_before


_ONE_SHOT = textwrap.dedent("""
    import os, sys, shmproc

    def nap_then(x):
        import time
        time.sleep(0.05 * (x % 3))          # workers end at different times
        return x + 1

    with shmproc.Pool(3) as pool:
        assert pool.map(nap_then, range(9)) == list(range(1, 10))
        pids = pool.pids
    for pid in pids:                        # reaped: no zombie left behind
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        sys.exit(f"worker {pid} was not reaped")
    # Joining waited on the workers' sentinels itself: importing
    # multiprocessing.connection to do it cost a one-shot script ~3 ms.
    # And asyncio (~20 ms) loads only with aimap, not with every pool.
    sys.exit(sorted(m for m in ("multiprocessing.connection", "asyncio") if m in sys.modules)
             or None)
""")


def test_join_reaps_every_worker_without_multiprocessing_connection():
    """close() and join() reap every worker (os.kill finds none of their
    pids), waiting on their sentinels with one poll; a script that uses a
    pool but not aimap never imports asyncio."""
    done = subprocess.run([sys.executable, "-c", _ONE_SHOT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _fork_a_sleeper(seconds):
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(seconds)         # holds every descriptor its worker had
        finally:
            os._exit(0)
    return pid


def test_join_does_not_wait_for_a_process_a_task_forked(monkeypatch):
    """A task that forks a long-lived process: that process inherits its
    worker's end of the worker's sentinel, so the sentinel stays open after
    the worker exits; join() still reaps the worker when it exits, not when
    the stop grace runs out (made far longer here than the check allows)."""
    from shmproc.backends.local import pool as local_pool
    monkeypatch.setattr(local_pool, "STOP_GRACE_S", 60.0)
    pool = shmproc.Pool(2, start_method="fork")
    sleepers = []
    try:
        sleepers = pool.map(_fork_a_sleeper, [120, 120])
        pool.close()
        t = time.monotonic()
        pool.join()
        assert time.monotonic() - t < 30.0
        assert all(_alive(pid) for pid in sleepers)
    finally:
        pool.terminate()
        for pid in sleepers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
