"""The public API is typed: ``mypy --strict`` passes on the docs' examples.

shmproc ships ``py.typed``, so a user's type checker reads its
annotations.  These tests hold the annotations to what the docs show:

- Every Markdown file the docs examples test runs (test_docs_examples.py:
  ``docs/**/*.md`` and ``README.md``, so a new page is picked up by itself)
  has its runnable ```` ```python ```` blocks written out as one module,
  each block at its own line of the ``.md`` file, the text between them
  blank: an error at line N of the module is at line N of the page.
- A small typed program using Pool, Process, Queue, Executor and Task
  results must pass; a wrong one (a str where ``processes: int | None``
  is expected, a misspelled config field, a str into a ``Queue[int]``...)
  must fail on exactly its marked lines, so the check can fail at all.
- ``py.typed`` is in the package, and in what a build ships.

mypy is slow (seconds per run, more on a cold cache), so ONE mypy run
checks every module, in a module-scoped fixture, and each test reads its
own file's errors from it.  shmproc itself is checked as an installed
``py.typed`` package is: its annotations are used, its own errors are not
reported here (``mypy --strict shmproc`` is the check of the package).

Skipped when mypy is not installed (it is in the ``test`` extra).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

from test_docs_examples import REPO, _python_blocks, _rel, doc_files

pytest.importorskip("mypy", reason="mypy is not installed (pip install 'shmproc[test]')")

import shmproc  # noqa: E402 - after the skip

PACKAGE_ROOT = Path(shmproc.__file__).resolve().parent.parent

# A typed use of the API, as a user writes it: it must pass --strict.
GOOD_PROGRAM = '''\
from __future__ import annotations

import concurrent.futures

import shmproc
from shmproc import Executor, Pool, Queue, Task
from shmproc.processing import Process, ProcessTimers, timesection


def square(x: int) -> int:
    return x * x


class Counter(Process):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0
        self.config.num_loops = limit

    @timesection()
    def __loop__(self) -> None:
        self.seen += 1
        self.tell(self.current_lap)

    def __result__(self) -> int:
        return self.seen


def main() -> None:
    with Pool(processes=2) as pool:
        squares: list[int] = pool.map(square, range(10))
        task: Task[int] = pool.submit(square, 3)
        nine: int = task.result(timeout=10)
        lazy: list[int] = list(pool.imap(square, [1, 2, 3]))
        async_result = pool.apply_async(square, (4,))
        sixteen: int = async_result.get(timeout=10)
        assert squares[3] == nine == 9 and lazy == [1, 4, 9] and sixteen == 16

    with Executor(max_workers=2) as ex:
        future: concurrent.futures.Future[int] = ex.submit(square, 5)
        done, _ = concurrent.futures.wait([future])
        assert all(f.result() == 25 for f in done)

    q: Queue[str] = Queue()
    q.put("hello")
    word: str = q.get(timeout=1.0)
    q.close()

    counter = Counter(3).start()
    heard = counter.listen(timeout=5.0)
    counter.wait()
    timers: ProcessTimers | None = counter.timers
    laps: int = counter.current_lap
    print(word, heard, counter.result, timers, laps, shmproc.__version__)


if __name__ == "__main__":
    main()
'''

# The same API used wrongly: each line marked BAD must be reported, with
# the words after "BAD:" in mypy's message (and nothing else may be).
BAD_PROGRAM = '''\
from shmproc import Pool, Queue
from shmproc.processing import Process


def square(x: int) -> int:
    return x * x


class Job(Process):
    def __init__(self) -> None:
        self.config.num_loop = 3                        # BAD: "num_loop"


pool = Pool(processes="4")                              # BAD: "processes"
words: list[str] = pool.map(square, range(3))           # BAD: "map" of "Pool"
q: Queue[int] = Queue()
q.put("not an int")                                     # BAD: "put" of "Queue"
'''


def _doc_module_name(path: Path) -> str:
    # docs/queue.md must not become a module named `queue` (the stdlib's).
    stem = _rel(path)[:-len(".md")]
    return "doc_" + re.sub(r"\W", "_", stem)


def _doc_module_source(path: Path) -> str | None:
    """The runnable blocks of `path`, each at its own .md line; None if it has none."""
    blocks = [b for b in _python_blocks(path) if b.runs]
    if not blocks:
        return None
    lines: List[str] = []
    for block in blocks:
        code = block.code.splitlines()
        lines.extend([""] * (block.line - 1 - len(lines)))
        lines.extend(code)
    return "\n".join(lines) + "\n"


def _doc_modules() -> Dict[str, Path]:
    out = {}
    for path in doc_files():
        try:
            if any(b.runs for b in _python_blocks(path)):
                out[_doc_module_name(path)] = path
        except ValueError:              # an unclosed fence: test_docs_examples reports it
            continue
    return out


DOC_MODULES = _doc_modules()
_ERROR = re.compile(r"^(?P<file>[^:\n]+\.py):(?P<line>\d+):(?:\d+:)? (?P<kind>error|note): (?P<text>.*)$",
                    re.M)


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory) -> Dict[str, List[str]]:
    """Run mypy --strict once over every doc module and the two programs;
    the errors, by module name ("doc_README", "good_program", ...)."""
    work = tmp_path_factory.mktemp("typing")
    modules = {name: _doc_module_source(path) for name, path in DOC_MODULES.items()}
    modules["good_program"] = GOOD_PROGRAM
    modules["bad_program"] = BAD_PROGRAM
    files = []
    for name, source in modules.items():
        if source is None:
            continue
        file = work / f"{name}.py"
        file.write_text(source, encoding="utf-8")
        files.append(file.name)
    # shmproc is read as an installed py.typed package is: annotations used,
    # its own errors silent (they are `mypy --strict shmproc`'s business).
    # joblib ships no types: a user of docs/joblib.md says so to mypy too.
    (work / "mypy.ini").write_text(textwrap.dedent("""\
        [mypy]
        strict = True
        [mypy-shmproc.*]
        follow_imports = silent
        [mypy-joblib.*]
        ignore_missing_imports = True
        """))
    env = dict(os.environ)
    env["MYPYPATH"] = str(PACKAGE_ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini",
         "--cache-dir", str(work / ".mypy_cache"), "--no-color-output", "--no-error-summary",
         "--show-column-numbers", "--show-error-codes", *files],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode not in (0, 1):          # 1: errors found; anything else: mypy broke
        pytest.fail(f"mypy did not run (exit code {proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)
    report: Dict[str, List[str]] = {name: [] for name in modules}
    for m in _ERROR.finditer(proc.stdout):
        name = Path(m["file"]).stem
        report.setdefault(name, []).append(f"{m['line']}: {m['kind']}: {m['text']}")
    return report


@pytest.mark.parametrize("name", sorted(DOC_MODULES), ids=lambda n: _rel(DOC_MODULES[n]))
def test_docs_examples_pass_mypy_strict(mypy_report, name):
    errors = [e for e in mypy_report[name] if ": error: " in e]
    if errors:
        where = _rel(DOC_MODULES[name])
        pytest.fail(f"mypy --strict on the examples of {where}:\n" +
                    "\n".join(f"  {where}:{e}" for e in mypy_report[name]), pytrace=False)


def test_typed_program_passes(mypy_report):
    assert mypy_report["good_program"] == []


def test_wrong_program_fails(mypy_report):
    expected = {str(i): text.split("# BAD: ")[1]
                for i, text in enumerate(BAD_PROGRAM.splitlines(), 1) if "# BAD: " in text}
    errors = {}
    for e in mypy_report["bad_program"]:
        line, kind, text = e.split(": ", 2)
        if kind == "error":
            errors.setdefault(line, []).append(text)
    assert set(errors) == set(expected), mypy_report["bad_program"]
    for line, words in expected.items():
        assert any(words in text for text in errors[line]), (line, errors[line])


def test_py_typed_ships():
    # In the package users import, and in what setuptools puts in a build.
    assert (Path(shmproc.__file__).parent / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["shmproc"]
