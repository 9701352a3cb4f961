"""Run the Python examples in the Markdown docs, so the docs stay true.

Every fenced code block whose info string starts with ``python`` (or ``py``)
in ``docs/**/*.md`` and in ``README.md`` is an example:

- All runnable blocks of one file run in order, in one shared namespace, in
  ONE fresh interpreter per file, as the ``__main__`` script. A later block
  may use names defined by an earlier one. Functions defined in a block are
  ordinary ``__main__`` functions, so they pickle by reference and work as
  targets for fork, forkserver and spawn children (guard process-starting
  code with ``if __name__ == "__main__":`` as in any script).
- The interpreter runs in a fresh temporary folder (``<tmp>/work``, marked
  as a project by a minimal ``pyproject.toml``) with ``HOME`` set to
  ``<tmp>/home``: examples may write files, never into the repository or
  the real home folder.
- ```` ```python no-run ```` marks a fragment that is not executed (it must
  still compile); ```` ```python no-run no-compile ```` also skips the
  compile check. Use these sparingly: runnable examples are better.

A failure names the Markdown file and the line of the failing block, and
the traceback points into the ``.md`` file itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parent.parent

PYTHON_LANGS = {"python", "py", "python3"}

# Opening fence: up to any indentation (blocks inside list items are
# indented), then 3+ backticks or tildes, then the info string.
_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class CodeBlock:
    lang: str          # first word of the info string, lower-cased ("" if none)
    flags: frozenset   # the other words of the info string
    code: str          # the block's text, fence indentation removed
    line: int          # 1-based line number of the first code line

    @property
    def is_python(self) -> bool:
        return self.lang in PYTHON_LANGS

    @property
    def runs(self) -> bool:
        return self.is_python and "no-run" not in self.flags

    @property
    def compiles(self) -> bool:
        return self.is_python and "no-compile" not in self.flags

    @property
    def first_line(self) -> str:
        for text in self.code.splitlines():
            if text.strip():
                return text.strip()
        return "(empty)"


def extract_blocks(markdown: str) -> List[CodeBlock]:
    """All fenced code blocks of ``markdown``, in order (any language).

    Follows CommonMark where it matters here: a block closes at a fence of
    the same character that is at least as long as the opening one and has
    nothing after it; a backtick fence's info string may not contain a
    backtick. An unclosed fence is reported as an error rather than
    silently swallowing the rest of the file.
    """
    lines = markdown.splitlines()
    blocks: List[CodeBlock] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m or (m["fence"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        indent = len(m["indent"].expandtabs(4))
        fence = m["fence"]
        words = m["info"].strip().split()
        lang = words[0].lower() if words else ""
        closing = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        body = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            body.append(_dedent_line(lines[j], indent))
            j += 1
        if j == len(lines):
            raise ValueError(f"line {i + 1}: code fence {fence!r} is never closed")
        blocks.append(CodeBlock(lang, frozenset(words[1:]), "\n".join(body) + "\n", i + 2))
        i = j + 1
    return blocks


def _dedent_line(text: str, indent: int) -> str:
    """Remove up to ``indent`` columns of leading whitespace from one line."""
    expanded = text.expandtabs(4)
    strip = min(indent, len(expanded) - len(expanded.lstrip(" ")))
    return expanded[strip:]


def doc_files() -> List[Path]:
    files = sorted((REPO / "docs").rglob("*.md")) if (REPO / "docs").is_dir() else []
    readme = REPO / "README.md"
    if readme.is_file():
        files.insert(0, readme)
    return files


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _python_blocks(path: Path) -> List[CodeBlock]:
    return [b for b in extract_blocks(path.read_text(encoding="utf-8")) if b.is_python]


def _compile_cases():
    cases = []
    for path in doc_files():
        try:
            blocks = _python_blocks(path)
        except ValueError:  # reported by test_markdown_is_well_formed
            continue
        for index, block in enumerate(blocks):
            case_id = f"{_rel(path)}#{index} L{block.line}: {block.first_line[:40]}"
            cases.append(pytest.param(path, index, block, id=case_id))
    return cases


# ---------------------------------------------------------------------------
# The extractor itself.

SAMPLE = textwrap.dedent(
    """\
    # Title

    ```python
    x = 1
    ```

    Some text with `inline code` and a shell example:

    ```bash
    pip install shmproc
    ```

    ```text
    not code
    ```

    ```python no-run
    def __loop__(self):
        ...
    ```

    ````python
    s = '''
    ```
    '''
    ````

    1. In a list:

       ```py
       y = x + 1
       ```

    ~~~python no-run no-compile
    this is not python
    ~~~

    ```
    no language at all
    ```
    """
)


def test_extract_blocks_finds_fences_and_languages():
    blocks = extract_blocks(SAMPLE)
    assert [b.lang for b in blocks] == ["python", "bash", "text", "python", "python", "py", "python", ""]
    python = [b for b in blocks if b.is_python]
    assert [b.code for b in python] == [
        "x = 1\n",
        "def __loop__(self):\n    ...\n",
        "s = '''\n```\n'''\n",      # a shorter fence inside a longer one is content
        "y = x + 1\n",              # list indentation removed
        "this is not python\n",
    ]
    # Line numbers point at the first code line, for error messages.
    assert python[0].line == 4
    assert SAMPLE.splitlines()[python[3].line - 1].strip() == "y = x + 1"


def test_extract_blocks_honours_flags():
    python = [b for b in extract_blocks(SAMPLE) if b.is_python]
    assert [b.runs for b in python] == [True, False, True, True, False]
    assert [b.compiles for b in python] == [True, True, True, True, False]
    assert python[1].flags == {"no-run"}
    assert python[4].flags == {"no-run", "no-compile"}


def test_extract_blocks_ignores_non_python():
    md = "```bash\necho hi\n```\n```text\nplain\n```\n```pycon\n>>> 1\n```\n"
    blocks = extract_blocks(md)
    assert len(blocks) == 3
    assert not any(b.is_python for b in blocks)


def test_extract_blocks_rejects_unclosed_fence():
    with pytest.raises(ValueError, match="line 3"):
        extract_blocks("text\n\n```python\nx = 1\n")


def test_runner_shares_namespace_and_locates_failures(tmp_path):
    md = tmp_path / "page.md"
    md.write_text("```python\nx = 41\n```\n\ntext\n\n```python\ny = x + 1\nassert y == 0, y\n```\n")
    script = tmp_path / "runner.py"
    script.write_text(_runner_source(md, extract_blocks(md.read_text())))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    # Block 1 saw block 0's x; the failure is reported at the .md line.
    assert _last_block(proc.stderr) == f"block 1 at {md}:8"
    assert f'File "{md}", line 9' in proc.stderr
    assert "AssertionError: 42" in proc.stderr
    assert "@@done" not in proc.stderr


# ---------------------------------------------------------------------------
# The docs.

@pytest.mark.parametrize("path", doc_files(), ids=_rel)
def test_markdown_is_well_formed(path):
    extract_blocks(path.read_text(encoding="utf-8"))  # raises on an unclosed fence


@pytest.mark.parametrize("path, index, block", _compile_cases())
def test_block_compiles(path, index, block):
    if not block.compiles:
        pytest.skip("marked no-compile")
    filename = str(path)
    try:
        compile("\n" * (block.line - 1) + block.code, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        pytest.fail(f"{_rel(path)} block {index} (line {block.line}) does not compile: {exc}", pytrace=False)


def _runner_source(path: Path, blocks: List[CodeBlock]) -> str:
    """A script that runs ``blocks`` in order in its own (``__main__``) namespace.

    Each block is compiled with the Markdown file as its filename and padded
    to its line number there, so tracebacks show the ``.md`` line itself.
    """
    parts = ["import sys as _doc_sys", "_doc_blocks = ["]
    for index, block in enumerate(blocks):
        parts.append(f"    ({index}, {block.line}, {block.code!r}),")
    parts += [
        "]",
        f"_doc_file = {str(path)!r}",
        # Spawned children run this script again as __mp_main__: they must
        # define the same names, but their markers would only confuse.
        "_doc_main = __name__ == '__main__'",
        "for _doc_index, _doc_line, _doc_code in _doc_blocks:",
        "    if _doc_main:",
        "        print(f'@@block {_doc_index} ({_doc_file} line {_doc_line})', file=_doc_sys.stderr, flush=True)",
        "    exec(compile('\\n' * (_doc_line - 1) + _doc_code, _doc_file, 'exec', dont_inherit=True), globals())",
        "    _doc_sys.stdout.flush()",
        "if _doc_main:",
        "    print('@@done', file=_doc_sys.stderr, flush=True)",
    ]
    return "\n".join(parts) + "\n"


def _runnable_files():
    out = []
    for path in doc_files():
        try:
            if any(b.runs for b in _python_blocks(path)):
                out.append(path)
        except ValueError:
            continue
    return out


@pytest.mark.parametrize("path", _runnable_files(), ids=_rel)
def test_examples_run(path, tmp_path):
    blocks = [b for b in _python_blocks(path) if b.runs]
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    # Make the working folder a project root, so examples that care about
    # "the current project" (shmproc.docs) see the same layout everywhere.
    (work / "pyproject.toml").write_text('[project]\nname = "doc-example"\nversion = "0"\n')
    script = tmp_path / "doc_example.py"
    script.write_text(_runner_source(path, blocks), encoding="utf-8")

    import shmproc

    env = dict(os.environ)
    env["HOME"] = str(home)
    env["USERPROFILE"] = str(home)
    env.pop("PYTHONSTARTUP", None)
    uses_ray = any("RayBackend(" in b.code or '"ray"' in b.code for b in blocks)
    ray_dir = _ray_example_env(env) if uses_ray else None
    # Import the same shmproc as this test process, keeping any PYTHONPATH.
    pythonpath = [str(Path(shmproc.__file__).resolve().parent.parent)]
    if env.get("PYTHONPATH"):
        pythonpath.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)

    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        if ray_dir:
            import shutil
            shutil.rmtree(ray_dir, ignore_errors=True)
        out = exc.stdout or ""
        err = exc.stderr or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        pytest.fail(
            f"{_rel(path)}: examples did not finish within 120 s; last block started: "
            f"{_last_block(err)}\n--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}",
            pytrace=False,
        )
    if ray_dir:
        import shutil
        shutil.rmtree(ray_dir, ignore_errors=True)
    if proc.returncode != 0 or "@@done" not in proc.stderr:
        pytest.fail(
            f"{_rel(path)}: example failed (exit code {proc.returncode}) in {_last_block(proc.stderr)}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-8000:]}",
            pytrace=False,
        )


def _ray_example_env(env):
    """Pages using Ray start a cluster: its files go to a short temp dir
    (Ray's socket paths are limited), removed after the run."""
    import importlib.util
    import tempfile
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'shmproc[ray]')")
    short = tempfile.mkdtemp(prefix="shmproc-doc-ray-")
    env["RAY_TMPDIR"] = short
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)
    return short


def _last_block(stderr: str) -> str:
    markers = re.findall(r"^@@block (\d+) \((.*) line (\d+)\)$", stderr, flags=re.M)
    if not markers:
        return "(before the first block)"
    index, filename, line = markers[-1]
    return f"block {index} at {_rel(Path(filename)) if filename.startswith(str(REPO)) else filename}:{line}"
