"""A fork child has only the thread that forked: every lock shmproc keeps
must be free there, whatever another thread was doing at the fork.

The check finds the locks itself (module globals, class attributes, and
one level into module-level objects, plus a Timer, a Yawn and a Circuit a
Process might carry), holds each in another thread while the main thread
forks, and asks the child to take it.  A lock a fork hook takes before
the fork makes that fork wait for the holder instead, which is also fine.
It runs in a fresh interpreter so that its forks see nothing of pytest's.
"""
from __future__ import annotations

import subprocess
import sys

_CHECK = r"""
import faulthandler, importlib, os, pkgutil, sys, threading
faulthandler.dump_traceback_later(100, exit=True)     # a hang reports where

import shmproc
from shmproc.circuit import Circuit
from shmproc.sktime import Timer, Yawn

for info in pkgutil.walk_packages(shmproc.__path__, "shmproc."):
    if info.name.endswith("__main__"):  # the demo
        continue
    try:
        importlib.import_module(info.name)
    except ImportError:                 # optional dependencies (ray, joblib)
        pass

carried = {"timer": Timer(), "yawn": Yawn(0.001, 2), "circuit": Circuit(2, 0.001)}
LOCKS = (type(threading.Lock()), type(threading.RLock()), threading.Condition)

def plain(obj):
    return not isinstance(obj, (type, type(sys), LOCKS)) and not callable(obj)

paths = [("carried", key, "_lock") for key in carried]
for name, mod in sorted(sys.modules.items()):
    if not name.startswith("shmproc") or mod is None:
        continue
    for attr, value in list(vars(mod).items()):
        if isinstance(value, LOCKS):
            paths.append((name, attr))
        elif isinstance(value, type) and value.__module__ == name:
            paths += [(name, attr, a) for a, v in vars(value).items() if isinstance(v, LOCKS)]
        elif plain(value) and hasattr(value, "__dict__"):
            paths += [(name, attr, a) for a, v in vars(value).items() if isinstance(v, LOCKS)]
assert len(paths) > 10, paths           # the search itself must find them

def resolve(path):
    obj = carried if path[0] == "carried" else sys.modules[path[0]]
    for part in path[1:]:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj

def free_in_child(path):
    lock = resolve(path)
    holding, let_go = threading.Event(), threading.Event()
    def hold():
        with lock:
            holding.set()
            let_go.wait()
    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    threading.Timer(0.1, let_go.set).start()   # frees a fork hook waiting for it
    pid = os.fork()
    if pid == 0:
        got = resolve(path).acquire(timeout=3)   # fork hooks may have made it anew
        os._exit(0 if got else 3)
    holder.join()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

stuck = [".".join(p) for p in paths if not free_in_child(p)]
print(len(paths), "locks;", "held in the child:", stuck)
sys.exit(1 if stuck else 0)
"""


def test_every_lock_is_free_in_a_fork_child_whoever_held_it():
    """os.fork() in a threaded process, as multiprocessing's fork method
    does: CPython frees its own locks in the child (import lock, threading,
    logging); shmproc must do as much for its own, or the child blocks on
    its first start, result or timer."""
    done = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                          timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
