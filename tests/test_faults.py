"""Fault injection: SIGKILL producers, consumers and workers between any two
steps, then check what survives.

Two kinds of kill:
  * at a named step (shmproc.common.faults.point: a blob written but not yet
    put, a record taken but its blob not yet opened, ...), under fork,
    forkserver and spawn;
  * at a random moment, many rounds in a row ("storms"), so kills land
    between steps nobody named.

After each round: every item was delivered exactly once, or reported
failed (a large item whose producer died before anyone opened it is
counted in ``lost_items``), or was in the hands of the consumer that died
(at most the one item it had taken); order is kept; the survivors were
never blocked for long; and (the autouse leak check in conftest.py) no
segment, descriptor or process is left.

``pytest --long tests/test_faults.py`` runs each storm for SOAK_SECONDS
(10 minutes by default, or $SHMPROC_SOAK_SECONDS) instead of a CI-sized
number of rounds.
"""
import multiprocessing as mp
import os
import random
import signal
import threading
import time

import pytest
from conftest import START_METHODS

import shmproc
from shmproc.wire import blobs
from shmproc.common.errors import ProcessCrashedError

# What the workers run lives in faults_work.py (a spawn worker imports only that).
from faults_work import (
    LARGE, _Counter, _check_delivery, _consumer, _drain, _item, _kill_quietly, _producer,
    _read_log, _read_lost, _square_and_log,
)

SURVIVOR_BOUND_S = 5.0      # generous: the machine is shared; the bound under test is ~1 s


# ---- children (module level: importable under spawn) -------------------------------------


# ---- kills at named steps ---------------------------------------------------------------------

@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("step", ["queue.blob_written", "queue.blob_put"])
def test_producer_killed_at_a_step(tmp_path, method, step):
    ctx = mp.get_context(method)
    q = shmproc.Queue()
    log = str(tmp_path / "put")
    nth = 3
    p = ctx.Process(target=_producer, args=(q, 20, log, f"{step}:{nth}"))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    got = _drain(q, timeout=0.5)
    put_log = _read_log(log)
    assert put_log == list(range(2 * nth - 1))          # killed at the nth large item
    # The producer died: its unopened large items are reported lost, the small ones arrive.
    assert got == [i for i in put_log if i % 2 == 0]
    expected_lost = nth - (step == "queue.blob_written")
    assert q.lost_items == expected_lost
    _check_delivery(put_log, got, q.lost_items, consumer_died=False)
    q.close()


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("step", ["queue.record_taken", "blob.claimed"])
def test_consumer_killed_at_a_step(tmp_path, method, step):
    ctx = mp.get_context(method)
    q = shmproc.Queue()
    log = str(tmp_path / "got")
    n, nth = 30, 4
    c = ctx.Process(target=_consumer, args=(q, log, f"{step}:{nth}"))
    c.start()
    for i in range(n):
        q.put(_item(i))
    c.join(60)
    assert c.exitcode == -signal.SIGKILL
    got_by_child = _read_log(log)
    assert got_by_child == list(range(2 * nth - 1))      # the 4th large item killed it
    rest = _drain(q, timeout=0.5)
    assert rest == list(range(2 * nth, n))                # the item it held is the only gap
    _check_delivery(range(n), got_by_child + rest, 0, consumer_died=True)
    # The producer (this process) is not held up by the item the dead consumer took.
    start = time.monotonic()
    assert blobs.pool.wait_opened(None, time.monotonic() + 30)
    assert time.monotonic() - start < SURVIVOR_BOUND_S
    q.close()


# ---- storms: kills at random moments -------------------------------------------------------------

def _rounds(request, ci_rounds):
    """(rounds, seconds): CI-sized, or a soak with --long."""
    if request.config.getoption("--long"):
        return None, float(os.environ.get("SHMPROC_SOAK_SECONDS", 600))
    return ci_rounds, None


def _storm(request, ci_rounds):
    rounds, seconds = _rounds(request, ci_rounds)
    deadline = None if seconds is None else time.monotonic() + seconds
    i = 0
    while (rounds is None or i < rounds) and (deadline is None or time.monotonic() < deadline):
        yield i
        i += 1


@pytest.mark.parametrize("method,ci_rounds", [("fork", 60), ("forkserver", 6), ("spawn", 6)])
def test_queue_storm(tmp_path, request, method, ci_rounds):
    """A producer and a consumer process; one of them SIGKILLed at a random
    moment each round; the test drains what is left and checks delivery."""
    ctx = mp.get_context(method)
    rng = random.Random(1234 + ci_rounds)
    for r in _storm(request, ci_rounds):
        q = shmproc.Queue()
        put_log, got_log = str(tmp_path / f"put{r}"), str(tmp_path / f"got{r}")
        prod = ctx.Process(target=_producer, args=(q, 60, put_log, None))
        cons = ctx.Process(target=_consumer, args=(q, got_log, None))
        prod.start()
        cons.start()
        victim = rng.choice([prod, cons])
        time.sleep(rng.uniform(0, 0.03 if method == "fork" else 0.3))
        if victim.pid is not None:
            try:
                os.kill(victim.pid, signal.SIGKILL)
            except ProcessLookupError:      # it had finished its part and exited first
                pass
        victim.join(60)
        consumer_died = victim is cons and cons.exitcode == -signal.SIGKILL
        if victim is cons:
            # This process takes over as the consumer; the producer then
            # finishes and exits without waiting long for anyone.
            rest = _drain(q, producer=prod)
            start = time.monotonic()
            prod.join(60)
            assert time.monotonic() - start < SURVIVOR_BOUND_S
        else:
            q.put(None)                     # this process ends the stream in its place
            start = time.monotonic()
            cons.join(60)
            assert cons.exitcode == 0
            assert time.monotonic() - start < SURVIVOR_BOUND_S
            rest = []
        got = _read_log(got_log)
        # A consumer that outlived the producer skipped its unopened large
        # items as lost (it logs how many); so may the drain here.  The
        # consumer may also have skipped some after its last log line.
        lost = q.lost_items + _read_lost(got_log) + (1 if consumer_died else 0)
        _check_delivery(_read_log(put_log), got + rest, lost, consumer_died)
        q.close()


@pytest.mark.parametrize("method,ci_rounds", [("fork", 250), ("forkserver", 4), ("spawn", 4)])
def test_process_worker_storm(request, method, ci_rounds):
    """A Process worker SIGKILLed at a random moment: the parent learns it
    at once, reports a crash (or the result, if it came first), leaks
    nothing."""
    rng = random.Random(99)
    for _ in _storm(request, ci_rounds):
        p = _Counter()
        p.config.start_method = method
        p.start()
        time.sleep(rng.uniform(0, 0.02 if method == "fork" else 0.2))
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        start = time.monotonic()
        assert p.wait(timeout=30)
        assert time.monotonic() - start < SURVIVOR_BOUND_S
        try:
            value = p.result
        except ProcessCrashedError as exc:
            assert exc.exitcode == -signal.SIGKILL and exc.signal_name == "SIGKILL"
        else:
            assert value.shape == (LARGE,) and value[0] == 2000
        del p


@pytest.mark.parametrize("method,ci_rounds", [("fork", 30), ("forkserver", 3), ("spawn", 3)])
def test_pool_worker_storm(tmp_path, request, method, ci_rounds):
    """Pool workers SIGKILLed at random moments during a map: every item
    has exactly one outcome (its value, or ProcessCrashedError), and the
    pool keeps working."""
    rng = random.Random(7)
    with shmproc.Pool(2, start_method=method) as pool:
        for r in _storm(request, ci_rounds):
            log = str(tmp_path / f"runs{r}")
            n = 400
            tasks = [pool.submit(_square_and_log, (i, log)) for i in range(n)]
            victim = rng.choice(pool._engine._res.slots).pid
            killer = threading.Timer(rng.uniform(0, 0.08), _kill_quietly, (victim,))
            killer.start()
            results = []
            for task in tasks:
                try:
                    results.append(("ok", task.result()))
                except ProcessCrashedError as exc:
                    results.append(("crashed", exc))
            killer.join()
            assert len(results) == n
            for i, (kind, value) in enumerate(results):
                if kind == "ok":
                    assert value == i * i
            runs = _read_log(log)
            ok = {i for i, (kind, _) in enumerate(results) if kind == "ok"}
            assert ok <= set(runs)
            # Finished work is final and retries default to 0: nothing ran twice.
            assert len(runs) == len(set(runs)), "an item ran twice"
        assert pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]


@pytest.mark.parametrize("method,ci_rounds", [("fork", 30), ("forkserver", 3), ("spawn", 3)])
def test_pool_chunk_storm(tmp_path, request, method, ci_rounds):
    """The same with chunks (map, chunksize 16): a worker killed at a random
    moment; no item ever runs twice, and a map that did not fail returned
    every value."""
    rng = random.Random(11)
    with shmproc.Pool(2, start_method=method) as pool:
        for r in _storm(request, ci_rounds):
            log = str(tmp_path / f"runs{r}")
            n = 400
            victim = rng.choice(pool._engine._res.slots).pid
            killer = threading.Timer(rng.uniform(0, 0.08), _kill_quietly, (victim,))
            killer.start()
            try:
                values = pool.map(_square_and_log, [(i, log) for i in range(n)], chunksize=16)
            except ProcessCrashedError:
                values = None
            killer.join()
            runs = _read_log(log)
            assert len(runs) == len(set(runs)), "an item ran twice"
            if values is not None:
                assert values == [i * i for i in range(n)]
                assert sorted(runs) == list(range(n))
        assert pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]
