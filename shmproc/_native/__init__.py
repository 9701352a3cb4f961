"""The native layer: the only part of shmproc that calls the compiled C core.

    core      status codes, the one place C errors become Python exceptions,
              timeouts, descriptor checks
    ring      Ring (csrc/ring.c) and the buffers consumers read into
    memory    Blob (out-of-band records, with their fork-safe leases), Arena,
              private (copy-on-write) views of them
              Board (a small segment of shared words)
    control   ControlArray / Control (csrc/control.c), the native guard (guard.c)
    trace     TraceArea / TraceRing (csrc/trace.c): the spans workers record

Everything above imports `shmproc._native` and calls what it exports;
nothing above touches `ffi` or `lib` (a test checks it).
"""
from .control import (LAPS_DONE, LAPS_OVERRAN_END, LAPS_OVERRAN_ENTER, LAPS_RAISED, LAPS_STOPPED,
                      Control, ControlArray, guard_mode, guard_rearm, guard_running, guard_start,
                      guard_stop, guard_tick_signal, GUARD_NONE, GUARD_TICK, GUARD_THREAD,
                      laps_armed, parent_death_signal)
from .core import (CONTENDED_NS, CTL_OVERRAN, CTL_STOP, EEMPTY, EFULL, EINTR, EPEER, ESEALED,
                   ESMALLBUF, ESTATE, ETIMEDOUT, ETOOBIG, EXIT_EXPIRED, EXIT_ORPHANED, FOREVER, OK,
                   PEER_FD_OK,
                   STATE_CRASHED, STATE_DONE, STATE_FAILED, STATE_FINISHING, STATE_KILLED,
                   STATE_NEW, STATE_RUNNING, STATE_STARTING, check, now_ns, open_peer_fd,
                   spin_politely, timeout_ns)
from .memory import (Arena, Blob, Board, buffer_address, copy_offset, is_private_view,
                     private_view)
from .trace import SPAN_CRASHED, SPAN_FAILED, TraceArea, TraceRing, null_writer
from .ring import (RecvBuffer, Ring, char_pointer, encode_call, loop_handles, serve_calls,
                   set_call_wire, take_handles, take_value, u32_array, u32_cell, u64_cell, unpack)

__all__ = [
    "check", "now_ns", "timeout_ns", "CONTENDED_NS", "Ring", "Blob", "ControlArray", "Control",
    "Arena", "Board", "parent_death_signal", "guard_start", "guard_rearm", "guard_stop",
    "guard_running", "guard_mode", "guard_tick_signal", "GUARD_NONE", "GUARD_TICK",
    "GUARD_THREAD", "open_peer_fd", "copy_offset", "private_view", "is_private_view",
    "buffer_address", "OK", "EFULL", "EEMPTY", "ETIMEDOUT", "EINTR", "ESMALLBUF",
    "ETOOBIG", "ESTATE", "EPEER", "ESEALED", "EXIT_EXPIRED", "EXIT_ORPHANED", "FOREVER",
    "PEER_FD_OK", "laps_armed", "LAPS_DONE", "LAPS_STOPPED", "LAPS_OVERRAN_ENTER", "LAPS_RAISED",
    "LAPS_OVERRAN_END",
    "RecvBuffer", "char_pointer", "u32_array", "u32_cell", "u64_cell", "unpack",
    "encode_call", "loop_handles", "serve_calls", "set_call_wire", "take_handles", "take_value",
    "TraceArea", "TraceRing", "SPAN_FAILED", "SPAN_CRASHED", "null_writer",
    "CTL_STOP", "CTL_OVERRAN", "STATE_NEW", "STATE_STARTING", "STATE_RUNNING", "STATE_FINISHING",
    "STATE_DONE", "STATE_FAILED", "STATE_CRASHED", "STATE_KILLED",
]
