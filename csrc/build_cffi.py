"""cffi build script for the shmproc native core (API mode, out-of-line).

setuptools runs this through ``cffi_modules`` at install time.  The C lives
in real files beside this script: the ``cdef`` is the CDEF-BEGIN..CDEF-END
part of ``shmproc.h`` and the sources are every ``*.c`` here.

Environment switches (read at build time):
  SHMPROC_SANITIZE=1   build with AddressSanitizer + UBSan (tests/asan.py)
  SHMPROC_PORTABLE=1   use the portable segment/wait layer even on Linux
  SHMPROC_FAULTS=1     compile the test-only fault points (shmproc.h, tests/fault_build.py)
"""
import os
import pathlib
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
MODULE_NAME = "shmproc._shmp_cffi"


def read_cdef(header: pathlib.Path, part: str = "CDEF") -> str:
    text = header.read_text()
    begin, end_mark = f"/* {part}-BEGIN */", f"/* {part}-END */"
    try:
        start = text.index(begin) + len(begin)
        end = text.index(end_mark)
    except ValueError:
        raise RuntimeError(f"{header} lacks the {part}-BEGIN/{part}-END markers") from None
    return text[start:end]


def fault_injection() -> bool:
    return os.environ.get("SHMPROC_FAULTS") == "1"


def compile_flags():
    flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
             "-fvisibility=hidden"]
    link = []
    if os.environ.get("SHMPROC_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
               "-fno-sanitize-recover=undefined"]
        flags = [f for f in flags if f != "-O2"] + ["-O1", "-g"] + san
        link += san
    if os.environ.get("SHMPROC_PORTABLE") == "1":
        flags.append("-DSHMP_PORTABLE=1")
    if fault_injection():
        flags.append("-DSHMP_FAULT_INJECTION=1")
    return flags, link


def make_builder(module_name: str = MODULE_NAME, absolute_paths: bool = False) -> FFI:
    """absolute_paths: for ffi.compile(tmpdir=...), which changes directory;
    setuptools wants paths relative to the project root."""
    ffi = FFI()
    ffi.cdef(read_cdef(HERE / "shmproc.h"))
    if fault_injection():
        ffi.cdef(read_cdef(HERE / "shmproc.h", "CDEF-FAULTS"))
    cwd = pathlib.Path.cwd()
    sources = sorted(str(p if absolute_paths or not p.is_relative_to(cwd) else p.relative_to(cwd))
                     for p in HERE.glob("*.c"))
    cflags, lflags = compile_flags()
    libs = ["pthread"]
    if sys.platform.startswith("linux"):
        libs.append("rt")
    ffi.set_source(
        module_name,
        '#include "shmproc.h"',
        sources=sources,
        include_dirs=[str(HERE)],
        extra_compile_args=cflags,
        extra_link_args=lflags,
        libraries=libs,
    )
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
