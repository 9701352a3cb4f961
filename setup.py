"""Build glue: compiles csrc/ with cffi (and csrc/python/marks.c as a CPython
extension), and ships docs/ as package data."""
import pathlib
import shutil

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent


class BuildExtWithClearErrors(build_ext):
    """Turn a missing C compiler into one actionable message."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated types here
            text = str(exc)
            if any(k in text for k in ("gcc", "cc", "compiler", "No such file", "exit status")):
                raise SystemExit(
                    "shmproc: compiling the native core failed: " + text + "\n"
                    "shmproc needs a C11 compiler and the Python headers. On Debian/Ubuntu: "
                    "apt-get install build-essential python3-dev; on macOS: xcode-select --install."
                ) from exc
            raise


class BuildPyWithDocs(build_py):
    """Copy docs/*.md into shmproc/_docs so shmproc.docs.download() can find them
    (with docs/images/*.png when a test run has generated them)."""

    def run(self):
        src = ROOT / "docs"
        if src.is_dir():
            dst = ROOT / "shmproc" / "_docs"
            if dst.exists():
                shutil.rmtree(dst)
            for md in [*src.rglob("*.md"), *src.glob("images/*.png")]:
                target = dst / md.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(md, target)
        super().run()


# The one piece of C that uses the CPython API (see its header comment): an
# iterator that publishes a pool worker's progress per item for ~nothing.
MARKS = Extension("shmproc._marks", sources=["csrc/python/marks.c"],
                  extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra"],
                  define_macros=[("Py_LIMITED_API", "0x030A0000")], py_limited_api=True)

# A Process worker's lap loop (see its header comment): four control-block
# calls and three hook calls a lap without cffi's per-call cost.
LAPS = Extension("shmproc._laps", sources=["csrc/python/laps.c"], include_dirs=["csrc"],
                 depends=["csrc/shmp_trace.h", "csrc/python/pyhelp.h"],
                 extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra"],
                 define_macros=[("Py_LIMITED_API", "0x030A0000")], py_limited_api=True)

# A pool worker's span writer (see its header comment): a span per task
# for a few stores, on the trace ring laid out in csrc/shmp_trace.h.
SPANS = Extension("shmproc._spans", sources=["csrc/python/spans.c"], include_dirs=["csrc"],
                  depends=["csrc/shmp_trace.h"],
                  extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra"],
                  define_macros=[("Py_LIMITED_API", "0x030A0000")], py_limited_api=True)

# A pool worker's loop of plain calls (see its header comment): the path
# from a task's arrival to its result's put without Python's per-line cost.
CALLLOOP = Extension("shmproc._callloop", sources=["csrc/python/callloop.c"],
                     depends=["csrc/python/pyhelp.h"],
                     extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra"],
                     define_macros=[("Py_LIMITED_API", "0x030A0000")], py_limited_api=True)

setup(
    cffi_modules=["csrc/build_cffi.py:ffibuilder"],
    ext_modules=[MARKS, LAPS, SPANS, CALLLOOP],
    cmdclass={"build_ext": BuildExtWithClearErrors, "build_py": BuildPyWithDocs},
)
