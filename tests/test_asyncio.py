"""asyncio (issue 12): `await p`, pool.aimap / aimap_unordered, Futures in a loop.

The loop is never blocked while results are awaited: no thread per call
(the pool's one background driver wakes the loop; a Process's sentinel
is watched with the loop's own add_reader).  Each test names the asyncio
behaviour it mirrors; they run under fork and spawn.
"""
import asyncio
import time

import pytest

import shmproc

# What the workers run lives in asyncio_work.py (a spawn worker imports only that).
from asyncio_work import Double, fails_on_three, nap, source_that_breaks, square


@pytest.fixture(params=["fork", "spawn"])
def method(request):
    return request.param


def run(coro, limit=60):
    return asyncio.run(asyncio.wait_for(coro, limit))


def test_await_a_process_gives_its_result(method):
    """`await obj` on an awaitable, as asyncio.gather takes it: the value
    p.result gives, or what it raises."""
    async def main():
        procs = [Double(i) for i in range(4)]
        for p in procs:
            p.config.start_method = method
            p.start()
        return await asyncio.gather(*procs)
    assert run(main()) == [0, 2, 4, 6]

    async def failing():
        p = Double(1, fail=True)
        p.config.start_method = method
        p.start()
        await p
    with pytest.raises(shmproc.ProcessError) as info:
        run(failing())
    assert "lap failed" in str(info.value)


def test_await_a_finished_process_twice():
    """An awaitable awaited again after it finished gives the same value."""
    p = Double(5).start()
    p.wait()

    async def main():
        return await p, await p
    assert run(main()) == (10, 10)


def test_awaiting_a_process_never_started_is_an_error():
    """Awaiting something that can never finish raises instead of hanging."""
    async def main():
        await Double(1)
    with pytest.raises(RuntimeError, match="never started"):
        run(main())


def test_aimap_in_order_and_unordered(method):
    """`async for` over an async iterator, as imap's order / completion order."""
    async def main():
        with shmproc.Pool(2, start_method=method) as pool:
            ordered = [r async for r in pool.aimap(square, range(300))]
            unordered = [r async for r in pool.aimap_unordered(nap, [0.3, 0.0, 0.0], chunksize=1)]
            few = [r async for r in pool.aimap(square, range(50), chunksize=7)]
        return ordered, unordered, few
    ordered, unordered, few = run(main())
    assert ordered == [i * i for i in range(300)]
    assert sorted(unordered) == [0.0, 0.0, 0.3]
    assert few == [i * i for i in range(50)]


def test_aimap_raises_a_failed_item_in_its_turn(method):
    """As imap: the results before a failed item, then its exception; the pool goes on."""
    async def main():
        got = []
        with shmproc.Pool(2, start_method=method) as pool:
            with pytest.raises(ValueError, match="three"):
                async for r in pool.aimap(fails_on_three, range(6), chunksize=1):
                    got.append(r)
            after = [r async for r in pool.aimap(square, range(3))]
        return got, after
    got, after = run(main())
    assert got == [0, 1, 2] and after == [0, 1, 4]


def test_aimap_over_a_source_that_raises(method):
    """A generator that raises: its items' results, then its own exception;
    the pool stays usable."""
    async def main():
        got = []
        with shmproc.Pool(2, start_method=method) as pool:
            with pytest.raises(KeyError, match="the source broke"):
                async for r in pool.aimap(square, source_that_breaks(10)):
                    got.append(r)
            assert [r async for r in pool.aimap(square, [7])] == [49]
        return got
    assert run(main()) == [i * i for i in range(10)]


def test_leaving_aimap_early_drops_the_rest():
    """Breaking out of `async for` (aclose) ends the call; the pool goes on."""
    async def main():
        with shmproc.Pool(2) as pool:
            agen = pool.aimap(square, range(100_000))
            async for r in agen:
                if r >= 100:
                    break
            await agen.aclose()
            return [r async for r in pool.aimap(square, range(3))]
    assert run(main()) == [0, 1, 4]


def test_bad_aimap_arguments_fail_at_the_call():
    """Arguments are checked when aimap is called, as imap's are."""
    with shmproc.Pool(1) as pool:
        with pytest.raises(ValueError, match="chunksize"):
            pool.aimap(square, range(3), chunksize=0)
        with pytest.raises(TypeError, match="callable"):
            pool.aimap(42, range(3))
        with pytest.raises(ValueError, match="task_timeout"):
            pool.aimap_unordered(square, range(3), task_timeout=0)
    with pytest.raises(ValueError, match="closed|terminated"):
        pool.aimap(square, range(3))


def test_the_event_loop_never_stalls_while_results_are_awaited():
    """asyncio's promise: awaiting must not block the loop.  A ticker that
    sleeps 1 ms at a time measures the loop's longest stall while 1,000
    aimap results, 1,000 wrapped Futures and 8 Processes are awaited (only
    the awaits count: submitting and starting are the caller's own
    synchronous calls)."""
    async def ticker(stop, ticks):
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            ticks.append((last, now))
            last = now

    async def main():
        stop, ticks, windows = asyncio.Event(), [], []
        tick = asyncio.create_task(ticker(stop, ticks))
        await asyncio.sleep(0.01)
        with shmproc.Pool(2) as pool:
            begin = time.perf_counter()
            mapped = [r async for r in pool.aimap(square, range(1000), chunksize=1)]
            windows.append((begin, time.perf_counter()))
            futures = [asyncio.wrap_future(pool.submit(square, i)) for i in range(1000)]
            begin = time.perf_counter()
            wrapped = await asyncio.gather(*futures)
            windows.append((begin, time.perf_counter()))
        procs = [Double(i).start() for i in range(8)]
        begin = time.perf_counter()
        awaited = await asyncio.gather(*procs)
        windows.append((begin, time.perf_counter()))
        stop.set()
        await tick
        gaps = [b - a for a, b in ticks if any(lo <= a and b <= hi for lo, hi in windows)]
        return mapped, wrapped, awaited, gaps
    mapped, wrapped, awaited, gaps = run(main(), limit=120)
    assert mapped == wrapped == [i * i for i in range(1000)]
    assert awaited == [2 * i for i in range(8)]
    assert gaps, "the loop never ticked while results were awaited"
    print(f"longest stall {max(gaps) * 1000:.1f} ms over {len(gaps)} ticks")
    assert max(gaps) < 0.100, f"the event loop stalled for {max(gaps) * 1000:.1f} ms"
