"""Control blocks (one per worker: state, stop flag, lap, section and
deadline, lives, exit info; csrc/control.c) and the worker's native guard
thread (csrc/guard.c)."""
from __future__ import annotations

import os
import struct
from functools import partial

from .._laps import armed as _laps_armed, run as _laps_run, set_bits as _laps_set_bits
from .._marks import marked as _marked
from .._shmp_cffi import ffi, lib
from .core import EPEER, OK, _attach_failed, _dup_for_child, _fd_arg, check


def _control_mapping(payload, count: int):
    # The size comes from our count, never from the shared header: a
    # damaged header must not make us unmap someone else's memory.
    n = lib.shmp_ctl_payload_size(count)
    return ffi.gc(payload, lambda p: lib.shmp_seg_unmap(p, n))


class ControlArray:
    """`count` control blocks in one shared segment (see csrc/control.c).

    Pickles by passing its descriptor (multiprocessing's DupFd), so it can
    be handed to a spawn or forkserver child as a Process argument.
    """

    __slots__ = ("fd", "count", "_payload", "blocks", "__weakref__")

    def __init__(self, fd: int, count: int, payload):
        self.fd = fd
        self.count = count
        self._payload = payload
        out = ffi.new("shmp_control **")
        blocks = []
        for i in range(count):
            check(lib.shmp_ctl_get(payload, count, i, out), "locating a control block")
            blocks.append(out[0])
        self.blocks = blocks

    @classmethod
    def create(cls, count: int):
        fd = ffi.new("int *")
        p = ffi.new("void **")
        check(lib.shmp_ctl_create(count, fd, p), f"creating {count} control blocks")
        return cls(fd[0], count, _control_mapping(p[0], count))

    @classmethod
    def attach(cls, fd: int):
        """Map the control blocks behind `fd`; takes ownership of `fd` (closed on failure)."""
        p = ffi.new("void **")
        n = ffi.new("uint32_t *")
        rc = lib.shmp_ctl_attach(_fd_arg(fd), p, n)
        if rc != OK:
            try:
                _attach_failed(rc, fd, "attaching control blocks")
            finally:
                os.close(fd)
        return cls(fd, n[0], _control_mapping(p[0], n[0]))

    def control(self, index: int) -> "Control":
        return Control(self, index)

    def close(self):
        """Close the descriptor; the mapping goes when the last block reference does."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __reduce__(self):
        return _attach_control_array, (_dup_for_child(self.fd, "control blocks"),)


# run_laps: the C loop calls the very functions the cffi module exports.
_ENTER = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shmp_ctl_enter")))
_END_LAP = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shmp_ctl_end_lap")))
_SECTION_START = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shmp_ctl_section_start_ns")))
_laps_set_bits(lib.SHMP_CTL_STOP, lib.SHMP_CTL_OVERRAN)
#: What Control.run_laps returns as its second item.
LAPS_DONE, LAPS_STOPPED, LAPS_OVERRAN_ENTER, LAPS_RAISED, LAPS_OVERRAN_END = range(5)
#: Is a hook of run_laps executing?  (Runner.on_alarm)
laps_armed = _laps_armed


def _attach_control_array(dupfd):
    return ControlArray.attach(dupfd.detach())


_INT64_MIN, _INT64_MAX, _U64_MASK = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
_U64, _F64 = struct.Struct("<Q"), struct.Struct("<d")
_SCALAR_CONSTANTS = {lib.SHMP_SCALAR_NULL: None, lib.SHMP_SCALAR_FALSE: False,
                     lib.SHMP_SCALAR_TRUE: True}


class Control:
    """One worker's control block, with its calls bound (see csrc/control.c).

    The worker's hot path uses `enter`, `end_lap` (stores and a vDSO clock
    read, no syscall); the parent reads the rest at any time.
    """

    __slots__ = ("array", "index", "block", "enter", "end_lap", "leave", "lap", "_lap_addr",
                 "_addr", "_out", "_exit")

    def __init__(self, array: ControlArray, index: int):
        if not 0 <= index < array.count:
            raise IndexError(f"control block {index} of {array.count}")
        self.array = array                      # keeps the mapping alive
        self.index = index
        self.block = b = array.blocks[index]
        self.enter = partial(lib.shmp_ctl_enter, b)        # (section, timeout_ns) -> bits
        self.end_lap = partial(lib.shmp_ctl_end_lap, b)    # () -> bits
        self.leave = partial(lib.shmp_ctl_leave, b)        # () -> bits
        self.lap = partial(lib.shmp_ctl_lap, b)            # () -> int
        self._lap_addr = None                              # see lap_address
        self._addr = int(ffi.cast("uintptr_t", b))         # for run_laps
        self._out = self._exit = None                      # outcome()'s buffers, made once

    def run_laps(self, sections, laps, obj, runner, pending, flush, trace=None):
        """The worker's lap loop in C (csrc/python/laps.c): up to `laps`
        laps (-1: no limit) of `sections`, (section, hook, timeout_ns)
        each, recording a span per section on `trace` (a TraceRing) if
        given.  Returns (laps done, LAPS_*, section index, exception)."""
        if trace is not None:
            trace = (trace.address, trace.capacity, os.getpid(), _SECTION_START)
        return _laps_run(self._addr, _ENTER, _END_LAP, sections, laps, obj, runner,
                         pending, flush, trace)

    def reset(self):
        check(lib.shmp_ctl_reset(self.block), "resetting a control block")

    @property
    def state(self) -> int:
        return lib.shmp_ctl_state(self.block)

    def set_state(self, state: int):
        check(lib.shmp_ctl_set_state(self.block, state), "setting a worker state")

    def advance(self, state: int):
        """A state below DONE, with no wake-up (no one sleeps waiting for it)."""
        check(lib.shmp_ctl_advance(self.block, state), "setting a worker state")

    def wait_state(self, at_least: int, timeout_ns: int) -> int:
        """OK once state >= at_least; ETIMEDOUT or EINTR otherwise."""
        return lib.shmp_ctl_wait_state(self.block, at_least, timeout_ns)

    def request_stop(self):
        lib.shmp_ctl_request_stop(self.block)

    def clear_stop(self):
        lib.shmp_ctl_clear_stop(self.block)

    @property
    def stop_requested(self) -> bool:
        return bool(lib.shmp_ctl_stop_requested(self.block))

    def set_lap(self, lap: int):
        lib.shmp_ctl_set_lap(self.block, lap)

    def lap_word(self) -> memoryview:
        """The lap counter as a writable one-element "Q" memoryview.

        For a pool worker that publishes its progress at every task record
        (~40 ns a store, against ~200 ns for a cffi call).  The store is a
        plain aligned 8-byte store (CPython packs "Q" with an 8-byte
        memcpy: one instruction), not a C11 atomic one: the parent reads
        the word either after the worker is reaped (waitpid orders all the
        worker wrote) or for live progress, where a stale value is fine.
        The view is valid while this Control (and so the mapping) lives.
        """
        return memoryview(ffi.buffer(ffi.cast("uint64_t *", self.lap_address()), 8)).cast("Q")

    def marked(self, iterator, first: int, step: int, count: int):
        """An iterator over the next `count` items of `iterator` (the rest
        stay in it) that stores first, first + step, ... into the lap word
        as it hands out each item (csrc/python/marks.c): a pool worker's
        per-item progress at no measurable cost."""
        return _marked(iterator, self, self.lap_address(), first, step, count)

    def lap_address(self) -> int:
        addr = self._lap_addr
        if addr is None:
            # lap is the block's first word (shmp_control_shared in
            # csrc/shmp_internal.h): checked once here, not assumed, so a
            # change of layout is an error rather than a store into
            # another field.
            addr = int(ffi.cast("uintptr_t", self.block))
            saved = self.lap()
            probe = 0x5A5A_A5A5_0F0F_F0F0
            lib.shmp_ctl_set_lap(self.block, probe)
            found = ffi.cast("uint64_t *", self.block)[0]
            lib.shmp_ctl_set_lap(self.block, saved)
            if found != probe:
                raise RuntimeError("shmproc's native module has a control block layout this "
                                   "Python code does not know (lap is not its first word)")
            self._lap_addr = addr
        return addr

    @property
    def section(self) -> int:
        return lib.shmp_ctl_section(self.block)

    @property
    def section_start_ns(self) -> int:
        return lib.shmp_ctl_section_start_ns(self.block)

    @property
    def deadline_ns(self) -> int:
        return lib.shmp_ctl_deadline_ns(self.block)

    @property
    def lives(self) -> int:
        return lib.shmp_ctl_lives(self.block)

    def set_lives(self, lives: int):
        lib.shmp_ctl_set_lives(self.block, lives)

    @property
    def pid(self) -> int:
        return lib.shmp_ctl_pid(self.block)

    def set_pid(self, pid: int):
        check(lib.shmp_ctl_set_pid(self.block, pid), "recording a worker pid")

    def set_exit(self, code: int, signo: int):
        check(lib.shmp_ctl_set_exit(self.block, code, signo), "recording a worker exit")

    def report_scalar(self, value) -> bool:
        """The worker's report of an outcome that is a lone scalar (None, a
        bool, an int64 or a float): held here, state DONE.  False (nothing
        done) for any other value: it goes through the arena instead."""
        t = type(value)
        if value is None:
            tag, bits = lib.SHMP_SCALAR_NULL, 0
        elif t is bool:
            tag, bits = (lib.SHMP_SCALAR_TRUE if value else lib.SHMP_SCALAR_FALSE), 0
        elif t is int and _INT64_MIN <= value <= _INT64_MAX:
            tag, bits = lib.SHMP_SCALAR_INT, value & _U64_MASK
        elif t is float:
            tag, bits = lib.SHMP_SCALAR_FLOAT, _U64.unpack(_F64.pack(value))[0]
        else:
            return False
        check(lib.shmp_ctl_report_scalar(self.block, tag, bits), "reporting a worker's result")
        return True

    def outcome(self):
        """(lap, exit code, found, value) of an ended run, in one call: the
        exit code is -signal for a worker the guard signalled; found is True
        if the worker reported a lone scalar (report_scalar) and the state
        is DONE, with value that scalar, else (False, None).  Raises
        CorruptSharedMemoryError for a tag no worker writes."""
        out, ex = self._out, self._exit
        if out is None:                         # (not in the worker, which never reads it)
            out = self._out = ffi.new("uint64_t[2]")
            ex = self._exit = ffi.new("int32_t[2]")
        tag = lib.shmp_ctl_outcome(self.block, out, ex, ex + 1, out + 1)
        code = -ex[1] if ex[1] else ex[0]
        if tag == lib.SHMP_SCALAR_NONE:
            return out[0], code, False, None
        check(tag if tag < 0 else 0, "reading a worker's result")
        if tag == lib.SHMP_SCALAR_INT:
            v = out[1]
            return out[0], code, True, v - (1 << 64) if v > _INT64_MAX else v
        if tag == lib.SHMP_SCALAR_FLOAT:
            return out[0], code, True, _F64.unpack(_U64.pack(out[1]))[0]
        return out[0], code, True, _SCALAR_CONSTANTS[tag]

    def exit_info(self):
        code, sig = ffi.new("int32_t *"), ffi.new("int32_t *")
        check(lib.shmp_ctl_exit(self.block, code, sig), "reading a worker exit")
        return code[0], sig[0]

    @property
    def alarm_start_ns(self) -> int:
        """The section start stamp the guard's latest SIGALRM was meant for."""
        return lib.shmp_ctl_alarm_start_ns(self.block)

    def expired(self):
        """(section, timeout_ns, lap) if the guard ended the worker on an
        overrun, else None."""
        tmo, lap = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        section = lib.shmp_ctl_expired(self.block, tmo, lap)
        return (section, tmo[0], lap[0]) if section else None


def guard_start(ctl: Control, parent_pid: int, parent_is_parent: bool, horizon_ns: int,
                grace_ns: int, alarm_signo: int, promote_after_ns: int | None = None) -> bool:
    """Start this process's native guard on `ctl` (see csrc/guard.c), from
    the main thread; False if the parent is already gone.

    promote_after_ns: start it deferred, as a timer tick that becomes the
    thread at the first section entered that long after (Linux; a thread
    at once elsewhere).  Only for a worker the kernel ends with its parent:
    the tick does not watch the parent."""
    if promote_after_ns is None:
        rc = lib.shmp_guard_start(ctl.block, parent_pid or 0, bool(parent_is_parent),
                                  horizon_ns, grace_ns, alarm_signo)
    else:
        rc = lib.shmp_guard_start_deferred(ctl.block, parent_pid or 0, bool(parent_is_parent),
                                           horizon_ns, grace_ns, alarm_signo, promote_after_ns)
    if rc == EPEER:
        return False
    check(rc, "starting the worker's timeout guard")
    return True


def guard_rearm(horizon_ns: int):
    check(lib.shmp_guard_rearm(horizon_ns), "re-arming the worker's timeout guard")


def guard_stop():
    check(lib.shmp_guard_stop(), "stopping the worker's timeout guard")


def guard_running() -> bool:
    return bool(lib.shmp_guard_running())


#: guard_mode() values: no guard, the deferred guard's tick, the thread.
GUARD_NONE, GUARD_TICK, GUARD_THREAD = 0, 1, 2


def guard_mode() -> int:
    return lib.shmp_guard_mode()


def guard_tick_signal() -> int:
    """The real-time signal the deferred guard's tick uses (its handler is C)."""
    return lib.shmp_guard_tick_signal()


def parent_death_signal(signo: int, expected_parent: int) -> bool:
    """Ask for `signo` when the parent dies; False if it already has."""
    rc = lib.shmp_parent_death_signal(signo, expected_parent)
    if rc == EPEER:
        return False
    check(rc, "arranging for the parent's death signal")
    return True
