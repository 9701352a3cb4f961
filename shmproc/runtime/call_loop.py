"""A lone plain call's path through a pool, in C (csrc/python/callloop.c):
the worker's loop of plain calls and what it hands back to the Python loop
(pool_worker.PoolWorker.run); and the pool's wait for a lone result
(take_lone, used by backends/local/results.py).

The C loop does what run, call_fast and flush do for the common record (a
plain call whose result is a scalar), without Python's per-line cost: the
worker's path from a task's arrival to its result's put, which after an
idle spell runs on cold caches.  It returns at anything else; serve()
below finishes what it began (an exception, a value that is not a
scalar, a put that must wait) exactly as call_fast would have.
"""
from __future__ import annotations

import pickle

from .. import _native as native
from ..common import lifecycle
from ..channels.records import TAG_BYTES
from ..wire import blobs, taskwire
from ..wire.blobs import LOST
from ..wire.taskwire import OP_CALL, R_ERROR, R_VALUE
from .failures import error_payload

__all__ = ["context", "with_spans", "usable", "serve", "result_context", "take_lone", "encode_call"]

# What the C loop returns with (callloop.c's ST_*).
ST_BATCH, ST_RECORD, ST_RAISED, ST_VALUE, ST_PUT, ST_RECYCLE, ST_PYGET = range(7)

_serve = native.serve_calls         # None in an install without it


def _tell_wire(running: int) -> None:
    """taskwire's constants, not copies of them (the C checks the 16-byte
    header); `running`: the worker's RUNNING phase (the pool's side has none)."""
    native.set_call_wire(OP_CALL, R_VALUE, TAG_BYTES, taskwire.HEADER_SIZE, running,
                         native.EINTR, native.EEMPTY)


if _serve is not None:
    _tell_wire(1)                   # the pool's side stores no phase; a worker tells its own


def context(worker, linger_ns: int, running: int):
    """The C loop's fixed arguments for `worker` (which lingers linger_ns
    after work; `running` is its progress word's RUNNING phase), or None
    where it cannot run: not built, or a queue that is not a single ring."""
    if _serve is None or worker.task_q._chain is not None or worker.result_q._chain is not None:
        return None
    _tell_wire(running)
    spans = worker.spans
    return (*native.loop_handles(worker.task_q._cons, worker.result_q._prod),
            worker.pctl.lap_address(), -1 if worker.max_tasks is None else worker.max_tasks,
            worker.slot, worker.result_q._inband_max, linger_ns, native.CONTENDED_NS,
            worker.plain, pickle.loads, pickle.dumps, spans.begin, spans.end)


def with_spans(ctx, spans):
    """`ctx` (from context) recording on `spans` instead."""
    return ctx[:-2] + (spans.begin, spans.end)


def usable(worker) -> bool:
    """Whether the C loop may take the next record: no task timeout (the
    Python loop arms the guard per call), nothing a batch left behind in
    the task queue, no large result whose blob the next Python put sweeps."""
    return not worker.limit_ns and not worker.task_q._backlog and not blobs.pool.in_flight


def serve(worker, ctx, last_work):
    """Run plain calls in C until anything else comes.  Returns (records
    for the Python loop's body, or None for its own get; when work last
    ended).  The outcome of a call C handed back is in worker.out (or was
    put)."""
    # C sleeps when the ring is empty: what the fork left goes first (lifecycle.py).
    lifecycle.drop_leftovers()
    st, worker.completed, last_work, a, b, c = _serve(ctx, worker.completed, last_work)
    if st == ST_RECORD:                 # not a plain call of a known function: handle()
        if a == TAG_BYTES:
            return (b,), last_work
        item = worker.task_q._decode(memoryview(b), a, False)
        return ((), last_work) if item is LOST else ((item,), last_work)
    if st == ST_RAISED:                 # as call_fast: the task's failure
        worker._send(R_ERROR, a, error_payload(c), worker.spans.end(True) - b)
        worker._done()
        worker._failed()
    elif st == ST_VALUE:                # not a scalar: encoded (and checked) in Python
        worker._send(R_VALUE, a, c, worker.spans.end() - b)
        worker._done()
    elif st == ST_PUT:                  # a large record, or the ring had no room
        limit = worker.result_limit
        if limit is not None and len(a) > limit:
            # Too large for the ring where nothing goes out-of-band: this
            # item fails alone (its count was taken: see result_out._send).
            worker.out.append(worker._fits_or_fails(R_VALUE, taskwire.header(a)[4], None, a, 0))
        else:
            worker.result_q.put(a)      # waits for room, or goes out-of-band
    elif st != ST_RECYCLE:              # ST_BATCH, ST_PYGET: the Python loop's get
        return None, last_work
    return (), last_work


# ---- the pool's side ----------------------------------------------------------------------

def result_context(results):
    """take_lone's fixed arguments for a pool's result queue, or None where
    it cannot run: not built, or a queue that is not a single ring."""
    if _serve is None or results._chain is not None:
        return None
    return (*native.take_handles(results._cons), native.CONTENDED_NS, pickle.loads)


def take_lone(ctx, ident, spin_ns, wait_s):
    """The next record of the pool's result ring, watched for spin_ns and
    waited for up to wait_s seconds (the caller holds the pool's lock: one
    reader).  Returns ("value", elapsed_us, value) when it is task ident's
    lone value; ("record", tag, bytes) for any other record; ("none",) when
    nothing came in time; None where the Python get must look (a signal, a
    record larger than the C buffer, a closed ring)."""
    got = native.take_value(ctx, ident, spin_ns, max(int(wait_s * 1e9), 0))
    if type(got) is int:
        return ("none",) if got == native.EEMPTY or got == native.ETIMEDOUT else None
    return ("value", got[1], got[2]) if got[0] == 0 else ("record", got[1], got[2])


def encode_call(ident, fn_id, args, token):
    """A lone call's OP_CALL record: its pickle written by hand in C for
    scalar arguments (csrc/python/tinypickle.h), else taskwire.encode's."""
    if _serve is not None:
        rec = native.encode_call(ident, fn_id, args)
        if rec is not None:
            return rec
    return taskwire.encode(OP_CALL, ident, (fn_id, args, None), token, elapsed_us=1)
