"""A worker under the fork start method: multiprocessing's Process, our child bootstrap.

    parent: DirectForkProcess.start()            (multiprocessing's own start():
      └─ _Popen: flush stdio, one pipe,           _cleanup, _children, sentinel,
         os.fork()                                 join/exitcode/kill as usual)
    child:  _child_main ── SIGINT ignored, multiprocessing's per-process state
                           reset, its after-fork hooks, stdin on /dev/null
                        ── target (runner.worker_entry) ── reports DONE
                        ── exit hooks, threads joined, stdio flushed
                        ── os._exit(code): never returns into the parent's code

Why not multiprocessing.Process as is.  Its child bootstrap is ~0.5 ms of
Python before the target runs, most of it in work that touches pages
(every page a fork child writes is copied first: on a VM each first touch
costs a page fault of several microseconds): re-opening stdin builds a new
TextIOWrapper (~0.25 ms), plus logging calls, a second pipe and a
_ParentProcess object.  A trivial Process's start -> result is ~4 ms, so
that is an eighth of it.

What stays multiprocessing's, so the rest of shmproc (and a user's
`multiprocessing.active_children()`) sees an ordinary child: the Process
object and its start() (_cleanup of finished children, the _children
set, so the exit function joins it and active_children lists it), the
Popen's poll / wait / kill, exit codes (-signal when killed), and the
sentinel (the read end of a pipe whose write end only the child holds:
readable once it exits).  What the child does, in the order
multiprocessing's _bootstrap does it:
* ignores SIGINT first (Ctrl-C belongs to the parent, which stops the
  worker): a KeyboardInterrupt can then never unwind into the parent's
  code, and every other exception ends in os._exit;
* resets multiprocessing's per-process state (current process, children,
  counter), clears the parent's finalizers (they must not run here) and
  runs multiprocessing's after-fork hooks (its locks, queues);
* points stdin at /dev/null, as multiprocessing does: fd 0 becomes
  /dev/null (dup2 of a descriptor opened once in the parent) and
  sys.stdin a reader on it built once in the parent, never read there;
* after the target: multiprocessing's exit function (this process's own
  finalizers and children), threading._shutdown(), a flush of
  stdout/stderr, and os._exit with multiprocessing's exit codes (0, 1
  after an uncaught exception with its traceback on stderr, SystemExit's
  code).
Python's own at-fork hooks (os.register_at_fork: shmproc's in
common/lifecycle.py, threading's) run in os.fork() itself, as they do
under multiprocessing.  spawn and forkserver workers are plain
multiprocessing Processes.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
from multiprocessing import context as mp_context
from multiprocessing import popen_fork
from multiprocessing import process as mp_process
from multiprocessing import util as mp_util

from ...common import lifecycle, signals

__all__ = ["DirectForkProcess", "one_cleanup"]


#: One fork at a time from this process's threads.  A fork costs the same
#: either way (the kernel holds the parent's memory map while it copies it),
#: and some libraries refuse a fork while another thread is inside one:
#: filelock >= 4.3 on Python >= 3.12 raises RuntimeError from os.fork then.
#: A child finds it free (lifecycle.lock), though our own fork made it
#: holding it.
_forking = lifecycle.lock()


class _Popen(popen_fork.Popen):
    """multiprocessing's fork Popen, launching _child_main instead of _bootstrap."""

    def _launch(self, process_obj):
        stdin = _devnull_stdin()                  # built here, once: not in every child
        sentinel, child_w = os.pipe()
        _forking.acquire()
        try:
            pid = os.fork()
        except BaseException:
            _forking.release()
            raise
        if pid:
            _forking.release()                    # (the child's copy is freed by lifecycle)
        self.pid = pid
        if self.pid == 0:
            code = 1
            try:
                signals.set_handler(signals.SIGINT, signals.SIG_IGN)
                os.close(sentinel)
                code = _child_main(process_obj, stdin)
            finally:
                os._exit(code)
        os.close(child_w)
        self.finalizer = mp_util.Finalize(self, mp_util.close_fds, (sentinel,))
        self.sentinel = sentinel


@contextlib.contextmanager
def one_cleanup():
    """Start several processes with one multiprocessing _cleanup between
    them, not one per start: each polls every child this process has
    (a waitpid each), so starting n workers cost n * (n - 1) / 2 waitpid
    calls -- 2016 for a 64-worker pool.  Finished children are reaped at
    the first start here and at any later one, as before."""
    mp_process._cleanup()
    saved = mp_process._cleanup
    mp_process._cleanup = _no_cleanup
    try:
        yield
    finally:
        mp_process._cleanup = saved


def _no_cleanup():
    pass


class DirectForkProcess(mp_context.ForkProcess):
    """A fork-method multiprocessing.Process whose child runs _child_main."""

    @staticmethod
    def _Popen(process_obj):
        return _Popen(process_obj)


def _child_main(proc, stdin) -> int:
    mp_process._current_process = proc
    mp_process._children = set()
    mp_process._process_counter = itertools.count(1)
    main = threading.main_thread()
    if hasattr(main, "_set_native_id"):
        main._set_native_id()
    mp_util._finalizer_registry.clear()       # the parent's: never run here
    mp_util._run_after_forkers()
    _use_stdin(stdin)
    code = 0
    try:
        try:
            proc.run()
        finally:
            mp_util._exit_function()
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            sys.stderr.write(str(exc.code) + "\n")
            code = 1
    except BaseException:                       # noqa: BLE001 - reported as multiprocessing does
        code = 1
        import traceback
        sys.stderr.write(f"Process {proc.name}:\n")
        traceback.print_exc()
    finally:
        threading._shutdown()
        mp_util._flush_std_streams()
    return code


# -- stdin -----------------------------------------------------------------------------
# (descriptor of /dev/null, reader on fd 0) made in the parent at the first
# start; False when that failed (the child then does what multiprocessing does).
_stdin = None


def _devnull_stdin():
    global _stdin
    if _stdin is None:
        try:
            fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            _stdin = False
            return _stdin
        try:
            # On fd 0, which the child makes /dev/null before using it;
            # never read in the parent.  closefd=False: fd 0 is not ours.
            reader = open(0, encoding="utf-8", closefd=False)
        except (OSError, ValueError):           # the parent has no fd 0
            os.close(fd)
            _stdin = False
        else:
            _stdin = (fd, reader)
    return _stdin


def _use_stdin(stdin):
    if sys.stdin is None:
        return
    if stdin:
        fd, reader = stdin
        try:
            os.dup2(fd, 0)                      # fd 0 -> /dev/null (not close-on-exec)
            os.close(fd)
            sys.stdin = reader
            return
        except OSError:
            pass
    mp_util._close_stdin()


def _forget_stdin_in_child():
    # A fork child that starts workers of its own opens its own /dev/null.
    global _stdin
    lifecycle.leave_for_later(_stdin)
    _stdin = None


lifecycle.at_fork(after_in_child=_forget_stdin_in_child)
