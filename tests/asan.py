"""Run the C core's tests and the stress tests under AddressSanitizer + UBSan.

    python tests/asan.py [--portable] [extra pytest args]

--portable builds the portable segment/wait layer (unlinked shm_open, polling
waits) instead of the Linux one (memfd, futex), so the fallback that other
systems use is exercised here too.

Builds a sanitized copy of the package in .asan-build/ (the installed one
is untouched), then runs the tests marked `asan` against it with libasan
preloaded into Python.  Any sanitizer report aborts the process and fails
the run.  Stress sizes are scaled down (SHMPROC_STRESS_SCALE=0.1): every
path is still exercised, at a fraction of the ~3x slower sanitized copies.
"""
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = ROOT / ".asan-build"
# The files whose `asan`-marked tests run sanitized.
ASAN_FILES = ["test_native.py", "test_stress.py", "test_ring_faults.py", "test_fuzz.py",
              "test_guard.py", "test_timeline_recording.py", "test_call_loop.py"]


def runtime(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if not os.path.isabs(path):
        raise SystemExit(f"asan: gcc does not know where {name} is; install gcc's sanitizer runtime")
    return path


def build(portable: bool):
    if BUILD.exists():
        shutil.rmtree(BUILD)
    # Every module of the package, subpackages included (with only the top
    # level copied, `shmproc._native` and the rest came from whatever
    # shmproc the environment had installed, not from this tree).
    for py in (ROOT / "shmproc").rglob("*.py"):
        dest = BUILD / py.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(py, dest)
    # With the test-only fault points (tests/fault_build.py uses this build's).
    env = dict(os.environ, SHMPROC_SANITIZE="1", SHMPROC_FAULTS="1")
    if portable:
        env["SHMPROC_PORTABLE"] = "1"
    code = (
        "import sys; sys.path.insert(0, %r); import build_cffi; "
        "build_cffi.make_builder(absolute_paths=True).compile(tmpdir=%r, verbose=False)"
        % (str(ROOT / "csrc"), str(BUILD))
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
    # The CPython-API extensions (csrc/python/), sanitized too: without them
    # here, `import shmproc._marks` would find whatever copy the environment
    # has installed, and shmproc._laps / _spans / _callloop might be missing altogether.
    code = (
        "from setuptools import Distribution, Extension\n"
        "san = ['-fsanitize=address,undefined', '-fno-omit-frame-pointer', '-g']\n"
        "exts = [Extension('shmproc.' + n, sources=['csrc/python/' + n[1:] + '.c'],\n"
        "                  extra_compile_args=['-std=c11', '-O1', '-Wall', '-Wextra'] + san,\n"
        "                  extra_link_args=san,\n"
        "                  include_dirs=['csrc'],\n"
        "                  define_macros=[('Py_LIMITED_API', '0x030A0000')], py_limited_api=True)\n"
        "        for n in ('_marks', '_laps', '_spans', '_callloop')]\n"
        "cmd = Distribution({'ext_modules': exts}).get_command_obj('build_ext')\n"
        "cmd.build_lib = %r\n"
        "cmd.build_temp = %r\n"
        "cmd.ensure_finalized()\n"
        "cmd.run()\n" % (str(BUILD), str(BUILD / "ext-tmp"))
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def main(argv):
    portable = "--portable" in argv
    argv = [a for a in argv if a != "--portable"]
    build(portable)
    env = dict(
        os.environ,
        PYTHONPATH=str(BUILD),
        LD_PRELOAD=runtime("libasan.so"),
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        SHMPROC_STRESS_SCALE=os.environ.get("SHMPROC_STRESS_SCALE", "0.1"),
    )
    probe = subprocess.run(
        [sys.executable, "-c", "import shmproc._laps, shmproc._marks, shmproc._callloop, shmproc._shmp_cffi as n; "
         "assert all(m.__file__.startswith(%r) for m in (shmproc._laps, shmproc._marks, shmproc._callloop)); "
         "print(n.__file__, n.lib.shmp_sanitized())" % str(BUILD)],
        env=env, capture_output=True, text=True, cwd=BUILD)
    if probe.returncode != 0 or not probe.stdout.strip().endswith(" 1") or str(BUILD) not in probe.stdout:
        raise SystemExit(f"asan: the sanitized build did not load:\n{probe.stdout}{probe.stderr}")
    print("asan: using", probe.stdout.strip(), "(portable layer)" if portable else "", flush=True)
    # Run from the build folder so `python -m` puts the sanitized package,
    # not the source tree, first on sys.path.
    cmd = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-m", "asan",
           "-p", "no:cacheprovider", "-q",
           *(str(ROOT / "tests" / name) for name in ASAN_FILES), *argv]
    return subprocess.run(cmd, cwd=BUILD, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
