"""A copy of the C core with its test-only fault points compiled in.

Some failures can only be tested by stopping a process at one exact
instruction: between the two shared stores that finish a ring operation,
say.  The release build has no hook for that (shmproc.h, "fault
injection"), so `load()` returns the `ffi, lib` of a copy built with
SHMPROC_FAULTS=1: the sanitized build itself under tests/asan.py (which
compiles the fault points in), otherwise a copy compiled once per source
version into .fault-build/.  The copy shares the layouts of the installed
core (same sources), so it can attach any ring by descriptor.
"""
import hashlib
import importlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
MODULE = "_shmp_faults"


def _digest() -> str:
    h = hashlib.sha256()
    for p in sorted(CSRC.glob("*")):
        if p.suffix in (".c", ".h", ".py"):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _build(out: pathlib.Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent))
    code = ("import sys; sys.path.insert(0, %r); import build_cffi; "
            "build_cffi.make_builder(%r, absolute_paths=True).compile(tmpdir=%r, verbose=False)"
            % (str(CSRC), MODULE, str(tmp)))
    env = dict(os.environ, SHMPROC_FAULTS="1")
    env.pop("LD_PRELOAD", None)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        tmp.rename(out)
    except OSError:                     # built meanwhile by someone else
        shutil.rmtree(tmp, ignore_errors=True)


def load():
    """(ffi, lib) of a core with shmp_fault_arm()."""
    from shmproc import _shmp_cffi as _cffi
    if hasattr(_cffi.lib, "shmp_fault_arm"):
        return _cffi.ffi, _cffi.lib
    if MODULE not in sys.modules:
        out = ROOT / ".fault-build" / _digest()
        if not out.exists():
            _build(out)
        sys.path.insert(0, str(out))
        try:
            importlib.import_module(MODULE)
        finally:
            sys.path.remove(str(out))
    mod = sys.modules[MODULE]
    return mod.ffi, mod.lib
