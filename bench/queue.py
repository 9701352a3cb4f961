"""shmproc.Queue against its anchors, measured in one run.

    python bench/queue.py                      # full run, ~1-2 minutes
    python bench/queue.py --quick              # smoke run, < 30 s, rough numbers
    python bench/queue.py --start-method spawn --repeat 5 --json out.json

What is measured (every contender uses the same pattern):

    parent (consumer)                         child (producer)
    -----------------                         ----------------
    t0 = perf_counter()
    ctrl.send(n)            ─────────────▶    put n items (single or batched)
    get until n received    ◀── contender ──
    t1 = perf_counter()                       ctrl.send("done")   (untimed)
    verify what arrived

The child process is started, builds its payload and says "ready" before any
clock runs, so process start-up is not part of the numbers. One child serves
a calibration/warm-up run (which sizes n so a run takes ~--target-time
seconds) and then --repeat timed runs; the best run is reported.

1. Messages (64 B and 4 KiB ``bytes``), msgs/s:
   - shmproc.Queue            put / get
   - shmproc.Queue batched    put_many / get_many, 256 per batch
   - multiprocessing.Queue    put / get                    (the reference: 1.00x)
   - multiprocessing.SimpleQueue  put / get
   - multiprocessing.Pipe     Connection.send / recv, i.e. pickled objects
   - faster-fifo              put / get, and put_many / get_many (256), 4 MiB buffer
   - os.pipe floor            raw bytes with an 8-byte length prefix, no pickling,
                              256 messages per write(), pipe buffer raised to 1 MiB;
                              the consumer still builds one bytes object per message.
                              A floor for "bytes through the kernel", not a queue.
   The consumer checks the message count and that the last message is the
   expected one (256 distinct payloads are cycled).

2. numpy float64 arrays (1 MB and 64 MB, 1 MB = 10**6 bytes), MB/s: the same
   contenders minus SimpleQueue and the batched variants. The producer sends
   the same ``np.arange`` array n times; the consumer checks shape, dtype and
   a sample of elements (one every 64 KiB, summed) of *every* array it
   receives, the same check for every contender. The os.pipe floor reads into
   a freshly allocated array (so it pays for fresh pages like the others).

3. Idle CPU: a child blocked in ``get()`` on an empty queue for ~1 s measures
   its own CPU time (``time.process_time``, all threads) around the call and
   reports it as % of one core.

4. Burst in one process: put BURST_ITEMS items of 100 B, then get them all
   (msgs/s over both halves), shmproc.Queue against multiprocessing.Queue.
   An unbounded queue must never block on put, so this row checks that as
   much as it measures: shmproc's queue grows past its ring (and gives the
   memory back as it drains), multiprocessing's buffers in its feeder thread.

5. Targets from DESIGN.md, as ratios against multiprocessing.Queue measured in
   this same run, with PASS/FAIL.

A measurement that hangs or whose child dies is reported as an error and the
run continues (see ``_common.Watchdog``). Exit status: 0 if everything ran, 1
if a measurement failed or shmproc is not importable, 2 with --check-targets
when a target is missed.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    # Run as a script: this file's folder is sys.path[0], and this file is
    # called queue.py, so `import queue` (done by multiprocessing itself) would
    # find it instead of the standard library. Import the real module first
    # with bench/ out of the path, then put bench/ back at the *end* so
    # _common is found but stdlib names still win (spawn/forkserver children
    # get this same sys.path).
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    import queue as _stdlib_queue  # noqa: F401
    sys.path.append(_HERE)
    import _common as C
else:
    from . import _common as C

import argparse
import dataclasses
import fcntl
import itertools
import json
import multiprocessing as mp
import struct
import time
import traceback
from typing import Any, Callable

import numpy as np

try:
    import shmproc

    shmproc.Queue
    SHMPROC_ERROR = None
except Exception as exc:  # not built yet, broken build...
    shmproc = None
    SHMPROC_ERROR = f"{type(exc).__name__}: {exc}"

try:
    import faster_fifo

    FASTER_FIFO_ERROR = None
except Exception as exc:
    faster_fifo = None
    FASTER_FIFO_ERROR = f"{type(exc).__name__}: {exc}"


BATCH = 256  # messages per put_many / get_many, and per os.pipe write
DISTINCT = 256  # distinct message payloads, cycled
FF_BYTES = 4 << 20  # faster-fifo buffer for messages (its default is 1 MB)
PIPE_FLOOR_BYTES = 1 << 20  # F_SETPIPE_SZ for the floor (Linux default max)
SAMPLE_STRIDE = 8192  # array check: one float64 every 64 KiB
IDLE_SECONDS = 1.0
_HDR = struct.Struct("<Q")  # os.pipe floor framing: 8-byte length prefix


# --------------------------------------------------------------------------
# workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    kind: str  # "msg" or "array"
    nbytes: int
    label: str
    n0: int  # first calibration size (default run)
    n0_quick: int
    n_max: int  # bounds memory in flight if a queue does not apply back-pressure

    @property
    def unit(self) -> str:
        return "msgs/s" if self.kind == "msg" else "MB/s"


MSG_64 = Workload("msg", 64, "64 B", 2000, 500, 5_000_000)
MSG_4K = Workload("msg", 4096, "4 KiB", 1000, 300, 2_000_000)
ARR_1M = Workload("array", 1_000_000, "1 MB", 8, 4, 4000)
ARR_64M = Workload("array", 64_000_000, "64 MB", 1, 1, 64)
MSG_WORKLOADS = (MSG_64, MSG_4K)
ARRAY_WORKLOADS = (ARR_1M, ARR_64M)


def build_items(w: Workload) -> list:
    if w.kind == "msg":
        return [bytes([j % 256]) * w.nbytes for j in range(DISTINCT)]
    return [np.arange(w.nbytes // 8, dtype=np.float64)]


class ArrayCheck:
    """Verify one received array: shape, dtype and a strided sample of values.

    The sample (one element per 64 KiB plus the last) touches the array
    across its whole length without reading all of it, the same for every
    contender.
    """

    def __init__(self, w: Workload):
        n = w.nbytes // 8
        self.shape = (n,)
        self.idx = np.unique(np.r_[np.arange(0, n, SAMPLE_STRIDE), n - 1])
        self.expected = float(self.idx.sum())  # the payload is arange(n)

    def __call__(self, x) -> None:
        if not isinstance(x, np.ndarray) or x.shape != self.shape or x.dtype != np.float64:
            raise AssertionError(
                f"wrong array: {type(x).__name__} shape={getattr(x, 'shape', None)}"
                f" dtype={getattr(x, 'dtype', None)}, expected float64 {self.shape}"
            )
        got = float(x[self.idx].sum())
        if got != self.expected:
            raise AssertionError(f"wrong array contents: sample sum {got} != {self.expected}")


# --------------------------------------------------------------------------
# producers (run in the child) and consumers (run in the parent)
#
# A consumer gets (end, n, check) and returns (count, last item). With
# check=None (messages) it runs its tightest loop; otherwise it calls
# check(item) on every item.


def _produce_put(q, items, n):
    put = q.put
    for item in itertools.islice(itertools.cycle(items), n):
        put(item)


def _produce_send(conn, items, n):
    send = conn.send
    for item in itertools.islice(itertools.cycle(items), n):
        send(item)


def _produce_put_many(q, items, n):
    batch = list(itertools.islice(itertools.cycle(items), BATCH))
    full, rest = divmod(n, BATCH)
    put_many = q.put_many
    for _ in range(full):
        put_many(batch)
    if rest:
        put_many(batch[:rest])


def _consume_get(q, n, check):
    get = q.get
    last = None
    if check is None:
        for _ in range(n):
            last = get()
    else:
        for _ in range(n):
            last = get()
            check(last)
    return n, last


def _consume_recv(conn, n, check):
    return _consume_get(_RecvAsGet(conn), n, check)


class _RecvAsGet:
    __slots__ = ("get",)

    def __init__(self, conn):
        self.get = conn.recv


def _consume_shmproc_many(q, n, check):
    got = 0
    items = [None]
    get_many = q.get_many
    while got < n:
        items = get_many(max_items=min(BATCH, n - got))
        if not items or len(items) > BATCH:
            raise AssertionError(f"get_many(max_items={BATCH}) returned {len(items)} items")
        got += len(items)
    return got, items[-1]


def _consume_ff_many(q, n, check):
    got = 0
    items = [None]
    get_many = q.get_many
    while got < n:
        items = get_many(max_messages_to_get=min(BATCH, n - got))
        got += len(items)
    return got, items[-1]


class _FloorEnd:
    """Both ends of the os.pipe floor: a multiprocessing one-way Pipe (which is
    an os.pipe) used only to carry the file descriptors to the child under
    every start method, plus a buffered reader on the parent's end."""

    def __init__(self, ctx):
        self.r, self.w = ctx.Pipe(duplex=False)
        try:
            fcntl.fcntl(self.r.fileno(), fcntl.F_SETPIPE_SZ, PIPE_FLOOR_BYTES)
        except (AttributeError, OSError):
            pass
        self.reader = open(self.r.fileno(), "rb", buffering=1 << 20, closefd=False)

    def close(self):
        self.reader.close()
        self.r.close()


def _write_all(fd, data):
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _produce_floor(w_conn, items, n):
    fd = w_conn.fileno()
    if isinstance(items[0], bytes):
        framed = b"".join(_HDR.pack(len(m)) + m for m in items)
        per = len(framed) // len(items)  # all messages have the same size
        full, rest = divmod(n, len(items))
        for _ in range(full):
            _write_all(fd, framed)
        if rest:
            _write_all(fd, framed[: rest * per])
    else:
        arr = items[0]
        hdr = _HDR.pack(arr.nbytes)
        for _ in range(n):
            _write_all(fd, hdr)
            _write_all(fd, arr)


def _consume_floor(end: _FloorEnd, n, check):
    read = end.reader.read
    unpack = _HDR.unpack
    last = None
    if check is None:
        for _ in range(n):
            (ln,) = unpack(read(8))
            last = read(ln)
        return n, last
    readinto = end.reader.readinto
    for _ in range(n):
        (ln,) = unpack(read(8))
        last = np.empty(ln // 8, dtype=np.float64)
        view = memoryview(last).cast("B")
        got = 0
        while got < ln:
            k = readinto(view[got:])
            if not k:
                raise EOFError("os.pipe floor: writer closed early")
            got += k
        check(last)
    return n, last


# --------------------------------------------------------------------------
# contenders


@dataclasses.dataclass
class Contender:
    key: str  # stable id; the child finds its producer by it
    label: str
    how: str  # one line for the legend
    make: Callable[[Any, Workload], tuple[Any, Any]]  # (ctx, w) -> (parent end, child end)
    produce: Callable  # child: (child end, items, n)
    consume: Callable  # parent: (parent end, n, check) -> (count, last)
    close: Callable[[Any], None] = lambda end: None
    close_child_end: bool = False  # parent closes its copy of the child end after start
    unavailable: str | None = None
    arrays: bool = True  # also run the array workloads


def _make_shmproc(ctx, w):
    q = shmproc.Queue()
    return q, q


def _close_queue(q):
    q.close()
    q.join_thread()


def _make_ff(ctx, w):
    size = FF_BYTES if w.kind == "msg" else max(FF_BYTES, 2 * w.nbytes + (1 << 20))
    q = faster_fifo.Queue(max_size_bytes=size)
    return q, q


def _make_pipe(ctx, w):
    r, wr = ctx.Pipe(duplex=False)
    return r, wr


def _make_floor(ctx, w):
    end = _FloorEnd(ctx)
    return end, end.w


def _make_mpq(ctx, w):
    q = ctx.Queue()
    return q, q


def _make_simpleq(ctx, w):
    q = ctx.SimpleQueue()
    return q, q


REFERENCE = "mp.Queue"

CONTENDERS: dict[str, Contender] = {
    c.key: c
    for c in [
        Contender(
            "shmproc", "shmproc.Queue", "put / get, default capacity",
            _make_shmproc, _produce_put, _consume_get, _close_queue,
            unavailable=SHMPROC_ERROR,
        ),
        Contender(
            "shmproc-batch", "shmproc.Queue batched", f"put_many / get_many(max_items={BATCH})",
            _make_shmproc, _produce_put_many, _consume_shmproc_many, _close_queue,
            unavailable=SHMPROC_ERROR, arrays=False,
        ),
        Contender(
            "mp.Queue", "multiprocessing.Queue", "put / get (the reference)",
            _make_mpq, _produce_put, _consume_get, _close_queue,
        ),
        Contender(
            "mp.SimpleQueue", "multiprocessing.SimpleQueue", "put / get",
            _make_simpleq, _produce_put, _consume_get, lambda q: q.close(),
            arrays=False,
        ),
        Contender(
            "mp.Pipe", "multiprocessing.Pipe", "Connection.send / recv (pickled objects), duplex=False",
            _make_pipe, _produce_send, _consume_recv, lambda c: c.close(), close_child_end=True,
        ),
        Contender(
            "faster-fifo", "faster-fifo", "put / get; max_size_bytes 4 MiB (arrays: 2x array + 1 MiB)",
            _make_ff, _produce_put, _consume_get, lambda q: q.close(),
            unavailable=FASTER_FIFO_ERROR,
        ),
        Contender(
            "faster-fifo-batch", "faster-fifo batched", f"put_many / get_many(max_messages_to_get={BATCH})",
            _make_ff, _produce_put_many, _consume_ff_many, lambda q: q.close(),
            unavailable=FASTER_FIFO_ERROR, arrays=False,
        ),
        Contender(
            "os.pipe", "os.pipe floor", "raw bytes + 8 B length prefix, no pickling,"
            f" {BATCH} msgs per write, 1 MiB pipe buffer (a floor, not a queue)",
            _make_floor, _produce_floor, _consume_floor, lambda e: e.close(), close_child_end=True,
        ),
    ]
}


# --------------------------------------------------------------------------
# one transfer measurement


def _producer_main(key: str, w: Workload, child_end, ctrl) -> None:
    """Child: build the payload, then produce n items per command from ctrl."""
    C.die_with_parent()
    try:
        c = CONTENDERS[key]
        items = build_items(w)
        ctrl.send("ready")
        while True:
            n = ctrl.recv()
            if n is None:
                break
            c.produce(child_end, items, n)
            ctrl.send("done")
    except BaseException:
        try:
            ctrl.send(("error", traceback.format_exc()))
        except Exception:
            pass
        raise


@dataclasses.dataclass
class Outcome:
    rate: float | None = None  # best: msgs/s, or MB/s (10^6 B/s) for arrays
    n: int = 0
    rates: list = dataclasses.field(default_factory=list)
    error: str | None = None  # crash, hang or wrong data
    na: str | None = None  # contender not available


def _child_error(ctrl) -> str | None:
    try:
        while ctrl.poll(0.5):
            msg = ctrl.recv()
            if isinstance(msg, tuple) and msg and msg[0] == "error":
                return msg[1]
    except (EOFError, OSError):
        pass
    return None


def run_transfer(c: Contender, w: Workload, s: C.Settings, ctx) -> Outcome:
    if c.unavailable:
        return Outcome(na=c.unavailable)
    label = f"{c.label} {w.label}"
    parent_end = child_end = proc = None
    ctrl = None
    outcome = Outcome()
    check = ArrayCheck(w) if w.kind == "array" else None
    expected = build_items(w) if w.kind == "msg" else None
    try:
        with C.Watchdog(label, s.timeout) as wd:
            parent_end, child_end = c.make(ctx, w)
            ctrl, ctrl_child = ctx.Pipe()
            proc = ctx.Process(
                target=_producer_main, args=(c.key, w, child_end, ctrl_child),
                name=f"bench-{c.key}", daemon=True,
            )
            proc.start()
            wd.watch(proc)
            ctrl_child.close()
            if c.close_child_end:
                child_end.close()
            if ctrl.recv() != "ready":
                raise AssertionError("child did not report ready")

            def run(n: int) -> float:
                t0 = time.perf_counter()
                ctrl.send(n)
                count, last = c.consume(parent_end, n, check)
                t1 = time.perf_counter()
                if count != n:
                    raise AssertionError(f"received {count} items, expected {n}")
                if expected is not None and last != expected[(n - 1) % len(expected)]:
                    raise AssertionError(
                        f"last message wrong: {type(last).__name__} of length"
                        f" {len(last) if hasattr(last, '__len__') else '?'}"
                    )
                reply = ctrl.recv()
                if reply != "done":
                    raise AssertionError(f"child replied {reply!r}")
                return t1 - t0

            n0 = w.n0_quick if s.quick else w.n0
            m = C.measure(run, n0=n0, target_time=s.target_time, repeat=s.repeat, n_max=w.n_max)
            scale = w.nbytes / 1e6 if w.kind == "array" else 1.0  # arrays: MB/s
            outcome = Outcome(m.best * scale, m.n, [r * scale for r in m.rates])
            ctrl.send(None)
            proc.join(s.timeout)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        detail = _child_error(ctrl) if ctrl is not None else None
        outcome = Outcome(error=f"{type(exc).__name__}: {exc}")
        if detail:
            outcome.error += "\n  child traceback:\n    " + detail.strip().replace("\n", "\n    ")
    finally:
        # Cleanup gets its own (short) watchdog: closing a broken queue must not hang us.
        with C.Watchdog(f"cleanup of {label}", 15.0) as wd:
            if proc is not None and proc.exitcode is None:
                wd.watch(proc)
                proc.join(0.0 if outcome.error else 5.0)
                if proc.exitcode is None:
                    proc.kill()
                    proc.join(5.0)
            if proc is not None and outcome.error is None and proc.exitcode not in (0, None):
                outcome = Outcome(error=f"child exited with code {proc.exitcode}")
            if parent_end is not None:
                try:
                    c.close(parent_end)
                except Exception as exc:
                    if outcome.error is None:
                        outcome = Outcome(error=f"close failed: {type(exc).__name__}: {exc}")
            if ctrl is not None:
                ctrl.close()
    return outcome


# --------------------------------------------------------------------------
# idle CPU


IDLE_CONTENDERS = {
    # key: (label, make(ctx) -> queue, child-side get, parent-side put, close)
    "shmproc": ("shmproc.Queue", lambda ctx: shmproc.Queue(), lambda q: q.get(), _close_queue),
    "mp.Queue": ("multiprocessing.Queue", lambda ctx: ctx.Queue(), lambda q: q.get(), _close_queue),
    "faster-fifo": (
        "faster-fifo",
        lambda ctx: faster_fifo.Queue(max_size_bytes=1 << 20),
        lambda q: q.get(timeout=3600.0),  # its default timeout is 10 s
        lambda q: q.close(),
    ),
}


def _idle_main(key: str, q, report) -> None:
    C.die_with_parent()
    get = IDLE_CONTENDERS[key][2]
    report.send("ready")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    item = get(q)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    report.send((cpu1 - cpu0, wall1 - wall0, item == b"wake"))


def run_idle(key: str, seconds: float, s: C.Settings, ctx) -> Outcome:
    label, make, _get, close = IDLE_CONTENDERS[key]
    unavailable = {"shmproc": SHMPROC_ERROR, "faster-fifo": FASTER_FIFO_ERROR}.get(key)
    if unavailable:
        return Outcome(na=unavailable)
    q = proc = report = None
    outcome = Outcome()
    try:
        with C.Watchdog(f"idle {label}", seconds + s.timeout) as wd:
            q = make(ctx)
            report, report_child = ctx.Pipe()
            proc = ctx.Process(target=_idle_main, args=(key, q, report_child), daemon=True)
            proc.start()
            wd.watch(proc)
            report_child.close()
            if report.recv() != "ready":
                raise AssertionError("child did not report ready")
            time.sleep(seconds)
            q.put(b"wake")
            cpu, wall, ok = report.recv()
            if not ok:
                raise AssertionError("child received the wrong item")
            outcome = Outcome(rate=cpu / wall, n=1, rates=[cpu, wall])
            proc.join(s.timeout)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        outcome = Outcome(error=f"{type(exc).__name__}: {exc}")
    finally:
        with C.Watchdog(f"cleanup of idle {label}", 15.0):
            if proc is not None and proc.exitcode is None:
                proc.kill()
                proc.join(5.0)
            if q is not None:
                try:
                    close(q)
                except Exception:
                    pass
            if report is not None:
                report.close()
    return outcome


# --------------------------------------------------------------------------
# report


def _cell(o: Outcome) -> str:
    if o.na:
        return "n/a"
    if o.error:
        return "ERROR"
    return C.si(o.rate)


def _ratio_cell(o: Outcome, ref: Outcome) -> str:
    if o.rate is None or ref.rate is None:
        return "n/a"
    return C.ratio(o.rate, ref.rate)


def transfer_table(results, workloads, keys) -> str:
    ref = results[REFERENCE]
    headers = ["contender"]
    for w in workloads:
        headers += [f"{w.label} {w.unit}", "vs mp.Queue"]
    rows = []
    for key in keys:
        row = [CONTENDERS[key].label]
        for w in workloads:
            o = results[key][w.label]
            row += [_cell(o), _ratio_cell(o, ref[w.label])]
        rows.append(row)
    return C.table(headers, rows)


def problems(results, keys, workloads) -> list[str]:
    lines = []
    for key in keys:
        for w in workloads:
            o = results[key][w.label]
            if o.error:
                lines.append(f"  ERROR {CONTENDERS[key].label} {w.label}: {o.error}")
    for key in keys:
        for w in workloads:
            o = results[key][w.label]
            if o.na:
                lines.append(f"  n/a   {CONTENDERS[key].label}: {o.na}")
    return list(dict.fromkeys(lines))  # same reason for several workloads: once


def _ratio_of(results, key, w) -> float | None:
    o, ref = results.get(key, {}).get(w.label), results[REFERENCE][w.label]
    if o is None or o.rate is None or ref.rate is None:
        return None
    return o.rate / ref.rate


def targets(msg_results, arr_results, idle_results) -> list[tuple]:
    """(what, measured, required, aim, ok)"""
    out = []
    for what, res, key, w, need, aim in [
        ("64 B single put/get vs mp.Queue", msg_results, "shmproc", MSG_64, 5, 10),
        ("64 B batched vs mp.Queue", msg_results, "shmproc-batch", MSG_64, 20, 30),
        ("64 MB arrays vs mp.Queue", arr_results, "shmproc", ARR_64M, 5, None),
    ]:
        r = _ratio_of(res, key, w) if res else None
        out.append((
            what,
            "n/a" if r is None else C.ratio(r, 1.0),
            f">= {need}x",
            "-" if aim is None else f"{aim}x",
            None if r is None else r >= need,
        ))
    idle = idle_results.get("shmproc")
    frac = idle.rate if idle is not None else None
    out.append((
        "idle get() CPU, % of one core",
        C.percent(frac),
        "< 1%",
        "-",
        None if frac is None else frac < 0.01,
    ))
    return out


def _jsonable(o: Outcome) -> dict:
    return dataclasses.asdict(o)


# --------------------------------------------------------------------------
# burst: one process fills an unbounded queue, then drains it

BURST_ITEMS = 100_000


def _burst_contenders(ctx):
    out = []
    if not SHMPROC_ERROR:
        import shmproc
        out.append(("shmproc.Queue", shmproc.Queue))
    out.append(("multiprocessing.Queue", ctx.Queue))
    return out


def run_burst(make, n: int, repeat: int) -> Outcome:
    """Put n items, then get n items, in this process; the best rate."""
    item = b"b" * 100
    rates = []
    try:
        for _ in range(repeat):
            q = make()
            t0 = time.perf_counter()
            for _ in range(n):
                q.put(item, timeout=5)  # a queue that fills would block here for ever
            for _ in range(n):
                q.get(timeout=30)
            rates.append(2 * n / (time.perf_counter() - t0))
            q.close()
    except Exception as exc:              # noqa: BLE001 - reported as this row's error
        return Outcome(n=n, error=f"{type(exc).__name__}: {exc!r}")
    return Outcome(rate=max(rates), n=n, rates=rates)


# --------------------------------------------------------------------------
# polling: what a qsize() / empty() call costs (loops that poll a queue)

POLL_CALLS = 20_000


def run_poll(make, calls: int, repeat: int) -> tuple[Outcome, Outcome]:
    """qsize() and empty() on a queue holding one item, in this process:
    the best rate of each (calls/s)."""
    out = []
    try:
        q = make()
        q.put(b"x")
        time.sleep(0.1)                   # mp.Queue: let its feeder thread deliver it
        for method in (q.qsize, q.empty):
            rates = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                for _ in range(calls):
                    method()
                rates.append(calls / (time.perf_counter() - t0))
            out.append(Outcome(rate=max(rates), n=calls, rates=rates))
        q.get(timeout=5)
        q.close()
    except Exception as exc:              # noqa: BLE001 - reported as this row's error
        err = Outcome(n=calls, error=f"{type(exc).__name__}: {exc!r}")
        return err, err
    return out[0], out[1]


# --------------------------------------------------------------------------
# main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(p)
    p.add_argument("--only", default=None,
                   help="comma-separated contender keys to run (mp.Queue is always run);"
                        f" keys: {', '.join(CONTENDERS)}")
    p.add_argument("--skip-arrays", action="store_true", help="skip the numpy array part")
    p.add_argument("--skip-idle", action="store_true", help="skip the idle-CPU part")
    p.add_argument("--skip-burst", action="store_true",
                   help="skip the one-process parts (burst, polling)")
    p.add_argument("--idle-seconds", type=float, default=None,
                   help=f"how long the idle child blocks (default {IDLE_SECONDS:g}, quick 0.3)")
    p.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    p.add_argument("--check-targets", action="store_true",
                   help="exit with status 2 when a target is missed")
    args = p.parse_args(argv)
    s = C.settings_from_args(args)
    idle_seconds = args.idle_seconds or (0.3 if s.quick else IDLE_SECONDS)
    ctx = mp.get_context(s.start_method)

    keys = list(CONTENDERS)
    if args.only:
        wanted = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = wanted - set(CONTENDERS)
        if unknown:
            p.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
        keys = [k for k in keys if k in wanted or k == REFERENCE]

    out = sys.stdout
    t_start = time.perf_counter()
    print("shmproc.Queue benchmark (bench/queue.py)", file=out)
    for line in C.environment_lines(s, ("shmproc", "numpy", "faster-fifo", "cffi")):
        print("  " + line, file=out)
    if SHMPROC_ERROR:
        print(f"  shmproc       NOT IMPORTABLE: {SHMPROC_ERROR}", file=out)
    print(file=out, flush=True)

    def progress(what: str, o: Outcome, unit: str) -> None:
        if o.na:
            msg = "n/a"
        elif o.error:
            msg = "ERROR " + o.error.splitlines()[0]
        else:
            runs = ", ".join(C.si(r) for r in o.rates)
            msg = f"{C.si(o.rate)} {unit}  (n={o.n}, runs: {runs})"
        print(f"  [{time.perf_counter() - t_start:6.1f}s] {what:<40} {msg}", file=sys.stderr, flush=True)

    # 1. messages
    msg_results: dict[str, dict[str, Outcome]] = {}
    for key in keys:
        msg_results[key] = {}
        for w in MSG_WORKLOADS:
            o = run_transfer(CONTENDERS[key], w, s, ctx)
            msg_results[key][w.label] = o
            progress(f"{CONTENDERS[key].label} {w.label}", o, w.unit)

    # 2. arrays
    arr_keys = [k for k in keys if CONTENDERS[k].arrays]
    arr_results: dict[str, dict[str, Outcome]] = {}
    if not args.skip_arrays:
        for key in arr_keys:
            arr_results[key] = {}
            for w in ARRAY_WORKLOADS:
                o = run_transfer(CONTENDERS[key], w, s, ctx)
                arr_results[key][w.label] = o
                progress(f"{CONTENDERS[key].label} {w.label} array", o, w.unit)

    # 3. idle
    idle_results: dict[str, Outcome] = {}
    if not args.skip_idle:
        for key in IDLE_CONTENDERS:
            if key in keys:
                o = run_idle(key, idle_seconds, s, ctx)
                idle_results[key] = o
                if o.rate is not None:
                    print(f"  [{time.perf_counter() - t_start:6.1f}s] idle {IDLE_CONTENDERS[key][0]:<35}"
                          f" {C.percent(o.rate)} of a core ({o.rates[0] * 1e3:.2f} ms CPU"
                          f" in {o.rates[1]:.2f} s)", file=sys.stderr, flush=True)
                else:
                    progress(f"idle {IDLE_CONTENDERS[key][0]}", o, "")

    # 4. burst
    burst_results: dict[str, Outcome] = {}
    burst_n = BURST_ITEMS // 5 if s.quick else BURST_ITEMS
    if not args.skip_burst:
        for label, make in _burst_contenders(ctx):
            o = run_burst(make, burst_n, s.repeat)
            burst_results[label] = o
            progress(f"burst {label}", o, "msgs/s")

    # 5. polling
    poll_results: dict[str, tuple[Outcome, Outcome]] = {}
    if not args.skip_burst:
        for label, make in _burst_contenders(ctx):
            poll_results[label] = run_poll(make, POLL_CALLS // 5 if s.quick else POLL_CALLS,
                                           s.repeat)
            progress(f"qsize() {label}", poll_results[label][0], "calls/s")

    # report
    print(f"Messages between two processes (producer child -> consumer parent),"
          f" best of {s.repeat}", file=out)
    print(transfer_table(msg_results, MSG_WORKLOADS, keys), file=out)
    print(file=out)
    print("  how each contender moves messages:", file=out)
    for key in keys:
        print(f"    {CONTENDERS[key].label:<28} {CONTENDERS[key].how}", file=out)
    print("  verified: message count, and the last message equals the expected one", file=out)
    print(file=out)

    if arr_results:
        print(f"numpy float64 arrays (producer child -> consumer parent; 1 MB = 10^6 B),"
              f" best of {s.repeat}", file=out)
        print(transfer_table(arr_results, ARRAY_WORKLOADS, arr_keys), file=out)
        print("  verified on every array received: shape, dtype, and the sum of one element"
              " per 64 KiB", file=out)
        print(file=out)

    if idle_results:
        print(f"Idle CPU: a child blocked in get() on an empty queue for ~{idle_seconds:g} s", file=out)
        rows = []
        for key, o in idle_results.items():
            if o.rate is not None:
                rows.append([IDLE_CONTENDERS[key][0], C.percent(o.rate),
                             f"{o.rates[0] * 1e3:.2f} ms", f"{o.rates[1]:.3f} s"])
            else:
                rows.append([IDLE_CONTENDERS[key][0], "ERROR" if o.error else "n/a", "", ""])
        print(C.table(["queue", "% of one core", "child CPU", "wall"], rows), file=out)
        print(file=out)

    if burst_results:
        ref = burst_results.get("multiprocessing.Queue")
        print(f"Burst in one process: put {burst_n} items of 100 B, then get them all,"
              f" best of {s.repeat}", file=out)
        rows = []
        for label, o in burst_results.items():
            if o.rate is None:
                rows.append([label, "ERROR " + o.error.splitlines()[0] if o.error else "n/a", ""])
                continue
            ratio = f"{o.rate / ref.rate:.2f}x" if ref is not None and ref.rate else ""
            rows.append([label, C.si(o.rate), ratio])
        print(C.table(["queue", "msgs/s", "vs mp.Queue"], rows), file=out)
        print(file=out)

    if poll_results:
        ref_q, ref_e = poll_results.get("multiprocessing.Queue", (None, None))
        print(f"Polling in one process: qsize() and empty() on an unbounded queue holding"
              f" one item, best of {s.repeat}", file=out)
        rows = []
        for label, (oq, oe) in poll_results.items():
            if oq.rate is None:
                rows.append([label, "ERROR " + oq.error.splitlines()[0] if oq.error else "n/a",
                             "", "", ""])
                continue
            rows.append([label, C.si(1e6 / oq.rate) + " us",
                         f"{ref_q.rate / oq.rate:.2f}x" if ref_q and ref_q.rate else "",
                         C.si(1e6 / oe.rate) + " us",
                         f"{ref_e.rate / oe.rate:.2f}x" if ref_e and ref_e.rate else ""])
        print(C.table(["queue", "qsize()", "x mp's", "empty()", "x mp's"], rows), file=out)
        print(file=out)

    tg = targets(msg_results, arr_results, idle_results)
    print("Targets (DESIGN.md), ratios against multiprocessing.Queue in this run", file=out)
    print(C.table(["target", "measured", "required", "aim", "verdict"],
                  [(a, b, c, d, C.verdict(e)) for a, b, c, d, e in tg], align="lrrrr"), file=out)
    if s.quick:
        print("  (--quick: small workloads, one run each; use a default run for real numbers)", file=out)

    issues = problems(msg_results, keys, MSG_WORKLOADS)
    if arr_results:
        issues += problems(arr_results, arr_keys, ARRAY_WORKLOADS)
    for key, o in idle_results.items():
        if o.error:
            issues.append(f"  ERROR idle {IDLE_CONTENDERS[key][0]}: {o.error}")
    issues = list(dict.fromkeys(issues))
    if issues:
        print(file=out)
        print("Problems:", file=out)
        for line in issues:
            print(line, file=out)
    print(file=out)
    print(f"total time {time.perf_counter() - t_start:.1f} s", file=out, flush=True)

    if args.json:
        data = {
            "settings": dataclasses.asdict(s),
            "messages": {k: {wl: _jsonable(o) for wl, o in v.items()} for k, v in msg_results.items()},
            "arrays": {k: {wl: _jsonable(o) for wl, o in v.items()} for k, v in arr_results.items()},
            "idle": {k: _jsonable(o) for k, o in idle_results.items()},
            "targets": [dict(zip(("what", "measured", "required", "aim", "ok"), t)) for t in tg],
            "units": {"messages": "msgs/s", "arrays": "MB/s (10^6 B/s)", "idle": "fraction of one core"},
        }
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)

    errored = any(o.error for r in (msg_results, arr_results) for v in r.values() for o in v.values())
    errored = errored or any(o.error for o in idle_results.values())
    if errored or SHMPROC_ERROR:
        return 1
    if args.check_targets and any(t[4] is False for t in tg):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
