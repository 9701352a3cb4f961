"""tell / listen between a running Process and its parent (issue 13).

The semantics follow the library the concept comes from: tell(obj) sends,
listen(timeout) returns the next message or None once the timeout passes;
both work in the parent and inside any hook.  shmproc adds what happens
at the end: nothing the worker sent is lost to the parent, and what the
worker never read is counted.
"""
import asyncio
import math
import threading
import time

import numpy as np
import pytest

import shmproc
from shmproc import NotRunningError
from shmproc.wire import SerializationError

# What the workers run lives in messages_work.py (a spawn worker imports only that).
from messages_work import (
    BigTeller, Echo, NeverReads, ReadsOneAndFails, Streamer, TellsInPool, TellsThenDies,
    TellsThenDiesInPool, TellsThenWorks, Ticker, WaitsForWord,
)


@pytest.fixture(params=["fork", "spawn"])
def method(request):
    return request.param


def started(proc, method="fork"):
    proc.config.start_method = method
    return proc.start()


def test_echo_round_trips_both_ways(method):
    """tell from the parent, listen in the worker, and back, in order."""
    p = started(Echo(), method)
    for i in range(200):
        p.tell(i)
        assert p.listen(timeout=10) == ("echo", i)
    for i in range(50):                       # several in flight, order kept per direction
        p.tell(f"m{i}")
    assert [p.listen(timeout=10) for _ in range(50)] == [("echo", f"m{i}") for i in range(50)]
    p.tell("bye")
    assert p.result == "done"
    assert p.unread == 0


def test_a_stream_is_all_read_after_the_worker_ended(method):
    """100k messages sent while nobody reads: all there, in order, after wait()."""
    p = started(Streamer(100_000), method)
    assert p.wait(timeout=120)
    got = []
    while (msg := p.listen(timeout=0)) is not None:
        got.append(msg[0])
    assert got == list(range(100_000))
    assert p.listen() is None                 # ended and drained: no wait


def test_a_64_mib_array_each_way(method):
    """Large arrays travel out-of-band, arrive writable and whole."""
    p = started(Echo(), method)
    arr = np.arange(8 << 20, dtype=np.float64)
    p.tell(arr)
    assert p.listen(timeout=60) == ("sum", float(arr.sum()), True)
    p.tell("bye")
    p.wait(60)
    q = started(BigTeller(), method)
    got = q.listen(timeout=60)
    assert got.shape == (8 << 20,) and got[12345] == 12345.0 and got.flags.writeable
    del got
    q.wait(60)


def test_listen_timeouts_are_honoured():
    """listen(timeout) returns None once the timeout passed, within 50 ms."""
    p = started(NeverReads(1))
    for timeout in (0.0, 0.05, 0.2):
        t0 = time.monotonic()
        assert p.listen(timeout=timeout) is None
        took = time.monotonic() - t0
        assert timeout <= took + 0.001 and took < timeout + 0.05, (timeout, took)
    p.stop()
    p.wait(10)


def test_tell_before_start_and_after_the_end():
    """A message nobody can read is an error, not silently dropped."""
    p = NeverReads()
    with pytest.raises(NotRunningError, match="start"):
        p.tell(1)
    with pytest.raises(NotRunningError, match="start"):
        p.listen(0)
    assert p.unread == 0
    p.start()
    p.wait(10)
    with pytest.raises(NotRunningError, match="ended"):
        p.tell(1)


def test_what_the_worker_never_read_is_counted():
    p = started(NeverReads())
    for i in range(5):
        p.tell(i)
    p.wait(10)
    assert p.unread == 5


def test_messages_around_stop(method):
    """Every lap's message arrives, up to the last lap before stop() took effect."""
    p = started(Ticker(pause=0.01), method)
    first = p.listen(timeout=30)
    assert first == 0
    p.stop()
    p.wait(30)
    rest = []
    while (msg := p.listen(timeout=0)) is not None:
        rest.append(msg)
    assert [first] + rest == list(range(p.current_lap))


def test_messages_sent_before_a_crash_survive_it(method):
    """A worker that dies: what it told before the end of its last lap is
    still read, then None."""
    p = started(TellsThenDies(3), method)
    p.wait(30)
    assert isinstance(p.error or shmproc.ProcessCrashedError(), shmproc.ProcessCrashedError)
    assert [p.listen(timeout=0) for _ in range(4)] == [0, 1, 2, None]


@pytest.mark.parametrize("how", ["sleep", "python"])
def test_a_tell_reaches_the_parent_while_its_hook_goes_on(how):
    """Coalescing holds a message at most outbox.FLUSH_AFTER_S (+ the switch
    interval): one told before a long computation in the same hook arrives
    while the hook still runs, and survives the worker dying after it."""
    p = started(TellsThenWorks(3.0, how))
    t0 = time.monotonic()
    assert p.listen(timeout=1.0) == "started"
    assert time.monotonic() - t0 < 1.0 and p.is_alive      # well within its 3 s
    p.kill()
    q = started(TellsThenWorks(0.5, how))
    q.wait(30)
    assert q.exitcode == 4                                  # it died, not ended
    assert [q.listen(timeout=0), q.listen(timeout=0)] == ["started", None]


def test_messages_sent_before_a_kill_survive_it():
    """kill(): the messages that arrived before it, contiguous from the first."""
    p = started(Ticker())
    assert p.listen(timeout=30) == 0
    time.sleep(0.05)
    p.kill()
    got = [0]
    while (msg := p.listen(timeout=0)) is not None:
        got.append(msg)
    assert got == list(range(len(got))) and len(got) >= 2


def test_a_message_to_a_failed_life_goes_to_the_next():
    """Lives: what the failed life did not read is the next life's."""
    p = ReadsOneAndFails()
    p.start()
    p.tell("first")
    p.tell("second")
    assert p.listen(timeout=30) == "first"
    assert p.listen(timeout=30) == "second"
    p.wait(30)
    assert p.unread == 0


def test_listen_in_a_hook_returns_none_once_stop_is_asked():
    """A hook blocked in listen() with no timeout does not hold up stop()."""
    p = started(WaitsForWord())
    p.tell("hello")
    assert p.listen(timeout=30) == ("heard", "hello")
    time.sleep(0.1)
    p.stop()
    assert p.wait(10)
    assert p.listen(timeout=0) == ("heard", None)


def test_alisten_keeps_the_loop_responsive():
    """asyncio: awaiting messages never stalls the loop."""
    async def main():
        p = started(Ticker(pause=0.02))
        gaps = []
        stop = asyncio.Event()

        async def ticker():
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
        t = asyncio.create_task(ticker())
        got = [await p.alisten(timeout=30) for _ in range(10)]
        assert await p.alisten(timeout=0.01) in (None, 10, 11)
        stop.set()
        await t
        p.stop()
        p.wait(10)
        return got, max(gaps)
    got, stall = asyncio.run(main())
    assert got == list(range(10))
    assert stall < 0.1, f"the loop stalled {stall * 1000:.0f} ms"


@pytest.mark.parametrize("timeout, error", [(-1, ValueError), (math.nan, ValueError),
                                            ("1", TypeError), (True, TypeError)])
def test_bad_listen_timeouts(timeout, error):
    p = started(NeverReads())
    with pytest.raises(error, match="timeout"):
        p.listen(timeout)
    p.wait(10)


def test_telling_what_cannot_be_pickled_fails_in_the_caller():
    p = started(Echo())
    with pytest.raises(SerializationError, match="lock"):
        p.tell(threading.Lock())
    p.tell("bye")
    assert p.result == "done"


def test_a_submitted_process_tells_its_task(method):
    """Pool.submit(Process): what it tells reaches task.listen(), in order,
    before and after the task is done."""
    with shmproc.Pool(2, start_method=method) as pool:
        task = pool.submit(TellsInPool, 7)
        assert task.listen(timeout=30) == (7, 0)
        assert task.result(timeout=30) == "told"
        assert [task.listen(timeout=0), task.listen(timeout=0), task.listen()] == \
            [(7, 1), (7, 2), None]
        built = pool.submit(TellsInPool(8))
        assert built.result(timeout=30) == "told"
        assert [built.listen(0) for _ in range(4)] == [(8, 0), (8, 1), (8, 2), None]
        assert pool.submit(abs, -1).listen(timeout=30) is None      # a plain call tells nothing


@pytest.mark.parametrize("chunksize", [1, 3])
def test_imap_items_tell_the_iterator(method, chunksize):
    """Process items of imap / imap_unordered: what each tells reaches the
    iterator's listen() as (index in the input, message), in order per item."""
    with shmproc.Pool(2, start_method=method) as pool:
        it = pool.imap(TellsInPool, range(10, 17), chunksize=chunksize)
        heard = []
        while True:
            got = it.listen(timeout=30)
            if got is None:
                break
            heard.append(got)
        assert list(it) == ["told"] * 7
        assert it.listen(timeout=0) is None
        assert sorted(heard) == [(i, (10 + i, lap)) for i in range(7) for lap in range(3)]
        for i in range(7):                                 # each item's own order
            assert [m for k, m in heard if k == i] == [(10 + i, lap) for lap in range(3)]
        unordered = pool.imap_unordered(TellsInPool, [5, 6])
        assert sorted(unordered) == ["told", "told"]       # results first, messages after
        assert sorted(iter(lambda: unordered.listen(0), None)) == \
            [(0, (5, 0)), (0, (5, 1)), (0, (5, 2)), (1, (6, 0)), (1, (6, 1)), (1, (6, 2))]


def test_map_async_items_tell_the_result():
    with shmproc.Pool(2) as pool:
        r = pool.starmap_async(TellsInPool, [(1,), (2,)])
        first = r.listen(timeout=30)
        assert first in [(0, (1, 0)), (1, (2, 0))]
        assert r.get(timeout=30) == ["told", "told"]
        rest = list(iter(lambda: r.listen(0), None))
        assert sorted([first] + rest) == [(k, (k + 1, lap)) for k in range(2) for lap in range(3)]
        plain = pool.map_async(abs, [-1, -2])                # plain functions tell nothing
        assert plain.listen(timeout=30) is None and plain.get() == [1, 2]


def test_a_crash_keeps_what_earlier_items_told():
    """A worker dies in item 1: item 0's messages and result stay; item 1 fails."""
    with shmproc.Pool(1) as pool:
        it = pool.imap(TellsThenDiesInPool, [False, True], chunksize=2)
        assert next(it) == "told"
        with pytest.raises(shmproc.ProcessCrashedError):
            next(it)
        assert list(iter(lambda: it.listen(0), None)) == [(0, "before"), (1, "before")]


@pytest.mark.parametrize("chunksize", [1, 3])
def test_plain_map_items_tell_through_on_message(chunksize):
    """Pool.map / starmap of a Process class: on_message(index, message) is
    called in the caller's thread for every message, in order per item,
    before the call returns."""
    heard = []
    callers = set()

    def on_message(index, message):
        callers.add(threading.get_ident())
        heard.append((index, message))

    with shmproc.Pool(2) as pool:
        assert pool.map(TellsInPool, range(10, 17), chunksize=chunksize,
                        on_message=on_message) == ["told"] * 7
        assert callers == {threading.get_ident()}
        for i in range(7):
            assert [m for j, m in heard if j == i] == [(10 + i, lap) for lap in range(3)]
        assert len(heard) == 21
        heard.clear()
        assert pool.starmap(TellsInPool, [(1,), (2,)], on_message=on_message) == ["told"] * 2
        assert sorted(heard) == [(i, (i + 1, lap)) for i in (0, 1) for lap in range(3)]


def test_on_message_hears_what_came_before_an_item_failed():
    """A map that raises has delivered every message that reached the
    parent before it raised; one whose worker dies keeps earlier items' tells."""
    heard = []
    with shmproc.Pool(1) as pool:
        with pytest.raises(shmproc.ProcessCrashedError):
            pool.map(TellsThenDiesInPool, [False, True], chunksize=2,
                     on_message=lambda i, m: heard.append((i, m)))
    assert heard == [(0, "before"), (1, "before")]


def test_what_pool_tasks_cannot_do_is_a_clear_error():
    with shmproc.Pool(1) as pool:
        with pytest.raises(shmproc.ProcessError, match="not hear from it"):
            pool.submit(TellsInPool, 1, listen=True).result(timeout=30)
        with pytest.raises(shmproc.ProcessError, match="Pool.map / starmap.*on_message="):
            pool.map(TellsInPool, [1, 2])           # nothing listens: told at once
        with pytest.raises(TypeError, match="on_message must be a callable"):
            pool.map(TellsInPool, [1, 2], on_message="print")
        assert pool.imap(abs, [-3]).listen(timeout=30) is None      # a plain map tells nothing
