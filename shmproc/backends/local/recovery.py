"""What the local pool does when a worker ends: crashed, recycled, or
ended by its guard after a Process task's timeout.

The results it managed to send are taken first; then its control block
(the lap word: items finished, and the one running) sorts the rest of
what it had been given.  Finished items are final: never run again, even
when their results died with the worker (those fail with
ProcessCrashedError).  The item that was running fails with
ProcessCrashedError, or, if its call allows `retries`, runs again on a
fresh worker.  Items that never started go to the replacement.  A worker
ended by its guard (runtime/watchdog.py) fails that task with the
section's TimeoutError instead, or sends it to the replacement for its
next life.
"""
from __future__ import annotations

from ... import _native as native
from ...common.errors import ProcessCrashedError, note_where
from ...common.errors import TimeoutError as SectionTimeoutError
from ...common.outcome import CALL, RETRIED, SECTION_NAMES, is_process_class
from ...common.validate import callable_name
from ...jobs.engine import TERMINATED
from ...runtime.pool_worker import DECODING, IDLE
from ...wire import blobs, taskwire
from ...wire.taskwire import OP_RUN

__all__ = ["WorkerRecovery"]


class WorkerRecovery:
    """The local pool's worker-death handling (mixed into LocalPool)."""

    def _check_workers(self):
        for slot in list(self._res.slots):
            if slot.proc.exitcode is not None:
                self._worker_ended(slot)

    def _worker_ended(self, slot):
        """A worker exited (crashed, recycled, or retired after a timeout):
        account, fail or re-send what it held, replace it."""
        self._drain()                            # what it sent before it went
        slot.proc.join()
        if self._lone_hint is slot.task_q:
            self._lone_hint = None                # (its ring's mapping goes with the slot)
        # The task it died in (or was ended in by its guard) ends here.
        self._close_spans(slot.index, native.SPAN_CRASHED |
                          (native.SPAN_FAILED if slot.rctl.expired() else 0))
        if self._broken is not None:
            # Its initializer failed (results.py): what it held has failed
            # with the pool; nothing is re-sent and no worker replaces it.
            slot.inflight.clear()
            self._close_task_queue(slot.task_q)
            self._res.slots.remove(slot)
            return
        # The lap word, as the worker left it (reaped: all its stores are
        # visible): items [0, k) of its stream finished; item k was running,
        # or its record being decoded, unless the phase is IDLE.
        word = slot.pctl.lap()
        k, phase = word >> 2, word & 3
        self._retired_done += k
        self._retired_failed += slot.pctl.lives
        code = slot.proc.exitcode
        resend = []
        for unit in slot.inflight:
            self._units.pop(unit.id, None)
            if unit.sink.dropped:
                continue
            n, lo = unit.n, unit.stream
            # Items [0, done): finished, results lost with the worker.
            # Item `running`, if any: the worker died in it.  The rest never started.
            done = min(n, max(0, k - lo))
            running = k - lo if phase != IDLE and lo <= k < lo + n else None
            if done:
                for i in range(done):
                    unit.sink._fail(unit.index + i, self._crash_error(unit, i, slot, code, True))
                self._crashed += done
            rest = done
            if running is not None:
                if phase == DECODING and n > 1:
                    # It died decoding the record, before any item ran: one
                    # record per item now, so that the item whose arguments
                    # kill a worker fails alone.
                    for i in range(n):
                        part = unit.split(self._new_id(), i, i + 1)
                        part.crashes = unit.crashes
                        resend.append(part)
                    rest = n
                else:
                    if not self._expired_item(unit, running, slot, resend):
                        self._crashed_item(unit, running, slot, code, resend)
                    rest = running + 1
            if rest == 0 and not unit.cut:
                self._resend_whole(unit, resend)          # not started: send it again as it is
                continue
            if rest < n:
                resend.append(unit.split(self._new_id(), rest, n))
            ref = taskwire.blob_ref(unit.record) if unit.record is not None else None
            if ref is not None:
                blobs.pool.discard(*ref)                  # the parts are encoded afresh
        slot.inflight.clear()
        for unit in reversed(resend):
            self._pending.appendleft(unit)
        self._close_task_queue(slot.task_q)
        slots = self._res.slots
        i = slots.index(slot)
        if self._status == TERMINATED or self._broken is not None:
            slots.pop(i)
            return
        slots[i] = self._start_worker(slot.index)

    def _resend_whole(self, unit, resend):
        ref = taskwire.blob_ref(unit.record) if unit.record is not None else None
        if ref is not None and not blobs.pool.republish(*ref):
            unit.record = None                            # its segment is gone: encode afresh
        resend.append(unit)

    def _crashed_item(self, unit, i, slot, code, resend):
        """Item i of `unit` was running when its worker died: run it again
        on a fresh worker if its call allows another retry, else fail it."""
        retries = unit.sink.retries
        if unit.crashes < retries:
            part = unit.split(self._new_id(), i, i + 1)
            part.crashes = unit.crashes + 1
            resend.append(part)
            return
        self._crashed += 1
        self._retired_done += 1
        unit.sink._fail(unit.index + i, self._crash_error(unit, i, slot, code, False,
                                                           unit.crashes + 1))

    def _expired_item(self, unit, k, slot, resend) -> bool:
        """Item k was ended by its worker's guard past a timeout (watchdog.py):
        a plain call past its task_timeout fails with TimeoutError; a
        Process fails with that section's TimeoutError, or with lives left
        runs again, from its start state, with one life fewer.  False if the
        worker died otherwise."""
        expired = slot.rctl.expired()
        if expired is None:
            return False
        section, timeout_ns, lap = expired
        lives = slot.rctl.lives
        if section in RETRIED and lives > 1:
            part = unit.split(self._new_id(), k, k + 1)
            part.crashes = unit.crashes               # a life used up, not a crash
            part.lives = lives - 1
            resend.append(part)
            return True
        self._crashed += 1                            # counted with the failures
        self._retired_done += 1
        fn = self._function(unit.fn_id) if unit.op != OP_RUN else None
        if section == CALL:                           # a plain call stuck past task_timeout
            name = callable_name(fn)
            limit = timeout_ns / 1e9
            err = SectionTimeoutError(
                "call", limit, process_name=name,
                message=f"{name} ran longer than its task timeout of {limit:g} s and did not "
                        f"unwind: its worker was ended")
        else:
            name = getattr(fn, "__name__", None) or type(unit.items[0]).__name__
            err = SectionTimeoutError(SECTION_NAMES[section], timeout_ns / 1e9, lap,
                                      process_name=name)
        unit.sink._fail(unit.index + k, note_where(err, f"in shmproc.Pool task {unit.index + k}"))
        return True

    def _crash_error(self, unit, i, slot, code, lost, runs=1):
        """ProcessCrashedError for item i of `unit`, whose worker died: it
        had finished (lost: its result died with the worker), or it was
        running (its `runs`-th run)."""
        name, last_lap = f"pool worker {slot.index}", None
        fn = self._function(unit.fn_id) if unit.op != OP_RUN else None
        if unit.op == OP_RUN or is_process_class(fn):
            last_lap = slot.rctl.lap() if not lost else None
            name = fn.__name__ if fn is not None else type(unit.items[0]).__name__
        err = ProcessCrashedError(exitcode=code, last_lap=last_lap, pid=slot.pid,
                                  process_name=name)
        what = None
        if lost:
            what = (f"{err}: this task had finished, its result was lost with the worker "
                    f"(finished tasks are not run again)")
        elif runs > 1:
            what = f"{err}; it ran {runs} times (retries={unit.sink.retries}), each run crashed"
        if what is not None:
            err = ProcessCrashedError(what, exitcode=code, last_lap=last_lap, pid=slot.pid,
                                      process_name=name)
        where = (f"in shmproc.Pool task {unit.index + i} "
                 f"({callable_name(fn) if fn is not None else name}), worker pid {slot.pid}")
        return note_where(err, where)

    def _function(self, fn_id):
        for fid, fn, _ in self._functions.values():
            if fid == fn_id:
                return fn
        return None
